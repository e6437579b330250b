"""``verify(estimator)``: check any GPAE, GAE or V-trace implementation against exact expectations.

The estimator has the signature of ``gpae_ref.gpae``::

    estimator(rewards, values, dones, logp_target, logp_behaviour, *,
              gamma, lam, correction, eta, [mask])
        -> (advantages [T, B, N], value_targets [T, B, N])

or, with ``agents=1``, the same on single-agent arrays ``[T, B]`` (values
``[T+1, B]``): then verify is an exact oracle for ordinary GAE and V-trace-style
estimators. ``mask`` is passed only in the cases that use it (``masks=False``
leaves those out for an estimator without masks). Outputs are read with
``numpy.asarray`` (JAX, CuPy on host, ... work). For another layout or
signature, write a few-line adapter (docs/oracle.md shows rlax's).

Expectations are exact: game-based checks enumerate every trajectory of tiny
games (``gpae_ref.oracle``), never sample. Checks (the spec, section 7), each
run for every correction asked for (``corrections=``, default all five):

=====================  ========================================================
``P1``                 on-policy, E = EQ^{pi,i}: E[A^i_0|s,a] = A^{pi,i}(s,a)
``P2``                 mu = pi, lam = 1, any E (horizon-T game): E[A^i_0|s,a] = Q_0(s,a) - E_0(s,a^-i)
``P3/P4 operator``     on/off-policy, any E: E[A^i_0|s,a] equals the linear-algebra
                       G_0 = sum_{k<T} (gamma lam M_c)^k d that defines T^i (section 6)
``P6 reductions``      none = GAE per agent; lam = 0 = delta; N = 1 = GAE with traces;
                       on-policy data: every correction gives the same outputs
``P7 symmetries``      permuting agents; scaling rewards and values by c > 0;
                       splitting the batch (columns, or time at a done) into separate calls
``matches reference``  equals ``gpae_ref.reference.gpae`` on random inputs with dones,
                       masks, state values [T+1, B] and a 128-agent wide-ratio case
=====================  ========================================================

Speed: the cases of one group and correction are stacked into one call
(``cases.py`` lists the five groups), so a full verify makes 23 estimator calls
of 23 distinct signatures (4 or 5 per correction) when everything passes;
a jitted estimator compiles that many programs, and the same ones again in a
later verify (same shapes, same options). Failing cases are rerun alone (and
shrunk) to make their counterexamples, which costs more calls.

Tolerances: |got - expected| <= atol + rtol |expected| per element. By default
(``atol=None``, ``rtol=None``) they follow the estimator's output dtype:
``TOLERANCES`` (float64 1e-9, float32 1e-4). Cases whose exact values lie
outside the output dtype's range are ``n/a`` for it, never passed.

An estimator that raises, returns the wrong thing, or returns NaN/inf fails
the cases it was called in, with a message saying what verify expected and
what it got; ``verify`` itself raises only ``ValueError`` for bad options.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Iterable

import numpy as np

from gpae_ref._validate import CORRECTIONS
from gpae_ref.verify.cases import CHECK_NAMES, GROUPS, Case, build_cases, random_inputs, wide_ratio_inputs
from gpae_ref.verify.report import Cell, CheckSummary, Counterexample, VerifyReport
from gpae_ref.verify.runner import EstimatorError, Invoker, Verdict, counterexample, judge, shrink, stacked

__all__ = ["CHECKS", "TOLERANCES", "Cell", "CheckSummary", "Counterexample", "EstimatorError", "VerifyReport",
           "random_inputs", "verify", "wide_ratio_inputs"]

#: The check names, in report order; ``verify(checks=...)`` selects by name.
CHECKS: tuple[str, ...] = CHECK_NAMES

#: Default (atol, rtol) per output dtype (``verify(atol=None, rtol=None)``).
TOLERANCES: dict[str, tuple[float, float]] = {"float64": (1e-9, 1e-9), "float32": (1e-4, 1e-4),
                                              "float16": (1e-2, 1e-2)}


def _names(value, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    """A tuple of names from ``allowed`` (a comma-separated string works too), in ``allowed``'s order."""
    if value is None:
        return allowed
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        names = [str(v) for v in value]
    except TypeError:
        raise ValueError(f"{option} must be a sequence of names from {list(allowed)}; got {value!r}.") from None
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"{option} must be a non-empty sequence of names from {list(allowed)}; got {names!r}"
                         + (f" (unknown: {unknown})" if unknown else "") + ".")
    return tuple(n for n in allowed if n in names)


def _check_options(estimator, agents, atol, rtol, max_examples, seed) -> None:
    if not callable(estimator):
        raise ValueError(f"estimator must be callable; got a {type(estimator).__name__}.")
    if agents is not None and (isinstance(agents, bool) or not isinstance(agents, (int, np.integer)) or agents != 1):
        raise ValueError(f"agents must be None (estimator takes [T, B, N] arrays) or 1 (single-agent [T, B] "
                         f"arrays); got {agents!r}." + (" agents must be >= 1." if isinstance(agents, int)
                                                         and not isinstance(agents, bool) and agents < 1 else ""))
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None and not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0 (or None: by output dtype); got {tol!r}.")
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples < 1:
        raise ValueError(f"max_examples must be an integer >= 1; got {max_examples!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}.")


