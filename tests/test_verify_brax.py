"""docs/oracle.md's brax adapter runs as written: brax's value targets pass verify, its advantages do not (lam < 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_verify_rlax import _example


def test_brax_compute_gae_in_the_docs(tmp_path):
    pytest.importorskip("brax")
    pytest.importorskip("jax")
    script = tmp_path / "example.py"
    script.write_text(_example("brax adapter"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "targets ok: True, advantages ok: False" in out.stdout
    assert "brax advantage 0.81, GAE 0.405" in out.stdout


def test_torch_example_block_in_the_docs_is_the_script():
    """The adapters shown in docs/oracle.md are those examples/verify_torch_estimators.py runs."""
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "examples" / "verify_torch_estimators.py").read_text()
    block = script.split("# --- adapters (docs/oracle.md shows this block) ---\n")[1].split("# --- end of adapters ---")[0]
    assert block.strip() == _example("torch adapters").strip()


def test_torch_example_skips_cleanly_without_torch():
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here; the script runs its checks instead")
    script = Path(__file__).resolve().parents[1] / "examples" / "verify_torch_estimators.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("skipped: needs torch")
