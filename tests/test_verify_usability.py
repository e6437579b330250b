"""verify() as strangers meet it: value-target conventions, per-output tolerances, hints, how far off, tracebacks.

Each estimator here is planted (tests/planted.py) with one way in which code from another library
differs from gpae_ref.gpae's signature or conventions; the report must say what to do about it.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import planted
from gpae_ref.reference import gpae
from gpae_ref.verify import TOLERANCES, VerifyOptions, verify
from gpae_ref.verify.runner import Judging

TESTS = Path(__file__).resolve().parent
OFF_POLICY = ("P3/P4 operator", "P6 reductions", "matches reference")  # checks that see value targets differ


# ----------------------------------------------------------------------------
# 1. Value-target conventions
# ----------------------------------------------------------------------------


def test_plain_value_targets_pass_with_plain_and_fail_with_the_spec_convention():
    assert verify(planted.plain_value_targets, checks=OFF_POLICY, value_targets="plain").ok
    spec = verify(planted.plain_value_targets, checks=OFF_POLICY)
    assert not spec.ok
    text = str(spec)
    assert "hint: " in text and "value_targets='plain'" in spec.hints[0]
    assert "the value targets match the 'plain' convention" in text
    for x in spec.counterexamples:
        assert x.what == 1 and x.matches == "plain"


def test_the_spec_convention_named_when_plain_is_asked_of_a_spec_estimator():
    report = verify(gpae, checks=("P6 reductions",), corrections="none", value_targets="plain")
    assert not report.ok
    assert any("value_targets='clipped'" in h for h in report.hints)


def test_value_targets_none_checks_advantages_only():
    report = verify(planted.plain_value_targets, checks=OFF_POLICY, value_targets="none")
    assert report.ok, str(report)
    assert "value targets were not checked" in str(report)
    wrong_advantages = verify(planted.lam_on_delta, checks=("P6 reductions",), value_targets="none")
    assert not wrong_advantages.ok


def test_on_policy_checks_cannot_tell_the_conventions_apart():
    """On-policy min(1, rho) = 1: both conventions give the same value targets, so P1 passes either way."""
    assert verify(planted.plain_value_targets, checks=("P1", "P2")).ok


# ----------------------------------------------------------------------------
# 2. Tolerance per output
# ----------------------------------------------------------------------------


def test_float32_advantages_with_float64_value_targets_pass():
    report = verify(planted.mixed_dtypes)
    assert report.ok, str(report)
    assert report.output_dtype == "advantages float32, value_targets float64"
    # v = E + c A carries A's float32 rounding: judged at the looser (float32) tolerance too
    assert report.tolerances == {"advantages": TOLERANCES["float32"], "value_targets": TOLERANCES["float32"]}


def test_each_output_is_judged_at_its_own_dtype():
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert Judging.make((f64, f32), None, None, "clipped").tolerances == (TOLERANCES["float64"],
                                                                          TOLERANCES["float32"])
    assert Judging.make((f32, f64), None, None, "clipped").tolerances == (TOLERANCES["float32"],) * 2
    assert Judging.make((f32, f64), 1e-3, 0.0, "clipped").tolerances == ((1e-3, 0.0),) * 2  # given: both


# ----------------------------------------------------------------------------
# 3. Hints, each detected by calling the estimator, and the fix they name passes
# ----------------------------------------------------------------------------

HINTED = [
    (planted.single_agent_retrace, dict(corrections="none,it"), "agents=1 (--agents 1)", dict(agents=1)),
    (planted.batch_major, {}, "layout='BTN' (--layout BTN)", dict(layout="BTN")),
    (planted.agents_before_batch, {}, "layout='TNB' (--layout TNB)", dict(layout="TNB")),
    (planted.ignores_correction, {}, "corrections=('none',) (--corrections none)", dict(corrections="none")),
    (planted.gae_only, {}, "corrections=('none',) (--corrections none)", dict(corrections="none")),
]


@pytest.mark.parametrize("estimator, options, hint, fix", HINTED,
                         ids=["single-agent", "batch-major", "agent-axis", "ignores-correction", "raises-for-it"])
def test_a_hint_names_the_option_that_fixes_it(estimator, options, hint, fix):
    checks = ("P6 reductions", "matches reference")
    report = verify(estimator, checks=checks, **options)
    assert not report.ok
    assert len(report.hints) == 1 and hint in report.hints[0], report.hints
    assert f"hint: {report.hints[0]}" in str(report)
    assert verify(estimator, checks=checks, **{**options, **fix}).ok


def test_the_hints_say_why():
    ignores = verify(planted.ignores_correction, checks=("matches reference",))
    assert "equal those of correction 'none' (it seems to ignore `correction`)" in ignores.hints[0]
    raises = verify(planted.gae_only, checks=("matches reference",))
    assert "it raised in every case of it, st, dt, full" in raises.hints[0]


def test_dt_computed_as_st_is_named_as_a_bug_in_dt_not_a_correction_to_leave_out():
    report = verify(planted.joint_for_dt, checks=("matches reference",))
    assert report.hints == ["its advantages for dt equal those of correction 'st': it computes c = min(1, rho) "
                            "where dt is c = min(1, rho^i min(eta, rho^-i)); fix its dt"]


def test_float32_arithmetic_behind_float64_outputs_gets_the_float32_hint_and_its_fix_passes():
    checks = ("P6 reductions", "P7 symmetries")
    report = verify(planted.float32_inside, checks=checks)
    assert not report.ok and len(report.hints) == 1
    assert "errors are within float32's tolerance" in report.hints[0] and "atol=0.0001, rtol=0.0001" in report.hints[0]
    assert verify(planted.float32_inside, checks=checks, atol=1e-4, rtol=1e-4).ok


def test_a_convention_that_explains_only_a_minority_of_failures_is_not_hinted():
    """Swapped log-probs invert every ratio; in a few on-policy-like cases the advantages still pass
    and the value targets happen to be V + A. The hint named value_targets='plain', which fixed nothing."""
    report = verify(planted.swapped_log_probs)
    assert not report.ok and not any("value_targets" in h for h in report.hints), report.hints


def test_outputs_the_other_way_round_are_named_and_the_fix_passes():
    checks = ("P6 reductions", "matches reference")
    report = verify(planted.swapped_outputs, checks=checks)
    assert not report.ok and len(report.hints) == 1, report.hints
    assert "it returns (value_targets, advantages)" in report.hints[0]
    assert verify(lambda *a, **k: planted.swapped_outputs(*a, **k)[::-1], checks=checks).ok


def test_advantages_alone_are_accepted_with_value_targets_none():
    checks = ("P6 reductions", "matches reference")
    assert verify(planted.advantages_only, checks=checks, value_targets="none").ok
    refused = verify(planted.advantages_only, checks=("P6 reductions",), corrections="none")
    assert "verify with value_targets='none'" in str(refused)


@pytest.mark.parametrize("estimator", [planted.correct, planted.lam_on_delta, planted.trace_at_t])
def test_no_hint_without_a_cause(estimator):
    """A correct estimator gets none; a wrong formula is not blamed on a layout or an option."""
    assert verify(estimator, checks=("P6 reductions", "matches reference")).hints == []


# ----------------------------------------------------------------------------
# 4. How far off a FAIL is; small counterexamples in full
# ----------------------------------------------------------------------------


def test_a_fail_cell_shows_how_far_off():
    rounding = verify(planted.off_by_rounding, checks=("P6 reductions",), corrections="none")
    wrong = verify(planted.lam_on_delta, checks=("P6 reductions",), corrections="none")
    small, large = rounding.cell("P6 reductions", "none"), wrong.cell("P6 reductions", "none")
    assert small.status == large.status == "FAIL"
    assert 1 < small.worst_ratio < 1e3 < 1e6 < large.worst_ratio
    row = next(line for line in str(rounding).splitlines() if line.startswith("P6 reductions"))
    assert re.search(rf"FAIL {small.failing}/{small.cases} \d+", row), row
    assert "x tolerance" in rounding["P6 reductions"].counterexample
    raised = verify(planted.raises, checks=("P6 reductions",), corrections="none")
    assert "FAIL 14/14 raised" in str(raised)


def test_a_small_counterexample_shows_its_inputs_and_both_outputs():
    x = verify(planted.lam_on_delta, checks=("P6 reductions",), corrections="none").counterexamples[0]
    assert x.calls[0][0]["rewards"].shape == (1, 1)  # the smallest case fails first
    text = x.summary()
    for name in ("inputs:", "rewards [1, 1]:", "logp_behaviour [1, 1, 1]:", "advantages [1, 1, 1], expected:",
                 "advantages [1, 1, 1], got:", "value_targets [1, 1, 1], expected:", "value_targets [1, 1, 1], got:"):
        assert name in text, text
    rounding = verify(planted.off_by_rounding, checks=("P6 reductions",), corrections="none")
    text = rounding.counterexamples[0].summary()
    assert re.search(r"\d\.\d{7,}", text), text  # enough digits to see a 1e-7 difference


# ----------------------------------------------------------------------------
# 5. An estimator's exception: the frames of the user's own code
# ----------------------------------------------------------------------------


def test_an_exception_in_a_helper_names_its_file_and_line():
    report = verify(planted.raises_in_helper, checks=("P6 reductions",), corrections="none")
    line = inspect.getsourcelines(planted._last_axis_size)[1] + 1
    text = str(report)
    assert "the estimator raised IndexError: tuple index out of range" in text
    assert f"planted.py, line {line}, in _last_axis_size: return x.shape[3]" in text, text
    assert "runner.py" not in text  # verify's own frames are left out


def test_an_exception_inside_a_library_names_the_library_frame_too():
    def uses_numpy_wrongly(rewards, *args, **kwargs):
        return np.reshape(rewards, (7, 7)), None

    text = str(verify(uses_numpy_wrongly, checks=("P6 reductions",), corrections="none"))
    assert "in uses_numpy_wrongly: return np.reshape(rewards, (7, 7))" in text
    assert "(raised inside " in text and "numpy" in text


# ----------------------------------------------------------------------------
# Options: one dataclass for verify, the CLI and the plugin
# ----------------------------------------------------------------------------


def test_verify_takes_exactly_the_option_fields():
    params = [p for p in inspect.signature(verify).parameters if p not in ("estimator", "progress")]
    assert params == [f.name for f in fields(VerifyOptions)]
    for f in fields(VerifyOptions):
        assert inspect.signature(verify).parameters[f.name].default == f.default


def test_cli_and_plugin_have_a_flag_per_option():
    from gpae_ref.__main__ import _parser

    help_text = _parser()._subparsers._group_actions[0].choices["verify"].format_help()
    for f in fields(VerifyOptions):
        flag = f.name.replace("_", "-")
        assert (f"--no-{flag}" if f.default is True else f"--{flag}") in help_text, flag


@pytest.mark.parametrize("kwargs, match", [
    (dict(layout="TBX"), "layout must be one of"),
    (dict(agents=1, layout="BTN"), r"layout must be one of \['TB', 'BT'\] \(agents=1\)"),
    (dict(layout="BT"), "layout must be one of"),
    (dict(value_targets="returns"), "value_targets must be one of"),
])
def test_bad_new_options_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        verify(gpae, **kwargs)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "gpae_ref", "verify", *args, "--quiet"], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_prints_the_hint_and_takes_the_fix():
    out = _cli("planted:batch_major", "--checks", "P6 reductions", "--corrections", "none")
    assert out.returncode == 1
    assert "hint: the estimator works on [B, T, N] arrays (batch-major): verify with layout='BTN'" in out.stdout
    out = _cli("planted:plain_value_targets", "--checks", "P6 reductions", "--value-targets", "plain")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_saved_counterexample_reruns_from_any_folder_without_pythonpath(tmp_path):
    """The script finds its .npz beside itself and the user's module where verify imported it from
    (a stranger's estimator in their own folder; the script was only runnable from its folder with
    PYTHONPATH set)."""
    report = verify(planted.lam_on_delta, checks=("P6 reductions",), corrections="none", max_examples=1)
    script = [p for p in report.save(tmp_path / "cx") if p.suffix == ".py"][0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, str(script)], cwd=elsewhere, capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "FAILS" in out.stdout


def test_plugin_takes_the_new_options(pytester):
    pytester.makepyfile(planted=(TESTS / "planted.py").read_text())
    pytester.syspathinsert()
    ok = pytester.runpytest_subprocess("--gpae-verify", "planted:plain_value_targets", "--gpae-value-targets",
                                       "plain", "--gpae-checks", "P6 reductions", "--gpae-corrections", "none",
                                       "-q", "-p", "no:cacheprovider")
    ok.assert_outcomes(passed=1)


def test_a_saved_counterexample_reruns_in_the_estimators_layout(tmp_path):
    report = verify(planted.batch_major, layout="BTN", value_targets="plain", checks=("P6 reductions",),
                    corrections="none", max_examples=1)
    assert not report.ok
    script = [p for p in report.save(tmp_path) if p.suffix == ".py"][0]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "FAILS" in out.stdout
