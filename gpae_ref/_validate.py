"""What every backend shares: the table of corrections, the dtype rule, the tolerances, validation.

Every backend calls these functions before it computes anything, so a bad
input fails the same way whichever backend the user picked. Shape and dtype
checks work on anything with ``.shape`` and ``.dtype`` (NumPy, Numba device
arrays, JAX arrays, tracers); value checks (NaN/inf, log-probs > 0, dones not
0/1, values outside their usable ranges, ``limits``) need concrete host values and
are skipped by callers that cannot afford a device-to-host copy. The Numba
backend makes the value checks inside its kernel's pass and calls
``check_values`` only to name the culprit when that pass found one.
"""

from __future__ import annotations

import math
import numbers
from types import MappingProxyType
from typing import Any, Callable, NamedTuple

import numpy as np


class Correction(NamedTuple):
    """One row of the spec's table of trace corrections (section 4).

    With rho^i the own ratio, rho^-i the others' product and rho = rho^i rho^-i
    the joint one, and in log space l = log rho^i, L = log rho (so
    log rho^-i = L - l, never a product of N ratios):

    ``coefficient(own, others, eta, xp)``: c^i_t from ratios (the oracle's form,
    from probabilities of tiny games); ``log_coefficient(l, L, log_eta, xp)``:
    log c^i_t (the estimators' form). ``xp`` is an array module (numpy,
    jax.numpy); results broadcast against ``own`` / ``l``.
    """

    name: str
    code: int  # the integer the compiled kernels branch on
    formula: str  # c^i_t, as the spec and the docs write it
    log_formula: str  # log c^i_t in l and L
    summary: str
    truncated: bool  # c <= 1 everywhere: the per-agent operator contracts (P4)
    joint: bool  # needs the joint log-ratio L
    coefficient: Callable
    log_coefficient: Callable


#: The trace corrections, in the paper's order: the one place their names, codes
#: and formulas are defined. The reference, the JAX backend, the kernels (by
#: ``code``), the oracle, verify, the learner's config and the docs read them here.
CORRECTION_TABLE: tuple[Correction, ...] = (
    Correction("none", 0, "1", "0", "no correction: GAE on the per-agent values", True, False,
               lambda own, others, eta, xp: xp.ones_like(own),
               lambda l, L, log_eta, xp: xp.zeros_like(l)),
    Correction("it", 1, "min(1, rho^i)", "min(0, l)", "individual truncation", True, False,
               lambda own, others, eta, xp: xp.minimum(1.0, own),
               lambda l, L, log_eta, xp: xp.minimum(0.0, l)),
    Correction("st", 2, "min(1, rho)", "min(0, L)", "single truncation of the joint ratio", True, True,
               lambda own, others, eta, xp: xp.minimum(1.0, own * others),
               lambda l, L, log_eta, xp: xp.minimum(0.0, L)),
    Correction("dt", 3, "min(1, rho^i min(eta, rho^-i))", "min(0, l + min(log eta, L - l))",
               "DT-ISR, the default", True, True,
               lambda own, others, eta, xp: xp.minimum(1.0, own * xp.minimum(eta, others)),
               lambda l, L, log_eta, xp: xp.minimum(0.0, l + xp.minimum(log_eta, L - l))),
    Correction("full", 4, "rho", "L", "untruncated; for the oracle only (may fail to contract)",
               False, True,
               lambda own, others, eta, xp: own * others,
               lambda l, L, log_eta, xp: L),
)

#: The correction names, in table order.
CORRECTIONS: tuple[str, ...] = tuple(c.name for c in CORRECTION_TABLE)

#: Correction name -> the integer code the compiled kernels branch on (read-only).
CORRECTION_CODES = MappingProxyType({c.name: c.code for c in CORRECTION_TABLE})


def correction_row(name: str) -> Correction:
    """The table row of correction ``name``; ValueError naming ``correction`` otherwise."""
    for row in CORRECTION_TABLE:
        if row.name == name:
            return row
    raise ValueError(
        f"correction must be one of {', '.join(repr(c) for c in CORRECTIONS)}; got {name!r}."
    )


