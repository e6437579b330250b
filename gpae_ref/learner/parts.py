"""The parts every learner family is built from: rollout, greedy evaluation, policy
log-probs and entropy, optimiser and LR schedule, clipped surrogate, minibatch
split, the gradient step, episode statistics, and the jit/Trainer tail.

Each is a pure function of arrays (or builds one from the configuration), so a
family module (``mappo``, ``dop``) says only what is its own.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from gpae_ref.learner.config import LearnerConfig
from gpae_ref.learner.env import SmaxEnv
from gpae_ref.learner.dataspec import DataSpec
from gpae_ref.learner.types import EvalMetrics, NetState, Trainer

LOG_RATIO_CLIP = 20.0  # exp(20) ~ 5e8: keeps float32 finite on stale data; inactive on fresh data


# ----------------------------------------------------------------------------- policy


def swap_leading(x):
    """``[K, T, ...]`` <-> ``[T, K, ...]``: segment-major buffers <-> the time-major networks."""
    return jnp.swapaxes(x, 0, 1)


def logp_of(logits, actions):
    """log pi(a) of the taken ``actions`` under ``logits`` ``[..., A]`` -> ``[...]``."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits), actions[..., None], axis=-1)[..., 0]


def entropy(logits):
    """H(pi) = -sum_a pi(a) log pi(a), masked actions (log pi ~ -inf) counting 0."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.where(logp > -1e8, jnp.exp(logp) * logp, 0.0), axis=-1)


def rollout_scan(actor_net, env: SmaxEnv, actor_params, state, num_steps: int):
    """T = ``num_steps`` steps of the masked stochastic policy in ``state``'s envs (any state with
    ``env_state, obs, reset, h_actor, rng``) -> ((env_state, obs, reset, h_actor, rng), (obs, action, reset, out))."""

    def step(carry, _):
        env_state, obs, reset, h, rng = carry
        rng, k_act, k_env = jax.random.split(rng, 3)
        h, logits = actor_net.apply(actor_params, h, obs.obs[None], reset[None], obs.avail[None])
        action = jax.random.categorical(k_act, logits[0]).astype(jnp.int32)
        next_obs, env_state, out = env.step(k_env, env_state, action)
        record = (obs, action, reset, out)
        next_reset = out.done_agent | out.done[:, None]
        return (env_state, next_obs, next_reset, h, rng), record

    init = (state.env_state, state.obs, state.reset, state.h_actor, state.rng)
    return jax.lax.scan(step, init, None, num_steps)


def greedy_evaluate(actor_net, env: SmaxEnv, eval_envs: int, hidden: int, actor_params, eval_rng, update) -> EvalMetrics:
    """Greedy (argmax, masked) policy on ``eval_envs`` fresh envs; the first episode of each counts.

    The keys are folded from ``update``: reproducible and separate from training.
    """
    N = env.spec.num_agents
    spec = env.spec
    Ev = eval_envs
    key = jax.random.fold_in(eval_rng, update)
    k_reset, key = jax.random.split(key)
    obs, env_state = env.reset(k_reset, Ev)

    def step(carry, k):
        env_state, obs, reset, h, finished, won, ret = carry
        h, logits = actor_net.apply(actor_params, h, obs.obs[None], reset[None], obs.avail[None])
        action = jnp.argmax(logits[0], axis=-1).astype(jnp.int32)
        obs, env_state, out = env.step(k, env_state, action)
        first = out.done & ~finished
        won = won + jnp.where(first, out.won, 0.0)
        ret = ret + jnp.where(first, out.episode_return, 0.0)
        reset = out.done_agent | out.done[:, None]
        return (env_state, obs, reset, h, finished | out.done, won, ret), None

    zeros = jnp.zeros((Ev,), jnp.float32)
    init = (env_state, obs, jnp.zeros((Ev, N), bool), jnp.zeros((Ev, N, hidden)), jnp.zeros((Ev,), bool),
            zeros, zeros)
    (_, _, _, _, finished, won, ret), _ = jax.lax.scan(
        step, init, jax.random.split(key, spec.max_steps + 1))
    n = finished.sum().astype(jnp.float32)
    return EvalMetrics(win_rate=won.sum() / jnp.maximum(n, 1.0),
                       episode_return=ret.sum() / jnp.maximum(n, 1.0), episodes=n)


# ----------------------------------------------------------------------------- optimiser


def lr_schedule(config: LearnerConfig, base: float, steps_per_update: int) -> Callable:
    """count (optimiser steps) -> lr: ``base`` (1 - u / num_updates) with u = count // steps_per_update
    the update the step belongs to, clamped at 0 past the budget; ``base`` itself without ``anneal_lr``."""

    def schedule(count):
        frac = 1.0 - (count // steps_per_update) / config.num_updates
        return base * jnp.maximum(frac, 0.0) if config.anneal_lr else base

    return schedule


def make_optimiser(config: LearnerConfig, base: float, steps_per_update: int):
    """Adam on ``lr_schedule`` after clipping the global gradient norm at ``max_grad_norm``."""
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                       optax.adam(learning_rate=lr_schedule(config, base, steps_per_update), eps=config.adam_eps))


def apply_gradients(tx, net: NetState, grads) -> NetState:
    """One optimiser step of ``net`` along ``grads``."""
    updates, opt_state = tx.update(grads, net.opt_state, net.params)
    return NetState(optax.apply_updates(net.params, updates), opt_state)


# ----------------------------------------------------------------------------- PPO


def normalised(adv):
    """(A - mean A) / (std A + 1e-8) over the (mini)batch."""
    return (adv - adv.mean()) / (adv.std() + 1e-8)


def clipped_surrogate_loss(logits, r, adv, *, clip_eps: float, ent_coef: float, r_k=None):
    """-mean(min(r A, clip(r, r_k (1 - eps), r_k (1 + eps)) A)) - ent_coef H(pi) -> (loss, H(pi)).

    ``r_k`` (the start-of-update ratio) None: the clip is around 1.
    """
    eps = clip_eps
    unclipped = r * adv
    low, high = (1 - eps, 1 + eps) if r_k is None else (r_k * (1 - eps), r_k * (1 + eps))
    surrogate = jnp.minimum(unclipped, jnp.clip(r, low, high) * adv)
    mean_entropy = entropy(logits).mean()
    return -surrogate.mean() - ent_coef * mean_entropy, mean_entropy


def policy_drift(x, log_x, clip_eps: float):
    """(approx KL E[(x - 1) - log x], clip fraction E[|x - 1| > eps]) of x = pi / pi_k."""
    return ((x - 1) - log_x).mean(), (jnp.abs(x - 1) > clip_eps).mean()


def leaf_name(path) -> str:
    """The field or key name of a pytree leaf's path (its last entry)."""
    last = path[-1]
    return str(getattr(last, "name", getattr(last, "key", last)))


