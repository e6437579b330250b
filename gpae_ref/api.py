"""The one public entry point: ``gpae_ref.gpae(..., backend=...)``.

Every backend computes the same function as the NumPy reference
(``gpae_ref.reference.gpae``) and is tested against it. Validation is shared
(``gpae_ref._validate``) and runs before any backend computes.
"""

from __future__ import annotations

from gpae_ref.reference import GPAEOutput
from gpae_ref.reference import gpae as _gpae_numpy

#: Backend names a user can pass; "auto" picks one from the input arrays.
BACKENDS: tuple[str, ...] = ("auto", "numpy", "jax")


def _is_jax_array(x) -> bool:
    return type(x).__module__.startswith(("jax", "jaxlib"))


def _pick_backend(logp_target) -> str:
    if _is_jax_array(logp_target):
        return "jax"
    return "numpy"


def _gpae_jax_checked(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam,
                      correction, eta, mask):
    import jax.core

    from gpae_ref._validate import validate
    from gpae_ref.jax_backend import gpae_jax

    concrete = not any(
        isinstance(x, jax.core.Tracer)
        for x in (rewards, values, dones, logp_target, logp_behaviour, mask)
    )
    validate(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
             correction=correction, eta=eta, mask=mask, check_contents=concrete)
    return gpae_jax(rewards, values, dones, logp_target, logp_behaviour, gamma=float(gamma),
                    lam=float(lam), correction=correction, eta=float(eta), mask=mask)


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

    ``backend``: "numpy" (the float64 reference), "jax" (reverse lax.scan,
    jit-able), or "auto" (jax for JAX arrays, otherwise numpy).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}.")
    if backend == "auto":
        backend = _pick_backend(logp_target)
    kwargs = dict(gamma=gamma, lam=lam, correction=correction, eta=eta, mask=mask)
    if backend == "numpy":
        return _gpae_numpy(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
    return _gpae_jax_checked(rewards, values, dones, logp_target, logp_behaviour, **kwargs)
