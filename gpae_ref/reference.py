"""The NumPy reference of GPAE with DT-ISR: the oracle every backend is checked against.

Readable before fast: one plain reverse loop over time, vectorised over
environments and agents, in float64 whatever the input dtype.

Paper: Kim, Park, Kim, Jeon, Han, Sung, "Generalized Per-Agent Advantage
Estimation for Multi-Agent Policy Optimization", AAMAS 2026, arXiv 2603.02654.
Definitions as fixed in this project's spec (GPAE.md, sections 3-5).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gpae_ref.corrections import correction_row, correction_table_text
from gpae_ref.dtypes import check_dtypes
from gpae_ref.validation import (check_logp_shapes, check_logp_values, check_scalars, validate,
                                 warn_if_full_overflowed)


class GPAEOutput(NamedTuple):
    """What every backend returns; both arrays are ``[T, B, N]``."""

    advantages: Any
    value_targets: Any


def log_ratios(logp_target, logp_behaviour, mask=None) -> np.ndarray:
    """Per-agent log importance ratios l^j_t = log pi^j - log mu^j, float64 ``[T, B, N]``.

    A masked (dead or padded) agent contributes l^j_t = 0: its ratio is 1 and it
    leaves the others' ratio unchanged.
    """
    log_rho = np.asarray(logp_target, np.float64) - np.asarray(logp_behaviour, np.float64)
    if mask is not None:
        log_rho = np.where(np.asarray(mask).astype(bool), log_rho, 0.0)
    return log_rho


def _trace_coefficients(log_rho: np.ndarray, correction: str, eta: float) -> np.ndarray:
    """c^i_t from validated float64 log-ratios: exp of the table's log-space formula.

    With l the own log-ratio and L = sum_j l^j the joint one, the others' log
    ratio is L - l (never a product of N ratios, which overflows for many
    agents); ``CORRECTION_TABLE`` in ``gpae_ref.corrections`` gives log c in l and
    L for every correction. ``full`` (log c = L) may overflow to inf: by design.
    """
    row = correction_row(correction)
    with np.errstate(over="ignore"):  # target log-probs near -max sum to -inf: a trace of 0
        joint = log_rho.sum(axis=-1, keepdims=True)
        log_c = row.log_coefficient(log_rho, joint, math.log(float(eta)), np)
        return np.broadcast_to(np.exp(log_c), log_rho.shape).copy()


def trace_coefficients(
    logp_target, logp_behaviour, *, correction: str = "dt", eta: float = 1.02, mask=None
) -> np.ndarray:
    """The trace coefficients c^i_t of the spec's table (section 4), float64 ``[T, B, N]``.

    rho^i_t = pi^i/mu^i of agent i's action, rho^-i_t the product over the
    other agents, rho_t = rho^i_t rho^-i_t; all formed from summed log-ratios.
    ``gpae`` uses c^i_{t+1} to weight the trace from step t+1 back to step t.
    The corrections (``gpae_ref.CORRECTION_TABLE``)::

{table}
    """
    check_scalars(gamma=0.0, lam=0.0, correction=correction, eta=eta)
    check_logp_shapes(logp_target, logp_behaviour, mask)
    check_dtypes(None, None, None, logp_target, logp_behaviour, mask)
    check_logp_values(logp_target, logp_behaviour, mask)
    return _trace_coefficients(log_ratios(logp_target, logp_behaviour, mask), correction, eta)


# The docstring's table is the one table, not a copy of it.
trace_coefficients.__doc__ = trace_coefficients.__doc__.replace(
    "{table}", correction_table_text(" " * 8))


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
) -> GPAEOutput:
    """Generalized Per-Agent Advantage Estimation (GPAE) with trace ``correction``.

    Arrays are time-major: rewards ``[T, B]`` (team reward), values
    ``[T+1, B, N]`` (per-agent values E^i_t = EQ^i(s_t, a^-i_t); row T bootstraps)
    or ``[T+1, B]`` (a state value, the same for every agent), dones ``[T, B]``
    (1 = the episode ended after step t), logp_target / logp_behaviour
    ``[T, B, N]`` (log-probs of the actions taken under pi and mu), mask
    ``[T, B, N]`` or None (0 = dead or padded agent: its log-ratio counts as 0).

    Backwards in time, per agent i::

        delta^i_t = r_t + gamma (1 - d_t) E^i_{t+1} - E^i_t
        A^i_T     = 0
        A^i_t     = delta^i_t + gamma lam (1 - d_t) c^i_{t+1} A^i_{t+1}
        v^i_t     = E^i_t + min(1, rho^i_t) A^i_t

    with c^i the trace coefficient of ``correction`` (see ``trace_coefficients``).
    The trace at t+1 corrects the joint action of step t+1; step t's action needs
    none because A^i_t conditions on it. A done cuts both the bootstrap and the
    trace. Reductions: ``none`` is GAE on the per-agent values; lam = 0 gives the
    one-step counterfactual TD error (COMA); N = 1 with a state value is GAE
    with Retrace-style traces.

    Returns ``GPAEOutput(advantages, value_targets)``, both float64 ``[T, B, N]``
    whatever the input dtypes (integer and floating; bool for dones and mask;
    see ``gpae_ref.corrections.check_dtypes``). Raises ValueError naming the
    argument for any bad input (nothing is broadcast silently). With ``full``
    (untruncated traces) an exact value beyond float64 is returned as inf, with a
    ``FullOverflowWarning`` (``gpae_ref.validation.warn_if_full_overflowed``).
    """
    shapes = validate(
        rewards, values, dones, logp_target, logp_behaviour,
        gamma=gamma, lam=lam, correction=correction, eta=eta, mask=mask, dtype=np.float64,
    )
    gamma, lam, eta = check_scalars(gamma=gamma, lam=lam, correction=correction, eta=eta)  # floats
    T, B, N = shapes.T, shapes.B, shapes.N
    r = np.asarray(rewards, np.float64)
    d = np.asarray(dones, np.float64)
    E = np.asarray(values, np.float64)
    if shapes.shared_values:
        E = np.repeat(E[:, :, None], N, axis=2)
    log_rho = log_ratios(logp_target, logp_behaviour, mask)
    c = _trace_coefficients(log_rho, correction, eta)
    own_clip = np.exp(np.minimum(0.0, log_rho))  # min(1, rho^i_t)

    advantages = np.zeros((T, B, N))
    next_adv = np.zeros((B, N))  # A^i_T = 0
    next_c = np.ones((B, N))  # c at T is never used: it multiplies A_T = 0
    for t in reversed(range(T)):
        not_done = (1.0 - d[t])[:, None]
        delta = r[t][:, None] + gamma * not_done * E[t + 1] - E[t]
        with np.errstate(invalid="ignore"):  # `full` may give inf * 0 where a done cuts
            carried = np.where(not_done > 0, next_c * next_adv, 0.0)
        advantages[t] = delta + gamma * lam * carried
        next_adv, next_c = advantages[t], c[t]
    value_targets = E[:T] + own_clip * advantages
    warn_if_full_overflowed(correction, advantages, value_targets)
    return GPAEOutput(advantages, value_targets)
