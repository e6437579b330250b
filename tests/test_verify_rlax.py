"""docs/oracle.md's worked example runs as written: rlax's GAE and V-trace pass verify, a planted bug fails."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "oracle.md"


def _example(marker: str) -> str:
    text = DOC.read_text()
    m = re.search(re.escape(f"<!-- example: {marker} -->") + r"\s*```python\n(.*?)```", text, re.S)
    assert m, f"docs/oracle.md has no example {marker!r}"
    return m.group(1)


def test_rlax_adapters_in_the_docs(tmp_path):
    pytest.importorskip("rlax")  # the bench extra
    pytest.importorskip("jax")
    script = tmp_path / "example.py"
    # in a subprocess: the example enables JAX's x64 for its whole process
    script.write_text(_example("rlax adapters") + "\nassert gae_report.not_checked == ('it', 'st', 'dt', 'full')"
                      "\nassert bug_report['P1'].passed is False\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SOME CHECKS FAILED for corrections none" in out.stdout
