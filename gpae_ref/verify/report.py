"""What ``verify`` returns: one cell per (check, correction), counterexamples you can rerun.

A cell's status is one of

* ``pass``         every case of the check ran and matched within tolerance;
* ``FAIL``         at least one case failed (the estimator disagreed, raised, or
                   returned something that is not two finite arrays);
* ``n/a``          every case lay outside the estimator's output dtype range
                   (e.g. a float32 estimator on a case whose exact value is 1e45);
* ``not checked``  the correction (or the check) was not asked for.

The worst error of a cell is a ratio to the tolerance,
max |got - expected| / (atol + rtol |expected|): at most 1 passes.
``VerifyReport.ok`` is True when every checked cell passed or was n/a and at
least one case was checked; an unchecked cell never counts as a pass.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpae_ref.verify.rerun import save_counterexample

PASS, FAIL, NA, NOT_CHECKED = "pass", "FAIL", "n/a", "not checked"


@dataclass
class Counterexample:
    """One failing case, with everything needed to rerun it outside ``verify``.

    ``calls``: the estimator calls of the case, each ``(arrays, options)`` with
    arrays in the estimator's own layout (``[T, B]`` when ``agents=1``).
    ``relation`` says how ``got`` and ``expected`` come from the outputs:
    ``direct`` (output ``what`` of call 0 against an exact value),
    ``expectation`` (row 0 of call 0, averaged over the enumerated trajectories
    by ``weight`` per start index ``start``), ``permute``, ``scale``,
    ``concat_columns``, ``concat_time`` (call 0 against the outputs of calls 1..
    transformed). ``game`` holds the tabular game, policies, values and horizon
    of game-based checks (see ``gpae_ref.oracle``).
    """

    check: str
    correction: str
    title: str
    description: str
    what: int  # 0 = advantages, 1 = value_targets
    relation: str
    calls: list[tuple[dict[str, np.ndarray], dict[str, Any]]]
    expected: np.ndarray | None
    got: np.ndarray | None
    index: tuple[int, ...] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # weight/start, perm, scale, game tables
    alone: str = ""  # what happened when the case was rerun by itself
    tolerance: tuple[float, float] = (0.0, 0.0)  # (atol, rtol) of output ``what``
    matches: str | None = None  # advantages passed; the value targets match this other convention
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name: (got, expected)

    def summary(self) -> str:
        """A few lines: what was checked, where it disagreed and by how much; small arrays in full."""
        lines = [self.description]
        if self.error is not None:
            lines.append(self.error)
        elif self.index is not None and self.expected is not None:
            e = _num(self.expected[self.index])
            g = _num(self.got[self.index]) if self.got is not None else "nothing"
            lines.append(f"{_WHAT[self.what]} at index {list(self.index)}: expected {e}, got {g}"
                         + _how_far(self.got, self.expected, self.index, self.tolerance))
        if self.matches:
            lines.append(f"the advantages pass; the value targets match the {self.matches!r} convention "
                         f"({_CONVENTIONS[self.matches]}): verify with value_targets={self.matches!r} "
                         f"(--value-targets {self.matches}), or value_targets='none' for advantages only")
        if self.alone:
            lines.append(self.alone)
        if self.error is None:
            lines += _small_arrays(self)
        return "\n".join(lines)


_WHAT = ("advantages", "value_targets")
_CONVENTIONS = {"clipped": "E + min(1, rho^i) A, the spec's", "plain": "V + A"}
SMALL = 24  # arrays with at most this many elements are printed in full in a counterexample


def _num(x) -> str:
    """A plain number (no ``np.float64(...)``)."""
    return f"{float(x):.10g}"


def _how_far(got, expected, index, tolerance) -> str:
    if got is None or not np.isfinite(got[index]):
        return ""
    atol, rtol = tolerance
    err = abs(float(got[index]) - float(expected[index]))
    return f" (|error| {err:.2g}, {err / (atol + rtol * abs(float(expected[index]))):.2g} x tolerance)"


def _digits(got, expected) -> int:
    """Enough decimals to see the largest difference (4 to 12)."""
    with np.errstate(all="ignore"):
        diff = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    diff = diff[np.isfinite(diff) & (diff > 0)]
    return 4 if diff.size == 0 else int(np.clip(np.ceil(-np.log10(diff.max())) + 1, 4, 12))


def _array_lines(label: str, x, digits: int = 4) -> list[str]:
    """``label`` and the array below it, blank lines between blocks dropped."""
    text = np.array2string(np.asarray(x, np.float64), precision=digits, suppress_small=True, max_line_width=100,
                           separator=" ")
    return [label] + ["      " + line for line in text.splitlines() if line.strip()]


def _small_arrays(x: "Counterexample") -> list[str]:
    """Inputs of a one-call case and both outputs, expected against got, when each is small enough to read."""
    lines = []
    if x.relation == "direct" and len(x.calls) == 1:
        arrays, _ = x.calls[0]
        if all(np.size(a) <= SMALL for a in arrays.values()):
            lines.append("inputs:")
            for k, a in arrays.items():
                lines += _array_lines(f"  {k} {list(np.shape(a))}:", a)
    for name, (got, expected) in x.outputs.items():
        if np.size(got) <= SMALL and np.shape(got) == np.shape(expected):
            digits = _digits(got, expected)
            lines += _array_lines(f"{name} {list(np.shape(got))}, expected:", expected, digits)
            lines += _array_lines(f"{name} {list(np.shape(got))}, got:", got, digits)
    return lines


@dataclass
class Cell:
    """One (check, correction): status, cases run, failing cases, n/a cases, worst error / tolerance."""

    check: str
    correction: str
    status: str = NOT_CHECKED
    cases: int = 0
    failing: int = 0
    not_applicable: int = 0
    worst_ratio: float = 0.0
    raised: int = 0  # failing cases where the estimator raised or returned something unreadable
    nan: int = 0  # failing cases where its output is NaN at the worst element

    def add(self, ratio: float | None, failed: bool, raised: bool = False, nan: bool = False) -> None:
        """Record one case (``ratio`` None: not applicable for the estimator's dtype)."""
        if ratio is None:
            self.not_applicable += 1
            return
        self.cases += 1
        self.failing += int(failed)
        self.raised += int(raised)
        self.nan += int(nan)
        self.worst_ratio = max(self.worst_ratio, ratio)

    def finish(self, checked: bool = True) -> None:
        if not checked:
            self.status = NOT_CHECKED
        elif self.cases == 0:
            self.status = NA if self.not_applicable else NOT_CHECKED
        else:
            self.status = FAIL if self.failing else PASS

    @property
    def passed(self) -> bool | None:
        """True / False for a checked cell, None for n/a or not checked."""
        return {PASS: True, FAIL: False}.get(self.status)


@dataclass
class VerifyReport:
    """The result of ``verify``: ``ok``, ``cell(check, correction)``, ``str()`` a table, ``save``, ``to_json``."""

    estimator: str
    seed: int
    atol: float
    rtol: float
    checks: tuple[str, ...]
    corrections: tuple[str, ...]
    all_corrections: tuple[str, ...]
    agents: int | None
    cells: dict[tuple[str, str], Cell]
    counterexamples: list[Counterexample] = field(default_factory=list)
    calls: int = 0
    signatures: int = 0
    output_dtype: str = ""  # one name, or "advantages float32, value_targets float64" when they differ
    notes: list[str] = field(default_factory=list)
    tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)  # per output: (atol, rtol)
    value_targets: str = "clipped"
    layout: str = "TBN"
    hints: list[str] = field(default_factory=list)  # likely causes of failures, with the option that fixes each

    @property
    def ok(self) -> bool:
        checked = [c for c in self.cells.values() if c.status in (PASS, FAIL)]
        return bool(checked) and all(c.status != FAIL for c in self.cells.values())

    @property
    def not_checked(self) -> tuple[str, ...]:
        """Corrections in the table that this report did not check."""
        return tuple(c for c in self.all_corrections if c not in self.corrections)

    def cell(self, check: str, correction: str) -> Cell:
        return self.cells[(check, correction)]

    def check_status(self, check: str) -> str:
        """FAIL if any correction failed, pass if every checked one passed, else n/a / not checked."""
        statuses = [self.cells[(check, c)].status for c in self.corrections if (check, c) in self.cells]
        for s in (FAIL, PASS, NA):
            if s in statuses:
                return s
        return NOT_CHECKED

    def __getitem__(self, check: str) -> "CheckSummary":
        if check not in self.checks:
            raise KeyError(f"{check!r} is not a check of this report; checks: {list(self.checks)}")
        cells = [self.cells[(check, c)] for c in self.corrections]
        return CheckSummary(check, self.check_status(check), [x for x in self.counterexamples if x.check == check], cells)

    @property
    def results(self) -> list["CheckSummary"]:
        return [self[name] for name in self.checks]

    def __str__(self) -> str:
        return format_report(self)

    def to_dict(self) -> dict:
        """Machine-readable form (plain JSON types; arrays are left out, see ``save``)."""
        return {
            "estimator": self.estimator,
            "ok": self.ok,
            "seed": self.seed,
            "atol": self.atol,
            "rtol": self.rtol,
            "agents": self.agents,
            "output_dtype": self.output_dtype,
            "tolerances": {k: list(v) for k, v in self.tolerances.items()},
            "value_targets": self.value_targets,
            "layout": self.layout,
            "checks": list(self.checks),
            "corrections_checked": list(self.corrections),
            "corrections_not_checked": list(self.not_checked),
            "calls": self.calls,
            "call_signatures": self.signatures,
            "cells": [
                {
                    "check": c.check,
                    "correction": c.correction,
                    "status": c.status,
                    "cases": c.cases,
                    "failing": c.failing,
                    "not_applicable": c.not_applicable,
                    "raised": c.raised,
                    "nan": c.nan,
                    "worst_error_over_tolerance": _finite_or_str(c.worst_ratio),
                }
                for c in self.cells.values()
            ],
            "counterexamples": [
                {
                    "check": x.check,
                    "correction": x.correction,
                    "title": x.title,
                    "summary": x.summary(),
                    "options": [opts for _, opts in x.calls],
                }
                for x in self.counterexamples
            ],
            "notes": list(self.notes),
            "hints": list(self.hints),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, directory) -> list[Path]:
        """Write ``report.json`` and, per counterexample, ``<name>.npz`` (no pickle) and ``<name>.py``.

        Running ``python <name>.py`` from that folder reruns the failing call(s)
        on the saved inputs and prints expected against got. Returns the paths.
        """
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise ValueError(f"directory {str(d)!r} exists and is not a folder; pass a folder path.")
        d.mkdir(parents=True, exist_ok=True)
        paths = [d / "report.json"]
        paths[0].write_text(self.to_json() + "\n")
        for k, x in enumerate(self.counterexamples):
            stem = f"{k:02d}_{_slug(x.check)}_{x.correction}"
            paths += save_counterexample(x, d, stem, self.estimator, self.agents, self.layout)
        return paths


