"""Running the cases: stack a group's calls into one estimator call, check outputs, judge each case.

Stacking. The calls of one (group, correction) share every option, so they are
joined along the batch axis into one call. A call with fewer time steps is
padded *in front* (a correct estimator's A_t depends only on steps t.. T-1, so
rows before a case cannot change its rows; the padding rows end in a done), and
one with fewer agents is padded with agents whose log-ratio is 0 (a correct
estimator's rho^-i does not change). Results are split back per call. A case
that fails is rerun by itself, so its counterexample is the case alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpae_ref.verify.cases import MASKED_GROUPS, SHARED_VALUE_GROUPS, Call, Case
from gpae_ref.verify.report import Counterexample

ARRAY_NAMES = ("rewards", "values", "dones", "logp_target", "logp_behaviour")
PROGRESS_AFTER_S = 3.0  # progress lines start once a verify has run this long (a fast estimator stays quiet)


class EstimatorError(Exception):
    """The estimator raised, or returned something verify cannot compare; the message says what and why."""


# ----------------------------------------------------------------------------
# Calling the estimator
# ----------------------------------------------------------------------------


@dataclass
class Invoker:
    """Calls the user's estimator in its own layout and returns float64 ``[T, B, N]`` pairs."""

    estimator: Callable
    agents: int | None
    masks: bool
    progress: Callable[[str], None] | None = None
    calls: int = 0
    output_dtype: np.dtype | None = None

    def __post_init__(self):
        self.signatures: set = set()
        self.started = time.perf_counter()

    def __call__(self, arrays: dict, options: dict, label: str = "") -> tuple[np.ndarray, np.ndarray]:
        args = [arrays[k] for k in ARRAY_NAMES]
        kwargs = dict(options)
        mask = arrays.get("mask")
        if self.agents == 1:  # the single-agent layout: [T, B] arrays, values [T+1, B]
            args = [a[..., 0] if a.ndim == 3 else a for a in args]
            mask = None if mask is None else mask[..., 0]
        if mask is not None:
            kwargs["mask"] = mask
        self.signatures.add((tuple((a.shape, a.dtype.str) for a in args), mask is not None,
                             tuple(sorted((k, v) for k, v in kwargs.items() if k != "mask"))))
        self.calls += 1
        t0 = time.perf_counter()
        try:
            out = self.estimator(*args, **kwargs)
        except Exception as exc:
            raise EstimatorError(_raised_message(exc, mask is not None)) from exc
        T, B, N = np.shape(arrays["logp_target"])
        shape = (T, B) if self.agents == 1 else (T, B, N)
        adv, vt = _two_arrays(out, shape)
        if self.output_dtype is None and adv.dtype.kind == "f":
            self.output_dtype = np.result_type(adv.dtype, vt.dtype)
        adv, vt = adv.astype(np.float64), vt.astype(np.float64)
        if self.agents == 1:
            adv, vt = adv[..., None], vt[..., None]
        if self.progress is not None and time.perf_counter() - self.started >= PROGRESS_AFTER_S:
            self.progress(f"verify: call {self.calls} ({label}, batch {B}) took {time.perf_counter() - t0:.1f} s")
        return adv, vt


def _raised_message(exc: BaseException, had_mask: bool) -> str:
    msg = f"the estimator raised {type(exc).__name__}: {exc}"
    if had_mask and isinstance(exc, TypeError) and "mask" in str(exc):
        msg += " (this call passed mask=; verify an estimator without masks with masks=False, or --no-masks)"
    return msg


def _two_arrays(out, shape) -> tuple[np.ndarray, np.ndarray]:
    """The estimator's return value as two real arrays of ``shape``, else EstimatorError saying what it got."""
    want = f"a pair (advantages, value_targets) of arrays of shape {list(shape)}"
    if isinstance(out, dict):
        keys = list(out)[:6]
        raise EstimatorError(f"the estimator returned a dict with keys {keys}; verify expects {want}: "
                             "wrap it, e.g. lambda *a, **k: (lambda o: (o['advantages'], o['value_targets']))(fn(*a, **k))")
    if isinstance(out, (str, bytes)) or not hasattr(out, "__len__") or hasattr(out, "shape"):
        what = f"one array of shape {list(np.shape(out))}" if hasattr(out, "shape") else f"a {type(out).__name__}"
        raise EstimatorError(f"the estimator returned {what}; verify expects {want}.")
    if len(out) != 2:
        raise EstimatorError(f"the estimator returned a {type(out).__name__} of length {len(out)}; verify expects {want}.")
    arrays = []
    for name, x in zip(("advantages", "value_targets"), out):
        try:
            a = np.asarray(x)
        except Exception as exc:  # e.g. a device array that cannot come to the host
            raise EstimatorError(f"{name} could not be read as an array ({type(exc).__name__}: {exc}).") from exc
        if a.dtype.kind == "c":
            raise EstimatorError(f"{name} is complex ({a.dtype}); verify expects real arrays.")
        if a.dtype.kind not in "fiub":
            raise EstimatorError(f"{name} is not numeric (dtype {a.dtype}, a {type(x).__name__}); verify expects {want}.")
        if a.shape != tuple(shape):
            raise EstimatorError(f"{name} has shape {list(a.shape)}; verify expects {list(shape)}"
                                 + (" (agents=1: [T, B])" if len(shape) == 2 else " ([T, B, N])") + ".")
        arrays.append(a)
    return arrays[0], arrays[1]


