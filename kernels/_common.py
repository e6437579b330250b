"""What the CPU and CUDA kernels share: correction codes and the compute dtype."""

from __future__ import annotations

import numpy as np

#: Correction name -> the integer code the kernels branch on (outside their inner loops).
CORRECTION_CODES = {"none": 0, "it": 1, "st": 2, "dt": 3, "full": 4}


def compute_dtype(logp_target) -> np.dtype:
    """float32 or float64 inputs compute in their own dtype; anything else in float64."""
    dt = np.dtype(getattr(logp_target, "dtype", np.float64))
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)
