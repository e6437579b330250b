"""The one dtype rule (``gpae_ref.corrections.check_dtypes``), the same on every backend.

Every dtype either computes correctly (against the float64 reference, within
``gpae_ref.FLOAT32_TOL`` / ``FLOAT64_TOL`` for the compute dtype) or gets a
ValueError naming the argument. Also: scalars given as NumPy scalars or 0-d
arrays, values beyond the compute dtype's range, JAX without x64, and ``out=``.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest

import gpae_ref
from gpae_ref.tolerances import FLOAT32_TOL, FLOAT64_TOL, tolerance
from gpae_ref.reference import gpae as reference_gpae

T, B, N = 3, 2, 3
KW = dict(gamma=0.9, lam=0.95, correction="dt", eta=1.02)


def _have_cuda() -> bool:
    from numba import cuda

    return cuda.is_available()


BACKENDS = ["numpy", "numba"]
if _have_cuda():
    BACKENDS.append("cuda")
if importlib.util.find_spec("jax") is not None:
    BACKENDS.append("jax")


def inputs(dtype=np.float64, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    lt = -rng.uniform(0, 2, (T, B, N))
    return dict(
        rewards=rng.uniform(-1, 1, (T, B)).astype(dtype),
        values=rng.uniform(-1, 1, (T + 1, B, N)).astype(dtype),
        dones=(np.arange(T * B).reshape(T, B) % 4 == 1).astype(dtype),
        logp_target=lt.astype(dtype),
        logp_behaviour=np.minimum(0, lt + rng.uniform(-1, 1, (T, B, N))).astype(dtype),
    )


@contextlib.contextmanager
def x64(backend: str, on: bool = True):
    """Scoped JAX x64 for the jax backend (float64 there needs it); nothing otherwise."""
    if backend != "jax":
        yield
        return
    import jax

    with jax.enable_x64(on):
        yield


def run(backend: str, arrays: dict, **kw):
    with x64(backend):
        out = gpae_ref.gpae(**arrays, **{**KW, **kw}, backend=backend)
        return [np.asarray(x) for x in out]


def assert_close_to_reference(got, arrays, dtype, **kw):
    want = reference_gpae(**arrays, **{**KW, **kw})
    atol, rtol = tolerance(dtype)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g.astype(np.float64), w, atol=atol * max(1, np.abs(w).max()),
                                   rtol=rtol)


def test_tolerances_are_importable_constants():
    assert gpae_ref.FLOAT32_TOL is FLOAT32_TOL and gpae_ref.FLOAT64_TOL is FLOAT64_TOL
    assert FLOAT64_TOL.atol <= 1e-12 and FLOAT32_TOL.rtol < 1e-4
    assert tolerance(np.float32) == FLOAT32_TOL and tolerance(np.float64) == FLOAT64_TOL


# ----------------------------------------------------------------------------
# refused dtypes: a ValueError naming the argument, on every backend
# ----------------------------------------------------------------------------

REFUSED = [
    # (case id, argument, replacement dtype or builder, phrase)
    ("complex-rewards", "rewards", np.complex128, "real"),
    ("complex-values", "values", np.complex64, "real"),
    ("complex-logp", "logp_target", np.complex128, "real"),
    ("complex-dones", "dones", np.complex128, "real"),
    ("bool-logp-target", "logp_target", np.bool_, "bool"),
    ("bool-logp-behaviour", "logp_behaviour", np.bool_, "bool"),
    ("bool-rewards", "rewards", np.bool_, "bool"),
    ("bool-values", "values", np.bool_, "bool"),
    ("object-rewards", "rewards", object, "numeric dtype"),
    ("string-dones", "dones", "U1", "numeric dtype"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("argument, dtype, phrase", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_dtypes_name_the_argument(backend, argument, dtype, phrase):
    arrays = inputs()
    x = arrays[argument]
    arrays[argument] = (x.astype(str).astype(dtype) if np.dtype(dtype).kind == "U"
                        else x.astype(dtype))
    with pytest.raises(ValueError) as e:
        run(backend, arrays)
    assert str(e.value).startswith(argument + " "), str(e.value)
    assert phrase in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_complex_mask_is_refused(backend):
    with pytest.raises(ValueError, match="^mask .*real"):
        run(backend, inputs(), mask=np.ones((T, B, N), np.complex64))


# ----------------------------------------------------------------------------
# accepted dtypes: computed correctly, in the compute dtype of the rule
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flag_dtype", [np.float16, np.int8, np.uint8, np.bool_, np.float32])
def test_flags_in_any_real_dtype(backend, flag_dtype):
    arrays = inputs(np.float32)
    arrays["dones"] = arrays["dones"].astype(flag_dtype)
    mask = (np.arange(T * B * N).reshape(T, B, N) % 5 != 2).astype(flag_dtype)
    got = run(backend, arrays, mask=mask)
    assert_close_to_reference(got, arrays, np.float64 if backend == "numpy" else np.float32,
                              mask=mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_dones_not_binary_is_a_value_error(backend):
    arrays = inputs(np.float32)
    arrays["dones"] = np.full((T, B), 0.5, np.float16)
    with pytest.raises(ValueError, match="^dones .*0/1"):
        run(backend, arrays)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("int_dtype", [np.int32, np.int64, np.int8])
def test_integer_log_probs_compute_in_float64(backend, int_dtype):
    arrays = inputs()
    # integer log-probs are whole numbers <= 0 (e.g. log-probs rounded by a user): -2..0
    arrays["logp_target"] = np.round(arrays["logp_target"]).astype(int_dtype)
    arrays["logp_behaviour"] = np.round(arrays["logp_behaviour"]).astype(int_dtype)
    arrays["rewards"] = arrays["rewards"] * 7.3  # would be truncated by an int32 computation
    got = run(backend, arrays)
    assert_close_to_reference(got, arrays, np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_rewards_and_values_with_float32_log_probs(backend):
    arrays = inputs(np.float32)
    arrays["rewards"] = np.arange(T * B).reshape(T, B) % 3 - 1
    arrays["values"] = (np.arange((T + 1) * B * N).reshape(T + 1, B, N) % 5 - 2).astype(np.int16)
    got = run(backend, arrays)
    assert_close_to_reference(got, arrays, np.float64 if backend == "numpy" else np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_inputs_compute_in_float64(backend):
    arrays = {k: v.astype(np.float16) for k, v in inputs().items()}
    got = run(backend, arrays)
    assert_close_to_reference(got, arrays, np.float64)


# ----------------------------------------------------------------------------
# beyond the compute dtype's range: refused, never a silent inf
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("argument, value", [("values", 1e39), ("rewards", -3e38 * 10),
                                             ("logp_behaviour", -1e39)])
def test_float64_beyond_float32_range_in_a_float32_call(backend, argument, value):
    arrays = inputs(np.float32)
    big = arrays[argument].astype(np.float64)
    big.flat[1] = value
    arrays[argument] = big
    if backend == "numpy" and argument == "logp_behaviour":  # below log(smallest normal) too
        with pytest.raises(ValueError, match="^logp_behaviour .*range of float64"):
            run(backend, arrays)
        return
    if backend == "numpy":  # the reference computes in float64: exact, finite
        got = run(backend, arrays)
        assert all(np.all(np.isfinite(g)) for g in got)
        return
    with pytest.raises(ValueError) as e:
        run(backend, arrays)
    assert str(e.value).startswith(argument + " ") and "range of float32" in str(e.value)


# ----------------------------------------------------------------------------
# scalars
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_scalars_as_numpy_scalars_and_0d_arrays(backend):
    arrays = inputs()
    want = run(backend, arrays)
    for gamma, lam, eta in ((np.array(0.9), np.array(0.95), np.array(1.02)),
                            (np.float64(0.9), np.float32(0.95), np.float64(1.02))):
        got = run(backend, arrays, gamma=gamma, lam=lam, eta=eta)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6 if isinstance(lam, np.float32) else 0)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name, value", [("gamma", np.array([0.9])), ("gamma", np.array(True)),
                                         ("gamma", 0.9 + 0j), ("lam", np.array(0.5 + 0.1j)),
                                         ("eta", np.array("1.02")), ("gamma", np.array(1.0))])
def test_bad_scalars_name_the_argument(backend, name, value):
    with pytest.raises(ValueError, match=f"^{name} "):
        run(backend, inputs(), **{name: value})


# ----------------------------------------------------------------------------
# JAX: float64 needs x64 (refused without it), and then matches the reference to 1e-12
# ----------------------------------------------------------------------------


def test_jax_float64_without_x64_is_refused():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(False):
        with pytest.raises(ValueError) as e:
            gpae_ref.gpae(**inputs(), **KW, backend="jax")
    msg = str(e.value)
    assert msg.startswith("logp_target ") and "jax_enable_x64" in msg and "float32" in msg
    with jax.enable_x64(False):  # float32 log-probs: computes in float32, no complaint
        got = gpae_ref.gpae(**inputs(np.float32), **KW, backend="jax")
    assert got.advantages.dtype == np.float32


@pytest.mark.parametrize("correction", gpae_ref.CORRECTIONS)
def test_jax_with_x64_matches_reference_to_1e12(correction):
    jax = pytest.importorskip("jax")
    arrays = inputs(seed=4)
    kw = dict(KW, correction=correction)
    with jax.enable_x64(True):
        got = gpae_ref.gpae(**{k: jax.numpy.asarray(v) for k, v in arrays.items()}, **kw)
        assert got.advantages.dtype == np.float64
        got = [np.asarray(g) for g in got]
    want = reference_gpae(**arrays, **kw)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# out=: preallocated outputs, checked for shape, dtype, layout and aliasing
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "jax"])
def test_out_is_written_and_returned(backend):
    arrays = inputs(np.float32)
    dtype = np.float64 if backend == "numpy" else np.float32
    out = (np.full((T, B, N), np.nan, dtype), np.full((T, B, N), np.nan, dtype))
    got = gpae_ref.gpae(**arrays, **KW, backend=backend, out=out)
    assert got.advantages is out[0] and got.value_targets is out[1]
    assert_close_to_reference(out, arrays, dtype)


def _bad_outs():
    arrays = inputs(np.float32)
    good = lambda: np.empty((T, B, N), np.float32)  # noqa: E731
    ro = good()
    ro.flags.writeable = False
    shared = good()
    return arrays, [
        ("not-a-pair", good(), "pair"),
        ("wrong-dtype", (np.empty((T, B, N), np.float64), good()), "dtype float32"),
        ("wrong-shape", (good(), np.empty((T, B, N + 1), np.float32)), "shape"),
        ("not-contiguous", (np.empty((T, N, B), np.float32).transpose(0, 2, 1), good()), "C-contiguous"),
        ("read-only", (good(), ro), "writeable"),
        ("list-not-array", ([[0.0]], good()), "NumPy array"),
        ("overlap-each-other", (shared, shared), "overlap"),
        ("overlap-an-input", (arrays["logp_target"], good()), "logp_target"),
    ]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("jax", "numpy")])
@pytest.mark.parametrize("case", [c[0] for c in _bad_outs()[1]])
def test_bad_out_names_out(backend, case):
    arrays, cases = _bad_outs()
    _, out, phrase = next(c for c in cases if c[0] == case)
    with pytest.raises(ValueError) as e:
        gpae_ref.gpae(**arrays, **KW, backend=backend, out=out)
    assert str(e.value).startswith("out "), str(e.value)
    assert phrase in str(e.value)


def test_out_with_jax_is_refused():
    jax = pytest.importorskip("jax")
    arrays = {k: jax.numpy.asarray(v) for k, v in inputs(np.float32).items()}
    with pytest.raises(ValueError, match="^out .*jax"):
        gpae_ref.gpae(**arrays, **KW, out=(np.empty((T, B, N), np.float32),) * 2)


# ----------------------------------------------------------------------------
# byte order, integer width, long double, masked arrays: the rule on every backend
# ----------------------------------------------------------------------------


def _two_agents():
    """Issue 26's case: own log-ratio 1 for both agents, value 1 then 0, no reward."""
    lt = np.full((1, 1, 2), -1.0, np.float32)
    lb = np.full((1, 1, 2), -2.0, np.float32)
    values = np.zeros((2, 1, 2))
    values[0] = 1.0
    return dict(rewards=np.zeros((1, 1)), values=values, dones=np.zeros((1, 1)),
                logp_target=lt, logp_behaviour=lb)


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_endian_is_read_as_its_values_on_a_compiled_shape(backend):
    """'>f4' gave JAX's raw TypeError on a new shape, and value targets 0.632 instead of 0
    once the shape was compiled; the result must equal the native array's, bit for bit."""
    arrays = _two_agents()
    native = run(backend, arrays, gamma=0.9, lam=0.9)
    np.testing.assert_array_equal(native[1], 0.0)
    for name in ("logp_behaviour", "logp_target", "values", "rewards", "dones"):
        swapped = dict(arrays, **{name: arrays[name].astype(arrays[name].dtype.newbyteorder(">"))})
        got = run(backend, swapped, gamma=0.9, lam=0.9)
        for g, w in zip(got, native):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_endian_on_a_fresh_shape(backend):
    arrays = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in inputs(np.float32, seed=7).items()}
    arrays = {k: v[:, :1] if v.ndim > 1 else v for k, v in arrays.items()}  # a shape no other test uses
    got = run(backend, arrays)
    assert_close_to_reference(got, arrays, np.float64 if backend == "numpy" else np.float32)


