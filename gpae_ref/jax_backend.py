"""JAX backend: one reverse ``lax.scan`` that does all the work of a time step.

``gpae_jax`` does no validation (it must trace under ``jit``); the public entry
``gpae_ref.gpae(..., backend="jax")`` validates outside jit and then calls it.
The math is the reference's (``gpae_ref.reference``); this module only says it
in JAX. Importing it needs jax; the rest of the package does not.

Why it is laid out this way: on the CPU, XLA runs whole-array passes over
``[T, B, N]`` one after the other, each reading and writing main memory, and the
reverse scan is one more loop over memory. The cheapest order is one loop over
time in which step t reads its own rows (rewards, dones, both log-probs, the
values) once, while they are in cache, and writes both outputs: the log-ratios,
the trace coefficient c^i_t, the TD error, A_t and v_t are all formed there. The
carry holds what step t needs of step t+1: A_{t+1}, c^i_{t+1} and E_{t+1}.
Values are read by index (not sliced into ``values[:-1]`` and ``values[1:]``,
which would be two copies). The coefficient takes one exp per element (see
``coefficient_and_own_clip``). Measured in benchmarks/bench_estimators.py.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from gpae_ref.corrections import correction_row
from gpae_ref.reference import GPAEOutput

#: Scan steps per loop iteration. 2 ran fastest on the CPU (T=128, B=8192, N=8;
#: 1 and 4 slower); results differ from 1 only by float rounding.
SCAN_UNROLL = 2


def trace_coefficients_jax(log_rho, *, correction: str, eta: float):
    """c^i_t from log-ratios ``[T, B, N]``: exp of the table's log-space formula (see reference)."""
    row = correction_row(correction)
    joint = jnp.sum(log_rho, axis=-1, keepdims=True)
    log_c = row.log_coefficient(log_rho, joint, jnp.log(eta), jnp)
    return jnp.broadcast_to(jnp.exp(log_c), log_rho.shape)


def coefficient_and_own_clip(log_rho, *, correction: str, eta):
    """(c^i, min(1, rho^i)) from log-ratios ``[..., N]``, with one exp per element.

    Equal to ``trace_coefficients_jax`` (up to rounding) by these identities, with
    rho = exp(sum_j l^j) taken once per environment:

        dt = min(1, rho^i min(eta, rho^-i)) = min(min(1, eta rho^i), min(1, rho))
        eta >= 1:  x = min(1, rho^i),       min(1, eta rho^i) = min(1, eta x)
        eta <  1:  x = min(1, eta rho^i),   min(1, rho^i)     = min(1, x / eta)

    x = exp(min(0, l + min(0, log eta))) is the one exp. Every exp argument is
    <= 0 (no overflow, finite gradients) except `full`'s untruncated exp(sum l).
    """
    code = correction_row(correction).name
    joint = jnp.sum(log_rho, axis=-1, keepdims=True)
    if code == "full":
        return (jnp.broadcast_to(jnp.exp(joint), log_rho.shape),
                jnp.exp(jnp.minimum(0.0, log_rho)))
    if code != "dt":
        own_clip = jnp.exp(jnp.minimum(0.0, log_rho))
        coef = {"none": jnp.ones_like(log_rho), "it": own_clip,
                "st": jnp.broadcast_to(jnp.exp(jnp.minimum(0.0, joint)), log_rho.shape)}[code]
        return coef, own_clip
    eta = jnp.asarray(eta, log_rho.dtype)
    big_eta = eta >= 1
    x = jnp.exp(jnp.minimum(0.0, log_rho + jnp.minimum(0.0, jnp.log(eta))))
    own_clip = jnp.where(big_eta, x, jnp.minimum(1.0, x / eta))
    own_eta = jnp.where(big_eta, jnp.minimum(1.0, eta * x), x)
    return jnp.minimum(own_eta, jnp.exp(jnp.minimum(0.0, joint))), own_clip


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
    gamma = jnp.asarray(gamma, dtype)
    gamma_lam = gamma * jnp.asarray(lam, dtype)
    shared_values = values.ndim == 2
    values = values.astype(dtype)
    zero = jnp.zeros((), dtype)

    def value_row(t):
        row = jax.lax.dynamic_index_in_dim(values, t, keepdims=False)
        return row[:, None] if shared_values else row

    def step(carry, xs):
        next_adv, next_coef, next_value = carry
        reward, done, logp_t, logp_b, step_mask, t = xs
        log_rho = logp_t.astype(dtype) - logp_b.astype(dtype)
        if step_mask is not None:
            log_rho = jnp.where(step_mask.astype(bool), log_rho, zero)
        coef, own_clip = coefficient_and_own_clip(log_rho, correction=correction, eta=eta)
        value = value_row(t)
        not_done = (done == 0)[:, None]
        delta = reward.astype(dtype)[:, None] + jnp.where(not_done, gamma * next_value, zero) - value
        # c^i_{t+1} pairs with step t; a done cuts it. Selects, not products, so that
        # `full`'s inf never meets a 0 and an infinite A_{t+1} gives delta_t at a cut.
        k = jnp.where(not_done, gamma_lam * next_coef, zero)
        adv = jnp.where(k == 0, delta, delta + k * next_adv)
        return (adv, coef, jnp.broadcast_to(value, adv.shape)), (adv, value + own_clip * adv)

    T, B, N = logp_target.shape
    last = jnp.broadcast_to(value_row(T), (B, N))
    init = (jnp.zeros((B, N), dtype), jnp.zeros((B, N), dtype), last)
    xs = (rewards, dones, logp_target, logp_behaviour, mask, jnp.arange(T))
    _, (advantages, value_targets) = jax.lax.scan(step, init, xs, reverse=True, unroll=SCAN_UNROLL)
    return GPAEOutput(advantages, value_targets)
