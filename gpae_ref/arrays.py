"""What kind of array an input is (host, JAX, JAX tracer, GPU): read by the dispatcher and the kernels."""

from __future__ import annotations

import numpy as np


def is_jax_array(x) -> bool:
    return type(x).__module__.startswith(("jax", "jaxlib"))


def is_tracer(x) -> bool:
    if not is_jax_array(x):
        return False
    import jax.core

    return isinstance(x, jax.core.Tracer)


def _cuda_dlpack(x) -> bool:
    """True for an object whose ``__dlpack_device__`` says CUDA (DLPack device type 2)."""
    try:
        return int(x.__dlpack_device__()[0]) == 2
    except Exception:  # no such method, or a framework that raises for host data
        return False


def is_device_array(x) -> bool:
    """True for GPU arrays: ``__cuda_array_interface__``, CUDA DLPack, or a Numba device array.

    The last test covers the CUDA simulator's arrays, which lack the interface.
    A JAX tracer is never a device array here (it has no data to hand over).
    """
    if x is None or is_tracer(x) or isinstance(x, np.ndarray):
        return False
    if type(x).__module__.startswith("numba.cuda"):
        return True
    try:  # JAX CPU arrays raise from the property instead of lacking it
        if hasattr(x, "__cuda_array_interface__"):
            return True
    except Exception:
        pass
    return _cuda_dlpack(x)
