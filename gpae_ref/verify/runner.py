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

import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpae_ref.verify.cases import MASKED_GROUPS, SHARED_VALUE_GROUPS, Call, Case
from gpae_ref.verify.report import Counterexample
from gpae_ref.verify.sources import is_library

ARRAY_NAMES = ("rewards", "values", "dones", "logp_target", "logp_behaviour")
PROGRESS_AFTER_S = 3.0  # progress lines start once a verify has run this long (a fast estimator stays quiet)


class EstimatorError(Exception):
    """The estimator raised, or returned something verify cannot compare; the message says what and why."""


# ----------------------------------------------------------------------------
# Calling the estimator
# ----------------------------------------------------------------------------


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """An array from verify's axis order (T, B[, N]; values T+1 in T's place) to ``layout``'s."""
    canon = "TBN"[: x.ndim]
    return np.transpose(x, [canon.index(c) for c in layout if c in canon])


def from_layout(y: np.ndarray, layout: str, ndim: int) -> np.ndarray:
    """The inverse of ``to_layout`` for an output of ``ndim`` axes."""
    order = "".join(c for c in layout if c in "TBN"[:ndim])
    return np.transpose(y, [order.index(c) for c in "TBN"[:ndim]])


@dataclass
class Invoker:
    """Calls the user's estimator in its own layout and returns float64 ``[T, B, N]`` pairs.

    ``output_dtypes`` records the dtypes of (advantages, value_targets) from the first real-valued
    call: each output is judged at its own dtype's tolerance.
    """

    estimator: Callable
    agents: int | None
    masks: bool
    progress: Callable[[str], None] | None = None
    layout: str | None = None
    one_output: bool = False  # value_targets='none': the advantages alone are accepted too
    calls: int = 0
    output_dtypes: tuple = (None, None)

    def __post_init__(self):
        self.signatures: set = set()
        self.started = time.perf_counter()
        if self.layout is None:
            self.layout = "TB" if self.agents == 1 else "TBN"

    def _user_arguments(self, arrays: dict, options: dict) -> tuple[list, dict]:
        args = [arrays[k] for k in ARRAY_NAMES]
        kwargs = dict(options)
        mask = arrays.get("mask")
        if self.agents == 1:  # the single-agent layout: [T, B] arrays, values [T+1, B]
            args = [a[..., 0] if a.ndim == 3 else a for a in args]
            mask = None if mask is None else mask[..., 0]
        args = [to_layout(a, self.layout) for a in args]
        if mask is not None:
            kwargs["mask"] = to_layout(mask, self.layout)
        return args, kwargs

    def __call__(self, arrays: dict, options: dict, label: str = "") -> tuple[np.ndarray, np.ndarray]:
        args, kwargs = self._user_arguments(arrays, options)
        self.signatures.add((tuple((a.shape, a.dtype.str) for a in args), "mask" in kwargs,
                             tuple(sorted((k, v) for k, v in kwargs.items() if k != "mask"))))
        self.calls += 1
        t0 = time.perf_counter()
        try:
            out = self.estimator(*args, **kwargs)
        except Exception as exc:
            raise EstimatorError(raised_message(exc, "mask" in kwargs)) from exc
        T, B, N = np.shape(arrays["logp_target"])
        ndim = 2 if self.agents == 1 else 3
        adv, vt = _two_arrays(out, tuple(dict(T=T, B=B, N=N)[c] for c in self.layout), self.layout,
                              self.one_output)
        if self.output_dtypes == (None, None) and adv.dtype.kind == "f":
            self.output_dtypes = (adv.dtype, vt.dtype if vt.dtype.kind == "f" else adv.dtype)
        adv, vt = (from_layout(x, self.layout, ndim).astype(np.float64) for x in (adv, vt))
        if self.agents == 1:
            adv, vt = adv[..., None], vt[..., None]
        if self.progress is not None and time.perf_counter() - self.started >= PROGRESS_AFTER_S:
            self.progress(f"verify: call {self.calls} ({label}, batch {B}) took {time.perf_counter() - t0:.1f} s")
        return adv, vt