def correction_table_text(indent: str = "") -> str:
    """The table as aligned plain-text lines (for docstrings, the CLI and the docs)."""
    return "\n".join(
        f"{indent}{row.name:5s} c = {row.formula:32s} {row.summary}" for row in CORRECTION_TABLE
    )


class Tolerance(NamedTuple):
    """|got - ref| <= atol * scale + rtol * |ref| per element, against the float64 reference.

    ``scale`` is the largest |ref| of that (env, agent) sequence, at least 1:
    rounding in the recursion is relative to the terms summed, not to a result
    that may cancel. With scale = 1 it is the usual per-element test.
    """

    atol: float
    rtol: float


#: How closely a float32 computation (numba, cuda, jax on float32 inputs) matches
#: the float64 reference on inputs of moderate size (log-ratios within a few units,
#: |rewards|, |values| <= 1): the tolerance tests/test_backends.py holds every backend to.
FLOAT32_TOL = Tolerance(atol=2e-5, rtol=2e-5)
#: The same for a float64 computation (numba, cuda, and jax with x64 enabled).
FLOAT64_TOL = Tolerance(atol=1e-12, rtol=1e-12)


def tolerance(dtype: Any) -> Tolerance:
    """FLOAT32_TOL for float32, FLOAT64_TOL for float64."""
    return FLOAT32_TOL if np.dtype(dtype) == np.float32 else FLOAT64_TOL


# ----------------------------------------------------------------------------
# The dtype rule (one for every backend)
# ----------------------------------------------------------------------------

#: Arguments that hold numbers; their dtype may be integer or floating, never bool
#: or complex. dones and mask are flags: bool, integer or floating, read as 0 / nonzero.
REAL_ARGUMENTS = ("rewards", "values", "logp_target", "logp_behaviour")
FLAG_ARGUMENTS = ("dones", "mask")


def compute_dtype(logp_target: Any) -> np.dtype:
    """The dtype a fast backend computes and returns in: float32 if ``logp_target`` is
    float32 (of either byte order), float64 for every other accepted dtype (float64,
    float16, longer floats, integers).

    The NumPy reference always computes in float64. JAX computes in float64 only
    with x64 enabled: without it, ``gpae(..., backend="jax")`` raises instead of
    silently computing in float32 (see ``check_jax_dtype``).
    """
    dt = np.dtype(getattr(logp_target, "dtype", np.float64))
    return np.dtype(np.float32) if dt.newbyteorder("=") == np.float32 else np.dtype(np.float64)


#: dtypes every backend reads dones and mask in as they are (native byte order).
FLAG_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float32, np.float64))


def host_flags(x: np.ndarray) -> np.ndarray:
    """A host ``dones`` or ``mask`` array in a dtype every backend reads as it is: its own
    if in FLAG_DTYPES, else (float16, longer floats, the other byte order) float32 or
    float64 by size, which holds 0 and 1 exactly."""
    x = np.asarray(x)
    if x.dtype in FLAG_DTYPES:
        return x
    return x.astype(np.float32 if x.dtype.itemsize <= 4 else np.float64)


def host_real(x: Any, dtype: Any) -> Any:
    """A host (NumPy) rewards, values or log-probs array converted to the compute dtype
    ``dtype``, native byte order, as a plain ndarray (a masked array's data: check_dtypes
    has refused masked entries). The same rounding wherever it happens (NumPy's cast and
    every backend's in-graph cast round to nearest); non-NumPy arrays are returned as they are.
    """
    return np.asarray(x, dtype) if isinstance(x, np.ndarray) else x


def _dtype(name: str, x: Any) -> np.dtype:
    """x's dtype as NumPy's; a framework dtype NumPy does not know (PyTorch's) is read
    from the array's ``__cuda_array_interface__`` typestr."""
    try:
        return np.dtype(x.dtype)
    except (AttributeError, TypeError) as e:
        try:
            return np.dtype(x.__cuda_array_interface__["typestr"])
        except Exception:
            pass
        raise ValueError(
            f"{name} must be an array with a NumPy dtype; got {type(x).__name__}"
            f"{' of dtype ' + str(getattr(x, 'dtype', '')) if hasattr(x, 'dtype') else ''}."
        ) from e


