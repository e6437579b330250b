"""Bad input gets a ValueError that names the argument and says what was expected.

Run against every backend the installed package offers: validation is shared
(gpae_ref.validation, gpae_ref.dtypes), so each backend must fail the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re

import numpy as np
import pytest

import gpae_ref
from gpae_ref import reference

T, B, N = 4, 3, 2


def _backends() -> list[str]:
    names = [b for b in gpae_ref.BACKENDS if b != "auto"]
    if importlib.util.find_spec("jax") is None and "jax" in names:
        names.remove("jax")
    if "cuda" in names and not os.environ.get("NUMBA_ENABLE_CUDASIM"):
        from numba import cuda

        if not cuda.is_available():
            names.remove("cuda")
    return names


BACKEND_NAMES = _backends()


def good_inputs(dtype=np.float64) -> dict:
    rng = np.random.default_rng(0)
    return dict(
        rewards=rng.normal(size=(T, B)).astype(dtype),
        values=rng.normal(size=(T + 1, B, N)).astype(dtype),
        dones=np.zeros((T, B), dtype),
        logp_target=-rng.uniform(0.1, 2.0, size=(T, B, N)).astype(dtype),
        logp_behaviour=-rng.uniform(0.1, 2.0, size=(T, B, N)).astype(dtype),
    )


def call(backend: str, **overrides):
    arrays = good_inputs()
    scalars = dict(gamma=0.99, lam=0.95, correction="dt", eta=1.02, mask=None)
    for key, value in overrides.items():
        (arrays if key in arrays else scalars)[key] = value
    with _x64(backend):
        return gpae_ref.gpae(
            arrays["rewards"], arrays["values"], arrays["dones"],
            arrays["logp_target"], arrays["logp_behaviour"], backend=backend, **scalars,
        )


def _x64(backend: str):
    """float64 inputs on jax need x64 (without it the jax backend refuses them): scoped on."""
    if backend != "jax":
        return contextlib.nullcontext()
    import jax

    return jax.enable_x64(True)


def _with(name: str, index: tuple, value) -> np.ndarray:
    x = good_inputs()[name].copy()
    x[index] = value
    return x


BAD_INPUTS = [
    # (case id, overrides, argument named in the message, a phrase of the expectation)
    ("rewards-rank", dict(rewards=np.zeros((T, B, N))), "rewards", "[T, B]"),
    ("rewards-length", dict(rewards=np.zeros((T + 1, B))), "rewards", "[T, B]"),
    ("dones-shape", dict(dones=np.zeros((T, B + 1))), "dones", "[T, B]"),
    ("values-not-T+1", dict(values=np.zeros((T, B, N))), "values", "T+1"),
    ("values-rank", dict(values=np.zeros((T + 1,))), "values", "[T+1, B, N]"),
    ("values-agents", dict(values=np.zeros((T + 1, B, N + 1))), "values", "[T+1, B, N]"),
    ("logp-rank", dict(logp_target=np.zeros((T, B)), logp_behaviour=np.zeros((T, B))), "logp_target", "[T, B, N]"),
    ("logp-shapes-differ", dict(logp_behaviour=np.zeros((T, B, N + 1))), "logp_behaviour", "same shape"),
    ("mask-shape", dict(mask=np.ones((T, B))), "mask", "[T, B, N]"),
    ("not-an-array", dict(rewards=[[0.0] * B] * T), "rewards", "numpy.asarray"),
    ("rewards-nan", dict(rewards=_with("rewards", (1, 1), np.nan)), "rewards", "finite"),
    ("values-inf", dict(values=_with("values", (T, 0, 1), np.inf)), "values", "finite"),
    ("dones-nan", dict(dones=_with("dones", (0, 0), np.nan)), "dones", "finite"),
    ("logp-target-nan", dict(logp_target=_with("logp_target", (0, 0, 0), np.nan)), "logp_target", "finite"),
    ("logp-behaviour-neginf", dict(logp_behaviour=_with("logp_behaviour", (0, 0, 0), -np.inf)), "logp_behaviour", "finite"),
    ("logp-target-positive", dict(logp_target=_with("logp_target", (2, 1, 0), 0.3)), "logp_target", "<= 0"),
    ("logp-behaviour-positive", dict(logp_behaviour=_with("logp_behaviour", (0, 2, 1), 1e-3)), "logp_behaviour", "<= 0"),
    ("dones-not-binary", dict(dones=_with("dones", (1, 0), 0.5)), "dones", "0/1"),
    ("mask-not-binary", dict(mask=np.full((T, B, N), 2.0)), "mask", "0/1"),
    ("gamma-one", dict(gamma=1.0), "gamma", "[0, 1)"),
    ("gamma-negative", dict(gamma=-0.1), "gamma", "[0, 1)"),
    ("gamma-not-number", dict(gamma="0.9"), "gamma", "[0, 1)"),
    ("lam-above-one", dict(lam=1.5), "lam", "[0, 1]"),
    ("lam-negative", dict(lam=-0.01), "lam", "[0, 1]"),
    ("eta-zero", dict(eta=0.0), "eta", "> 0"),
    ("eta-negative", dict(eta=-1.0), "eta", "> 0"),
    ("eta-inf", dict(eta=float("inf")), "eta", "> 0"),
    ("eta-tiny", dict(eta=1e-40), "eta", "usable range [1e-30, 1e+30]"),
    ("eta-denormal", dict(eta=5e-324), "eta", "usable range [1e-30, 1e+30]"),
    ("eta-huge", dict(eta=1e308), "eta", "usable range [1e-30, 1e+30]"),
    ("rewards-too-large", dict(rewards=_with("rewards", (0, 0), 1e308)), "rewards", "usable range"),
    ("values-too-large", dict(values=_with("values", (T, 2, 0), -2e307)), "values", "usable range"),
    ("logp-behaviour-below-smallest-normal", dict(logp_behaviour=_with("logp_behaviour", (1, 1, 1), -709.0)),
     "logp_behaviour", "usable range"),
    ("correction-unknown", dict(correction="vtrace"), "correction", "'dt'"),
]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize(
    "overrides, argument, expectation", [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises_value_error_naming_the_argument(backend, overrides, argument, expectation):
    with pytest.raises(ValueError) as excinfo:
        call(backend, **overrides)
    message = str(excinfo.value)
    assert message.startswith(argument + " "), message
    assert expectation in message, message


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_good_input_passes(backend):
    out = call(backend)
    assert np.shape(out.advantages) == (T, B, N)
    assert np.shape(out.value_targets) == (T, B, N)


def test_state_value_is_accepted_and_means_the_same_value_for_every_agent():
    base = good_inputs()
    state_values = base["values"][:, :, 0]
    shared = reference.gpae(
        base["rewards"], state_values, base["dones"], base["logp_target"], base["logp_behaviour"],
        gamma=0.9, lam=0.8,
    )
    tiled = reference.gpae(
        base["rewards"], np.repeat(state_values[:, :, None], N, axis=2), base["dones"],
        base["logp_target"], base["logp_behaviour"], gamma=0.9, lam=0.8,
    )
    np.testing.assert_array_equal(shared.advantages, tiled.advantages)
    np.testing.assert_array_equal(shared.value_targets, tiled.value_targets)


def test_boolean_dones_and_mask_are_accepted():
    base = good_inputs()
    dones = np.zeros((T, B), bool)
    dones[1, 0] = True
    as_float = reference.gpae(**{**base, "dones": dones.astype(float)}, gamma=0.9, lam=0.8)
    as_bool = reference.gpae(**{**base, "dones": dones}, gamma=0.9, lam=0.8,
                             mask=np.ones((T, B, N), bool))
    np.testing.assert_array_equal(as_float.advantages, as_bool.advantages)


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match=re.escape("backend must be one of")):
        call("tensorflow")


def test_trace_coefficients_validates_its_arguments():
    base = good_inputs()
    with pytest.raises(ValueError, match="^correction "):
        gpae_ref.trace_coefficients(base["logp_target"], base["logp_behaviour"], correction="x")
    with pytest.raises(ValueError, match="^eta "):
        gpae_ref.trace_coefficients(base["logp_target"], base["logp_behaviour"], eta=0)
    with pytest.raises(ValueError, match="^logp_behaviour "):
        gpae_ref.trace_coefficients(base["logp_target"], base["logp_behaviour"][:, :1])
    with pytest.raises(ValueError, match="^logp_target "):
        gpae_ref.trace_coefficients(-base["logp_target"], base["logp_behaviour"])


# ----------------------------------------------------------------------------
# The Numba backend checks contents inside its kernel's pass: the count it
# returns must see every bad input that check_values names.
# ----------------------------------------------------------------------------

CONTENT_CASES = [c for c in BAD_INPUTS if c[3] in ("finite", "<= 0", "0/1", "usable range")]


def _run_numba(**overrides):
    from gpae_ref.kernels.numba_cpu import run_numba

    arrays = good_inputs()
    mask = overrides.pop("mask", None)
    arrays.update(overrides)
    return run_numba(**arrays, gamma=0.9, lam=0.9, correction="dt", eta=1.02, mask=mask)[1]


@pytest.mark.parametrize("overrides", [c[1] for c in CONTENT_CASES], ids=[c[0] for c in CONTENT_CASES])
def test_numba_kernel_counts_every_bad_content(overrides):
    assert _run_numba() == 0
    assert _run_numba(**overrides) >= 1


@pytest.mark.parametrize("where", ["bootstrap-row", "first-row"])
def test_numba_kernel_checks_shared_values_and_the_bootstrap_row(where):
    base = good_inputs()
    t = T if where == "bootstrap-row" else 0
    shared = base["values"][:, :, 0].copy()
    shared[t, 1] = np.nan
    assert _run_numba(values=shared) >= 1
    per_agent = base["values"].copy()
    per_agent[t, 2, 1] = -np.inf
    assert _run_numba(values=per_agent) >= 1


def test_numba_kernel_check_on_the_parallel_path():
    from gpae_ref.kernels import numba_cpu

    rng = np.random.default_rng(1)
    t_, b_, n_ = 64, 1500, 3  # above PARALLEL_MIN_ELEMENTS: several blocks
    assert t_ * b_ * n_ >= numba_cpu.PARALLEL_MIN_ELEMENTS
    lt = -rng.uniform(0, 1, (t_, b_, n_)).astype(np.float32)
    arrays = dict(rewards=np.zeros((t_, b_), np.float32), values=np.zeros((t_ + 1, b_, n_), np.float32),
                  dones=np.zeros((t_, b_), np.float32), logp_target=lt, logp_behaviour=lt.copy())
    kw = dict(gamma=0.9, lam=0.9, correction="st", eta=1.02)
    assert numba_cpu.run_numba(**arrays, **kw)[1] == 0
    arrays["logp_behaviour"][5, b_ - 1, n_ - 1] = 0.5  # in the last, uneven block
    assert numba_cpu.run_numba(**arrays, **kw)[1] == 1
    with pytest.raises(ValueError, match=r"^logp_behaviour .*\(5, 1499, 2\)"):
        gpae_ref.gpae(**arrays, **kw, backend="numba")


# ----------------------------------------------------------------------------
# No NaN from finite inputs: exact on every backend, or refused with the usable range
# ----------------------------------------------------------------------------


def _agree_with_reference(backend: str, arrays: dict, **kw):
    """Finite outputs on ``backend``, equal to the reference's within its compute dtype's tolerance."""
    from gpae_ref.dtypes import compute_dtype
    from gpae_ref.tolerances import tolerance

    with _x64(backend):
        got = [np.asarray(x, np.float64) for x in gpae_ref.gpae(**arrays, **kw, backend=backend)]
    want = reference.gpae(**arrays, **kw)
    tol = tolerance(np.float64 if backend == "numpy" else compute_dtype(arrays["logp_target"]))
    for g, w in zip(got, want):
        assert np.all(np.isfinite(g)) and np.all(np.isfinite(w))
        np.testing.assert_allclose(g, w, rtol=tol.rtol, atol=tol.atol * max(1.0, np.abs(w).max()))


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eta", [1e-30, 1e30])
def test_eta_at_the_ends_of_its_usable_range_is_exact(backend, dtype, eta):
    """eta = 1e-40 gave NaN value targets on JAX (eta flushed to 0, then 0/0); at the ends of
    the usable range every backend matches the reference, own log-ratios near 0 and near -100."""
    arrays = good_inputs(dtype)
    arrays["logp_target"][:, :, 0] = dtype(-100.0)  # exp underflows float32: eta * 0, never inf * 0
    _agree_with_reference(backend, arrays, gamma=0.9, lam=0.95, correction="dt", eta=eta)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_alternating_huge_own_log_ratios_are_refused(backend):
    """Own log-ratios of +-1.7e308 alternating over 16 agents (joint log-ratio finite) gave NaN
    on the reference (pairwise summation meets inf - inf) and other numbers elsewhere: a
    positive 1.7e308 needs a behaviour log-prob of -1.7e308, outside its usable range."""
    t, b, n = 2, 1, 16
    even = (np.arange(n) % 2 == 0)[None, None, :].repeat(t, 0)
    lt = np.where(even, 0.0, -1.7e308)
    lb = np.where(even, -1.7e308, 0.0)
    with pytest.raises(ValueError, match=r"^logp_behaviour .*usable range of float64 .*\[-708.39"):
        with _x64(backend):
            gpae_ref.gpae(np.zeros((t, b)), np.zeros((t + 1, b, n)), np.zeros((t, b)), lt, lb,
                          gamma=0.9, lam=0.9, correction="st", backend=backend)


# A target log-prob sum past -max is -inf on purpose (kernels/cuda.py); the CUDA simulator adds
# NumPy scalars, which warn where a GPU is silent.
@pytest.mark.filterwarnings("ignore:overflow encountered in scalar add:RuntimeWarning")
@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_at_the_ends_of_their_usable_ranges_are_exact(backend, dtype):
    """Rewards and values at +-max / 4T, behaviour log-probs at log(smallest normal), target
    log-probs at -max: finite on every backend and equal to the reference."""
    from gpae_ref.validation import limits

    lim = limits(dtype, T)
    arrays = good_inputs(dtype)
    arrays = {k: np.concatenate([v] * 2, axis=-1) if v.ndim == 3 else v for k, v in arrays.items()}
    # N = 4: three agents' target log-probs at -max sum past -max (the joint log-ratio is -inf)
    arrays["rewards"][:] = lim.value_max
    arrays["values"][:] = -lim.value_max
    arrays["logp_behaviour"][:, :, 0] = lim.behaviour_min
    arrays["logp_target"][:, 1, :] = lim.target_min
    for correction in ("none", "it", "st", "dt"):
        _agree_with_reference(backend, arrays, gamma=0.99, lam=1.0, correction=correction, eta=1.02)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_full_correction_that_overflows_warns_once_naming_the_fix(backend):
    """`full` multiplies untruncated joint ratios along the trace: with behaviour log-probs of
    -700 on 4 agents each trace is exp(2800), beyond float64. The result stays inf (as in the
    reference, in every backend), but no longer silently: one warning naming the fix."""
    import warnings

    overrides = dict(values=np.ones((T + 1, B, N * 2)), logp_target=np.zeros((T, B, N * 2)),
                     logp_behaviour=np.full((T, B, N * 2), -700.0), lam=0.9, gamma=0.9)
    with pytest.warns(gpae_ref.FullOverflowWarning, match=r"^correction='full' overflowed: .*'dt'") as caught:
        out = call(backend, correction="full", **overrides)
    assert len(caught) == 1 and np.isinf(np.asarray(out.advantages)).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same inputs truncated: finite, no warning
        out = call(backend, correction="dt", **overrides)
    assert np.all(np.isfinite(np.asarray(out.advantages)))


def test_low_precision_float_dtypes_are_refused_with_the_cast_that_fixes_them():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(ValueError, match=r"^rewards has dtype bfloat16, .*astype\(np.float32\)"):
        call("numpy", rewards=good_inputs()["rewards"].astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("name", ["gamma", "lam", "eta"])
def test_a_traced_scalar_under_jit_says_how_to_pass_it(name):
    jax = pytest.importorskip("jax")
    arrays = {k: jax.numpy.asarray(v, "float32") for k, v in good_inputs().items()}
    scalars = dict(gamma=0.99, lam=0.95, eta=1.02)

    def f(x):
        return gpae_ref.gpae(**arrays, **{**scalars, name: x}).advantages

    with pytest.raises(ValueError, match=rf"^{name} must be a concrete number.*static_argnames"):
        jax.jit(f)(0.5)
