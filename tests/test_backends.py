"""Every backend of ``gpae_ref.gpae`` against the float64 NumPy reference.

Inputs are bounded (log-probs in [-3, 0], rewards and values in [-1, 1]) so
that a float32 backend can be held to a tight tolerance; the tolerance is said
once, in gpae_ref.tolerances (FLOAT32_TOL, FLOAT64_TOL). The CUDA kernel runs
under the simulator in CI
(NUMBA_ENABLE_CUDASIM=1, set by the Makefile before numba.cuda is imported);
the simulator is slow, so its cases are tiny.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpae_ref
from gpae_ref import CORRECTIONS, FLOAT32_TOL, FLOAT64_TOL, api  # CORRECTIONS: the one table
from gpae_ref.reference import gpae as reference_gpae

#: Per-dtype tolerance, stated once in gpae_ref.tolerances (FLOAT32_TOL, FLOAT64_TOL):
#: |got - ref| <= atol * scale + rtol * |ref|, with scale the largest |ref| of that
#: (env, agent) sequence (at least 1).
TOL = {np.dtype(np.float32): tuple(FLOAT32_TOL), np.dtype(np.float64): tuple(FLOAT64_TOL)}

ETAS = (0.5, 0.9, 1.0, 1.02, 1.5)
DONE_PATTERNS = ("none", "random", "all", "first", "last")


def make_inputs(seed, T, B, N, dtype, *, dones="random", shared=False, masked=False, full=False):
    """Bounded random inputs; ``full`` keeps log-ratios small so rho stays finite in float32."""
    rng = np.random.default_rng(seed)
    lt = -rng.uniform(0.0, 3.0, (T, B, N))
    spread = 0.1 if full else 1.5
    lb = np.minimum(0.0, lt - rng.uniform(-spread, spread, (T, B, N)))
    d = {
        "none": np.zeros((T, B)),
        "random": (rng.random((T, B)) < 0.2).astype(float),
        "all": np.ones((T, B)),
        "first": np.eye(T, 1, 0).repeat(B, axis=1),
        "last": np.eye(T, 1, -(T - 1)).repeat(B, axis=1),
    }[dones]
    values = rng.uniform(-1, 1, (T + 1, B) if shared else (T + 1, B, N))
    out = dict(
        rewards=rng.uniform(-1, 1, (T, B)).astype(dtype),
        values=values.astype(dtype),
        dones=d.astype(dtype),
        logp_target=lt.astype(dtype),
        logp_behaviour=lb.astype(dtype),
        mask=(rng.random((T, B, N)) < 0.8) if masked else None,
    )
    return out


def assert_matches_reference(got, inputs, **kwargs):
    """Both outputs of ``got`` within TOL of the float64 reference on the same inputs."""
    want = reference_gpae(**inputs, **kwargs)
    dtype = np.dtype(inputs["logp_target"].dtype)
    atol, rtol = TOL[dtype]
    for name, g, w in zip(("advantages", "value_targets"), got, want):
        g = np.asarray(g)
        assert g.shape == w.shape, name
        scale = np.maximum(1.0, np.abs(w).max(axis=0, keepdims=True))
        err = np.abs(g.astype(np.float64) - w)
        bound = atol * scale + rtol * np.abs(w)
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        assert np.all(err <= bound), (
            f"{name} off by {err[worst]:.3g} at {tuple(map(int, worst))} "
            f"(bound {bound[worst]:.3g}, ref {w[worst]:.6g}, got {g[worst]!r})"
        )


@st.composite
def cases(draw, max_T=64, max_B=6, max_N=32):
    """A random problem: shapes, dtype, dones pattern, correction, eta, mask, value layout."""
    correction = draw(st.sampled_from(CORRECTIONS))
    T = draw(st.integers(1, max_T))
    B = draw(st.integers(1, max_B))
    N = draw(st.integers(1, max_N))
    inputs = make_inputs(
        draw(st.integers(0, 2**31 - 1)), T, B, N,
        draw(st.sampled_from([np.float32, np.float64])),
        dones=draw(st.sampled_from(DONE_PATTERNS)),
        shared=draw(st.booleans()),
        masked=draw(st.booleans()),
        full=correction == "full",
    )
    kwargs = dict(
        gamma=draw(st.sampled_from([0.0, 0.5, 0.9, 0.99])),
        lam=draw(st.sampled_from([0.0, 0.5, 0.95, 1.0])),
        correction=correction,
        eta=draw(st.sampled_from(ETAS)),
    )
    return inputs, kwargs


# ----------------------------------------------------------------------------
# every backend, every row of the table of corrections
# ----------------------------------------------------------------------------


def _backend_inputs(backend, inputs):
    """Inputs as the backend's own users would pass them (JAX arrays for jax)."""
    if backend != "jax":
        return inputs
    import jax.numpy as jnp

    return {k: (jnp.asarray(v) if v is not None else None) for k, v in inputs.items()}


