"""Input validation shared by every backend.

Every backend calls these functions before it computes anything, so a bad
input fails the same way whichever backend the user picked. Shape checks work
on anything with ``.shape`` (NumPy, Numba device arrays, JAX arrays, tracers);
value checks (NaN/inf, log-probs > 0, dones not 0/1) need concrete host values
and are skipped by callers that cannot afford a device-to-host copy.
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


def check_scalars(*, gamma: Any, lam: Any, correction: Any, eta: Any) -> None:
    """Raise ValueError for a discount, lambda, correction or eta out of range."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be a real number in [0, 1); got {gamma!r}.")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be a real number in [0, 1]; got {lam!r}.")
    if not isinstance(correction, str) or correction not in CORRECTIONS:
        raise ValueError(
            f"correction must be one of {', '.join(repr(c) for c in CORRECTIONS)}; got {correction!r}."
        )
    if (
        isinstance(eta, bool)
        or not isinstance(eta, numbers.Real)
        or not math.isfinite(eta)
        or eta <= 0.0
    ):
        raise ValueError(
            f"eta must be a finite real number > 0 (the paper uses 1.02 on SMAX); got {eta!r}."
        )


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


def check_logp_values(logp_target: Any, logp_behaviour: Any, mask: Any = None) -> None:
    """Check the log-probs are finite and <= 0 and the mask is 0/1."""
    for name, x in (("logp_target", logp_target), ("logp_behaviour", logp_behaviour)):
        x = np.asarray(x)
        _check_finite(name, x)
        if np.any(x > 0):
            bad = np.argwhere(x > 0)[0]
            raise ValueError(
                f"{name} must be log-probabilities (<= 0); found {x[tuple(bad)]!r} at index "
                f"{tuple(int(i) for i in bad)}. Pass log pi(a|.), not pi(a|.) or logits."
            )
    if mask is not None:
        _check_binary("mask", np.asarray(mask))


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


def _check_finite(name: str, x: np.ndarray) -> None:
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(
            f"{name} must be finite; found {x[tuple(bad)]!r} at index {tuple(int(i) for i in bad)}."
        )


def _check_binary(name: str, x: np.ndarray) -> None:
    if x.dtype != np.bool_ and not np.all((x == 0) | (x == 1)):
        bad = np.argwhere((x != 0) & (x != 1))[0]
        raise ValueError(
            f"{name} must hold only 0/1 (or booleans); found {x[tuple(bad)]!r} at index "
            f"{tuple(int(i) for i in bad)}."
        )


def check_values(
    rewards: Any,
    values: Any,
    dones: Any,
    logp_target: Any,
    logp_behaviour: Any,
    mask: Any = None,
) -> None:
    """Check contents: all finite, dones and mask 0/1, log-probs <= 0."""
    for name, x in (("rewards", rewards), ("values", values), ("dones", dones)):
        _check_finite(name, np.asarray(x))
    _check_binary("dones", np.asarray(dones))
    check_logp_values(logp_target, logp_behaviour, mask)


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
) -> Shapes:
    """All checks in the order a user would want to hear about them."""
    check_scalars(gamma=gamma, lam=lam, correction=correction, eta=eta)
    shapes = check_shapes(rewards, values, dones, logp_target, logp_behaviour, mask)
    if check_contents:
        check_values(rewards, values, dones, logp_target, logp_behaviour, mask)
    return shapes