def test_int64_rewards_with_jax_x64_off_are_not_wrapped():
    """2**32 + 1 wrapped to 1 in JAX's 32-bit mode; it is converted to float32 like numba does."""
    jax = pytest.importorskip("jax")
    zeros = np.zeros((1, 1, 1), np.float32)
    args = (np.array([[2**32 + 1]]), np.zeros((2, 1, 1), np.float32), np.zeros((1, 1)), zeros, zeros)
    with jax.enable_x64(False):
        got = gpae_ref.gpae(*args, gamma=0.9, lam=0.9, backend="jax")
    want = gpae_ref.gpae(*args, gamma=0.9, lam=0.9, backend="numba")
    np.testing.assert_array_equal(np.asarray(got.advantages), want.advantages)
    assert float(want.advantages[0, 0, 0]) == pytest.approx(2**32 + 1, rel=FLOAT32_TOL.rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("argument", ["rewards", "values", "logp_target", "dones"])
def test_long_double_is_read_as_float64(backend, argument):
    arrays = inputs()
    arrays[argument] = arrays[argument].astype(np.longdouble)
    got = run(backend, arrays)
    want = run(backend, inputs())
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("argument", ["rewards", "values", "logp_behaviour", "dones"])
def test_masked_arrays(backend, argument):
    """Masked entries are refused, naming the argument and the fix; no masked entries: the data."""
    arrays = inputs()
    plain = run(backend, arrays)
    unmasked = dict(arrays, **{argument: np.ma.masked_array(arrays[argument])})
    for g, w in zip(run(backend, unmasked), plain):
        np.testing.assert_array_equal(g, w)
    hidden = np.zeros(arrays[argument].shape, bool)
    hidden.flat[1] = True
    masked = dict(arrays, **{argument: np.ma.masked_array(arrays[argument], mask=hidden)})
    with pytest.raises(ValueError, match=f"^{argument} is a NumPy masked array .*filled"):
        run(backend, masked)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_big_endian_float32_log_probs_compute_in_float32(backend):
    arrays = inputs(np.float32)
    arrays["logp_target"] = arrays["logp_target"].astype(">f4")
    got = run(backend, arrays)
    assert got[0].dtype == np.float32
