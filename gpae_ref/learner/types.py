"""The types every learner family shares: a network's state, the metrics, the Trainer.

A family's own state (``mappo.LearnerState``, ``dop.DOPState``) is a NamedTuple
of arrays that holds ``NetState``s, so a whole run vmaps over seeds and saves
as one pytree; the Trainer's ``data`` names which of its fields is the data buffer.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from gpae_ref.learner.config import LearnerConfig
from gpae_ref.learner.env import EnvSpec
from gpae_ref.learner.dataspec import DataSpec


class NetState(NamedTuple):
    params: Any
    opt_state: Any


class UpdateMetrics(NamedTuple):
    """Per-update diagnostics (scalars; a leading axis when scanned/vmapped)."""

    update: jax.Array
    env_steps: jax.Array
    train_win_rate: jax.Array  # won / finished episodes in the newest rollout (nan if none)
    train_return: jax.Array
    train_episodes: jax.Array
    actor_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array  # E[(x - 1) - log x], x = pi / pi_k
    clip_frac: jax.Array  # fraction with |pi / pi_k - 1| > eps
    own_ratio_mean: jax.Array  # rho^i = pi_k^i / mu^i over the kept data
    own_ratio_max: jax.Array
    others_ratio_mean: jax.Array  # rho^-i = prod_{j != i} rho^j
    others_ratio_max: jax.Array
    trace_mean: jax.Array  # c^i of the estimator's correction
    trace_truncated: jax.Array  # fraction with c^i < 1
    value_mean: jax.Array
    actor_grad_norm: jax.Array
    critic_grad_norm: jax.Array
    lr: jax.Array


class EvalMetrics(NamedTuple):
    win_rate: jax.Array
    episode_return: jax.Array
    episodes: jax.Array


class Trainer(NamedTuple):
    """Functions of one configuration. ``*_fn`` are unjitted (compose/vmap them);
    the others are their jitted forms."""

    config: LearnerConfig
    spec: EnvSpec
    init_fn: Callable  # rng -> state
    update_fn: Callable  # state -> (state, UpdateMetrics)
    scan_updates: Callable  # (state, n: int) -> (state, UpdateMetrics [n])
    evaluate_fn: Callable  # state -> EvalMetrics
    init: Callable
    run_updates: Callable  # jitted scan_updates, n static
    evaluate: Callable
    data: DataSpec  # the state's data buffer and how much of it the next update reads again
