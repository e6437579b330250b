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


# Flags an older jaxlib does not know (it aborts at start on an unknown XLA flag): jaxlib 0.4.38,
# the authors' venv (`make env-authors`), knows only the scheduler flag.
NEWER_FLAGS: tuple[str, ...] = ("--xla_cpu_use_xnnpack", "--xla_cpu_multi_thread_eigen")


def _old_jaxlib() -> bool:
    """jaxlib older than 0.5 (read from package metadata: jax must not start yet)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(p) for p in version("jaxlib").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) < (0, 5)


def xla_flags(current: str, keep_defaults: bool) -> str:
    """XLA_FLAGS for a run: ``current`` plus each of SAFE_CPU_FLAGS whose name it does not set
    (and, on a jaxlib older than 0.5, that it knows)."""
    if keep_defaults:
        return current
    skip = NEWER_FLAGS if _old_jaxlib() else ()
    extra = [f for f in SAFE_CPU_FLAGS if f.split("=")[0] not in current and f.split("=")[0] not in skip]
    return " ".join([current, *extra]).strip()
