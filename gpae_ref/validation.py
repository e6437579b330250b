"""Validation every backend shares: shapes, scalars, contents and ``out=`` arrays.

Every backend calls these functions before it computes anything, so a bad
input fails the same way whichever backend the user picked. Shape checks work
on anything with ``.shape`` and ``.dtype`` (NumPy, Numba device arrays, JAX
arrays, tracers); value checks (NaN/inf, log-probs > 0, dones not 0/1, values
outside their usable ranges, ``limits``) need concrete host values and are
skipped by callers that cannot afford a device-to-host copy. The Numba backend
makes the value checks inside its kernel's pass and calls ``check_values`` only
to name the culprit when that pass found one. The table of corrections is
``gpae_ref.corrections``, the dtype rule ``gpae_ref.dtypes``, the tolerances
``gpae_ref.tolerances``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, NamedTuple

import numpy as np

from gpae_ref.arrays import is_device_array, is_tracer
from gpae_ref.corrections import CORRECTIONS
from gpae_ref.dtypes import check_dtypes, first_index


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
    for name, x in (("gamma", gamma), ("lam", lam), ("eta", eta)):
        if is_tracer(x):  # e.g. a jitted function's argument: the range checks need its value
            raise ValueError(
                f"{name} must be a concrete number, not a traced JAX value ({type(x).__name__}): "
                f"under jax.jit pass it as a static argument (static_argnames=({name!r},)) or close "
                f"over a Python float."
            )
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


def _check_finite(name: str, x: np.ndarray) -> None:
    if not np.all(np.isfinite(x)):
        bad = first_index(~np.isfinite(x))
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
        at = first_index(bad)
        wider = (" (or pass float64 logp_target to compute in float64)"
                 if np.dtype(dtype) == np.float32 else "")
        raise ValueError(
            f"{name} holds {x[at]!r} at index {at}, outside the usable range of {np.dtype(dtype)} "
            f"for {name}, [{lo:.7g}, {hi:.7g}] (the dtype this call computes in); "
            f"{_why(name, np.dtype(dtype), T)}{wider}."
        )


def _check_binary(name: str, x: np.ndarray) -> None:
    if x.dtype != np.bool_ and not np.all((x == 0) | (x == 1)):
        bad = first_index((x != 0) & (x != 1))
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
            bad = first_index(x > 0)
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


class FullOverflowWarning(RuntimeWarning):
    """correction='full' returned inf or NaN: its untruncated traces exceeded the dtype's range."""


def warn_if_full_overflowed(correction: str, advantages: Any, value_targets: Any) -> None:
    """Warn when a ``full`` result holds inf or NaN (host and JAX CPU outputs; device arrays and
    tracers are not read, as their inputs' contents are not checked either).

    Every input was checked, so only ``full`` can overflow: its traces are the untruncated
    joint ratios rho_t, unbounded above, and the recursion multiplies them along the trace
    (the truncated corrections keep c <= 1, and ``limits`` bounds their sums). The result
    is kept (inf where the exact value is beyond the dtype, the same in every backend, so
    backends stay comparable with the reference); the warning says why and what to use.
    """
    if correction != "full" or is_tracer(advantages) or is_device_array(advantages):
        return
    for name, x in (("advantages", advantages), ("value_targets", value_targets)):
        x = np.asarray(x)
        if not np.all(np.isfinite(x)):
            at = first_index(~np.isfinite(x))
            warnings.warn(
                f"correction='full' overflowed: {name} holds {float(x[at])} at index {at} in "
                f"{x.dtype}. Its traces are the untruncated joint ratios rho_t, which the "
                f"recursion multiplies along the trace; 'full' is for the exact oracle on small "
                f"games. Use a truncated correction ('dt', the default, or 'st', 'it'), or "
                f"shorten the traces (lam < 1, dones).", FullOverflowWarning, stacklevel=3)
            return


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