def check_dtypes(rewards: Any, values: Any, dones: Any, logp_target: Any, logp_behaviour: Any,
                 mask: Any = None) -> np.dtype:
    """Apply the dtype rule; return the compute dtype (``compute_dtype(logp_target)``).

    rewards, values, log-probs: integer or floating (float16/32/64, longer floats
    are read as float64), in either byte order; dones, mask: bool, integer or
    floating. Complex is refused (its imaginary part would be dropped), bool where
    numbers are meant, anything else (object, strings, dates), and NumPy masked
    arrays with masked entries (no masked entries: read as their data). Raises
    ValueError naming the argument.
    """
    arrays = dict(rewards=rewards, values=values, dones=dones, logp_target=logp_target,
                  logp_behaviour=logp_behaviour, mask=mask)
    for name, x in arrays.items():
        if x is None:
            continue
        dt = _dtype(name, x)
        if dt.kind == "c":
            raise ValueError(
                f"{name} must be real; got complex dtype {dt} (its imaginary part would be "
                f"dropped). Pass {name}.real if that is what you mean."
            )
        if name in REAL_ARGUMENTS and dt.kind == "b":
            raise ValueError(
                f"{name} must hold numbers (integer or floating dtype); got bool. "
                f"Cast it, e.g. {name}.astype(np.float32)."
            )
        if dt.kind not in "biuf":
            raise ValueError(
                f"{name} must have a numeric dtype (bool only for dones and mask, integer or "
                f"floating); got {dt}."
            )
        _check_not_masked(name, x)
    return compute_dtype(logp_target)


def _check_not_masked(name: str, x: Any) -> None:
    """A NumPy masked array with masked entries is refused: what a masked entry should
    count as is the caller's to say. Without masked entries it is read as its data."""
    if isinstance(x, np.ma.MaskedArray) and np.ma.getmaskarray(x).any():
        bad = _index(np.ma.getmaskarray(x))
        hint = " (for dead or padded agents, pass mask= instead)" if name in (
            "logp_target", "logp_behaviour") else ""
        raise ValueError(
            f"{name} is a NumPy masked array with masked entries (the first at index {bad}), "
            f"whose hidden data would be read as values: pass {name}.filled(v) with the value v "
            f"they stand for{hint}."
        )


def check_jax_dtype(logp_target: Any) -> np.dtype:
    """The compute dtype for backend="jax"; ValueError if it is float64 and x64 is off.

    JAX without ``jax_enable_x64`` turns float64 into float32 silently (relative
    error about 1e-7 instead of 1e-16, in a package used as an oracle): refused.
    """
    dt = compute_dtype(logp_target)
    if dt == np.float64:
        import jax

        if not jax.config.jax_enable_x64:
            src = _dtype("logp_target", logp_target)
            raise ValueError(
                f"logp_target is {src}, so this call computes in float64, but JAX's 64-bit mode "
                f"is off and backend='jax' would compute in float32 without saying so. Enable it "
                f"(jax.config.update('jax_enable_x64', True) at startup, or the context manager "
                f"jax.enable_x64(True)) or pass float32 log-probs to compute in float32."
            )
    return dt


# ----------------------------------------------------------------------------
# Shapes and scalars
# ----------------------------------------------------------------------------


class Shapes(NamedTuple):
    """The sizes of one call: T time steps, B environments, N agents."""

    T: int
    B: int
    N: int
    shared_values: bool  # values given as a [T+1, B] state value


def _shape(name: str, x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(
            f"{name} must be an array with a .shape (NumPy, JAX or a device array); "
            f"got {type(x).__name__}. Wrap it with numpy.asarray first."
        )
    return tuple(int(s) for s in shape)


def _real_scalar(name: str, x: Any) -> float | None:
    """float(x) for a real number (Python, NumPy scalar or 0-d array; not bool), else None."""
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, numbers.Real):
        return float(x)
    dt = getattr(x, "dtype", None)
    if getattr(x, "shape", None) == () and dt is not None and np.dtype(dt).kind in "iuf":
        try:
            return float(x)
        except (TypeError, ValueError):  # e.g. a JAX tracer: no concrete value
            return None
    return None


