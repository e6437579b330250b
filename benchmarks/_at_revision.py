"""Import one module of this repository as it was at an older git revision (benchmarks' "before" rows)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_at(rev: str, path: str, name: str):
    """Module ``path`` (e.g. ``gpae_ref/verify.py``) at git revision ``rev``, imported as ``name``.

    It imports the rest of the package as it is now: use it for a module whose
    imports have not changed since ``rev``.
    """
    source = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
