"""``verify(estimator)``: the checks run, judged, summarised (the package docstring says what and why)."""

from __future__ import annotations

import sys
import warnings
from typing import Callable, Iterable

import numpy as np

from gpae_ref.corrections import CORRECTIONS
from gpae_ref.validation import FullOverflowWarning
from gpae_ref.verify import hints
from gpae_ref.verify.cases import CHECK_NAMES, GROUPS, Case, build_cases
from gpae_ref.verify.options import VerifyOptions
from gpae_ref.verify.options import names as _names
from gpae_ref.verify.report import Cell, Counterexample, VerifyReport
from gpae_ref.verify.runner import (OUTPUT_NAMES, EstimatorError, Invoker, Judging, Verdict,
                                    counterexample, judge, shrink, stacked)

#: The check names, in report order; ``verify(checks=...)`` selects by name.
CHECKS: tuple[str, ...] = CHECK_NAMES


def _label(estimator) -> str:
    module = getattr(estimator, "__module__", None) or "?"
    name = getattr(estimator, "__qualname__", None) or getattr(estimator, "__name__", None)
    return f"{module}:{name}" if name else repr(estimator)


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
                errors.setdefault(ci, f"{exc}\n(in a stacked call of group {group}, correction {correction!r})")
            continue
        for (ci, k), (t0, b0, b1, n) in zip(members, where):
            outputs[(ci, k)] = (adv[t0:, b0:b1, :n], vt[t0:, b0:b1, :n])
    return outputs, errors


def _wanted(examples: list[Counterexample], case: Case, max_examples: int) -> bool:
    """Keep up to ``max_examples`` counterexamples per check, each of a case title not yet shown."""
    same_check = [x for x in examples if x.check == case.check]
    return len(same_check) < max_examples and not any(x.title.startswith(case.title) for x in same_check)


def _nan_at_worst(verdict: Verdict) -> bool:
    """A failing verdict whose output is NaN at its worst element (the table says nan, not inf)."""
    if not verdict.failed or verdict.got is None or not verdict.index:
        return False
    return bool(np.isnan(np.asarray(verdict.got)[verdict.index]))


def _judge_all(invoke: Invoker, cases: list[Case], outputs: dict, errors: dict, how: Judging, masks: bool,
               checks, max_examples: int):
    """Cells per (check, correction), counterexamples, and the failing verdicts (for the hints)."""
    cells = {(name, c): Cell(name, c) for name in checks for c in CORRECTIONS}  # unchecked stay so
    examples: list[Counterexample] = []
    failed: list[tuple[Case, Verdict]] = []
    for ci, case in enumerate(cases):
        if ci in errors:
            verdict = Verdict(float("inf"), True, error=errors[ci])
        else:
            verdict = judge(case, [outputs[(ci, k)] for k in range(len(case.calls))], how)
        cells[(case.check, case.correction)].add(verdict.ratio, verdict.failed, verdict.error is not None,
                                                 _nan_at_worst(verdict))
        if verdict.failed:
            failed.append((case, verdict))
        if verdict.failed and _wanted(examples, case, max_examples):
            if case.shrinkable and verdict.error is None:
                case = shrink(invoke, case, how, masks)
            examples.append(counterexample(invoke, case, verdict, how, masks))
    return cells, examples, failed


def _hints(estimator, o: VerifyOptions, corrections, cells, failed, how: Judging) -> list[str]:
    """Likely causes of the failures (see ``hints``); probes call the estimator a few more times."""
    tol = (o.atol, o.rtol)
    found = []
    if hints.all_failed(cells, corrections):
        probe_correction = "none" if "none" in corrections else corrections[0]
        found.append(hints.layout_hint(estimator, o.agents, o.layout, probe_correction, o.seed, tol))
    if not found or found[0] is None:
        of = lambda c: [cell for (_, corr), cell in cells.items() if corr == c]  # noqa: E731
        raised = {c for c in corrections if 0 < sum(x.cases for x in of(c)) == sum(x.raised for x in of(c))}
        found.append(hints.correction_hint(estimator, o.agents, o.layout, cells, corrections, raised, o.seed, tol))
    if how.value_targets != "none":
        found.append(hints.convention_hint([v.matches for _, v in failed]))
    found.append(hints.precision_hint([v for _, v in failed], how, o.atol is not None or o.rtol is not None))
    return [h for h in found if h]


