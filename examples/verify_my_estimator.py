"""Check your own GPAE implementation against gpae-ref's exact oracle with ``gpae_ref.verify``.

Shows: (1) a GPAE written in plain NumPy, verified on every check and correction;
(2) the same with one planted bug (the trace of step t used where step t+1's
belongs), its counterexample, and how to rerun it from the saved files;
(3) the few-line adapter for an estimator with another layout and signature
(batch-major [B, T, N], dict out); (4) a plain single-agent GAE verified only
for what it implements (``agents=1, corrections=("none",)``).

    python examples/verify_my_estimator.py [SAVE_DIR]     # default SAVE_DIR: cx_my_gpae

Prints four verify tables, the bug's first counterexample and the command that
reruns it: each saved ``NN_<check>_<correction>.py`` prints expected against got,
``cd SAVE_DIR && PYTHONPATH=<this folder> python 00_P3-P4-operator_it.py``.
About 5 s on 2 CPU cores.
"""

import sys
from pathlib import Path

import numpy as np

from gpae_ref import verify


def my_gpae(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta, mask=None,
            trace_step=1):
    """A user's GPAE: time-major [T, B, N]; ``trace_step=0`` is the planted bug."""
    l = logp_target - logp_behaviour                          # per-agent log-ratios
    if mask is not None:
        l = np.where(mask > 0, l, 0.0)                        # a dead agent has ratio 1
    T, B, N = l.shape
    E = values if values.ndim == 3 else np.repeat(values[:, :, None], N, axis=2)  # a state value: every agent
    joint = l.sum(-1, keepdims=True)                          # log rho, in log space (no overflow)
    log_c = {"none": 0.0 * l, "it": np.minimum(0.0, l), "st": np.minimum(0.0, joint) + 0.0 * l,
             "dt": np.minimum(0.0, l + np.minimum(np.log(eta), joint - l)), "full": joint + 0.0 * l}[correction]
    c = np.exp(log_c)
    live = (1.0 - dones)[:, :, None]
    delta = rewards[:, :, None] + gamma * live * E[1:] - E[:-1]
    adv, nxt = np.zeros((T, B, N)), np.zeros((B, N))
    for t in reversed(range(T)):
        c_next = c[min(t + trace_step, T - 1)]                # c^i_{t+1} (unused at t = T-1: nxt is 0)
        nxt = delta[t] + gamma * lam * live[t] * c_next * nxt
        adv[t] = nxt
    return adv, E[:-1] + np.exp(np.minimum(0.0, l)) * adv


def my_gpae_buggy(rewards, values, dones, logp_target, logp_behaviour, **options):
    """The planted bug: A_t uses c_t instead of c_{t+1}. On-policy every c is 1, so only off-policy checks see it."""
    return my_gpae(rewards, values, dones, logp_target, logp_behaviour, trace_step=0, **options)


def their_gpae(batch, *, discount, gae_lambda, eta=1.02, kind="dt"):
    """Stand-in for another library: batch-major [B, T, N] dict in, dict out."""
    to_tm = {k: np.swapaxes(v, 0, 1) for k, v in batch.items()}
    adv, ret = my_gpae(to_tm["r"], to_tm["v"], to_tm["d"], to_tm["lp"], to_tm["lp_old"], gamma=discount,
                       lam=gae_lambda, correction=kind, eta=eta, mask=to_tm.get("alive"))
    return {"advantage": np.swapaxes(adv, 0, 1), "target": np.swapaxes(ret, 0, 1)}


def their_gpae_adapter(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta,
                       mask=None):
    """The adapter: verify's time-major arrays and keywords -> their layout; back to (advantages, targets)."""
    batch = dict(r=rewards, v=values, d=dones, lp=logp_target, lp_old=logp_behaviour)
    if mask is not None:
        batch["alive"] = mask
    out = their_gpae({k: np.swapaxes(x, 0, 1) for k, x in batch.items()}, discount=gamma, gae_lambda=lam,
                     eta=eta, kind=correction)
    return np.swapaxes(out["advantage"], 0, 1), np.swapaxes(out["target"], 0, 1)


def my_gae(rewards, values, dones, *, gamma, lam):
    """Plain single-agent GAE, [T, B] (values [T+1, B]); advantages only."""
    adv, nxt = np.zeros_like(rewards), np.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        nxt = rewards[t] + gamma * (1 - dones[t]) * (values[t + 1] + lam * nxt) - values[t]
        adv[t] = nxt
    return adv


def my_gae_adapter(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta):
    """GAE is correction 'none'; the value target adds min(1, rho) A, as the spec's v^i_t does."""
    adv = my_gae(rewards, values, dones, gamma=gamma, lam=lam)
    return adv, values[:-1] + np.minimum(1.0, np.exp(logp_target - logp_behaviour)) * adv


def main(save_dir="cx_my_gpae", checks=None):
    """Run the four verifies (``checks``: a subset of ``gpae_ref.verify.CHECKS``, None = all); return the reports."""
    reports = dict(
        correct=verify(my_gpae, checks=checks),
        buggy=verify(my_gpae_buggy, checks=checks, max_examples=1),
        adapter=verify(their_gpae_adapter, checks=checks),
        gae=verify(my_gae_adapter, agents=1, corrections=("none",), masks=False, checks=checks),
    )
    for name, report in reports.items():
        print(f"\n=== {name}: ok={report.ok}\n{report}")
    bug = reports["buggy"]
    # On-policy every c is 1, so on-policy checks (P1) cannot see the bug; the off-policy operator check can.
    p1, op = bug.cell("P1", "dt").status, bug.cell("P3/P4 operator", "dt").status
    print(f"\nbug: P1 / dt {p1}, P3/P4 operator / dt {op}")
    saved = [p for p in bug.save(save_dir) if p.suffix == ".py"]
    print(f"saved {len(saved)} counterexample(s); rerun one with:\n"
          f"  cd {save_dir} && PYTHONPATH={Path(__file__).resolve().parent} python {saved[0].name}")
    return reports


if __name__ == "__main__":
    # Imported by its module name, so the saved .py files can `from verify_my_estimator import ...`.
    import verify_my_estimator

    verify_my_estimator.main(*sys.argv[1:2])
