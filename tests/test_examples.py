"""Every script in examples/ runs here on tiny settings, and what it returns or prints is checked.

The examples are loaded by file name as top-level modules (as ``python
examples/<name>.py`` would see them), so the counterexample scripts that
verify saves can import the estimators by module name.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    """examples/<name>.py as module ``name`` (registered in sys.modules, as verify's labels need)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_test():
    names = {p.stem if p.suffix == ".py" else p.name for p in EXAMPLES.iterdir() if p.name[0] not in "._"}
    assert names == {"verify_my_estimator", "property_tests_in_my_repo", "gpae_in_my_training_loop",
                     "train_smax", "exact_oracle_tour", "verify_torch_estimators"}  # the last: test_verify_brax.py


def test_verify_my_estimator(tmp_path, capsys):
    reports = load("verify_my_estimator").main(save_dir=str(tmp_path / "cx"))
    assert reports["correct"].ok and reports["adapter"].ok and reports["gae"].ok
    bug = reports["buggy"]
    assert not bug.ok
    # the trace one step early: invisible on-policy and without traces, caught off-policy
    assert bug.cell("P1", "dt").status == "pass" and bug.cell("P3/P4 operator", "none").status == "pass"
    assert all(bug.cell("P3/P4 operator", c).status == "FAIL" for c in ("it", "st", "dt", "full"))
    assert reports["gae"].cell("P1", "none").status == "pass"
    assert reports["gae"].cell("P1", "dt").status == "not checked"
    out = capsys.readouterr().out
    assert "SOME CHECKS FAILED" in out and "rerun one with" in out
    # the saved script reruns the counterexample and says it fails
    script = sorted((tmp_path / "cx").glob("00_*.py"))[0]
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES))
    run = subprocess.run([sys.executable, script.name], cwd=script.parent, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "expected:" in run.stdout and "FAILS at atol" in run.stdout


def test_property_tests_in_my_repo(pytester):
    shutil.copytree(EXAMPLES / "property_tests_in_my_repo", pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)  # 6 verify cells + 1 Hypothesis test
    plugin = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--gpae-verify", "my_gae:gae",
                                           "--gpae-corrections", "none")
    plugin.assert_outcomes(passed=13)  # the same, plus the plugin's 6 items


def test_property_tests_catch_a_bug_in_my_gae(pytester):
    """The throwaway suite is not vacuous: a lam that ignores dones fails it."""
    shutil.copytree(EXAMPLES / "property_tests_in_my_repo", pytester.path, dirs_exist_ok=True)
    source = pytester.path / "my_gae" / "__init__.py"
    text = source.read_text()
    assert "gamma * lam * live[t] * nxt" in text
    source.write_text(text.replace("gamma * lam * live[t] * nxt", "gamma * lam * nxt"))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    assert result.parseoutcomes().get("failed", 0) >= 3
    result.stdout.fnmatch_lines(["*failed*of*cases*"])


def test_gpae_in_my_training_loop(capsys):
    pytest.importorskip("jax")
    out = load("gpae_in_my_training_loop").main(T=6, B=3, N=3, K=3, runs=2, repeats=2)
    assert out["max_difference"] < 1e-5
    assert all(out[k] > 0 for k in ("jit_update", "vmap_update", "jax_gpae", "numba_gpae"))
    assert out["logits"].shape == (3, 3) and abs(out["logits"]).sum() > 0  # the update moved the policy
    assert "Numba GPAE alone" in capsys.readouterr().out


def test_exact_oracle_tour(capsys):
    adv, off, on = load("exact_oracle_tour").main()
    rows = {r["correction"]: r for r in off}
    assert [r["correction"] for r in off] == ["none", "it", "st", "dt", "full"]
    assert all(r["bias"] < 1e-12 for r in on)                                   # P1 on-policy
    assert all(abs(r["modulus"] - 0.9 * 0.05 / (1 - 0.9 * 0.95)) < 1e-12 for r in on)  # P3
    assert all(rows[c]["modulus"] <= rows[c]["bound"] + 1e-12 for c in ("none", "it", "st", "dt"))  # P4
    assert rows["dt"]["bias"] < rows["none"]["bias"] and rows["full"]["modulus"] > 1
    assert adv.shape == (2, 4, 2)
    assert "dt" in capsys.readouterr().out


@pytest.mark.smax
def test_train_smax(tmp_path, capfd):
    pytest.importorskip("jaxmarl")
    ex = load("train_smax")
    tiny = ["--num-envs", "4", "--num-steps", "8", "--epochs", "1", "--total-steps", "128", "--eval-envs", "2",
            "--eval-every", "2", "--checkpoint-every", "2", "--chunk", "2", "--no-progress",
            "--runs-dir", str(tmp_path)]
    trainers = {}  # the resume reuses the first call's compiled update
    rc, run, rows = ex.main(tiny + ["--max-updates", "2"], trainers=trainers)
    assert rc == 0 and run == tmp_path / "3m_gpae_K1_s0" and [r["update"] for r in rows] == ["1", "2"]
    assert "--resume" in capfd.readouterr().out  # fd-level capture: capsys came back empty for this run
    rc, run, rows = ex.main(["--resume", str(run), "--no-progress"], trainers=trainers)
    assert rc == 0 and [r["update"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[-1]["eval_win_rate"] != ""
    for f in ("run.json", "metrics.csv", "curve.png", "ckpt/state.safetensors", "resume.safetensors.xz"):
        assert (run / f).stat().st_size > 0