def _dtype_text(dtypes: tuple) -> str:
    names = [None if d is None else np.dtype(d).name for d in dtypes]
    if names[0] is None:
        return ""
    if names[0] == names[1]:
        return names[0]
    return ", ".join(f"{k} {n}" for k, n in zip(OUTPUT_NAMES, names))


def verify(
    estimator: Callable,
    *,
    corrections: Iterable[str] | str | None = None,
    checks: Iterable[str] | str | None = None,
    agents: int | None = None,
    layout: str | None = None,
    value_targets: str = "clipped",
    masks: bool = True,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    max_examples: int = 3,
    progress: bool | Callable[[str], None] = False,
) -> VerifyReport:
    """Run the checks on ``estimator`` for the corrections it implements; return a ``VerifyReport``.

    The options are the fields of ``VerifyOptions`` (the CLI and the pytest
    plugin make their flags from it). ``corrections``: names from
    ``CORRECTIONS`` the estimator implements (default all); the others are
    reported as not checked, never as passed. ``checks``: a subset of
    ``CHECKS``. ``agents``: None for ``[T, B, N]`` estimators, 1 for
    single-agent ``[T, B]`` ones. ``layout``: the axis order of its arrays,
    e.g. ``"BTN"`` for batch-major (``LAYOUTS``). ``value_targets``: the
    convention of its second output, ``"clipped"`` (the spec's
    v = E + min(1, rho^i) A), ``"plain"`` (v = V + A, most GAE libraries) or
    ``"none"`` (advantages only; the estimator may then return them alone).
    ``masks``: False for an estimator without a ``mask`` argument (masked
    cases are left out). ``seed`` fixes every game,
    policy and input. ``atol``/``rtol``: None follows each output's dtype
    (``TOLERANCES``). ``max_examples``: counterexamples kept per failing check.
    ``progress``: True prints a line per slow call to stderr (or pass a callable).
    """
    if not callable(estimator):
        raise ValueError(f"estimator must be callable; got a {type(estimator).__name__}.")
    o = VerifyOptions(corrections, checks, agents, layout, value_targets, masks, seed, atol, rtol, max_examples)
    corrections = _names(corrections, CORRECTIONS, "corrections")
    checks = _names(checks, CHECKS, "checks")
    report_progress = progress if callable(progress) else (
        (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None)
    invoke = Invoker(estimator, None if agents is None else 1, bool(masks), report_progress, layout,
                     one_output=value_targets == "none")
    cases = [case for name in checks for case in build_cases(name, int(seed), corrections, invoke.agents, masks)]
    # The estimator's own overflow warnings are reported as failures, and a float32 `full` beyond
    # its range as n/a: neither needs a warning on top.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FullOverflowWarning)
        outputs, errors = _run_groups(invoke, cases, bool(masks))
        how = Judging.make(invoke.output_dtypes, atol, rtol, value_targets)
        cells, examples, failed = _judge_all(invoke, cases, outputs, errors, how, bool(masks), checks, max_examples)
    for cell in cells.values():
        cell.finish(checked=cell.correction in corrections)
    found = _hints(estimator, o, corrections, cells, failed, how) if failed else []
    report = VerifyReport(_label(estimator), int(seed), *how.tolerances[0], checks, corrections, CORRECTIONS,
                          invoke.agents, cells, examples, invoke.calls, len(invoke.signatures),
                          _dtype_text(invoke.output_dtypes), tolerances=dict(zip(OUTPUT_NAMES, how.tolerances)),
                          value_targets=value_targets, layout=invoke.layout, hints=found)
    if not masks:
        report.notes.append("masks=False: cases with masked agents were left out (the estimator's mask is not checked)")
    if agents == 1:
        report.notes.append("agents=1: single-agent [T, B] layout; per-agent checks (permutations, 128 agents) "
                            "do not apply")
    if value_targets == "none":
        report.notes.append("value_targets='none': value targets were not checked (advantages only)")
    return report