@pytest.mark.parametrize("backend", ["numba", "cuda", "jax"])
@pytest.mark.parametrize("correction", CORRECTIONS)
def test_every_backend_matches_reference_for_every_table_entry(backend, correction):
    if backend == "cuda":
        _cuda()
    if backend == "jax":
        pytest.importorskip("jax")
    for dtype, eta, masked, shared in ((np.float32, 1.02, True, False), (np.float32, 0.9, False, True)):
        inputs = make_inputs(11, 4, 2, 3, dtype, masked=masked, shared=shared,
                             full=correction == "full")
        kwargs = dict(gamma=0.9, lam=0.95, correction=correction, eta=eta)
        got = gpae_ref.gpae(**_backend_inputs(backend, inputs), **kwargs, backend=backend)
        assert_matches_reference([np.asarray(g) for g in got], inputs, **kwargs)


# ----------------------------------------------------------------------------
# numba (CPU)
# ----------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(cases())
def test_numba_matches_reference(case):
    inputs, kwargs = case
    got = gpae_ref.gpae(**inputs, **kwargs, backend="numba")
    assert got.advantages.dtype == inputs["logp_target"].dtype
    assert_matches_reference(got, inputs, **kwargs)


def test_numba_parallel_path_matches_serial_and_reference(monkeypatch):
    from gpae_ref.kernels import numba_cpu

    # T*B*N above PARALLEL_MIN_ELEMENTS: the prange path, several blocks, an uneven last one.
    T, B, N = 64, 1401, 3
    assert T * B * N >= numba_cpu.PARALLEL_MIN_ELEMENTS
    for correction, full in (("dt", False), ("full", True)):
        inputs = make_inputs(1, T, B, N, np.float32, masked=True, full=full)
        kwargs = dict(gamma=0.99, lam=0.95, correction=correction, eta=1.02)
        par = numba_cpu.gpae_numba(**inputs, **kwargs)
        assert_matches_reference(par, inputs, **kwargs)
        monkeypatch.setattr(numba_cpu, "PARALLEL_MIN_ELEMENTS", 1 << 62)
        ser = numba_cpu.gpae_numba(**inputs, **kwargs)
        monkeypatch.undo()
        for p, s_ in zip(par, ser):
            np.testing.assert_array_equal(p, s_)  # same arithmetic, same order


def test_numba_mixed_input_dtypes():
    # float64 rewards/values, float32 log-probs, bool dones, float mask: computes in float32.
    inputs = make_inputs(2, 9, 4, 5, np.float32, masked=True)
    inputs.update(
        rewards=inputs["rewards"].astype(np.float64),
        values=inputs["values"].astype(np.float64),
        dones=inputs["dones"].astype(bool),
        mask=inputs["mask"].astype(np.float64),
    )
    kwargs = dict(gamma=0.9, lam=0.8, correction="dt", eta=1.02)
    got = gpae_ref.gpae(**inputs, **kwargs, backend="numba")
    assert got.advantages.dtype == np.float32 and got.value_targets.dtype == np.float32
    assert_matches_reference(got, inputs, **kwargs)


