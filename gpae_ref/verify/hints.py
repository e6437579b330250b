"""Hints: the likely cause of a pattern of failures and the option that fixes it.

Each cause is detected from what the estimator does, never guessed from names:

* every checked cell fails: the estimator is called once more, on one small
  off-policy input (T=4, B=3, N=2: every axis has its own length), in each
  other layout (single-agent ``[T, B]``, batch-major ``[B, T, N]``, the agent
  axis elsewhere); a layout whose advantages match the reference is the hint;
* a correction fails: the estimator is called with that correction on the same
  input; if its advantages equal ``none``'s (a GAE that ignores ``correction``),
  or it raised in every case, the hint says to verify only the corrections it
  implements; if they equal another truncation's (``st`` for ``dt``: rho^-i not
  capped at eta), the hint gives both formulas from the correction table;
* value targets fail while the advantages pass, and match another convention
  (``plain`` V + A), in most failing cases: the hint names ``value_targets``;
  the outputs pass read as (value_targets, advantages) in most: the hint says so;
* the output is float64 but most failures are within float32's tolerance: the
  estimator computes in float32, and the hint names the tolerance.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from gpae_ref.corrections import CORRECTIONS, correction_row
from gpae_ref.verify.cases import _direct, _reference_expected, random_inputs
from gpae_ref.verify.options import LAYOUTS
from gpae_ref.verify.report import FAIL, Cell
from gpae_ref.verify.runner import (TOLERANCES, EstimatorError, Invoker, Judging, Verdict, judge,
                                    ratio_to_tolerance, run_call)

PROBE_SHAPE = (4, 3, 2)  # T, B, N all distinct, so a wrong axis order cannot line up by chance
PROBE_GROUP = "B"  # no mask: the probe must not depend on the estimator's mask support


def _probe(estimator, agents, layout, correction: str, like: str, seed: int, tol) -> bool:
    """Does the estimator, called in ``agents``/``layout`` with ``correction``, give ``like``'s advantages?"""
    T, B, N = PROBE_SHAPE
    x = random_inputs(np.random.default_rng(seed + 1000), T, B, 1 if agents == 1 else N, done_prob=0.3)
    case = _direct("probe", correction, "probe", x, PROBE_GROUP, _reference_expected(x, PROBE_GROUP, like))
    invoke = Invoker(estimator, agents, False, None, layout, one_output=True)  # advantages are what it judges
    try:
        outputs = [run_call(invoke, case.calls[0], False)]
    except EstimatorError:
        return False
    how = Judging.make(invoke.output_dtypes, *tol, "none")
    with np.errstate(all="ignore"):
        return not judge(case, outputs, how).failed


def _layout_fix(agents, layout) -> str:
    if agents == 1:
        what = "single-agent [T, B] arrays" if layout == "TB" else "single-agent batch-major [B, T] arrays"
        flags = "--agents 1" + ("" if layout == "TB" else " --layout BT")
        kw = "agents=1" + ("" if layout == "TB" else ", layout='BT'")
    else:
        what = f"[{', '.join(layout)}] arrays" + (" (batch-major)" if layout == "BTN" else
                                                   "" if layout == "TBN" else " (the agent axis elsewhere)")
        flags, kw = f"--layout {layout}", f"layout={layout!r}"
    return f"the estimator works on {what}: verify with {kw} ({flags})"


def layout_hint(estimator, agents, layout, correction, seed, tol) -> str | None:
    """Every cell failed: the first other layout in which the estimator matches the reference."""
    current = (agents, layout or ("TB" if agents == 1 else "TBN"))
    candidates = [(1, "TB"), (1, "BT")] + [(None, lay) for lay in LAYOUTS[:6]]
    for cand in candidates:
        if cand != current and _probe(estimator, *cand, correction, correction, seed, tol):
            found = _layout_fix(*cand)
            return found + " (every cell failed; one call in that layout matched the reference)"
    return None


