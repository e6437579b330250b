"""The spec's table of trace corrections (section 4): the one place their names, codes and formulas live.

Everything else derives from it: the reference and the JAX backend (``log_coefficient``),
the compiled kernels (``code``), the oracle (``coefficient``), verify (which corrections
need the joint ratio: ``joint``; which contract: ``truncated``), the learner's config and
the docs (``correction_table_text``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, NamedTuple


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


#: The corrections that form the joint log-ratio (the others never read rho^-i).
JOINT_RATIO_CORRECTIONS: tuple[str, ...] = tuple(c.name for c in CORRECTION_TABLE if c.joint)