#: The usable range of eta: eta and 1/eta stay 1e8 inside float32's normal range
#: (1.2e-38 .. 3.4e38), so no backend's float32 eta, eta rho^i (rho^i <= 1) or
#: rho^i eta / eta overflows or loses more than 1e-8 to underflow. Beyond it dt
#: is st (eta huge) or cuts every trace (eta tiny): use correction="st" or lam=0.
ETA_RANGE = (1e-30, 1e30)


class Scalars(NamedTuple):
    """gamma, lam and eta as Python floats, after their checks."""

    gamma: float
    lam: float
    eta: float


def check_scalars(*, gamma: Any, lam: Any, correction: Any, eta: Any) -> Scalars:
    """Raise ValueError for a discount, lambda, correction or eta out of range; return them as floats.

    Python numbers, NumPy scalars and 0-d arrays are accepted (``np.array(0.9)``);
    bools, complex numbers, strings and tracers are not.
    """
    g, lm, e = _real_scalar("gamma", gamma), _real_scalar("lam", lam), _real_scalar("eta", eta)
    if g is None or not 0.0 <= g < 1.0:
        raise ValueError(f"gamma must be a real number in [0, 1); got {gamma!r}.")
    if lm is None or not 0.0 <= lm <= 1.0:
        raise ValueError(f"lam must be a real number in [0, 1]; got {lam!r}.")
    if not isinstance(correction, str) or correction not in CORRECTIONS:
        raise ValueError(
            f"correction must be one of {', '.join(repr(c) for c in CORRECTIONS)}; got {correction!r}."
        )
    if e is None or not ETA_RANGE[0] <= e <= ETA_RANGE[1]:
        raise ValueError(
            f"eta must be a real number > 0 in its usable range [{ETA_RANGE[0]:g}, "
            f"{ETA_RANGE[1]:g}] (the paper uses 1.02 on SMAX; beyond the range, "
            f"correction='st' or lam=0 give the limits); got {eta!r}."
        )
    return Scalars(g, lm, e)


def check_logp_shapes(logp_target: Any, logp_behaviour: Any, mask: Any = None) -> tuple[int, int, int]:
    """Check the log-probs (and mask) are equal-shaped ``[T, B, N]``; return (T, B, N)."""
    lt = _shape("logp_target", logp_target)
    lb = _shape("logp_behaviour", logp_behaviour)
    if len(lt) != 3:
        raise ValueError(
            f"logp_target must have shape [T, B, N] (time, env, agent); got rank {len(lt)} shape {lt}."
        )
    if lb != lt:
        raise ValueError(
            f"logp_behaviour must have the same shape as logp_target {lt}; got {lb}."
        )
    if min(lt) < 1:
        raise ValueError(f"logp_target must have T, B, N >= 1; got shape {lt}.")
    if mask is not None:
        ms = _shape("mask", mask)
        if ms != lt:
            raise ValueError(f"mask must have shape [T, B, N] = {lt} or be None; got {ms}.")
    return lt


def check_shapes(
    rewards: Any,
    values: Any,
    dones: Any,
    logp_target: Any,
    logp_behaviour: Any,
    mask: Any = None,
) -> Shapes:
    """Check ranks and shapes against the time-major contract; return (T, B, N).

    Nothing is broadcast silently: the one shape freedom is ``values`` given
    as a ``[T+1, B]`` state value, which means the same value for every agent.
    """
    T, B, N = check_logp_shapes(logp_target, logp_behaviour, mask)
    rs = _shape("rewards", rewards)
    if rs != (T, B):
        raise ValueError(
            f"rewards must have shape [T, B] = {(T, B)} (one team reward per step and env); got {rs}."
        )
    ds = _shape("dones", dones)
    if ds != (T, B):
        raise ValueError(f"dones must have shape [T, B] = {(T, B)}; got {ds}.")
    vs = _shape("values", values)
    if vs == (T + 1, B, N):
        shared = False
    elif vs == (T + 1, B):
        shared = True
    else:
        hint = ""
        if len(vs) >= 1 and vs[0] == T:
            hint = " values needs T+1 rows: the last row is the bootstrap value of the state after step T-1."
        raise ValueError(
            f"values must have shape [T+1, B, N] = {(T + 1, B, N)} (per-agent values) "
            f"or [T+1, B] = {(T + 1, B)} (a state value); got {vs}.{hint}"
        )
    return Shapes(T, B, N, shared)


