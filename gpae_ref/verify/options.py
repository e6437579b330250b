"""The options of ``verify``: one dataclass, from which the CLI flags and the pytest-plugin options are made.

``verify(estimator, **options)`` takes exactly these fields as keywords;
``python -m gpae_ref verify`` has a flag ``--<field-with-dashes>`` for each
(``--no-masks`` for the boolean), the plugin ``--gpae-<same>``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from gpae_ref.corrections import CORRECTIONS
from gpae_ref.verify.cases import CHECK_NAMES

#: Value-target conventions. The spec's v^i_t = E^i_t + min(1, rho^i_t) A^i_t ("clipped"); the plain
#: V + A of most GAE libraries ("plain", equal to "clipped" on-policy); or advantages only ("none").
VALUE_TARGETS: tuple[str, ...] = ("clipped", "plain", "none")

#: Axis orders of the per-agent arrays ([T, B, N] is "TBN"); single-agent (agents=1) ones drop N.
LAYOUTS: tuple[str, ...] = tuple("".join(p) for p in itertools.permutations("TBN")) + ("TB", "BT")


def _opt(help: str, **cli) -> dict:
    return {"help": help, "cli": cli}


@dataclass(frozen=True)
class VerifyOptions:
    """What ``verify`` checks and how; field metadata holds the help text and argparse settings."""

    corrections: Any = field(default=None, metadata=_opt(
        "comma-separated corrections the estimator implements, e.g. none,dt (default: all five)", metavar="LIST"))
    checks: Any = field(default=None, metadata=_opt(
        "comma-separated checks (default: all), e.g. 'P1,matches reference'", metavar="LIST"))
    agents: int | None = field(default=None, metadata=_opt(
        "1: a single-agent estimator on [T, B] arrays (default: [T, B, N])", type=int, choices=[1]))
    layout: str | None = field(default=None, metadata=_opt(
        "axis order of the estimator's arrays: TBN (default), BTN (batch-major), TNB, NTB, ...; with --agents 1: "
        "TB or BT", choices=list(LAYOUTS)))
    value_targets: str = field(default="clipped", metadata=_opt(
        "the value targets the estimator returns: clipped (the spec's E + min(1, rho^i) A), plain (V + A, most "
        "GAE libraries) or none (check advantages only)", choices=list(VALUE_TARGETS)))
    masks: bool = field(default=True, metadata=_opt("the estimator has no mask argument (masked cases left out)"))
    seed: int = field(default=0, metadata=_opt("seed of every game, policy and input (default 0)", type=int))
    atol: float | None = field(default=None, metadata=_opt(
        "absolute tolerance (default: by each output's dtype, 1e-9 float64, 1e-4 float32)", type=float))
    rtol: float | None = field(default=None, metadata=_opt("relative tolerance (default: by output dtype)",
                                                           type=float))
    max_examples: int = field(default=3, metadata=_opt("counterexamples kept per failing check (default 3)",
                                                       type=int))

    def __post_init__(self):
        _check(self)


def option_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(VerifyOptions))


def add_arguments(add, prefix: str = "") -> None:
    """Call ``add(flag, **argparse_kwargs)`` once per option (``prefix`` e.g. "gpae-" for the plugin)."""
    for f in fields(VerifyOptions):
        flag = f.name.replace("_", "-")
        if isinstance(f.default, bool):  # a True default: the flag turns it off
            add(f"--{prefix}no-{flag}", dest=(prefix + f.name).replace("-", "_"), action="store_false",
                default=f.default, help=f.metadata["help"])
        else:
            add(f"--{prefix}{flag}", dest=(prefix + f.name).replace("-", "_"), default=f.default,
                help=f.metadata["help"], **f.metadata["cli"])


def from_namespace(get, prefix: str = "") -> dict:
    """The options as keywords of ``verify``, read with ``get(dest)`` (argparse namespace or pytest config)."""
    return {f.name: get((prefix + f.name).replace("-", "_")) for f in fields(VerifyOptions)}


# ----------------------------------------------------------------------------
# Validation: bad options raise ValueError naming the option and the fix
# ----------------------------------------------------------------------------


def names(value, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    """A tuple of names from ``allowed`` (a comma-separated string works too), in ``allowed``'s order."""
    if value is None:
        return allowed
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        listed = [str(v) for v in value]
    except TypeError:
        raise ValueError(f"{option} must be a sequence of names from {list(allowed)}; got {value!r}.") from None
    unknown = [n for n in listed if n not in allowed]
    if unknown or not listed:
        raise ValueError(f"{option} must be a non-empty sequence of names from {list(allowed)}; got {listed!r}"
                         + (f" (unknown: {unknown})" if unknown else "") + ".")
    return tuple(n for n in allowed if n in listed)


def _is_int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer))


def _check(o: VerifyOptions) -> None:
    names(o.corrections, CORRECTIONS, "corrections")
    names(o.checks, CHECK_NAMES, "checks")
    if o.agents is not None and not (_is_int(o.agents) and o.agents == 1):
        raise ValueError(f"agents must be None (estimator takes [T, B, N] arrays) or 1 (single-agent [T, B] "
                         f"arrays); got {o.agents!r}." + (" verify picks the number of agents of each case; "
                                                           "for an estimator of several agents leave agents=None."
                                                           if _is_int(o.agents) and o.agents > 1 else ""))
    allowed = ("TB", "BT") if o.agents == 1 else LAYOUTS[:6]
    if o.layout is not None and o.layout not in allowed:
        raise ValueError(f"layout must be one of {list(allowed)}" + (" (agents=1)" if o.agents == 1 else "")
                         + f"; got {o.layout!r}.")
    if o.value_targets not in VALUE_TARGETS:
        raise ValueError(f"value_targets must be one of {list(VALUE_TARGETS)}; got {o.value_targets!r}.")
    for name in ("atol", "rtol"):
        tol = getattr(o, name)
        if tol is not None and not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0 (or None: by output dtype); got {tol!r}.")
    if not _is_int(o.max_examples) or o.max_examples < 1:
        raise ValueError(f"max_examples must be an integer >= 1; got {o.max_examples!r}.")
    if not _is_int(o.seed) or o.seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {o.seed!r}.")
