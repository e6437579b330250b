"""JAX backend: vectorised pre- and post-passes around a minimal reverse ``lax.scan``.

``gpae_jax`` does no validation (it must trace under ``jit``); the public entry
``gpae_ref.gpae(..., backend="jax")`` validates outside jit and then calls it.
The math is the reference's (``gpae_ref.reference``); this module only says it
in JAX. Importing it needs jax; the rest of the package does not.

Why it is laid out this way: on the CPU, XLA runs a ``lax.scan`` as a loop whose
steps each touch every array in its inputs and carry, so everything that does
not depend on A_{t+1} is computed outside it, in whole-array passes XLA fuses:
the log-ratios, the trace coefficients (the table's log-space formula), the
TD errors, and one per-step factor k_t = gamma lam (1 - d_t) c_{t+1} that folds
the done cut and the next coefficient together. The scan then reads two
arrays and writes one: A_t = delta_t + k_t A_{t+1}. The value targets
E_t + min(1, rho^i_t) A_t are one more fused pass after it.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from gpae_ref._validate import correction_row
from gpae_ref.reference import GPAEOutput

#: Scan steps per loop iteration. 1: unrolling by 8 ran 10-15% slower on the CPU
#: (T=128, B=8192, N=8); results are identical for any value.
SCAN_UNROLL = 1


def trace_coefficients_jax(log_rho, *, correction: str, eta: float):
    """c^i_t from log-ratios ``[T, B, N]``: exp of the table's log-space formula (see reference)."""
    row = correction_row(correction)
    joint = jnp.sum(log_rho, axis=-1, keepdims=True)
    log_c = row.log_coefficient(log_rho, joint, jnp.log(eta), jnp)
    return jnp.broadcast_to(jnp.exp(log_c), log_rho.shape)


def jax_compute_dtype(logp_target):
    """The dtype rule in JAX: float32 if ``logp_target`` is float32, else float64.

    float64 needs JAX's x64 mode; without it JAX truncates to float32 and warns.
    ``gpae_ref.gpae(..., backend="jax")`` raises instead (``check_jax_dtype``).
    """
    return jnp.float32 if jnp.result_type(logp_target) == jnp.float32 else jnp.float64


# Only the correction is static: gamma, lam and eta are traced scalars, so a new
# value does not recompile (a sweep or verify() calls with many of them).
@partial(jax.jit, static_argnames=("correction",))
def gpae_jax(
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
) -> GPAEOutput:
    """GPAE as a reverse scan over time (same contract as ``gpae_ref.reference.gpae``).

    Computes in ``jax_compute_dtype(logp_target)`` (float32 for float32 log-probs,
    float64 otherwise, which needs x64). ``values`` may be ``[T+1, B, N]`` or
    ``[T+1, B]``. Usable under ``jit``, ``vmap`` (e.g. over seeds) and ``grad``
    (with respect to rewards, values and log-probs)::

        k_t = gamma lam (1 - d_t) c^i_{t+1}     (k_{T-1} multiplies A_T = 0)
        A_t = delta_t + k_t A_{t+1}
        v_t = E_t + min(1, rho^i_t) A_t
    """
    dtype = jax_compute_dtype(logp_target)
    log_rho = logp_target.astype(dtype) - logp_behaviour.astype(dtype)
    if mask is not None:
        log_rho = jnp.where(mask.astype(bool), log_rho, jnp.zeros((), dtype))
    N = log_rho.shape[-1]
    values = values.astype(dtype)
    if values.ndim == 2:
        values = jnp.broadcast_to(values[:, :, None], values.shape + (N,))
    gamma = jnp.asarray(gamma, dtype)
    lam = jnp.asarray(lam, dtype)
    coef = trace_coefficients_jax(log_rho, correction=correction, eta=jnp.asarray(eta, dtype))
    not_done = (dones == 0)[:, :, None]
    deltas = (rewards.astype(dtype)[:, :, None]
              + jnp.where(not_done, gamma * values[1:], jnp.zeros((), dtype)) - values[:-1])
    # c^i_{t+1} pairs with step t; a done cuts it (a select, so `full`'s inf never meets 0).
    next_coef = jnp.concatenate([coef[1:], jnp.zeros_like(coef[:1])], axis=0)
    k = jnp.where(not_done, (gamma * lam) * next_coef, jnp.zeros((), dtype))

    def step(next_adv, xs):
        delta, k_t = xs
        # k_t = 0 is a cut: a select, so an infinite A_{t+1} (`full` overflowing) gives
        # delta_t there as in the reference, never 0 * inf.
        adv = jnp.where(k_t == 0, delta, delta + k_t * next_adv)
        return adv, adv

    _, advantages = jax.lax.scan(step, jnp.zeros_like(deltas[0]), (deltas, k), reverse=True,
                                 unroll=SCAN_UNROLL)
    value_targets = values[:-1] + jnp.exp(jnp.minimum(0.0, log_rho)) * advantages
    return GPAEOutput(advantages, value_targets)