# ----------------------------------------------------------------------------
# Contents (host values)
# ----------------------------------------------------------------------------


def _index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_finite(name: str, x: np.ndarray) -> None:
    if not np.all(np.isfinite(x)):
        bad = _index(~np.isfinite(x))
        raise ValueError(f"{name} must be finite; found {x[bad]!r} at index {bad}.")


class Limits(NamedTuple):
    """The usable ranges of the real inputs in one compute dtype, as numbers of that dtype
    (so the Numba kernel's check of converted inputs and this module's check of the
    originals draw the same line): |rewards|, |values| <= ``value_max``; logp_target in
    [-max, 0]; logp_behaviour in [``behaviour_min``, 0]."""

    value_max: Any
    target_min: Any
    behaviour_min: Any


def limits(dtype: Any, T: int) -> Limits:
    """The usable ranges for compute dtype ``dtype`` and T time steps; why each is what it is:

    values and rewards: A^i_t sums at most T TD errors of |r| + 2 max|E| each (traces
    and gamma lam <= 1 for the truncated corrections), and v = E + min(1, rho^i) A: with
    |r|, |E| <= max / 4T nothing overflows (3T + 1 <= 4T).
    logp_behaviour: the behaviour policy took the action, so its probability is at least
    the dtype's smallest normal number; bounding it bounds every positive log-ratio, so the
    joint log-ratio (a sum over agents, in any order) never meets inf - inf, and a large
    negative one (a target log-prob near -max) only drives a trace to 0.
    """
    fi = np.finfo(dtype)
    f = np.dtype(dtype).type
    return Limits(f(fi.max / (4 * max(int(T), 1))), -fi.max, f(math.log(fi.tiny)))


def _why(name: str, dtype: np.dtype, T: int) -> str:
    if name in ("rewards", "values"):
        return (f"the advantage sums up to T = {T} TD errors of |r| + 2 max|E|, which must stay "
                f"within {dtype}'s range: rescale rewards and values")
    if name == "logp_behaviour":
        return (f"the behaviour policy took this action, so its probability cannot be below "
                f"{dtype}'s smallest normal number {np.finfo(dtype).tiny:.3g}: pass the log-probs "
                f"of the actions it took")
    return f"beyond {dtype}'s range: rescale"


def _check_range(name: str, x: np.ndarray, dtype: np.dtype, T: int) -> None:
    """Refuse a finite value outside ``name``'s usable range in the compute dtype (``limits``)."""
    lim = limits(dtype, T)
    lo, hi = {"rewards": (-lim.value_max, lim.value_max), "values": (-lim.value_max, lim.value_max),
              "logp_target": (lim.target_min, 0), "logp_behaviour": (lim.behaviour_min, 0)}[name]
    bad = ~((x >= lo) & (x <= hi))
    if np.any(bad):
        at = _index(bad)
        wider = (" (or pass float64 logp_target to compute in float64)"
                 if np.dtype(dtype) == np.float32 else "")
        raise ValueError(
            f"{name} holds {x[at]!r} at index {at}, outside the usable range of {np.dtype(dtype)} "
            f"for {name}, [{lo:.7g}, {hi:.7g}] (the dtype this call computes in); "
            f"{_why(name, np.dtype(dtype), T)}{wider}."
        )


def _check_binary(name: str, x: np.ndarray) -> None:
    if x.dtype != np.bool_ and not np.all((x == 0) | (x == 1)):
        bad = _index((x != 0) & (x != 1))
        raise ValueError(
            f"{name} must hold only 0/1 (or booleans); found {x[bad]!r} at index {bad}."
        )