def split_minibatches(tree, key, *, num_envs: int, num_minibatches: int, env_axis: int, start_states=()):
    """``tree``'s env axis permuted and cut into ``num_minibatches`` along a new leading axis.

    Whole sequences move together: the env axis is ``env_axis`` for every leaf but those named in
    ``start_states`` (GRU states at a sequence's start, no time axis), where it is ``env_axis - 1``.
    """
    perm = jax.random.permutation(key, num_envs)
    M = num_minibatches

    def split(path, x):
        ax = env_axis - 1 if leaf_name(path) in start_states else env_axis
        x = jnp.take(x, perm, axis=ax)
        x = x.reshape(x.shape[:ax] + (M, num_envs // M) + x.shape[ax + 1:])
        return jnp.moveaxis(x, ax, 0)

    return jax.tree_util.tree_map_with_path(split, tree)


def run_epochs(minibatch_step: Callable, nets, key, epochs: int, minibatches_of: Callable):
    """``epochs`` passes of ``minibatch_step`` (nets, mb) -> (nets, stats) over ``minibatches_of(key)``
    -> (nets, stats averaged over every step)."""

    def epoch(nets, k):
        return jax.lax.scan(minibatch_step, nets, minibatches_of(k))

    nets, stats = jax.lax.scan(epoch, nets, jax.random.split(key, epochs))
    return nets, stats.reshape(-1, stats.shape[-1]).mean(0)


# ----------------------------------------------------------------------------- metrics and tail


def episode_metrics(out) -> dict:
    """train_win_rate, train_return (nan without a finished episode), train_episodes of a rollout's
    ``StepOut`` ``[T, B]``: the means over the episodes that ended in it."""
    finished = out.done.astype(jnp.float32)
    n_ep = finished.sum()
    nan = jnp.float32(jnp.nan)
    per_episode = lambda x: jnp.where(n_ep > 0, (x * finished).sum() / jnp.maximum(n_ep, 1), nan)
    return dict(train_win_rate=per_episode(out.won), train_return=per_episode(out.episode_return),
                train_episodes=n_ep)


def strong_types(state):
    """``state`` with every leaf strongly typed.

    jaxmarl's reset returns a weakly typed leaf (the heuristic enemy's last_attacked_enemy) that a
    step makes strong: without this cast the second call of run_updates would compile the whole
    update again.
    """
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype), state)


def build_trainer(config: LearnerConfig, env: SmaxEnv, actor_net, init_fn: Callable, update_fn: Callable,
                  data: DataSpec) -> Trainer:
    """The Trainer of a family's ``init_fn`` and ``update_fn``: the update scanned, the greedy
    evaluation of ``state.actor``, and the jitted forms."""

    def scan_updates(state, n: int):
        """``n`` updates as one ``lax.scan`` -> (state, UpdateMetrics with leading axis n)."""
        return jax.lax.scan(lambda s, _: update_fn(s), state, None, n)

    def evaluate_fn(state) -> EvalMetrics:
        """Greedy (argmax, masked) policy on ``eval_envs`` fresh envs; the first episode of each counts."""
        return greedy_evaluate(actor_net, env, config.eval_envs, config.hidden_size, state.actor.params,
                               state.eval_rng, state.update)

    return Trainer(
        config=config, spec=env.spec, init_fn=init_fn, update_fn=update_fn, scan_updates=scan_updates,
        evaluate_fn=evaluate_fn, init=jax.jit(init_fn),
        run_updates=jax.jit(scan_updates, static_argnums=1), evaluate=jax.jit(evaluate_fn), data=data,
    )
