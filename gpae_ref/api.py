"""The one public entry point: ``gpae_ref.gpae(..., backend=...)``.

Every backend computes the same function as the NumPy reference
(``gpae_ref.reference.gpae``) and is tested against it. Validation is shared
(``gpae_ref.validation``: scalars, shapes, contents; ``gpae_ref.dtypes``: the dtype rule) and runs
before any result is returned; the Numba backend makes the content checks in
its kernel's own pass. Numba, numba.cuda and JAX are imported only when their
backend runs, so ``import gpae_ref`` stays light.
"""

from __future__ import annotations

import sys

import numpy as np

from gpae_ref.arrays import is_device_array, is_jax_array, is_tracer
from gpae_ref.dtypes import (
    FLAG_ARGUMENTS,
    REAL_ARGUMENTS,
    check_dtypes,
    check_jax_dtype,
    host_flags,
    host_real,
)
from gpae_ref.validation import (check_out, check_scalars, check_shapes, check_values, validate,
                                 warn_if_full_overflowed)
from gpae_ref.reference import GPAEOutput
from gpae_ref.reference import gpae as _gpae_numpy

#: Backend names a user can pass; "auto" picks one from the input arrays.
BACKENDS: tuple[str, ...] = ("auto", "numpy", "numba", "cuda", "jax")


def _pick_backend(logp_target) -> str:
    """auto: "cuda" for device arrays, "jax" for (CPU) JAX arrays and tracers, else "numba"."""
    if is_tracer(logp_target):
        return "jax"
    if is_device_array(logp_target):
        return "cuda"
    if is_jax_array(logp_target):
        return "jax"
    return "numba"


def _inputs(rewards, values, dones, logp_target, logp_behaviour, mask) -> dict:
    return dict(rewards=rewards, values=values, dones=dones, logp_target=logp_target,
                logp_behaviour=logp_behaviour, mask=mask)


