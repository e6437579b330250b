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

    def summary(self) -> str:
        """A few lines: what was checked, and where it disagreed."""
        lines = [self.description]
        if self.error is not None:
            lines.append(self.error)
        elif self.index is not None and self.expected is not None:
            e = _num(self.expected[self.index])
            g = _num(self.got[self.index]) if self.got is not None else "nothing"
            lines.append(f"{_WHAT[self.what]} at index {list(self.index)}: expected {e}, got {g}")
        if self.alone:
            lines.append(self.alone)
        return "\n".join(lines)


_WHAT = ("advantages", "value_targets")


def _num(x) -> str:
    """A plain number (no ``np.float64(...)``)."""
    return f"{float(x):.10g}"


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

    def add(self, ratio: float | None, failed: bool) -> None:
        """Record one case (``ratio`` None: not applicable for the estimator's dtype)."""
        if ratio is None:
            self.not_applicable += 1
            return
        self.cases += 1
        self.failing += int(failed)
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
    output_dtype: str = ""
    notes: list[str] = field(default_factory=list)

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
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, directory) -> list[Path]:
        """Write ``report.json`` and, per counterexample, ``<name>.npz`` (no pickle) and ``<name>.py``.

        Running ``python <name>.py`` from that folder reruns the failing call(s)
        on the saved inputs and prints expected against got. Returns the paths.
        """
        from gpae_ref.verify.rerun import save_counterexample

        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise ValueError(f"directory {str(d)!r} exists and is not a folder; pass a folder path.")
        d.mkdir(parents=True, exist_ok=True)
        paths = [d / "report.json"]
        paths[0].write_text(self.to_json() + "\n")
        for k, x in enumerate(self.counterexamples):
            stem = f"{k:02d}_{_slug(x.check)}_{x.correction}"
            paths += save_counterexample(x, d, stem, self.estimator, self.atol, self.rtol, self.agents)
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


def _cell_text(c: Cell) -> str:
    if c.status == PASS:
        return f"pass {c.worst_ratio:.2g}"
    if c.status == FAIL:
        return f"FAIL {c.failing}/{c.cases}"
    return c.status


def format_report(r: VerifyReport) -> str:
    """The report as a table: checks down, corrections across; then the counterexamples."""
    cols = r.all_corrections
    width = 14
    agents = "" if r.agents is None else f" agents={r.agents}"
    head = [
        f"verify({r.estimator}) seed={r.seed} atol={r.atol:g} rtol={r.rtol:g}{agents}"
        + (f" output dtype {r.output_dtype}" if r.output_dtype else ""),
        f"{r.calls} estimator calls, {r.signatures} distinct call signatures",
        "cell: pass <worst |error| / tolerance> | FAIL <failing>/<cases> | n/a (outside the output dtype's range)"
        " | not checked",
        f"{'check':<20}" + "".join(f"{c:>{width}}" for c in cols),
        "-" * (20 + width * len(cols)),
    ]
    for name in r.checks:
        row = f"{name:<20}"
        for c in cols:
            cell = r.cells.get((name, c))
            row += f"{(_cell_text(cell) if cell else NOT_CHECKED):>{width}}"
        head.append(row)
    head.append("-" * (20 + width * len(cols)))
    checked = ", ".join(r.corrections)
    tail = f" (not checked: {', '.join(r.not_checked)})" if r.not_checked else ""
    head.append(("all checks passed" if r.ok else "SOME CHECKS FAILED") + f" for corrections {checked}{tail}")
    na = [f"{c.check}/{c.correction}: {c.not_applicable}" for c in r.cells.values() if c.not_applicable]
    if na:
        head.append(f"cases outside the {r.output_dtype or 'output'} range, not counted (n/a): " + ", ".join(na))
    head += r.notes
    for k, x in enumerate(r.counterexamples):
        head.append("")
        head.append(f"[{x.check} / {x.correction}] counterexample {k}: {x.title}")
        head.extend("  " + s for s in x.summary().splitlines())
    return "\n".join(head)