def correction_hint(estimator, agents, layout, cells: dict, corrections, raised_everywhere: set, seed,
                    tol) -> str | None:
    """Corrections that fail: the estimator raised for them, or computes another correction instead."""
    failing = [c for c in corrections if any(cells[k].status == FAIL for k in cells if k[1] == c)]
    if not failing:
        return None
    same_as: dict[str, str] = {}
    for c in failing:
        if c in raised_everywhere:
            continue
        like = next((g for g in CORRECTIONS if g != c and _probe(estimator, agents, layout, c, g, seed, tol)), None)
        if like is not None:
            same_as[c] = like
    # Computing `none` for a correction is ignoring `correction` (a GAE): verifying only what it
    # implements is the fix. Computing another truncation is a bug in that correction: fix it.
    misread = {c: g for c, g in same_as.items() if g != "none"}
    dropped = [c for c in failing if c in raised_everywhere or same_as.get(c) == "none"]
    keep = [c for c in corrections if c not in dropped]
    causes = []
    raised = [c for c in dropped if c in raised_everywhere]
    if raised:
        causes.append(f"it raised in every case of {', '.join(raised)}")
    ignored = [c for c in dropped if c not in raised_everywhere]
    if ignored:
        causes.append(f"its advantages for {', '.join(ignored)} equal those of correction 'none' (it seems "
                      f"to ignore `correction`)")
    found = []
    if causes and keep:
        found.append(f"{'; '.join(causes)}: if it implements only {', '.join(keep)}, verify with "
                     f"corrections={tuple(keep)!r} (--corrections {','.join(keep)})")
    for c, g in misread.items():
        found.append(f"its advantages for {c} equal those of correction {g!r}: it computes c = "
                     f"{correction_row(g).formula} where {c} is c = {correction_row(c).formula}; fix its {c}")
    return "; ".join(found) or None


def convention_hint(conventions: list[str | None]) -> str | None:
    """``conventions``: per failing case, the value-target convention its outputs match (None: none)."""
    found = Counter(c for c in conventions if c)
    if len(found) != 1:
        return None
    (name, k), = found.items()
    if 2 * k <= len(conventions):  # a minority: the convention is not what fails (e.g. swapped ratios)
        return None
    if name == "swapped":
        return (f"in {k} of the {len(conventions)} failing cases the outputs pass read the other way round: it "
                f"returns (value_targets, advantages); return (advantages, value_targets), or wrap it, e.g. "
                f"lambda *a, **k: fn(*a, **k)[::-1]")
    what = {"plain": "V + A", "clipped": "E + min(1, rho^i) A, the spec's"}[name]
    return (f"in {k} of the {len(conventions)} failing cases the advantages pass and the value targets are "
            f"{what}: verify with value_targets={name!r} (--value-targets {name}), or value_targets='none' "
            f"to check advantages only")


def precision_hint(verdicts: list[Verdict], how: Judging, tolerance_given: bool) -> str | None:
    """float64 outputs judged at float64's tolerance whose errors are, in most failing cases, within
    float32's: the estimator computes in float32 (a float32 network or trainer) and casts."""
    if tolerance_given or how.tolerances[0] != TOLERANCES["float64"]:
        return None
    f32 = TOLERANCES["float32"]
    k = sum(v.error is None and v.got is not None and ratio_to_tolerance(v.got, v.expected, *f32)[0] <= 1
            for v in verdicts)
    if 2 * k <= len(verdicts):
        return None
    return (f"in {k} of the {len(verdicts)} failing cases the outputs are float64 but the errors are within "
            f"float32's tolerance (atol, rtol = {f32[0]:g}, {f32[1]:g}): it seems to compute in float32. Return "
            f"float32 arrays (verify then judges at float32's tolerance), or pass atol={f32[0]:g}, "
            f"rtol={f32[1]:g} (--atol {f32[0]:g} --rtol {f32[1]:g})")


def all_failed(cells: dict[tuple[str, str], Cell], corrections) -> bool:
    checked = [c for (_, corr), c in cells.items() if corr in corrections and c.cases]
    return bool(checked) and all(c.status == FAIL for c in checked)