def _two_arrays(out, shape, layout: str = "TBN", one_output: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The estimator's return value as two real arrays of ``shape``, else EstimatorError saying what it got.

    ``one_output``: a single array is the advantages (returned twice; its value targets are not judged).
    """
    want = f"a pair (advantages, value_targets) of arrays of shape {list(shape)}"
    if one_output and hasattr(out, "shape") and not isinstance(out, dict):
        out = (out, out)
    if isinstance(out, dict):
        keys = list(out)[:6]
        raise EstimatorError(f"the estimator returned a dict with keys {keys}; verify expects {want}: "
                             "wrap it, e.g. lambda *a, **k: (lambda o: (o['advantages'], o['value_targets']))(fn(*a, **k))")
    if isinstance(out, (str, bytes)) or not hasattr(out, "__len__") or hasattr(out, "shape"):
        what = f"one array of shape {list(np.shape(out))}" if hasattr(out, "shape") else f"a {type(out).__name__}"
        alone = (" (for an estimator of advantages only, verify with value_targets='none', --value-targets none)"
                 if hasattr(out, "shape") else "")
        raise EstimatorError(f"the estimator returned {what}; verify expects {want}{alone}.")
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
            raise EstimatorError(f"{name} has shape {list(a.shape)}; verify expects {list(shape)} "
                                 f"([{', '.join(layout)}]" + (", agents=1" if len(shape) == 2 else "") + ").")
        arrays.append(a)
    return arrays[0], arrays[1]


# ----------------------------------------------------------------------------
# An estimator that raised: its message, with the frames of the user's own code
# ----------------------------------------------------------------------------

_VERIFY_DIR = os.path.dirname(os.path.abspath(__file__))
USER_FRAMES = 3  # the innermost frames of the user's code shown for an exception


def _short(filename: str) -> str:
    """A path relative to the working folder when it lies inside it (shorter, and what the user typed)."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if rel.startswith("..") else rel


def user_frames(exc: BaseException, keep: int = USER_FRAMES) -> list[str]:
    """'file, line N, in f: source' for the innermost ``keep`` frames outside verify and installed libraries.

    If the exception came from inside a library, a last line names where.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_VERIFY_DIR + os.sep)]
    own = [f for f in frames if not is_library(f.filename)][-keep:]
    lines = [f"  {_short(f.filename)}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in own]
    if frames and (not own or frames[-1] is not own[-1]):
        f = frames[-1]
        lines.append(f"  (raised inside {_short(f.filename)}, line {f.lineno}, in {f.name})")
    return lines


def raised_message(exc: BaseException, had_mask: bool) -> str:
    msg = f"the estimator raised {type(exc).__name__}: {exc}"
    if had_mask and isinstance(exc, TypeError) and "mask" in str(exc):
        msg += " (this call passed mask=; verify an estimator without masks with masks=False, or --no-masks)"
    return "\n".join([msg] + user_frames(exc))


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


#: Default (atol, rtol) per output dtype (``verify(atol=None, rtol=None)``).
TOLERANCES: dict[str, tuple[float, float]] = {"float64": (1e-9, 1e-9), "float32": (1e-4, 1e-4),
                                              "float16": (1e-2, 1e-2)}
OUTPUT_NAMES = ("advantages", "value_targets")


def _dtype_tolerance(dtype) -> tuple[float, float]:
    return TOLERANCES.get(np.dtype(dtype).name if dtype is not None else "float64", TOLERANCES["float64"])


@dataclass(frozen=True)
class Judging:
    """How outputs are compared: per output (advantages, value_targets) a dtype and (atol, rtol); the convention."""

    dtypes: tuple
    tolerances: tuple[tuple[float, float], tuple[float, float]]
    value_targets: str = "clipped"

    @classmethod
    def make(cls, dtypes: tuple, atol: float | None, rtol: float | None, value_targets: str) -> "Judging":
        """Tolerances by each output's dtype unless given.

        A value target v = E + c A carries the rounding of A, so it is judged at the looser of its
        own dtype's tolerance and the advantages' (float32 A in a float64 v is off by ~1e-8).
        """
        adv = _dtype_tolerance(dtypes[0])
        vt = tuple(max(x, y) for x, y in zip(_dtype_tolerance(dtypes[1]), adv))
        given = lambda default: (default[0] if atol is None else float(atol),  # noqa: E731
                                 default[1] if rtol is None else float(rtol))
        return cls(tuple(None if d is None else np.dtype(d) for d in dtypes), (given(adv), given(vt)), value_targets)

    @property
    def outputs(self) -> tuple[int, ...]:
        """The outputs judged: value targets only when the estimator returns them in a known convention."""
        return (0,) if self.value_targets == "none" else (0, 1)


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


def got_and_expected(case: Case, outputs: list, what: int, value_targets: str = "clipped"):
    """Apply the case's relation to the outputs of its calls (each (adv, vt) float64 [T, B, N])."""
    o = [np.asarray(p[what], np.float64) for p in outputs]
    if case.relation == "direct":
        return o[0], case.expected_output(what, value_targets)
    if case.relation == "expectation":
        return _expectation_table(case, o[0][0]), case.expected_output(what, value_targets)
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
    matches: str | None = None  # advantages passed and the value targets match this other convention, or
    # "swapped": the outputs pass read as (value_targets, advantages)


def _matching_convention(case: Case, outputs: list, how: Judging) -> str | None:
    """The other value-target convention the outputs match (cases with exact values only), or None."""
    if case.relation not in ("direct", "expectation"):
        return None
    for convention in ("clipped", "plain"):
        if convention != how.value_targets:
            got, expected = got_and_expected(case, outputs, 1, convention)
            if ratio_to_tolerance(got, expected, *how.tolerances[1])[0] <= 1:
                return convention
    return None


def _swapped(case: Case, outputs: list, how: Judging) -> bool:
    """Do the outputs pass with the pair read the other way round, (value_targets, advantages)?"""
    if case.relation not in ("direct", "expectation") or how.value_targets == "none":
        return False
    flipped = [(vt, adv) for adv, vt in outputs]
    return all(ratio_to_tolerance(*got_and_expected(case, flipped, what, how.value_targets),
                                  *how.tolerances[what])[0] <= 1 for what in (0, 1))


def judge(case: Case, outputs: list, how: Judging) -> Verdict:
    """Compare advantages, then value targets; n/a when an exact value lies outside its output dtype's range."""
    worst = Verdict(0.0, False)
    for what in how.outputs:
        got, expected = got_and_expected(case, outputs, what, how.value_targets)
        dtype = how.dtypes[what]
        if dtype is not None and dtype.kind == "f" and case.relation in ("direct", "expectation"):
            if np.max(np.abs(expected), initial=0.0) > np.finfo(dtype).max:
                return Verdict(None, False)
        r, where = ratio_to_tolerance(got, expected, *how.tolerances[what])
        if r > 1:
            matches = (_matching_convention(case, outputs, how) if what == 1 else
                       "swapped" if _swapped(case, outputs, how) else None)
            return Verdict(r, True, what, where, got, expected, matches=matches)
        worst.ratio = max(worst.ratio, r)
    return worst


# ----------------------------------------------------------------------------
# Counterexamples
# ----------------------------------------------------------------------------


def _user_layout(arrays: dict, agents: int | None) -> dict:
    if agents != 1:
        return dict(arrays)
    return {k: (v[..., 0] if v.ndim == 3 else v) for k, v in arrays.items()}


def _both_outputs(case: Case, outputs: list, how: Judging) -> dict:
    """Per judged output: (got, expected) as compared (for a readable counterexample)."""
    return {OUTPUT_NAMES[w]: got_and_expected(case, outputs, w, how.value_targets) for w in how.outputs}


def counterexample(invoke: Invoker, case: Case, batched: Verdict, how: Judging, masks) -> Counterexample:
    """Rerun ``case`` alone; the counterexample is what it does alone (or says it fails only when stacked)."""
    both = {}
    try:
        outputs = [run_call(invoke, c, masks) for c in case.calls]
        v = judge(case, outputs, how)
        both = _both_outputs(case, outputs, how)
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
                          alone, tolerance=how.tolerances[v.what], matches=v.matches, outputs=both)


def _sub_case(case: Case, inputs: dict) -> Case:
    from gpae_ref.verify.cases import _direct, _reference_expected

    group = case.calls[0].group
    title = case.title if case.title.endswith(" (shrunk)") else case.title + " (shrunk)"
    return _direct(case.check, case.correction, title, inputs, group,
                   _reference_expected(inputs, group, case.correction), shrinkable=True)


def shrink(invoke: Invoker, case: Case, how: Judging, masks, budget: int = 60) -> Case:
    """Greedy: drop batch columns, agents, and time steps while the case still fails alone."""
    from gpae_ref.verify.cases import slice_inputs

    def fails(c: Case) -> bool:
        try:
            return judge(c, [run_call(invoke, c.calls[0], masks)], how).failed
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

