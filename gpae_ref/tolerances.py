"""How closely a float32 or float64 backend must match the float64 reference (stated once)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Tolerance(NamedTuple):
    """|got - ref| <= atol * scale + rtol * |ref| per element, against the float64 reference.

    ``scale`` is the largest |ref| of that (env, agent) sequence, at least 1:
    rounding in the recursion is relative to the terms summed, not to a result
    that may cancel. With scale = 1 it is the usual per-element test.
    """

    atol: float
    rtol: float


#: How closely a float32 computation (numba, cuda, jax on float32 inputs) matches
#: the float64 reference on inputs of moderate size (log-ratios within a few units,
#: |rewards|, |values| <= 1): the tolerance tests/test_backends.py holds every backend to.
FLOAT32_TOL = Tolerance(atol=2e-5, rtol=2e-5)
#: The same for a float64 computation (numba, cuda, and jax with x64 enabled).
FLOAT64_TOL = Tolerance(atol=1e-12, rtol=1e-12)


def tolerance(dtype: Any) -> Tolerance:
    """FLOAT32_TOL for float32, FLOAT64_TOL for float64."""
    return FLOAT32_TOL if np.dtype(dtype) == np.float32 else FLOAT64_TOL
