"""JAX backend: a reverse ``lax.scan``, jit-able and usable inside a jitted training step.

``gpae_jax`` does no validation (it must trace under ``jit``); the public entry
``gpae_ref.gpae(..., backend="jax")`` validates outside jit and then calls it.
The math is the reference's (``gpae_ref.reference``); this module only says it
in JAX. Importing it needs jax; the rest of the package does not.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from gpae_ref._validate import correction_row
from gpae_ref.reference import GPAEOutput


def trace_coefficients_jax(log_rho, *, correction: str, eta: float):
    """c^i_t from log-ratios ``[T, B, N]``: exp of the table's log-space formula (see reference)."""
    row = correction_row(correction)
    joint = jnp.sum(log_rho, axis=-1, keepdims=True)
    log_c = row.log_coefficient(log_rho, joint, jnp.log(eta), jnp)
    return jnp.broadcast_to(jnp.exp(log_c), log_rho.shape)


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

    Computes in the dtype of ``logp_target`` (float32 or float64 if x64 is on).
    ``values`` may be ``[T+1, B, N]`` or ``[T+1, B]``.
    """
    dtype = jnp.result_type(logp_target)
    log_rho = logp_target.astype(dtype) - logp_behaviour.astype(dtype)
    if mask is not None:
        log_rho = jnp.where(mask.astype(bool), log_rho, 0.0)
    N = log_rho.shape[-1]
    values = values.astype(dtype)
    if values.ndim == 2:
        values = jnp.broadcast_to(values[:, :, None], values.shape + (N,))
    coef = trace_coefficients_jax(log_rho, correction=correction, eta=eta)
    not_done = (1.0 - dones.astype(dtype))[:, :, None]
    deltas = rewards.astype(dtype)[:, :, None] + gamma * not_done * values[1:] - values[:-1]
    # c^i_{t+1} pairs with step t; the last step's next coefficient is unused (A_T = 0).
    next_coef = jnp.concatenate([coef[1:], jnp.ones_like(coef[:1])], axis=0)

    def step(next_adv, xs):
        delta, nd, c_next = xs
        adv = delta + gamma * lam * jnp.where(nd > 0, c_next * next_adv, 0.0)
        return adv, adv

    _, advantages = jax.lax.scan(
        step, jnp.zeros_like(deltas[0]), (deltas, not_done, next_coef), reverse=True
    )
    value_targets = values[:-1] + jnp.exp(jnp.minimum(0.0, log_rho)) * advantages
    return GPAEOutput(advantages, value_targets)
