"""The dtype rule, one for every backend: which dtypes each argument may have, the dtype a call
computes in, and how host inputs (byte order, flags, masked arrays) are read before any backend sees them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def first_index(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first true element of ``mask`` (for messages that point at a culprit)."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


#: Arguments that hold numbers; their dtype may be integer or floating, never bool
#: or complex. dones and mask are flags: bool, integer or floating, read as 0 / nonzero.
REAL_ARGUMENTS = ("rewards", "values", "logp_target", "logp_behaviour")
FLAG_ARGUMENTS = ("dones", "mask")


def compute_dtype(logp_target: Any) -> np.dtype:
    """The dtype a fast backend computes and returns in: float32 if ``logp_target`` is
    float32 (of either byte order), float64 for every other accepted dtype (float64,
    float16, longer floats, integers).

    The NumPy reference always computes in float64. JAX computes in float64 only
    with x64 enabled: without it, ``gpae(..., backend="jax")`` raises instead of
    silently computing in float32 (see ``check_jax_dtype``).
    """
    dt = np.dtype(getattr(logp_target, "dtype", np.float64))
    return np.dtype(np.float32) if dt.newbyteorder("=") == np.float32 else np.dtype(np.float64)


#: dtypes every backend reads dones and mask in as they are (native byte order).
FLAG_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float32, np.float64))


def host_flags(x: np.ndarray) -> np.ndarray:
    """A host ``dones`` or ``mask`` array in a dtype every backend reads as it is: its own
    if in FLAG_DTYPES, else (float16, longer floats, the other byte order) float32 or
    float64 by size, which holds 0 and 1 exactly."""
    x = np.asarray(x)
    if x.dtype in FLAG_DTYPES:
        return x
    return x.astype(np.float32 if x.dtype.itemsize <= 4 else np.float64)


def host_real(x: Any, dtype: Any) -> Any:
    """A host (NumPy) rewards, values or log-probs array converted to the compute dtype
    ``dtype``, native byte order, as a plain ndarray (a masked array's data: check_dtypes
    has refused masked entries). The same rounding wherever it happens (NumPy's cast and
    every backend's in-graph cast round to nearest); non-NumPy arrays are returned as they are.
    """
    return np.asarray(x, dtype) if isinstance(x, np.ndarray) else x


def _dtype(name: str, x: Any) -> np.dtype:
    """x's dtype as NumPy's; a framework dtype NumPy does not know (PyTorch's) is read
    from the array's ``__cuda_array_interface__`` typestr."""
    try:
        return np.dtype(x.dtype)
    except (AttributeError, TypeError) as e:
        try:
            return np.dtype(x.__cuda_array_interface__["typestr"])
        except Exception:
            pass
        raise ValueError(
            f"{name} must be an array with a NumPy dtype; got {type(x).__name__}"
            f"{' of dtype ' + str(getattr(x, 'dtype', '')) if hasattr(x, 'dtype') else ''}."
        ) from e


def check_dtypes(rewards: Any, values: Any, dones: Any, logp_target: Any, logp_behaviour: Any,
                 mask: Any = None) -> np.dtype:
    """Apply the dtype rule; return the compute dtype (``compute_dtype(logp_target)``).

    rewards, values, log-probs: integer or floating (float16/32/64, longer floats
    are read as float64), in either byte order; dones, mask: bool, integer or
    floating. Complex is refused (its imaginary part would be dropped), bool where
    numbers are meant, anything else (object, strings, dates), and NumPy masked
    arrays with masked entries (no masked entries: read as their data). Raises
    ValueError naming the argument.
    """
    arrays = dict(rewards=rewards, values=values, dones=dones, logp_target=logp_target,
                  logp_behaviour=logp_behaviour, mask=mask)
    for name, x in arrays.items():
        if x is None:
            continue
        dt = _dtype(name, x)
        if dt.kind == "c":
            raise ValueError(
                f"{name} must be real; got complex dtype {dt} (its imaginary part would be "
                f"dropped). Pass {name}.real if that is what you mean."
            )
        if name in REAL_ARGUMENTS and dt.kind == "b":
            raise ValueError(
                f"{name} must hold numbers (integer or floating dtype); got bool. "
                f"Cast it, e.g. {name}.astype(np.float32)."
            )
        if dt.kind == "V" and "float" in dt.name:  # ml_dtypes' bfloat16, float8_*: floats NumPy cannot compute in
            raise ValueError(
                f"{name} has dtype {dt}, which no backend computes in (float32 and float64 only); "
                f"cast it, e.g. {name}.astype(np.float32)."
            )
        if dt.kind not in "biuf":
            raise ValueError(
                f"{name} must have a numeric dtype (bool only for dones and mask, integer or "
                f"floating); got {dt}."
            )
        _check_not_masked(name, x)
    return compute_dtype(logp_target)


def _check_not_masked(name: str, x: Any) -> None:
    """A NumPy masked array with masked entries is refused: what a masked entry should
    count as is the caller's to say. Without masked entries it is read as its data."""
    if isinstance(x, np.ma.MaskedArray) and np.ma.getmaskarray(x).any():
        bad = first_index(np.ma.getmaskarray(x))
        hint = " (for dead or padded agents, pass mask= instead)" if name in (
            "logp_target", "logp_behaviour") else ""
        raise ValueError(
            f"{name} is a NumPy masked array with masked entries (the first at index {bad}), "
            f"whose hidden data would be read as values: pass {name}.filled(v) with the value v "
            f"they stand for{hint}."
        )


def check_jax_dtype(logp_target: Any) -> np.dtype:
    """The compute dtype for backend="jax"; ValueError if it is float64 and x64 is off.

    JAX without ``jax_enable_x64`` turns float64 into float32 silently (relative
    error about 1e-7 instead of 1e-16, in a package used as an oracle): refused.
    """
    dt = compute_dtype(logp_target)
    if dt == np.float64:
        import jax

        if not jax.config.jax_enable_x64:
            src = _dtype("logp_target", logp_target)
            raise ValueError(
                f"logp_target is {src}, so this call computes in float64, but JAX's 64-bit mode "
                f"is off and backend='jax' would compute in float32 without saying so. Enable it "
                f"(jax.config.update('jax_enable_x64', True) at startup, or the context manager "
                f"jax.enable_x64(True)) or pass float32 log-probs to compute in float32."
            )
    return dt
