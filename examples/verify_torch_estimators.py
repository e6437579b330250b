"""verify() on PyTorch estimators: TorchRL's GAE, V-trace and TD(lambda), Stable-Baselines3's rollout buffer.

    python examples/verify_torch_estimators.py

Needs torch, torchrl and stable-baselines3 (none of them is a dependency of
gpae-ref, in any extra); without them it prints why and exits 0. Prints one
verdict line per estimator, then the report of any that failed. Its output is
recorded in docs/oracle.md ("PyTorch estimators").
"""

import importlib.metadata
import importlib.util
import sys

import numpy as np

NEEDS = ("torch", "torchrl", "stable_baselines3")

# --- adapters (docs/oracle.md shows this block) ---
import_ok = all(importlib.util.find_spec(m) for m in NEEDS)
if import_ok:
    import torch
    from torchrl.objectives.value import functional as trl


def _per_agent(rewards, values, dones, n):
    """Batch-major [B, T] team arrays and [B, T+1, N] (or [B, T+1]) values -> TorchRL's [B, T, N] tensors."""
    values = torch.as_tensor(values)
    if values.ndim == 2:  # a state value: every agent's
        values = values[..., None].expand(-1, -1, n)
    expand = lambda x: torch.as_tensor(x)[..., None].expand(-1, -1, n)  # noqa: E731
    return expand(rewards), values[:, :-1], values[:, 1:], expand(dones).bool()


def torchrl_gae(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta,
                vectorized=False):
    """TorchRL's GAE per agent, layout BTN, correction 'none'; returns (advantage, value_target = V + A)."""
    if correction != "none":
        raise NotImplementedError(correction)
    r, v, v_next, done = _per_agent(rewards, values, dones, logp_target.shape[-1])
    fn = trl.vec_generalized_advantage_estimate if vectorized else trl.generalized_advantage_estimate
    adv, target = fn(gamma, lam, v, v_next, r, done, done)
    return adv.numpy(), target.numpy()


def torchrl_vec_gae(*args, **kwargs):
    return torchrl_gae(*args, vectorized=True, **kwargs)


def torchrl_td_lambda(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta,
                      vectorized=False):
    """TorchRL's TD(lambda) return G per agent, layout BTN: advantage G - V, value target G (V + A)."""
    if correction != "none":
        raise NotImplementedError(correction)
    r, v, v_next, done = _per_agent(rewards, values, dones, logp_target.shape[-1])
    if vectorized:
        g = trl.vec_td_lambda_return_estimate(gamma, lam, v_next, r, done, done)
    else:
        g = trl.td_lambda_return_estimate(gamma, lam, v_next, r, done, done)
    return (g - v).numpy(), g.numpy()


def torchrl_vec_td_lambda(*args, **kwargs):
    return torchrl_td_lambda(*args, vectorized=True, **kwargs)


def torchrl_vtrace(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta):
    """TorchRL's V-trace per agent, layout BTN: correction 'it', value target vs = V + min(1, rho) A.

    TorchRL's V-trace has no lambda; a tensor c_thresh = lam min(1, rho) makes its trace
    c_t = min(rho_t, c_thresh) = lam min(1, rho_t), rlax's lambda-V-trace. The GPAE advantage is
    (vs - V) / min(1, rho); TorchRL's own ``advantages`` output is IMPALA's policy-gradient advantage
    min(1, rho_t)(r_t + gamma vs_{t+1} - V_t), the same only at lam = 1.
    """
    if correction != "it":
        raise NotImplementedError(correction)
    r, v, v_next, done = _per_agent(rewards, values, dones, logp_target.shape[-1])
    log_pi, log_mu = torch.as_tensor(logp_target), torch.as_tensor(logp_behaviour)
    clip = torch.exp(log_pi - log_mu).clamp(max=1.0)
    _, vs = trl.vtrace_advantage_estimate(gamma, log_pi, log_mu, v, v_next, r, done, done, rho_thresh=1.0,
                                          c_thresh=lam * clip)
    return ((vs - v) / clip).numpy(), vs.numpy()


def sb3_rollout_buffer(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta):
    """Stable-Baselines3's RolloutBuffer.compute_returns_and_advantage, single-agent [T, B] (float32).

    SB3 stores episode_starts[t] (step t begins an episode), so a done after step t is
    episode_starts[t + 1], and the done after the last step is the ``dones`` argument.
    """
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    if correction != "none":
        raise NotImplementedError(correction)
    T, B = rewards.shape
    buf = RolloutBuffer(T, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), "cpu", gae_lambda=lam, gamma=gamma,
                        n_envs=B)
    buf.rewards[:] = rewards
    buf.values[:] = values[:-1]
    buf.episode_starts[1:] = dones[:-1]
    buf.compute_returns_and_advantage(torch.as_tensor(values[-1]), dones[-1])
    return buf.advantages, buf.returns
# --- end of adapters ---


def main():
    """Verify each adapter; print a verdict line each, then the failing reports. Returns the reports."""
    from gpae_ref import verify

    runs = {
        "TorchRL generalized_advantage_estimate": (torchrl_gae, dict(layout="BTN", corrections="none")),
        "TorchRL vec_generalized_advantage_estimate": (torchrl_vec_gae, dict(layout="BTN", corrections="none")),
        "TorchRL td_lambda_return_estimate": (torchrl_td_lambda, dict(layout="BTN", corrections="none")),
        "TorchRL vec_td_lambda_return_estimate": (torchrl_vec_td_lambda, dict(layout="BTN", corrections="none")),
        "TorchRL vtrace_advantage_estimate": (torchrl_vtrace, dict(layout="BTN", corrections="it",
                                                                   value_targets="clipped")),
        "SB3 RolloutBuffer.compute_returns_and_advantage": (sb3_rollout_buffer, dict(agents=1, corrections="none")),
    }
    reports = {}
    for name, (fn, options) in runs.items():
        options = {"value_targets": "plain", "masks": False, **options}
        reports[name] = report = verify(fn, **options)
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
        print(f"{'ok  ' if report.ok else 'FAIL'} {name} ({shown}; output dtype {report.output_dtype})")
    for name, report in reports.items():
        if not report.ok:
            print(f"\n=== {name}\n{report}")
    return reports


if __name__ == "__main__":
    if not import_ok:
        missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
        print(f"skipped: needs {', '.join(missing)} (pip install torch torchrl stable-baselines3)")
        sys.exit(0)
    print("torch", torch.__version__, "| torchrl", importlib.metadata.version("torchrl"), "| stable-baselines3",
          importlib.metadata.version("stable-baselines3"))
    main()
