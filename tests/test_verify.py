"""verify(): passes the reference, catches planted bugs, partial estimators, reports, errors, CLI, plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpae_ref
import planted
from gpae_ref.reference import gpae
from gpae_ref.verify import CHECKS, TOLERANCES, VerifyReport, verify

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def reference_report() -> VerifyReport:
    return verify(gpae)


def test_reference_passes(reference_report):
    assert reference_report.ok, str(reference_report)
    assert [r.name for r in reference_report.results] == list(CHECKS)
    assert all(c.status == "pass" and c.cases > 0 for c in reference_report.cells.values())
    assert reference_report.not_checked == ()


def test_report_is_a_readable_table(reference_report):
    text = str(reference_report)
    for name in CHECKS:
        assert name in text
    for correction in gpae_ref.CORRECTIONS:
        assert correction in text
    assert "all checks passed" in text
    assert "np.float64" not in text


def test_calls_are_stacked_into_few_signatures(reference_report):
    """One call per (group, correction): a jitted estimator compiles at most 5 programs per correction."""
    assert reference_report.calls == 23
    assert reference_report.signatures <= 24
    one = verify(gpae, corrections=("dt",))
    assert one.ok and one.calls == 5 and one.signatures <= 8
    assert verify(gpae, corrections=("none",)).calls == 4


def test_planted_control_passes():
    assert verify(planted.correct).ok


@pytest.mark.parametrize(
    "bug, must_fail",
    [
        (planted.trace_at_t, ["P3/P4 operator", "matches reference"]),          # (a)
        (planted.done_keeps_trace, ["P1", "P7 symmetries", "matches reference"]),  # (b)
        (planted.lam_on_delta, ["P1", "P6 reductions", "matches reference"]),   # (c)
        (planted.linear_product, ["matches reference"]),                        # (d)
    ],
    ids=["a-trace-at-t", "b-done-keeps-trace", "c-lam-on-delta", "d-linear-product"],
)
def test_planted_bugs_are_caught(bug, must_fail):
    report = verify(bug)
    assert not report.ok
    for name in must_fail:
        r = report[name]
        assert r.passed is False, name
        assert r.counterexample and "expected" in r.counterexample
    assert "SOME CHECKS FAILED" in str(report)


def test_linear_product_counterexample_names_the_wide_case():
    r = verify(planted.linear_product, checks=("matches reference",))["matches reference"]
    assert "wide ratios" in r.counterexamples[0].title
    assert "(shrunk)" in r.counterexamples[0].title


def test_counterexamples_are_distinct_and_bounded():
    report = verify(planted.done_keeps_trace, max_examples=2)
    for name in CHECKS:
        xs = [x for x in report.counterexamples if x.check == name]
        assert len(xs) <= 2
        assert len({x.title for x in xs}) == len(xs)


# ----------------------------------------------------------------------------
# Partial estimators: verify what an estimator implements
# ----------------------------------------------------------------------------


def test_plain_gae_passes_with_its_corrections_and_the_rest_is_not_checked():
    report = verify(planted.gae_only, corrections=("none",))
    assert report.ok, str(report)
    assert report.not_checked == ("it", "st", "dt", "full")
    assert report.cell("P1", "dt").status == "not checked"
    assert report.cell("P1", "dt").passed is None
    text = str(report)
    assert "not checked: it, st, dt, full" in text
    # all five: the unimplemented ones fail (their own NotImplementedError), 'none' still passes
    full = verify(planted.gae_only)
    assert not full.ok
    assert full.cell("P1", "none").status == "pass"
    assert full.cell("P1", "it").status == "FAIL"
    assert "NotImplementedError" in full["P1"].counterexample


def test_vtrace_style_estimator_without_full():
    report = verify(planted.no_full, corrections="none,it,st,dt")
    assert report.ok, str(report)
    assert report.not_checked == ("full",)
    everything = verify(planted.no_full)
    assert not everything.ok
    assert all(everything.cell(c, "dt").status == "pass" for c in CHECKS)
    assert all(everything.cell(c, "full").status == "FAIL" for c in CHECKS)


def test_single_agent_layout_is_an_exact_oracle_for_gae_and_truncated_traces():
    report = verify(planted.single_agent_retrace, agents=1, corrections=("none", "it", "st", "dt"))
    assert report.ok, str(report)
    assert report.calls == 16
    bug = verify(planted.single_agent_retrace_bug, agents=1, corrections=("it",))
    assert not bug.ok
    assert bug["P1"].passed is False or bug["P7 symmetries"].passed is False


def test_masks_false_for_an_estimator_without_mask():
    report = verify(planted.no_mask_argument)
    assert not report.ok
    assert "masks=False" in str(report)  # the message says what to do
    ok = verify(planted.no_mask_argument, masks=False)
    assert ok.ok, str(ok)
    assert any("masks=False" in n for n in ok.notes)


def test_an_estimator_that_ignores_mask_fails():
    report = verify(planted.ignores_mask, checks=("matches reference", "P7 symmetries"))
    assert not report.ok
    assert any("mask" in x.title for x in report.counterexamples)


def test_a_bug_seen_only_in_a_stacked_call_says_so():
    report = verify(planted.couples_large_batches, checks=("P1",), corrections=("none",))
    assert not report.ok
    assert "fails only when stacked" in report["P1"].counterexample


# ----------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------


def _float32(backend):
    def estimator(*arrays, mask=None, **options):
        arrays = [np.asarray(x, np.float32) for x in arrays]
        mask = None if mask is None else np.asarray(mask, np.float32)
        return gpae_ref.gpae(*arrays, mask=mask, backend=backend, **options)

    return estimator


@pytest.mark.parametrize("backend", ["numba", "jax"])
def test_float32_backends_pass_at_the_float32_tolerance(backend):
    if backend == "jax":
        pytest.importorskip("jax")
    report = verify(_float32(backend))
    assert report.output_dtype == "float32"
    assert (report.atol, report.rtol) == TOLERANCES["float32"]
    assert report.ok, str(report)
    # the 128-agent case with untruncated traces is ~1e45: outside float32, n/a (never a pass)
    assert report.cell("matches reference", "full").not_applicable == 1
    assert "n/a" in str(report)


def test_float32_outputs_at_float64_tolerance_fail():
    report = verify(_float32("numba"), checks=("P6 reductions",), atol=1e-12, rtol=1e-12)
    assert not report.ok


# ----------------------------------------------------------------------------
# Bad estimators and bad options
# ----------------------------------------------------------------------------


def _returns(value):
    def estimator(*args, **kwargs):
        A, v = gpae(*args, **kwargs)
        return value(A, v)

    return estimator


@pytest.mark.parametrize("make, message", [
    (lambda A, v: {"advantages": A, "value_targets": v}, "returned a dict with keys"),
    (lambda A, v: A, "returned one array of shape"),
    (lambda A, v: (A, v, A), "of length 3"),
    (lambda A, v: (A[:, :, :1], v), "advantages has shape"),
    (lambda A, v: (np.full(A.shape, "x"), v), "not numeric"),
    (lambda A, v: (A + 0j, v), "complex"),
    (lambda A, v: (A * np.nan, v), "expected"),
    (lambda A, v: 3.0, "returned a float"),
])
def test_bad_outputs_get_clear_messages(make, message):
    report = verify(_returns(make), checks=("P6 reductions",), corrections=("none",))
    assert not report.ok
    text = str(report)
    assert message in text, text
    assert "_BadOutput" not in text and "EstimatorError" not in text


@pytest.mark.parametrize("bug", [planted.returns_nan, planted.raises])
def test_broken_estimators_are_reported_not_raised(bug):
    report = verify(bug, checks=("P1", "matches reference"))
    assert not report.ok
    assert all(r.passed is False for r in report.results)
    text = str(report)
    assert ("got nan" in text) or ("raised RuntimeError" in text)


def test_a_nan_output_reads_nan_in_the_table_not_inf():
    report = verify(planted.returns_nan, checks=("P6 reductions",), corrections="none")
    row = next(line for line in str(report).splitlines() if line.startswith("P6 reductions"))
    cell = report.cell("P6 reductions", "none")
    assert f"FAIL {cell.failing}/{cell.cases} nan" in row and cell.nan == cell.failing, row
    cells = json.loads(report.to_json())["cells"]
    assert next(c for c in cells if c["check"] == "P6 reductions" and c["correction"] == "none")["nan"] == cell.nan


def test_jax_like_outputs_are_converted():
    """Outputs are only required to support numpy.asarray (lists here)."""

    def as_lists(*args, **kwargs):
        A, v = gpae(*args, **kwargs)
        return A.tolist(), v.tolist()

    assert verify(as_lists, checks=("P6 reductions",)).ok


@pytest.mark.parametrize("kwargs, match", [
    (dict(corrections=("none", "vtrace")), "corrections must be"),
    (dict(corrections=()), "corrections must be"),
    (dict(checks=("P9",)), "checks must be"),
    (dict(agents=0), "agents must be"),
    (dict(agents=2), "agents must be"),
    (dict(atol=-1.0), "atol must be"),
    (dict(rtol=float("nan")), "rtol must be"),
    (dict(max_examples=0), "max_examples must be"),
    (dict(seed=-1), "seed must be"),
])
def test_bad_options_raise_value_errors_naming_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        verify(gpae, **kwargs)


def test_estimator_must_be_callable():
    with pytest.raises(ValueError, match="estimator must be callable"):
        verify(42)


def test_package_attribute_is_the_function_even_after_a_submodule_import():
    import gpae_ref.verify  # noqa: F401  (must not rebind gpae_ref.verify to the module)

    assert gpae_ref.verify is verify
    assert gpae_ref.verify(gpae, checks=("P6 reductions",)).ok


def test_progress_lines_for_a_slow_estimator(monkeypatch):
    from gpae_ref.verify import runner

    monkeypatch.setattr(runner, "PROGRESS_AFTER_S", 0.0)
    lines = []
    verify(gpae, checks=("P6 reductions",), corrections=("none",), progress=lines.append)
    assert len(lines) == 4 and all(line.startswith("verify: call") for line in lines)


# ----------------------------------------------------------------------------
# Saved counterexamples, JSON
# ----------------------------------------------------------------------------


def test_saved_counterexamples_rerun_outside_verify(tmp_path):
    report = verify(planted.lam_on_delta, corrections=("dt",), max_examples=1)
    paths = report.save(tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is False
    scripts = sorted(p for p in paths if p.suffix == ".py")
    assert len(scripts) == len(report.counterexamples) >= 4  # one per failing check
    for npz in (p for p in paths if p.suffix == ".npz"):
        with np.load(npz, allow_pickle=False) as data:  # no pickle
            assert "call0_rewards" in data.files
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    for script in scripts:
        out = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, env=env,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert "FAILS" in out.stdout, (script.name, out.stdout)


def test_saved_game_counterexample_holds_the_game(tmp_path):
    report = verify(planted.trace_at_t, checks=("P3/P4 operator",), corrections=("it",), max_examples=1)
    npz = [p for p in report.save(tmp_path) if p.suffix == ".npz"][0]
    with np.load(npz) as data:
        for key in ("game_rewards", "game_transitions", "game_n_actions", "game_horizon", "game_values",
                    "game_pi_0", "game_mu_0", "weight", "start", "expected"):
            assert key in data.files, key


def test_json_report(reference_report):
    d = json.loads(reference_report.to_json())
    assert d["ok"] is True
    assert d["corrections_checked"] == list(gpae_ref.CORRECTIONS)
    assert len(d["cells"]) == len(CHECKS) * len(gpae_ref.CORRECTIONS)
    assert all(c["worst_error_over_tolerance"] <= 1 for c in d["cells"])


def test_save_into_a_file_path_is_refused(tmp_path, reference_report):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        reference_report.save(f)


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------


def _cli(*args, extra_path=None, cwd=None):
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "gpae_ref", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=cwd)


def test_cli_verify_reference_exit_0():
    out = _cli("verify", "gpae_ref.reference:gpae")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout


def test_cli_verify_planted_bug_exit_1_with_save_and_json(tmp_path):
    out = _cli("verify", "planted:lam_on_delta", "--corrections", "none,dt", "--json", "--save", str(tmp_path),
               extra_path=TESTS)
    assert out.returncode == 1, out.stdout + out.stderr
    d = json.loads(out.stdout)
    assert d["corrections_not_checked"] == ["it", "st", "full"]
    assert (tmp_path / "report.json").exists()


def test_cli_partial_and_single_agent_estimators():
    out = _cli("verify", "planted:gae_only", "--corrections", "none", extra_path=TESTS)
    assert out.returncode == 0, out.stdout + out.stderr
    out = _cli("verify", "planted:single_agent_retrace", "--agents", "1", "--corrections", "it",
               "--checks", "P1,P6 reductions", extra_path=TESTS)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("spec, message", [
    ("no_colon_here", "package.module:function"),
    ("gpae_ref.no_such_module:f", "cannot import module"),
    ("gpae_ref.reference:no_such_function", "has no attribute"),
    ("gpae_ref.corrections:CORRECTIONS", "is not callable"),
    ("broken_module:f", "ZeroDivisionError"),
    ("no/such/file.py:f", "no file 'no/such/file.py'"),
])
def test_cli_bad_spec_is_a_one_line_error_exit_2(spec, message, tmp_path):
    (tmp_path / "broken_module.py").write_text("x = 1 / 0\n")
    out = _cli("verify", spec, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_takes_a_file_path_with_its_sibling_imports(tmp_path):
    """`verify path/to/file.py:fn` imports the file as running it would (its folder on sys.path),
    and the saved rerun script finds it again (it said: No module named '/path/ests')."""
    (tmp_path / "helpers.py").write_text("import gpae_ref\nreference = gpae_ref.reference.gpae\n")
    (tmp_path / "ests.py").write_text("from helpers import reference\n\n"
                                      "def good(*a, **k):\n    return reference(*a, **k)\n")
    out = _cli("verify", str(tmp_path / "ests.py") + ":good", "--checks", "P6 reductions", "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_bad_option_exit_2():
    out = _cli("verify", "gpae_ref.reference:gpae", "--corrections", "vtrace")
    assert out.returncode == 2
    assert "corrections must be" in out.stderr


def test_cli_demo_runs():
    out = _cli("demo")
    assert out.returncode == 0, out.stderr
    for correction in ("none", "it", "st", "dt", "full"):
        assert f"\n{correction} " in out.stdout
    assert "modulus" in out.stdout


def test_main_function_returns_exit_code(capsys):
    from gpae_ref.__main__ import main

    assert main(["verify", "gpae_ref.reference:gpae", "--seed", "3", "--quiet"]) == 0
    assert "seed=3" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# The pytest plugin and gpae_ref.testing, on a throwaway project
# ----------------------------------------------------------------------------

_THROWAWAY = '''
import numpy as np

def gae(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction="none", eta=1.02, mask=None):
    """Plain per-agent GAE; value targets E + min(1, rho^i) A."""
    if correction != "none":
        raise NotImplementedError(correction)
    r, d = np.asarray(rewards), np.asarray(dones)
    l = np.asarray(logp_target) - np.asarray(logp_behaviour)
    if mask is not None:
        l = np.where(np.asarray(mask) > 0, l, 0.0)
    E = np.asarray(values)
    if E.ndim == 2:
        E = np.repeat(E[:, :, None], l.shape[2], axis=2)
    A = np.zeros(l.shape)
    nxt = 0.0
    for t in reversed(range(l.shape[0])):
        nd = (1.0 - d[t])[:, None]
        A[t] = r[t][:, None] + gamma * nd * E[t + 1] - E[t] + gamma * LAM_FACTOR * lam * nd * nxt
        nxt = A[t]
    return A, E[:-1] + np.exp(np.minimum(0.0, l)) * A
'''


def test_pytest_plugin_on_a_throwaway_project(pytester):
    pytester.makepyfile(mygae=_THROWAWAY.replace("LAM_FACTOR", "1.0"),
                        buggy=_THROWAWAY.replace("LAM_FACTOR", "0.5"))
    pytester.syspathinsert()
    ok = pytester.runpytest_subprocess("--gpae-verify", "mygae:gae", "--gpae-corrections", "none", "-q")
    ok.assert_outcomes(passed=len(CHECKS))
    bad = pytester.runpytest_subprocess("--gpae-verify", "buggy:gae", "--gpae-corrections", "none", "-q")
    outcome = bad.parseoutcomes()
    assert outcome.get("failed", 0) >= 3
    bad.stdout.fnmatch_lines(["*failed*of*cases*", "*expected*got*"])
    usage = pytester.runpytest_subprocess("--gpae-verify", "mygae:gae", "--gpae-corrections", "vtrace")
    assert usage.ret == pytest.ExitCode.USAGE_ERROR


def test_verify_tests_helper_on_a_throwaway_project(pytester):
    pytester.makepyfile(mygae=_THROWAWAY.replace("LAM_FACTOR", "1.0"))
    pytester.makepyfile(test_my_gae='''
from gpae_ref.testing import verify_tests
from mygae import gae
test_gae = verify_tests(gae, corrections=("none",), checks=("P1", "P6 reductions"))
''')
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=2)


def test_verify_and_the_plugin_work_without_jax():
    code = ("import sys; sys.modules['jax'] = None\n"
            "import gpae_ref, gpae_ref.testing, gpae_ref.pytest_plugin\n"
            "from gpae_ref.reference import gpae\n"
            "r = gpae_ref.verify(gpae, checks=('P6 reductions',), corrections='none')\n"
            "assert r.ok, str(r)\n"
            "print(sorted(m for m in ('numba', 'jax') if sys.modules.get(m) is not None))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
