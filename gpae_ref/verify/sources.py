"""Whose code a file is: an installed library's (stdlib, site-packages) or the user's own."""

from __future__ import annotations

import os
import sysconfig

_LIBRARY_DIRS = tuple(sorted({os.path.abspath(sysconfig.get_paths()[k]) + os.sep
                              for k in ("stdlib", "platstdlib", "purelib", "platlib")}))


def is_library(filename: str) -> bool:
    """True for a file of the standard library or an installed package (or no file: ``<string>``)."""
    path = os.path.abspath(filename)
    return filename.startswith("<") or path.startswith(_LIBRARY_DIRS) or "site-packages" in path
