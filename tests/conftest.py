"""Hypothesis profiles: "ci" (deterministic, modest), "dev" (more examples, random) and "nightly"
(10,000 random examples per test, for the generated-input tests); one JAX compilation cache for
the session.

Select with ``pytest --hypothesis-profile=ci`` (the Makefile does), ``=dev`` or ``=nightly``
(docs/performance.md, "Testing", gives the nightly command).

The SMAX tests build the same tiny learner in many tests and in subprocesses (resume, kill),
and each build compiles for ~20 s on 2 cores: a persistent compilation cache in a temporary
folder, shared through ``JAX_COMPILATION_CACHE_DIR`` by this process and every child, compiles
each distinct program once per session (a cached executable computes exactly what a fresh
compilation does, so the bit-identical resume tests are unaffected). A cache folder the user
already set is left as it is. The same children and this process also compile with XLA's CPU
backend optimisation level 0 and without LLVM's expensive passes (``TEST_XLA_FLAGS``): a tiny
learner compiles in ~12 s instead of ~21 s at level 0, and another 15-25% faster without the
passes (test_gae_run 31.5 -> 23.4 s, test_coma_run_with_reuse 43.9 -> 39.4 s, 2 busy cores); no
test times a run (the training CLIs add their own CPU flags on top, as always).
"""

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

_CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
_session_cache: str | None = None
_saved_xla_flags: str | None = None


def pytest_configure(config):
    global _session_cache, _saved_xla_flags
    _saved_xla_flags = os.environ.get("XLA_FLAGS")
    mine = [f for f in TEST_XLA_FLAGS if f.split("=")[0] not in (_saved_xla_flags or "")]  # the user's win
    os.environ["XLA_FLAGS"] = " ".join([_saved_xla_flags or "", *mine]).strip()
    if os.environ.get(_CACHE_VAR):
        return
    _session_cache = tempfile.mkdtemp(prefix="gpae-ref-jax-cache-")
    os.environ[_CACHE_VAR] = _session_cache  # before any test imports jax; children inherit it


def pytest_unconfigure(config):
    global _session_cache
    if _saved_xla_flags is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = _saved_xla_flags
    if _session_cache is not None:
        os.environ.pop(_CACHE_VAR, None)
        shutil.rmtree(_session_cache, ignore_errors=True)
        _session_cache = None

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    deadline=None,
    max_examples=10_000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="session")
def shared_trainers():
    """One ``LearnerConfig -> Trainer`` dict for the whole session: CLI tests that run the same
    tiny learner config (whatever their schedule flags) compile it once (``train.main(trainers=)``)."""
    return {}