def _gpae_numpy_checked(rewards, values, dones, logp_target, logp_behaviour, *, out, **kwargs):
    result = _gpae_numpy(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
    if out is None:
        return result
    out = check_out(out, result.advantages.shape, np.dtype(np.float64),
                    _inputs(rewards, values, dones, logp_target, logp_behaviour, kwargs["mask"]))
    for o, x in zip(out, result):
        np.copyto(o, x)
    return GPAEOutput(*out)


def _gpae_jax_checked(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam,
                      correction, eta, mask, out):
    if out is not None:
        raise ValueError("out is not supported with backend='jax' (JAX arrays are immutable); "
                         "pass out=None.")
    from gpae_ref.jax_backend import gpae_jax

    # Under an outer jit the arrays are tracers: shapes are known, contents are not.
    concrete = not any(
        is_tracer(x) for x in (rewards, values, dones, logp_target, logp_behaviour, mask)
    )
    validate(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
             correction=correction, eta=eta, mask=mask, check_contents=concrete)
    dt = check_jax_dtype(logp_target)  # float64 without x64: refused, never truncated silently
    # NumPy inputs reach jit in the compute dtype and native byte order, as the other backends
    # read them: jit misreads the other byte order, cannot take long doubles or masked arrays,
    # and wraps 64-bit integers to 32 bits with x64 off.
    arrays = _inputs(rewards, values, dones, logp_target, logp_behaviour, mask)
    arrays = {name: (x if x is None or not isinstance(x, np.ndarray) else
                     host_flags(x) if name in FLAG_ARGUMENTS else host_real(x, dt))
              for name, x in arrays.items()}
    return gpae_jax(**arrays, gamma=gamma, lam=lam, correction=correction, eta=eta)


def _gpae_numba_checked(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam,
                        correction, eta, mask, out):
    """Scalars, shapes and dtypes here; contents in the kernel's own pass (no NumPy passes).

    Only when the kernel counted a bad element (or an input must be converted to
    the compute dtype, which could hide a value: 1e39 -> inf, 1e-50 -> 0) does
    ``check_values`` run over the originals, to name the argument and index.
    """
    from gpae_ref.kernels.numba_cpu import run_numba

    arrays = _inputs(rewards, values, dones, logp_target, logp_behaviour, mask)
    shapes = check_shapes(**arrays)
    dt = check_dtypes(**arrays)
    if out is not None:
        out = check_out(out, (shapes.T, shapes.B, shapes.N), dt, arrays)
    if any(np.dtype(arrays[name].dtype) != dt for name in REAL_ARGUMENTS):
        check_values(**arrays, dtype=dt)
    result, n_bad = run_numba(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma,
                              lam=lam, correction=correction, eta=eta, mask=mask, out=out)
    if n_bad:
        check_values(**arrays, dtype=dt)  # raises, naming the argument and the index
        raise AssertionError(f"the kernel counted {n_bad} bad input elements that "
                             f"check_values accepts")  # the two checks disagree: a bug
    return result


def _same_kind(template, x):
    """Numba device array ``x`` as the kind of ``template`` (zero-copy), without importing anything.

    Numba device arrays and hosts without a known framework get ``x`` itself
    (any ``__cuda_array_interface__`` consumer can wrap it). For an input of a
    framework the user has already imported (its module is in ``sys.modules``),
    that framework's own zero-copy constructor of ``__cuda_array_interface__``
    objects is used: PyTorch's ``as_tensor``, CuPy's (or a like module's)
    ``asarray``. JAX has neither at its top level: JAX inputs give Numba device
    arrays (``jax.dlpack`` or CuPy can wrap them).
    """
    kind = type(template)
    if kind.__module__.startswith("numba.cuda"):
        return x
    module = sys.modules.get(kind.__module__.split(".")[0])
    for name in ("as_tensor", "asarray"):  # torch.as_tensor; cupy.asarray and alikes
        make = getattr(module, name, None)
        if callable(make):
            try:
                return make(x)
            except Exception:  # a constructor that does not take the interface
                break
    return x


def _gpae_cuda_checked(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam,
                       correction, eta, mask, out):
    from gpae_ref.kernels.cuda import gpae_cuda

    arrays = _inputs(rewards, values, dones, logp_target, logp_behaviour, mask)
    # Contents are checked only when no input lives on the device: checking a
    # device array would cost a device-to-host copy of it.
    on_device = any(is_device_array(x) for x in arrays.values())
    shapes = check_shapes(**arrays)
    dt = check_dtypes(**arrays)
    if not on_device:
        check_values(**arrays, dtype=dt)
        if out is not None:
            out = check_out(out, (shapes.T, shapes.B, shapes.N), dt, arrays)
    elif out is not None:
        raise ValueError("out is supported with backend='cuda' for host inputs only; device "
                         "inputs return new device arrays: pass out=None.")
    result = gpae_cuda(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
                       correction=correction, eta=eta, mask=mask, out=out)
    if is_device_array(logp_target):
        return GPAEOutput(*(_same_kind(logp_target, x) for x in result))
    return result


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
    out=None,
) -> GPAEOutput:
    """GPAE advantages and value targets; see ``gpae_ref.reference.gpae`` for the math.

    ``backend``:

    ``"numpy"``  the float64 reference (outputs are always float64).
    ``"numba"``  the fused CPU kernel (``gpae_ref.kernels.numba_cpu``); it checks the
                 contents in its own pass over the data.
    ``"cuda"``   one GPU thread per (env, agent) sequence (``gpae_ref.kernels.cuda``).
                 Device inputs (anything with ``__cuda_array_interface__`` or CUDA
                 DLPack: Numba device arrays, CuPy, PyTorch, JAX on GPU) are used in
                 place and the outputs stay on the device, as the kind of
                 ``logp_target`` (a Numba device array where that kind is unknown);
                 host inputs are copied in and the outputs copied back.
    ``"jax"``    a reverse ``lax.scan`` (``gpae_ref.jax_backend``); works under ``jax.jit``.
    ``"auto"``   from ``logp_target``: "cuda" for a device array, "jax" for a JAX
                 array on the CPU or a tracer, otherwise "numba".

    Dtypes (one rule, ``gpae_ref.corrections.check_dtypes``): rewards, values and
    log-probs may be integer or floating, dones and mask also bool; complex,
    bool log-probs/rewards/values, non-numeric dtypes and NumPy masked arrays with
    masked entries raise ValueError; either byte order and long doubles are read
    as their values. numba, cuda and jax compute and return in float32 if
    ``logp_target`` is float32, otherwise in float64, with every input converted
    to that dtype first (integers included); jax raises ValueError for float64
    when JAX's x64 mode is off (instead of computing in float32 silently). A value
    outside its usable range in the compute dtype raises too
    (``gpae_ref.corrections.limits``: a float64 1e39 in a float32 call, rewards or
    values so large the recursion would overflow, a behaviour log-prob below the
    log of the smallest normal number); so does eta outside ``ETA_RANGE``.
    Tolerances against the reference: ``gpae_ref.FLOAT32_TOL``, ``FLOAT64_TOL``.

    ``out``: optional preallocated ``(advantages, value_targets)`` to write into
    and return (numpy, numba, and cuda with host inputs): writeable C-contiguous
    NumPy arrays of shape ``[T, B, N]`` and the compute dtype (float64 for
    numpy), not overlapping each other or any input. Reusing them across calls
    saves allocating and first-touching fresh pages. If the call raises, their
    contents are unspecified.

    Validation runs for every backend: scalars (Python or NumPy numbers, 0-d
    arrays), shapes and dtypes always; contents (finite, log-probs <= 0, dones
    and mask 0/1, within their usable ranges) whenever the data is on the
    host. They are skipped for device arrays (cuda: no device-to-host copy
    just to check) and for JAX tracers (under ``jit`` there are no values): there a
    NaN, a positive log-prob or a non-binary done is not reported and gives
    meaningless outputs. Raises ValueError naming the argument. With ``full``
    (untruncated traces) an exact value beyond the compute dtype is returned as
    inf in every backend, as the reference does, with a ``FullOverflowWarning``
    where the outputs are on the host.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}.")
    gamma, lam, eta = check_scalars(gamma=gamma, lam=lam, correction=correction, eta=eta)
    if backend == "auto":
        backend = _pick_backend(logp_target)
    kwargs = dict(gamma=gamma, lam=lam, correction=correction, eta=eta, mask=mask, out=out)
    run = {"numpy": _gpae_numpy_checked, "numba": _gpae_numba_checked, "cuda": _gpae_cuda_checked,
           "jax": _gpae_jax_checked}[backend]
    result = run(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
    if backend != "numpy":  # the reference warns itself
        warn_if_full_overflowed(correction, *result)
    return result
