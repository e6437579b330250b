"""What the CPU and CUDA kernels share: correction codes (from the table) and the dtype rule."""

from __future__ import annotations

from gpae_ref.corrections import CORRECTION_CODES
from gpae_ref.dtypes import compute_dtype

__all__ = ["CORRECTION_CODES", "NONE", "IT", "ST", "DT", "FULL", "compute_dtype"]

#: The codes the kernels branch on, from the one table (``gpae_ref.corrections.CORRECTION_TABLE``);
#: module-level ints, so Numba folds them into its compiled branches.
NONE, IT, ST, DT, FULL = (CORRECTION_CODES[n] for n in ("none", "it", "st", "dt", "full"))

