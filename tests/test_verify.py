"""verify(): passes the reference, catches every planted bug, survives raising/NaN estimators; the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpae_ref
import planted
from gpae_ref.reference import gpae
from gpae_ref.verify import CHECKS, VerifyReport, verify

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def reference_report() -> VerifyReport:
    return verify(gpae)


def test_reference_passes(reference_report):
    assert reference_report.ok, str(reference_report)
    assert [r.name for r in reference_report.results] == list(CHECKS)
    assert all(r.cases > 0 for r in reference_report.results)


def test_report_is_a_readable_table(reference_report):
    text = str(reference_report)
    for name in CHECKS:
        assert name in text
    assert "all checks passed" in text


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
        assert not r.passed, name
        assert r.counterexample and "expected" in r.counterexample
    assert "SOME CHECKS FAILED" in str(report)


def test_linear_product_counterexample_names_the_wide_case():
    r = verify(planted.linear_product, checks=("matches reference",))["matches reference"]
    assert "wide ratios" in r.counterexample
    assert "(shrunk)" in r.counterexample


@pytest.mark.parametrize("bug", [planted.returns_nan, planted.raises])
def test_broken_estimators_are_reported_not_raised(bug):
    report = verify(bug, checks=("P1", "matches reference"))
    assert not report.ok
    assert all(not r.passed for r in report.results)
    text = str(report)
    assert ("not finite" in text) or ("raised RuntimeError" in text)


def test_jax_like_outputs_are_converted():
    """Outputs are only required to support numpy.asarray (lists here)."""

    def as_lists(*args, **kwargs):
        A, v = gpae(*args, **kwargs)
        return A.tolist(), v.tolist()

    assert verify(as_lists, checks=("P6 reductions",)).ok


def test_bad_arguments():
    with pytest.raises(ValueError, match="estimator must be callable"):
        verify(42)
    with pytest.raises(ValueError, match="checks must be names"):
        verify(gpae, checks=("P9",))


def test_package_attribute_is_the_function_even_after_a_submodule_import():
    import gpae_ref.verify  # noqa: F401  (must not rebind gpae_ref.verify to the module)

    assert gpae_ref.verify is verify
    assert gpae_ref.verify(gpae, checks=("P6 reductions",)).ok


def _cli(*args, extra_path=None):
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "gpae_ref", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_verify_reference_exit_0():
    out = _cli("verify", "gpae_ref.reference:gpae")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout


def test_cli_verify_planted_bug_exit_1():
    out = _cli("verify", "planted:lam_on_delta", extra_path=TESTS)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL" in out.stdout


@pytest.mark.parametrize("spec, message", [
    ("no_colon_here", "package.module:function"),
    ("gpae_ref.no_such_module:f", "cannot import module"),
    ("gpae_ref.reference:no_such_function", "has no attribute"),
    ("gpae_ref._validate:CORRECTIONS", "is not callable"),
])
def test_cli_bad_spec_is_a_clear_error(spec, message):
    out = _cli("verify", spec)
    assert out.returncode == 2
    assert message in out.stderr


def test_cli_demo_runs():
    out = _cli("demo")
    assert out.returncode == 0, out.stderr
    for correction in ("none", "it", "st", "dt", "full"):
        assert f"\n{correction} " in out.stdout
    assert "modulus" in out.stdout


def test_main_function_returns_exit_code(capsys):
    from gpae_ref.__main__ import main

    assert main(["verify", "gpae_ref.reference:gpae", "--seed", "3"]) == 0
    assert "seed=3" in capsys.readouterr().out
