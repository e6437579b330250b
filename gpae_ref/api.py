"""The one public entry point: ``gpae_ref.gpae(..., backend=...)``.

Every backend computes the same function as the NumPy reference
(``gpae_ref.reference.gpae``) and is tested against it. Validation is shared
(``gpae_ref._validate``) and runs before any backend computes. Numba, numba.cuda
and JAX are imported only when their backend runs, so ``import gpae_ref`` stays light.
"""

from __future__ import annotations

from gpae_ref._validate import check_scalars, check_shapes, validate
from gpae_ref.reference import GPAEOutput
from gpae_ref.reference import gpae as _gpae_numpy

#: Backend names a user can pass; "auto" picks one from the input arrays.
BACKENDS: tuple[str, ...] = ("auto", "numpy", "numba", "cuda", "jax")


def _is_jax_array(x) -> bool:
    return type(x).__module__.startswith(("jax", "jaxlib"))


def _is_tracer(x) -> bool:
    if not _is_jax_array(x):
        return False
    import jax.core

    return isinstance(x, jax.core.Tracer)


def is_device_array(x) -> bool:
    """True for GPU arrays: anything with ``__cuda_array_interface__`` or a Numba device array.

    The second test covers the CUDA simulator's arrays, which lack the interface.
    A JAX tracer is never a device array here (it has no data to hand over).
    """
    if x is None or _is_tracer(x):
        return False
    if type(x).__module__.startswith("numba.cuda"):
        return True
    try:  # JAX CPU arrays raise from the property instead of lacking it
        return hasattr(x, "__cuda_array_interface__")
    except Exception:
        return False


def _pick_backend(logp_target) -> str:
    """auto: "cuda" for device arrays, "jax" for (CPU) JAX arrays and tracers, else "numba"."""
    if _is_tracer(logp_target):
        return "jax"
    if is_device_array(logp_target):
        return "cuda"
    if _is_jax_array(logp_target):
        return "jax"
    return "numba"


def _gpae_jax_checked(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam,
                      correction, eta, mask):
    from gpae_ref.jax_backend import gpae_jax

    # Under an outer jit the arrays are tracers: shapes are known, contents are not.
    concrete = not any(
        _is_tracer(x) for x in (rewards, values, dones, logp_target, logp_behaviour, mask)
    )
    validate(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
             correction=correction, eta=eta, mask=mask, check_contents=concrete)
    return gpae_jax(rewards, values, dones, logp_target, logp_behaviour, gamma=float(gamma),
                    lam=float(lam), correction=correction, eta=float(eta), mask=mask)


def _gpae_numba_checked(rewards, values, dones, logp_target, logp_behaviour, **kwargs):
    from gpae_ref.kernels.numba_cpu import gpae_numba

    validate(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
    return gpae_numba(rewards, values, dones, logp_target, logp_behaviour, **kwargs)


def _gpae_cuda_checked(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam,
                       correction, eta, mask):
    from gpae_ref.kernels.cuda import gpae_cuda

    arrays = (rewards, values, dones, logp_target, logp_behaviour, mask)
    # Contents are checked only when no input lives on the device: checking a
    # device array would cost a device-to-host copy of it.
    if any(is_device_array(x) for x in arrays):
        check_scalars(gamma=gamma, lam=lam, correction=correction, eta=eta)
        check_shapes(rewards, values, dones, logp_target, logp_behaviour, mask)
    else:
        validate(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
                 correction=correction, eta=eta, mask=mask)
    return gpae_cuda(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
                     correction=correction, eta=eta, mask=mask)


def gpae(
    rewards,
    values,
    dones,
    logp_target,
    logp_behaviour,
    *,
    gamma: float,
    lam: float,
    correction: str = "dt",
    eta: float = 1.02,
    mask=None,
    backend: str = "auto",
) -> GPAEOutput:
    """GPAE advantages and value targets; see ``gpae_ref.reference.gpae`` for the math.

    ``backend``:

    ``"numpy"``  the float64 reference (outputs are always float64).
    ``"numba"``  the fused CPU kernel (``gpae_ref.kernels.numba_cpu``).
    ``"cuda"``   one GPU thread per (env, agent) sequence (``gpae_ref.kernels.cuda``).
                 Device inputs (Numba device arrays, CuPy, JAX on GPU: anything with
                 ``__cuda_array_interface__``) give Numba device arrays that stay on the
                 device; host inputs are copied in and the outputs copied back.
    ``"jax"``    a reverse ``lax.scan`` (``gpae_ref.jax_backend``); works under ``jax.jit``.
    ``"auto"``   from ``logp_target``: "cuda" for a device array, "jax" for a JAX
                 array on the CPU or a tracer, otherwise "numba".

    Dtype: numba and cuda compute and return in the dtype of ``logp_target``
    (float32 or float64; any other dtype computes in float64); jax follows JAX's
    rules (float64 needs ``jax_enable_x64``).

    Validation (``gpae_ref._validate``) runs first: scalars and shapes always;
    contents (finite, log-probs <= 0, dones and mask 0/1) whenever the data is on
    the host. They are skipped for device arrays (cuda: no device-to-host copy
    just to check) and for JAX tracers (under ``jit`` there are no values): there a
    NaN, a positive log-prob or a non-binary done is not reported and gives
    meaningless outputs. Raises ValueError naming the argument.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}.")
    if backend == "auto":
        backend = _pick_backend(logp_target)
    kwargs = dict(gamma=gamma, lam=lam, correction=correction, eta=eta, mask=mask)
    if backend == "numpy":
        return _gpae_numpy(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
    if backend == "numba":
        return _gpae_numba_checked(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
    if backend == "cuda":
        return _gpae_cuda_checked(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
    return _gpae_jax_checked(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