# ----------------------------------------------------------------------------
# Stacking
# ----------------------------------------------------------------------------


def _prepared(call: Call, masks: bool, fill_mask: bool = True) -> dict:
    """The call's arrays as the group passes them: a mask in masked groups (ones where the case has none)."""
    a = {k: np.asarray(call.arrays[k], np.float64) for k in ARRAY_NAMES}
    if call.group in MASKED_GROUPS and masks:
        if "mask" in call.arrays:
            a["mask"] = np.asarray(call.arrays["mask"], np.float64)
        elif fill_mask:
            a["mask"] = np.ones(a["logp_target"].shape)
    elif "mask" in call.arrays:
        raise AssertionError("a masked case outside a masked group")  # a bug in the case tables
    return a


def stacked(calls: list[Call], masks: bool) -> tuple[dict, list[tuple[int, int, int, int]]]:
    """One input for all ``calls`` (same group), and per call (t_offset, b0, b1, n_agents).

    A call with t < T steps sits in rows T - t.. (rows before it are zero
    rewards ending in a done); one with n < N agents fills agents 0..n-1 (the
    others have log-ratio 0 and mask 1).
    """
    prepared = [_prepared(c, masks, fill_mask=False) for c in calls]
    T = max(p["logp_target"].shape[0] for p in prepared)
    N = max(p["logp_target"].shape[2] for p in prepared)
    B = sum(p["logp_target"].shape[1] for p in prepared)
    shared = calls[0].group in SHARED_VALUE_GROUPS
    arrays = {"rewards": np.zeros((T, B)), "values": np.zeros((T + 1, B) if shared else (T + 1, B, N)),
              "dones": np.zeros((T, B)), "logp_target": np.zeros((T, B, N)), "logp_behaviour": np.zeros((T, B, N))}
    if calls[0].group in MASKED_GROUPS and masks:
        arrays["mask"] = np.ones((T, B, N))
    where, b = [], 0
    for p in prepared:
        t, nb, n = p["logp_target"].shape
        arrays["dones"][: T - t, b: b + nb] = 1.0
        for k, x in p.items():  # values have t + 1 rows, so every array starts at row T - t
            if x.ndim == 3:
                arrays[k][T - t:, b: b + nb, :n] = x
            else:
                arrays[k][T - t:, b: b + nb] = x
        where.append((T - t, b, b + nb, n))
        b += nb
    return arrays, where


def run_call(invoke: Invoker, call: Call, masks: bool):
    """One call by itself (for reruns and shrinking)."""
    return invoke(_prepared(call, masks), call.options, f"group {call.group}, {call.correction}, alone")


# ----------------------------------------------------------------------------
# Judging a case
# ----------------------------------------------------------------------------


