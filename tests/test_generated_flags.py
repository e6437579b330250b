"""Generated learner flag values: each is accepted inside its range and refused outside it,
naming the flag and the range, by ``LearnerConfig`` and by the ``train`` CLI alike.

The ranges are ``LearnerConfig``'s field metadata (gpae_ref/learner/config.py), the one place
they are written; this file reads them there. Examples per test: the Hypothesis profile's.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpae_ref.learner.config import LearnerConfig, field_range
from gpae_ref.learner.settings import flag

NUMERIC = [f for f in dataclasses.fields(LearnerConfig) if field_range(f) is not None]
SLOW_OK = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: The values issue 26 found accepted, each (flag, text).
ISSUE_26 = [
    ("--adam-eps", "0"), ("--adam-eps", "-1"), ("--adam-eps", "1e308"), ("--max-grad-norm", "0"),
    ("--max-grad-norm", "-0.5"), ("--vf-coef", "-1"), ("--vf-coef", "1e308"), ("--ent-coef", "-0.01"),
    ("--ent-coef", "1e308"), ("--reward-scale", "0"), ("--reward-scale", "-1"), ("--reward-scale", "1e308"),
    ("--clip-eps", "1e308"), ("--lr", "1e308"), ("--dop-critic-lr", "1e308"), ("--seed", "-1"),
    ("--seed", str(2**63)), ("--seed=-99999999999999999999", None),
    *[(f, "100000000000000000000") for f in ("--total-steps", "--update-epochs", "--eval-envs", "--num-layers",
                                             "--head-layers", "--dop-tb-steps", "--dop-buffer-rollouts",
                                             "--dop-target-every")],
]


def parse(argv: list[str]):
    from gpae_ref.train import build_parser

    return build_parser().parse_args(argv)


@pytest.mark.parametrize("flag_, text", ISSUE_26, ids=[f"{f}={t}" for f, t in ISSUE_26])
def test_issue_26_flag_values_are_refused_naming_flag_and_range(flag_, text, capsys):
    with pytest.raises(SystemExit) as e:
        parse([flag_] if text is None else [flag_, text])
    assert e.value.code == 2
    err = capsys.readouterr().err
    name = flag_.split("=")[0]
    assert re.search(f"argument {name}(/[-a-z]+)?: must be an? (integer|number) in \\[", err), err


def test_every_numeric_field_has_a_range_and_its_default_is_in_it():
    assert {f.type for f in NUMERIC} == {"int", "float"}
    numeric = {f.name for f in dataclasses.fields(LearnerConfig) if f.type in ("int", "float")}
    assert numeric == {f.name for f in NUMERIC}
    for f in NUMERIC:
        assert f.default in field_range(f), f.name


def _outside(f) -> st.SearchStrategy:
    """Values beyond either end of ``f``'s range: the edges themselves (where open) and the
    nearest values past them, plus any value of the type further out (no finite list)."""
    r = field_range(f)
    if f.type == "int":
        lo, hi = int(r.lo) - (not r.lo_open), int(r.hi) + (not r.hi_open)  # the nearest refused values
        return st.sampled_from([lo, hi, 10**20]) | st.integers(max_value=lo) | st.integers(min_value=hi)
    past_lo = r.lo if r.lo_open else math.nextafter(r.lo, -math.inf)
    past_hi = r.hi if r.hi_open else math.nextafter(r.hi, math.inf)
    return (st.sampled_from([past_lo, past_hi, 1e308, -1e308, math.inf, -math.inf])
            | st.floats(max_value=past_lo, allow_nan=False)
            | st.floats(min_value=past_hi, allow_nan=False))


def _inside(f) -> st.SearchStrategy:
    r = field_range(f)
    if f.type == "int":
        return st.integers(int(r.lo) + r.lo_open, int(r.hi) - r.hi_open)
    return st.floats(r.lo, r.hi, exclude_min=r.lo_open, exclude_max=r.hi_open)


@SLOW_OK
@given(st.sampled_from(NUMERIC).flatmap(lambda f: st.tuples(st.just(f), _outside(f))))
def test_generated_values_outside_a_range_are_refused(case):
    f, value = case
    with pytest.raises(ValueError, match=f"^{f.name}: must be an? (integer|number) in "):
        LearnerConfig(**{f.name: value})
    with pytest.raises(SystemExit):
        parse([flag(f.name), repr(value) if isinstance(value, float) else str(value)])


@SLOW_OK
@given(st.sampled_from(NUMERIC).flatmap(lambda f: st.tuples(st.just(f), _inside(f))))
def test_generated_values_inside_a_range_pass_the_flag_check(case):
    """Inside its range a value passes its own check (other fields' rules may still refuse
    the combination, e.g. num_envs a multiple of reuse: that names another field)."""
    f, value = case
    args = parse([flag(f.name), repr(value) if isinstance(value, float) else str(value)])
    assert getattr(args, f.name) == value
    try:
        LearnerConfig(**{f.name: value})
    except ValueError as e:
        assert not re.match(f"{f.name}: must be an? (integer|number) in ", str(e)), str(e)


@pytest.mark.parametrize("value", [True, "3", 2.5, float("nan")])
def test_wrong_types_are_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="^num_envs: must be an integer"):
        LearnerConfig(num_envs=value)
    if value != 2.5:
        with pytest.raises(ValueError, match="^lr: must be a number"):
            LearnerConfig(lr=value)