def check_logp_values(logp_target: Any, logp_behaviour: Any, mask: Any = None,
                      dtype: Any = None) -> None:
    """Check the log-probs are finite, <= 0 and within their usable ranges in ``dtype``
    (``limits``; None: float64, the reference's), and the mask is 0/1."""
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    for name, x in (("logp_target", logp_target), ("logp_behaviour", logp_behaviour)):
        x = np.asarray(x)
        _check_finite(name, x)
        if np.any(x > 0):
            bad = _index(x > 0)
            raise ValueError(
                f"{name} must be log-probabilities (<= 0); found {x[bad]!r} at index {bad}. "
                f"Pass log pi(a|.), not pi(a|.) or logits."
            )
        _check_range(name, x, dtype, 1)
    if mask is not None:
        _check_binary("mask", np.asarray(mask))


def check_values(
    rewards: Any,
    values: Any,
    dones: Any,
    logp_target: Any,
    logp_behaviour: Any,
    mask: Any = None,
    dtype: Any = None,
) -> None:
    """Check contents: all finite, dones and mask 0/1, log-probs <= 0, and every real input
    within its usable range in the compute dtype ``dtype`` (``limits``; None: float64).
    """
    dtype = np.dtype(np.float64 if dtype is None else dtype)
    T = _shape("rewards", rewards)[0]
    for name, x in (("rewards", rewards), ("values", values), ("dones", dones)):
        x = np.asarray(x)
        _check_finite(name, x)
        if name != "dones":
            _check_range(name, x, dtype, T)
    _check_binary("dones", np.asarray(dones))
    check_logp_values(logp_target, logp_behaviour, mask, dtype)


def validate(
    rewards: Any,
    values: Any,
    dones: Any,
    logp_target: Any,
    logp_behaviour: Any,
    *,
    gamma: Any,
    lam: Any,
    correction: Any,
    eta: Any,
    mask: Any = None,
    check_contents: bool = True,
    dtype: Any = None,
) -> Shapes:
    """All checks in the order a user would want to hear about them: scalars, shapes, dtypes, contents.

    ``dtype``: the compute dtype for the range check (default: the dtype rule's,
    ``compute_dtype(logp_target)``; the reference passes float64).
    """
    check_scalars(gamma=gamma, lam=lam, correction=correction, eta=eta)
    shapes = check_shapes(rewards, values, dones, logp_target, logp_behaviour, mask)
    rule = check_dtypes(rewards, values, dones, logp_target, logp_behaviour, mask)
    if check_contents:
        check_values(rewards, values, dones, logp_target, logp_behaviour, mask,
                     rule if dtype is None else dtype)
    return shapes


# ----------------------------------------------------------------------------
# Preallocated outputs
# ----------------------------------------------------------------------------


def check_out(out: Any, shape: tuple[int, int, int], dtype: np.dtype, inputs: dict) -> tuple:
    """Check ``out = (advantages, value_targets)`` for a host backend; return it as a tuple.

    Each must be a writeable, C-contiguous NumPy array of ``shape`` and ``dtype``;
    the two must not overlap each other or any input (the kernel reads inputs
    after it has written outputs of later steps).
    """
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(
            f"out must be a pair (advantages, value_targets) of arrays; got {type(out).__name__}"
            f"{' of length ' + str(len(out)) if isinstance(out, (tuple, list)) else ''}."
        )
    names = ("advantages", "value_targets")
    for name, x in zip(names, out):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"out {name} must be a NumPy array; got {type(x).__name__}.")
        if x.shape != tuple(shape) or x.dtype != dtype:
            raise ValueError(
                f"out {name} must have shape {tuple(shape)} and dtype {np.dtype(dtype)} (the "
                f"compute dtype, from logp_target); got shape {x.shape} dtype {x.dtype}."
            )
        if not (x.flags.c_contiguous and x.flags.writeable):
            raise ValueError(f"out {name} must be C-contiguous and writeable.")
    if np.shares_memory(out[0], out[1]):
        raise ValueError("out advantages and value_targets must not overlap.")
    for name, x in zip(names, out):
        for arg, y in inputs.items():
            if isinstance(y, np.ndarray) and np.shares_memory(x, y):
                raise ValueError(f"out {name} must not overlap the input {arg}.")
    return tuple(out)