def ratio_to_tolerance(got: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> tuple[float, tuple]:
    """max |got - expected| / (atol + rtol |expected|) (inf where got is not finite), and where."""
    g = np.asarray(got, np.float64)
    e = np.asarray(expected, np.float64)
    if g.shape != e.shape:
        return float("inf"), ()
    if g.size == 0:
        return 0.0, ()
    with np.errstate(all="ignore"):
        diff = np.abs(g - e)
        tol = atol + rtol * np.abs(e)
        r = np.where(diff == 0, 0.0, diff / tol)
        r = np.where(np.isfinite(g) & ~np.isnan(r), r, np.inf)
    where = tuple(int(i) for i in np.unravel_index(int(np.argmax(r)), r.shape))
    return float(r[where]), where


def _expectation_table(case: Case, column_values: np.ndarray) -> np.ndarray:
    x = case.extra
    out = np.zeros((x["n_states"] * x["n_joint"],) + column_values.shape[1:])
    np.add.at(out, x["start"], x["weight"][:, None] * column_values)
    return out.reshape((x["n_states"], x["n_joint"]) + column_values.shape[1:])


def got_and_expected(case: Case, outputs: list, what: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the case's relation to the outputs of its calls (each (adv, vt) float64 [T, B, N])."""
    o = [np.asarray(p[what], np.float64) for p in outputs]
    if case.relation == "direct":
        return o[0], np.asarray(case.expected[what], np.float64)
    if case.relation == "expectation":
        return _expectation_table(case, o[0][0]), np.asarray(case.expected[what], np.float64)
    if case.relation == "permute":
        return o[0], o[1][..., case.extra["perm"]]
    if case.relation == "scale":
        return o[0], case.extra["scale"] * o[1]
    if case.relation == "concat_columns":
        return o[0], np.concatenate(o[1:], axis=1)
    if case.relation == "concat_time":
        return o[0], np.concatenate(o[1:], axis=0)
    raise AssertionError(case.relation)


@dataclass
class Verdict:
    ratio: float | None  # None: not applicable for the output dtype
    failed: bool
    what: int = 0
    index: tuple | None = None
    got: np.ndarray | None = None
    expected: np.ndarray | None = None
    error: str | None = None


def judge(case: Case, outputs: list, atol: float, rtol: float, dtype: np.dtype | None) -> Verdict:
    """Compare advantages, then value targets; n/a when an exact value lies outside ``dtype``'s range."""
    worst = Verdict(0.0, False)
    for what in (0, 1):
        got, expected = got_and_expected(case, outputs, what)
        if dtype is not None and dtype.kind == "f" and case.relation in ("direct", "expectation"):
            if np.max(np.abs(expected), initial=0.0) > np.finfo(dtype).max:
                return Verdict(None, False)
        r, where = ratio_to_tolerance(got, expected, atol, rtol)
        if r > 1:
            return Verdict(r, True, what, where, got, expected)
        worst.ratio = max(worst.ratio, r)
    return worst


# ----------------------------------------------------------------------------
# Counterexamples
# ----------------------------------------------------------------------------


def _user_layout(arrays: dict, agents: int | None) -> dict:
    if agents != 1:
        return dict(arrays)
    return {k: (v[..., 0] if v.ndim == 3 else v) for k, v in arrays.items()}


def counterexample(invoke: Invoker, case: Case, batched: Verdict, atol, rtol, masks) -> Counterexample:
    """Rerun ``case`` alone; the counterexample is what it does alone (or says it fails only when stacked)."""
    try:
        outputs = [run_call(invoke, c, masks) for c in case.calls]
        v = judge(case, outputs, atol, rtol, invoke.output_dtype)
        alone = "" if v.failed else (
            "alone, this case passes: it fails only when stacked with other cases in one call (columns of a "
            "batch, or time steps before a done, are not independent in the estimator)")
        if not v.failed:
            v = batched
    except EstimatorError as exc:
        v, alone = Verdict(float("inf"), True, error=str(exc)), ""
    calls = [(_user_layout(_prepared(c, masks), invoke.agents), c.options) for c in case.calls]
    return Counterexample(case.check, case.correction, case.title, case.description, v.what, case.relation,
                          calls, v.expected, v.got, v.index, v.error if v.error else batched.error, dict(case.extra),
                          alone)


def _sub_case(case: Case, inputs: dict) -> Case:
    from gpae_ref.verify.cases import _direct, _reference_expected

    group = case.calls[0].group
    title = case.title if case.title.endswith(" (shrunk)") else case.title + " (shrunk)"
    return _direct(case.check, case.correction, title, inputs, group,
                   _reference_expected(inputs, group, case.correction), shrinkable=True)


def shrink(invoke: Invoker, case: Case, atol, rtol, masks, budget: int = 60) -> Case:
    """Greedy: drop batch columns, agents, and time steps while the case still fails alone."""
    from gpae_ref.verify.cases import slice_inputs

    def fails(c: Case) -> bool:
        try:
            return judge(c, [run_call(invoke, c.calls[0], masks)], atol, rtol, invoke.output_dtype).failed
        except EstimatorError:
            return True

    current = case
    improved = True
    while improved and budget > 0:
        improved = False
        x = current.calls[0].arrays
        T, B, N = current.calls[0].shape
        candidates = [slice_inputs(x, cols=[b]) for b in range(B)] if B > 1 else []
        if N > 1 and invoke.agents != 1:
            halves = [slice_inputs(x, agents=list(range(N // 2))), slice_inputs(x, agents=list(range(N // 2, N)))]
            candidates += (halves if N > 8 else []) + [
                slice_inputs(x, agents=[j for j in range(N) if j != i]) for i in range(min(N, 8))]
        if T > 1:
            candidates += [slice_inputs(x, t1=T - 1), slice_inputs(x, t0=1)]
        for cand in candidates:
            budget -= 1
            sub = _sub_case(current, cand)
            if fails(sub):
                current, improved = sub, True
                break
            if budget <= 0:
                break
    return current


def default_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

