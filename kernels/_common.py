"""What the CPU and CUDA kernels share: correction codes and the compute dtype."""

from __future__ import annotations

import numpy as np

from gpae_ref._validate import CORRECTION_CODES

__all__ = ["CORRECTION_CODES", "NONE", "IT", "ST", "DT", "FULL", "compute_dtype"]

#: The codes the kernels branch on, from the one table (``gpae_ref._validate.CORRECTION_TABLE``);
#: module-level ints, so Numba folds them into its compiled branches.
NONE, IT, ST, DT, FULL = (CORRECTION_CODES[n] for n in ("none", "it", "st", "dt", "full"))


def compute_dtype(logp_target) -> np.dtype:
    """float32 or float64 inputs compute in their own dtype; anything else in float64."""
    dt = np.dtype(getattr(logp_target, "dtype", np.float64))
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)