def _label(estimator) -> str:
    module = getattr(estimator, "__module__", None) or "?"
    name = getattr(estimator, "__qualname__", None) or getattr(estimator, "__name__", None)
    return f"{module}:{name}" if name else repr(estimator)


def _tolerances(dtype, atol, rtol) -> tuple[float, float]:
    default = TOLERANCES.get(np.dtype(dtype).name if dtype is not None else "float64", TOLERANCES["float64"])
    return (default[0] if atol is None else float(atol)), (default[1] if rtol is None else float(rtol))


def _run_groups(invoke: Invoker, cases: list[Case], masks: bool) -> tuple[dict, dict]:
    """One estimator call per (group, correction): outputs per (case, call), or the error of the group."""
    by_group: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for ci, case in enumerate(cases):
        for k, call in enumerate(case.calls):
            by_group.setdefault((call.group, call.correction), []).append((ci, k))
    outputs: dict[tuple[int, int], tuple] = {}
    errors: dict[int, str] = {}
    for (group, correction), members in by_group.items():
        calls = [cases[ci].calls[k] for ci, k in members]
        arrays, where = stacked(calls, masks)
        try:
            adv, vt = invoke(arrays, dict(GROUPS[group], correction=correction),
                             f"group {group}, {correction}, {len(calls)} calls stacked")
        except EstimatorError as exc:
            for ci, _ in members:
                errors.setdefault(ci, f"{exc} (in a stacked call of group {group}, correction {correction!r})")
            continue
        for (ci, k), (t0, b0, b1, n) in zip(members, where):
            outputs[(ci, k)] = (adv[t0:, b0:b1, :n], vt[t0:, b0:b1, :n])
    return outputs, errors


def _wanted(examples: list[Counterexample], case: Case, max_examples: int) -> bool:
    """Keep up to ``max_examples`` counterexamples per check, each of a case title not yet shown."""
    same_check = [x for x in examples if x.check == case.check]
    return len(same_check) < max_examples and not any(x.title.startswith(case.title) for x in same_check)


def verify(
    estimator: Callable,
    *,
    corrections: Iterable[str] | str | None = None,
    checks: Iterable[str] | str | None = None,
    agents: int | None = None,
    masks: bool = True,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    max_examples: int = 3,
    progress: bool | Callable[[str], None] = False,
) -> VerifyReport:
    """Run the checks on ``estimator`` for the corrections it implements; return a ``VerifyReport``.

    ``corrections``: names from ``CORRECTIONS`` the estimator implements (default
    all); the others are reported as not checked, never as passed.
    ``checks``: a subset of ``CHECKS``. ``agents``: None for ``[T, B, N]``
    estimators, 1 for single-agent ``[T, B]`` ones. ``masks``: False for an
    estimator without a ``mask`` argument (masked cases are left out).
    ``seed`` fixes every game, policy and input (same seed, same report).
    ``atol``/``rtol``: None follows the output dtype (``TOLERANCES``).
    ``max_examples``: counterexamples kept per failing check.
    ``progress``: True prints a line per slow call to stderr (or pass a callable).
    """
    _check_options(estimator, agents, atol, rtol, max_examples, seed)
    corrections = _names(corrections, CORRECTIONS, "corrections")
    checks = _names(checks, CHECKS, "checks")
    report_progress = progress if callable(progress) else (
        (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None)
    invoke = Invoker(estimator, None if agents is None else 1, bool(masks), report_progress)
    cases = [case for name in checks for case in build_cases(name, int(seed), corrections, invoke.agents, masks)]
    with np.errstate(all="ignore"):  # the estimator's own overflow warnings are reported as failures
        outputs, errors = _run_groups(invoke, cases, bool(masks))
        a, r = _tolerances(invoke.output_dtype, atol, rtol)
        cells = {(name, c): Cell(name, c) for name in checks for c in CORRECTIONS}  # unchecked stay so
        examples: list[Counterexample] = []
        for ci, case in enumerate(cases):
            if ci in errors:
                verdict = Verdict(float("inf"), True, error=errors[ci])
            else:
                verdict = judge(case, [outputs[(ci, k)] for k in range(len(case.calls))], a, r, invoke.output_dtype)
            cell = cells[(case.check, case.correction)]
            cell.add(verdict.ratio, verdict.failed)
            if verdict.failed and _wanted(examples, case, max_examples):
                if case.shrinkable and verdict.error is None:
                    case = shrink(invoke, case, a, r, bool(masks))
                examples.append(counterexample(invoke, case, verdict, a, r, bool(masks)))
    for cell in cells.values():
        cell.finish(checked=cell.correction in corrections)
    dtype = "" if invoke.output_dtype is None else np.dtype(invoke.output_dtype).name
    report = VerifyReport(_label(estimator), int(seed), a, r, checks, corrections, CORRECTIONS, invoke.agents,
                          cells, examples, invoke.calls, len(invoke.signatures), dtype)
    if not masks:
        report.notes.append("masks=False: cases with masked agents were left out (the estimator's mask is not checked)")
    if agents == 1:
        report.notes.append("agents=1: single-agent [T, B] layout; per-agent checks (permutations, 128 agents) "
                            "do not apply")
    return report
