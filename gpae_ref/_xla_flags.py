"""XLA CPU flags the training CLIs add (jax-free: it must run before jax starts its CPU client).

jax 0.10.2 on a loaded 2-core CPU: the first execution of some programs (the
Q-critic learner's init with seeds vmapped; a 3s5z update) never returned, every
XLA thread idle in BlockUntilReady. XNNPACK off alone did not cure it under
load; these three together did (5 of 5 tries; docs/results.md). They only
concern the CPU backend, so a GPU run ignores them. The CLIs (train,
experiments) set them in ``main()``, never at import; ``--xla-defaults`` skips them.
"""

from __future__ import annotations

SAFE_CPU_FLAGS: tuple[str, ...] = (
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    "--xla_cpu_multi_thread_eigen=false",
)


def xla_flags(current: str, keep_defaults: bool) -> str:
    """XLA_FLAGS for a run: ``current`` plus each of SAFE_CPU_FLAGS whose name it does not set."""
    if keep_defaults:
        return current
    extra = [f for f in SAFE_CPU_FLAGS if f.split("=")[0] not in current]
    return " ".join([current, *extra]).strip()