def test_numba_out_buffers():
    from gpae_ref.kernels.numba_cpu import gpae_numba

    inputs = make_inputs(10, 6, 3, 4, np.float32)
    kwargs = dict(gamma=0.9, lam=0.9, correction="st", eta=1.02)
    out = (np.full((6, 3, 4), np.nan, np.float32), np.full((6, 3, 4), np.nan, np.float32))
    got = gpae_numba(**inputs, **kwargs, out=out)
    assert np.shares_memory(got.advantages, out[0]) and np.shares_memory(got.value_targets, out[1])
    assert_matches_reference(out, inputs, **kwargs)
    with pytest.raises(ValueError, match="advantages"):
        gpae_numba(**inputs, **kwargs, out=(out[0].astype(np.float64), out[1]))


def test_fast_exp_f32_error_bound():
    from numba import njit

    from gpae_ref.kernels import numba_cpu

    @njit
    def exp_all(x):
        out = np.empty_like(x)
        for j in range(x.size):
            out[j] = numba_cpu._exp_nonpos(x[j])
        return out

    x = np.concatenate([
        -np.geomspace(1e-8, -numba_cpu._EXP_F32_MIN_X, 400_000), np.linspace(-1.0, 0.0, 100_001),
    ]).astype(np.float32)
    got = exp_all(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= numba_cpu.EXP_F32_MAX_ULP
    below = np.array([-87.4, -100.0, -1e4, -np.inf], np.float32)
    assert np.all(exp_all(below) == 0.0)  # |error| < exp(-87.33) ~ 1.2e-38


# ----------------------------------------------------------------------------
# `full` overflows to inf by design: every backend must overflow like the reference
# ----------------------------------------------------------------------------


def overflow_inputs(dtype):
    """rho = e^800 at every step (inf in float32 and float64); a done at t=1 cuts the trace."""
    T, B, N = 4, 2, 32
    inputs = make_inputs(3, T, B, N, dtype, dones="none")
    lt = np.zeros((T, B, N), dtype)
    lb = np.full((T, B, N), -25.0, dtype)  # joint log-ratio 32 * 25 = 800
    dones = np.zeros((T, B), dtype)
    dones[1, 0] = 1.0
    inputs.update(logp_target=lt, logp_behaviour=lb, dones=dones)
    return inputs


def assert_same_overflow(got, inputs, **kwargs):
    want = reference_gpae(**inputs, **kwargs)
    for g, w in zip(got, want):
        g = np.asarray(g, np.float64)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(w))
        fin = np.isfinite(w)
        assert fin.any() and (~fin).any()  # the case really mixes both
        np.testing.assert_array_equal(g[~fin & ~np.isnan(w)], w[~fin & ~np.isnan(w)])
        np.testing.assert_allclose(g[fin], w[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_full_overflow_like_reference(dtype):
    inputs = overflow_inputs(dtype)
    kwargs = dict(gamma=0.9, lam=0.9, correction="full", eta=1.02)
    with pytest.warns(gpae_ref.FullOverflowWarning):
        assert_same_overflow(gpae_ref.gpae(**inputs, **kwargs, backend="numba"), inputs, **kwargs)


# ----------------------------------------------------------------------------
# cuda (numba.cuda; the simulator in CI)
# ----------------------------------------------------------------------------


def _cuda():
    """numba.cuda if a GPU or the simulator is usable, else skip (with the reason)."""
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set (make test sets it)")
    return cuda


@settings(deadline=None, max_examples=12)
@given(cases(max_T=5, max_B=2, max_N=4))
def test_cuda_matches_reference(case):
    _cuda()
    inputs, kwargs = case
    got = gpae_ref.gpae(**inputs, **kwargs, backend="cuda")
    assert isinstance(got.advantages, np.ndarray)  # host in, host out
    assert got.advantages.dtype == inputs["logp_target"].dtype
    assert_matches_reference(got, inputs, **kwargs)


@pytest.mark.parametrize("shared", [False, True])
def test_cuda_device_arrays_stay_on_device(shared):
    cuda = _cuda()
    inputs = make_inputs(4, 4, 2, 3, np.float32, shared=shared, masked=True)
    dev = {k: (cuda.to_device(v) if v is not None else None) for k, v in inputs.items()}
    kwargs = dict(gamma=0.95, lam=0.9, correction="dt", eta=1.02)
    got = gpae_ref.gpae(**dev, **kwargs)  # auto -> cuda
    assert api.is_device_array(got.advantages) and api.is_device_array(got.value_targets)
    host = [x.copy_to_host() for x in got]
    assert host[0].dtype == np.float32
    assert_matches_reference(host, inputs, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_full_overflow_like_reference(dtype):
    _cuda()
    inputs = overflow_inputs(dtype)
    kwargs = dict(gamma=0.9, lam=0.9, correction="full", eta=1.02)
    with pytest.warns(gpae_ref.FullOverflowWarning):
        assert_same_overflow(gpae_ref.gpae(**inputs, **kwargs, backend="cuda"), inputs, **kwargs)


def test_cuda_device_inputs_skip_content_checks_but_not_shapes():
    cuda = _cuda()
    inputs = make_inputs(5, 3, 2, 2, np.float32)
    dev = {k: (cuda.to_device(v) if v is not None else None) for k, v in inputs.items()}
    dev["rewards"] = cuda.to_device(inputs["rewards"][:2])
    with pytest.raises(ValueError, match="rewards"):
        gpae_ref.gpae(**dev, gamma=0.9, lam=0.9, backend="cuda")
    bad = dict(inputs, logp_target=inputs["logp_target"] + 5.0)  # host: contents are checked
    with pytest.raises(ValueError, match="logp_target"):
        gpae_ref.gpae(**bad, gamma=0.9, lam=0.9, backend="cuda")


# ----------------------------------------------------------------------------
# jax
# ----------------------------------------------------------------------------


@settings(deadline=None, max_examples=20)
@given(cases(max_T=16, max_B=3, max_N=8))
def test_jax_matches_reference(case):
    jax = pytest.importorskip("jax")
    inputs, kwargs = case
    x64 = inputs["logp_target"].dtype == np.float64
    with jax.enable_x64(x64):  # float64 needs x64; scoped so no other test sees it
        jinputs = {k: (jax.numpy.asarray(v) if v is not None else None) for k, v in inputs.items()}
        got = gpae_ref.gpae(**jinputs, **kwargs)  # auto -> jax
        assert isinstance(got.advantages, jax.Array)
        assert got.advantages.dtype == inputs["logp_target"].dtype
        assert_matches_reference([np.asarray(g) for g in got], inputs, **kwargs)


def test_jax_under_outer_jit():
    jax = pytest.importorskip("jax")
    inputs = make_inputs(6, 7, 3, 4, np.float32, shared=True, masked=True)
    kwargs = dict(gamma=0.99, lam=0.95, correction="dt", eta=1.02)

    @jax.jit
    def step(rewards, values, dones, logp_target, logp_behaviour, mask):
        out = gpae_ref.gpae(rewards, values, dones, logp_target, logp_behaviour, mask=mask,
                            **kwargs)  # tracers: auto -> jax, shapes checked, contents not
        return out.advantages * 1.0, out.value_targets

    got = step(**inputs)
    assert_matches_reference([np.asarray(g) for g in got], inputs, **kwargs)

    @jax.jit
    def bad(rewards, values, dones, logp_target, logp_behaviour):
        return gpae_ref.gpae(rewards, values[:-1], dones, logp_target, logp_behaviour,
                             gamma=0.9, lam=0.9, backend="jax")

    with pytest.raises(ValueError, match="values"):
        bad(**{k: v for k, v in inputs.items() if k != "mask"})


def test_jax_full_overflow_like_reference():
    jax = pytest.importorskip("jax")
    inputs = overflow_inputs(np.float64)
    kwargs = dict(gamma=0.9, lam=0.9, correction="full", eta=1.02)
    with jax.enable_x64(True):
        with pytest.warns(gpae_ref.FullOverflowWarning):
            got = gpae_ref.gpae(**inputs, **kwargs, backend="jax")
            assert_same_overflow([np.asarray(g) for g in got], inputs, **kwargs)


# ----------------------------------------------------------------------------
# dispatch, dtypes, errors, laziness
# ----------------------------------------------------------------------------


def test_auto_dispatch():
    x = np.zeros((2, 1, 1), np.float32)
    assert api._pick_backend(x) == "numba"
    jax = pytest.importorskip("jax")
    assert api._pick_backend(jax.numpy.asarray(x)) == "jax"
    picked = []
    jax.jit(lambda y: picked.append(api._pick_backend(y)) or y)(x)
    assert picked == ["jax"]  # a tracer
    from numba import cuda

    if cuda.is_available():
        assert api._pick_backend(cuda.to_device(x)) == "cuda"


def test_auto_on_numpy_uses_numba_and_keeps_dtype():
    for dtype in (np.float32, np.float64):
        inputs = make_inputs(7, 5, 2, 3, dtype)
        kwargs = dict(gamma=0.9, lam=0.9)
        got = gpae_ref.gpae(**inputs, **kwargs)
        assert got.advantages.dtype == dtype and got.value_targets.dtype == dtype
        np.testing.assert_array_equal(got.advantages,
                                      gpae_ref.gpae(**inputs, **kwargs, backend="numba").advantages)
    got = gpae_ref.gpae(**make_inputs(7, 5, 2, 3, np.float32), gamma=0.9, lam=0.9, backend="numpy")
    assert got.advantages.dtype == np.float64  # the reference is float64 whatever the input


def test_bad_backend_name():
    inputs = make_inputs(8, 2, 1, 1, np.float64)
    with pytest.raises(ValueError, match="backend"):
        gpae_ref.gpae(**inputs, gamma=0.9, lam=0.9, backend="torch")
    assert set(gpae_ref.BACKENDS) == {"auto", "numpy", "numba", "cuda", "jax"}


@pytest.mark.parametrize("backend", ["numba", "jax"])
def test_backends_validate_before_computing(backend):
    if backend == "jax":
        pytest.importorskip("jax")
    inputs = make_inputs(9, 3, 2, 2, np.float64)
    with pytest.raises(ValueError, match="logp_behaviour"):
        gpae_ref.gpae(**dict(inputs, logp_behaviour=inputs["logp_behaviour"] + 4.0),
                      gamma=0.9, lam=0.9, backend=backend)
    with pytest.raises(ValueError, match="dones"):
        gpae_ref.gpae(**dict(inputs, dones=inputs["dones"] + 0.5), gamma=0.9, lam=0.9, backend=backend)
    with pytest.raises(ValueError, match="gamma"):
        gpae_ref.gpae(**inputs, gamma=1.0, lam=0.9, backend=backend)


def test_import_is_light():
    code = "import sys, gpae_ref; print(sorted(m for m in ('numba', 'jax') if m in sys.modules))"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ----------------------------------------------------------------------------
# the spec's property checks (gpae_ref.verify) pass for every backend
# ----------------------------------------------------------------------------


#: Checks run per backend here. numpy and numba run all of them; the others a
#: subset that fits the test budget: the CUDA simulator runs a Python thread per GPU
#: thread (all checks: about 5 minutes), and jax compiles once per input shape
#: (all checks: about 50 s). Both pass every check when run in full.
VERIFY_CHECKS = {
    "numpy": None,
    "numba": None,
    "cuda": ("P6 reductions", "P7 symmetries", "matches reference"),
    "jax": ("P2", "P3/P4 operator", "P6 reductions"),
}


@pytest.mark.parametrize("backend", sorted(VERIFY_CHECKS))
def test_verify_passes(backend):
    if backend == "cuda":
        _cuda()
    estimator = partial(gpae_ref.gpae, backend=backend)
    checks = VERIFY_CHECKS[backend]
    if backend == "jax":
        jax = pytest.importorskip("jax")
        with jax.enable_x64(True):  # verify's default tolerances are float64's
            report = gpae_ref.verify(estimator, checks=checks)
    else:
        report = gpae_ref.verify(estimator, checks=checks)
    assert report.ok, str(report)


# ----------------------------------------------------------------------------
# the JAX scan under jit, vmap and grad
# ----------------------------------------------------------------------------


def test_jax_scan_under_vmap_matches_reference_per_seed():
    jax = pytest.importorskip("jax")
    from gpae_ref.jax_backend import gpae_jax

    seeds = [make_inputs(20 + s, 5, 2, 3, np.float32, masked=True) for s in range(3)]
    stacked = {k: np.stack([x[k] for x in seeds]) for k in seeds[0]}
    kwargs = dict(gamma=0.9, lam=0.95, correction="dt", eta=1.02)
    got = jax.jit(jax.vmap(lambda **a: gpae_jax(**a, **kwargs)))(**stacked)
    for s, inputs in enumerate(seeds):
        assert_matches_reference([np.asarray(g[s]) for g in got], inputs, **kwargs)


def test_jax_scan_gradients_match_finite_differences():
    jax = pytest.importorskip("jax")
    from gpae_ref.jax_backend import gpae_jax

    inputs = make_inputs(21, 4, 2, 3, np.float64)
    kwargs = dict(gamma=0.9, lam=0.95, correction="dt", eta=1.02)
    with jax.enable_x64(True):
        def loss(values, logp_target):
            out = gpae_jax(inputs["rewards"], values, inputs["dones"], logp_target,
                           inputs["logp_behaviour"], **kwargs)
            return (out.advantages ** 2).sum() + out.value_targets.sum()

        gv, gl = jax.jit(jax.grad(loss, argnums=(0, 1)))(inputs["values"], inputs["logp_target"])

        def ref_loss(values, logp_target):
            out = reference_gpae(**dict(inputs, values=values, logp_target=logp_target), **kwargs)
            return (out.advantages ** 2).sum() + out.value_targets.sum()

        eps = 1e-6
        for grad, name, idx in ((gv, "values", (2, 1, 0)), (gl, "logp_target", (1, 0, 2))):
            up, down = (dict(values=inputs["values"].copy(), logp_target=inputs["logp_target"].copy())
                        for _ in range(2))
            up[name][idx] += eps
            down[name][idx] -= eps
            fd = (ref_loss(**up) - ref_loss(**down)) / (2 * eps)
            assert float(grad[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-7), name


@pytest.mark.parametrize("eta", ETAS + (1e-3, 40.0))
@pytest.mark.parametrize("correction", ["none", "it", "st", "dt", "full"])
def test_jax_one_exp_coefficients_equal_the_table(correction, eta):
    """The scan's one-exp coefficient identities give the table's log-space c^i and min(1, rho^i)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from gpae_ref.jax_backend import coefficient_and_own_clip, trace_coefficients_jax

    rng = np.random.default_rng(7)
    log_rho = rng.normal(scale=2.0, size=(6, 5, 4))
    log_rho[0, 0] = [60.0, -60.0, 0.0, 3.0]  # far outside [log eta, -log eta]
    log_rho[0, 1] = [-300.0, 1.0, 1.0, 1.0]  # a vanishing own ratio
    with jax.enable_x64(True):
        coef, own_clip = coefficient_and_own_clip(jnp.asarray(log_rho), correction=correction, eta=eta)
        want = trace_coefficients_jax(jnp.asarray(log_rho), correction=correction, eta=jnp.asarray(eta))
        np.testing.assert_allclose(np.asarray(coef), np.asarray(want), rtol=1e-13, atol=0)
        np.testing.assert_allclose(np.asarray(own_clip), np.minimum(1.0, np.exp(log_rho)), rtol=1e-13)
        if correction != "full":  # every exp argument <= 0: finite gradients everywhere
            grads = jax.grad(lambda l: sum(x.sum() for x in coefficient_and_own_clip(
                l, correction=correction, eta=eta)))(jnp.asarray(log_rho))
            assert np.isfinite(np.asarray(grads)).all()
