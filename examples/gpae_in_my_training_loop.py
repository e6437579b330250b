"""GPAE inside your own training step: a jitted (and vmapped) JAX update, and a NumPy-style loop with Numba.

Shows: ``gpae_ref.gpae`` called inside a user's ``jax.jit`` update (under
``jit`` the inputs are tracers, so ``backend="auto"`` picks the JAX backend: a
reverse ``lax.scan``), the same update ``jax.vmap``-ed over independent runs,
and the same data through the Numba kernel with preallocated outputs (``out=``)
as a NumPy or PyTorch-style loop would call it (PyTorch: pass ``t.numpy()``
of CPU tensors). Float32 throughout (JAX's default), so both compute in float32.

    python examples/gpae_in_my_training_loop.py            # T=128, B=64, N=5

Prints the median time of each over a few runs on this machine and the largest
difference between the JAX and Numba advantages. About 15 s on 2 CPU cores
(most of it JAX compiling).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import gpae_ref


def make_batch(seed, T, B, N, K):
    """A user's rollout, time-major: actions [T, B, N] of a behaviour policy, rewards, values, dones."""
    rng = np.random.default_rng(seed)
    mu = rng.dirichlet(np.ones(K), size=N)                    # behaviour policy [N, K] (state-free toy)
    actions = np.stack([rng.choice(K, size=(T, B), p=mu[i]) for i in range(N)], axis=-1)
    return dict(actions=actions, logp_behaviour=np.log(mu[np.arange(N), actions]).astype(np.float32),
                rewards=rng.normal(size=(T, B)).astype(np.float32),
                values=rng.normal(size=(T + 1, B, N)).astype(np.float32),
                dones=(rng.uniform(size=(T, B)) < 0.02).astype(np.float32))


def advantages(batch, logp):
    """GPAE with DT-ISR on a batch; ``logp`` [T, B, N] the current policy's log-probs of the actions taken."""
    return gpae_ref.gpae(batch["rewards"], batch["values"], batch["dones"], logp, batch["logp_behaviour"],
                         gamma=0.99, lam=0.95, correction="dt", eta=1.02)


def update(logits, batch, lr=0.1, clip=0.2):
    """One PPO-style step of a per-agent policy ``logits [N, K]``, with GPAE advantages from the current policy."""
    def loss_fn(p):
        logp_all = jax.nn.log_softmax(p)                      # [N, K]
        logp = logp_all[jnp.arange(p.shape[0]), batch["actions"]]  # [T, B, N] log pi^i(a^i_t)
        out = advantages(batch, jax.lax.stop_gradient(logp))  # no gradient through the advantages
        adv = (out.advantages - out.advantages.mean()) / (out.advantages.std() + 1e-8)
        ratio = jnp.exp(logp - batch["logp_behaviour"])
        return -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv).mean(), out
    (loss, out), grad = jax.value_and_grad(loss_fn, has_aux=True)(logits)
    return logits - lr * grad, loss, out.advantages


def median_seconds(fn, repeats):
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run (compilation)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(T=128, B=64, N=5, K=4, runs=4, repeats=10):
    """Time each way on the same data; return the times (seconds) and the JAX-Numba difference."""
    batch = make_batch(0, T, B, N, K)
    logits = jnp.zeros((N, K))
    step = jax.jit(update)                                    # your jitted update, GPAE inside it
    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    new_logits, loss, adv_jax = step(logits, jb)

    # vmap over independent runs (seeds): one program trains `runs` policies at once
    batches = [make_batch(s, T, B, N, K) for s in range(runs)]
    stacked = {k: jnp.stack([b[k] for b in batches]) for k in batch}
    many = jax.jit(jax.vmap(update))
    _, losses, _ = many(jnp.zeros((runs, N, K)), stacked)
    assert losses.shape == (runs,) and np.allclose(losses[0], loss, atol=1e-5)  # run 0 is the batch above

    # NumPy-style loop: the Numba kernel on host arrays, writing into buffers allocated once
    logp_now = np.asarray(jax.nn.log_softmax(logits))[np.arange(N), batch["actions"]]
    out = (np.empty((T, B, N), np.float32), np.empty((T, B, N), np.float32))
    numba_call = lambda: gpae_ref.gpae(batch["rewards"], batch["values"], batch["dones"], logp_now,  # noqa: E731
                                       batch["logp_behaviour"], gamma=0.99, lam=0.95, correction="dt",
                                       eta=1.02, backend="numba", out=out)
    adv_numba = numba_call().advantages
    diff = float(np.abs(np.asarray(adv_jax) - adv_numba).max())
    jax_gpae = jax.jit(advantages)                            # the estimator alone, for the same comparison
    jlogp = jnp.asarray(logp_now)

    times = dict(jit_update=median_seconds(lambda: step(logits, jb), repeats),
                 jax_gpae=median_seconds(lambda: jax_gpae(jb, jlogp), repeats),
                 vmap_update=median_seconds(lambda: many(jnp.zeros((runs, N, K)), stacked), repeats),
                 numba_gpae=median_seconds(numba_call, repeats))
    print(f"T={T} B={B} N={N}, float32, median of {repeats} runs on {jax.devices()[0].platform}:")
    print(f"  jitted update (GPAE + PPO loss + grad)   {times['jit_update'] * 1e3:8.2f} ms")
    print(f"  vmapped update, {runs} runs at once        {times['vmap_update'] * 1e3:8.2f} ms")
    print(f"  jitted JAX GPAE alone                     {times['jax_gpae'] * 1e3:8.2f} ms")
    print(f"  Numba GPAE alone, out= buffers            {times['numba_gpae'] * 1e3:8.2f} ms")
    print(f"max |JAX - Numba| advantage: {diff:.2e} (float32 tolerance atol {gpae_ref.FLOAT32_TOL.atol:g})")
    return dict(times, max_difference=diff, logits=np.asarray(new_logits))


if __name__ == "__main__":
    main()