@dataclass
class CheckSummary:
    """One check over the checked corrections: ``passed`` (None if nothing was checked), its counterexamples."""

    name: str
    status: str
    counterexamples: list[Counterexample]
    cells: list[Cell]

    @property
    def passed(self) -> bool | None:
        return {PASS: True, FAIL: False}.get(self.status)

    @property
    def counterexample(self) -> str | None:
        """The first counterexample's text (None when the check passed)."""
        return self.counterexamples[0].summary() if self.counterexamples else None

    @property
    def cases(self) -> int:
        return sum(c.cases for c in self.cells)


def _finite_or_str(x: float):
    return float(x) if np.isfinite(x) else str(x)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def _short_num(x: float) -> str:
    """2 significant digits, short exponent: 1.3e9, 4e-7."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), f"{x:.2g}")


def _cell_text(c: Cell) -> str:
    if c.status == PASS:
        return f"pass {_short_num(c.worst_ratio)}"
    if c.status == FAIL:
        how_far = ("raised" if c.raised == c.failing else "nan" if c.nan and c.nan + c.raised == c.failing
                   else _short_num(c.worst_ratio))
        return f"FAIL {c.failing}/{c.cases} {how_far}"
    return c.status


def _tolerance_text(r: VerifyReport) -> str:
    tol = set(r.tolerances.values())
    if len(tol) <= 1:
        return f"atol={r.atol:g} rtol={r.rtol:g}"
    return ", ".join(f"{k} atol={a:g} rtol={b:g}" for k, (a, b) in r.tolerances.items())


def _header(r: VerifyReport) -> list[str]:
    options = "".join([f" agents={r.agents}" if r.agents is not None else "",
                       f" layout={r.layout}" if r.layout not in ("TBN", "TB") else "",
                       f" value_targets={r.value_targets}" if r.value_targets != "clipped" else ""])
    return [
        f"verify({r.estimator}) seed={r.seed} {_tolerance_text(r)}{options}"
        + (f" output dtype {r.output_dtype}" if r.output_dtype else ""),
        f"{r.calls} estimator calls, {r.signatures} distinct call signatures",
        "cell: pass <worst |error| / tolerance> | FAIL <failing>/<cases> <worst |error| / tolerance, raised, or nan>"
        " | n/a (outside the output dtype's range) | not checked",
    ]


def format_report(r: VerifyReport) -> str:
    """The report as a table: checks down, corrections across; then hints and the counterexamples."""
    cols = r.all_corrections
    width = 18
    rule = "-" * (20 + width * len(cols))
    head = _header(r) + [f"{'check':<20}" + "".join(f"{c:>{width}}" for c in cols), rule]
    for name in r.checks:
        row = f"{name:<20}"
        for c in cols:
            cell = r.cells.get((name, c))
            row += f"{(_cell_text(cell) if cell else NOT_CHECKED):>{width}}"
        head.append(row)
    head.append(rule)
    checked = ", ".join(r.corrections)
    tail = f" (not checked: {', '.join(r.not_checked)})" if r.not_checked else ""
    head.append(("all checks passed" if r.ok else "SOME CHECKS FAILED") + f" for corrections {checked}{tail}")
    na = [f"{c.check}/{c.correction}: {c.not_applicable}" for c in r.cells.values() if c.not_applicable]
    if na:
        head.append(f"cases outside the output dtype's range ({r.output_dtype}), not counted (n/a): " + ", ".join(na))
    head += r.notes
    head += [f"hint: {h}" for h in r.hints]
    for k, x in enumerate(r.counterexamples):
        head.append("")
        head.append(f"[{x.check} / {x.correction}] counterexample {k}: {x.title}")
        head.extend("  " + s for s in x.summary().splitlines())
    return "\n".join(head)
