"""The learner as pure functions built from scans (purejaxrl style).

``make_train(config)`` returns a ``Trainer`` whose functions take and return a
``LearnerState`` (a pytree of arrays only), so a whole run vmaps over seeds and
runs in resumable chunks::

    trainer = make_train(config)
    state = trainer.init(jax.random.PRNGKey(0))            # jitted
    state, metrics = trainer.run_updates(state, 10)        # jitted lax.scan over 10 updates
    ev = trainer.evaluate(state)                           # greedy win rate, separate envs

One update (spec section 8), with K = ``reuse`` rollouts kept:

1. roll out T steps in B = num_envs / K envs with the current policy; push the
   rollout into the buffer of the last K rollouts (dropping the oldest);
2. on all kept data recompute, from each rollout's stored GRU states, the
   current log-probs log pi_k and the per-agent values E^i (Q critic with agent
   i's one-hot replaced by pi_k^i, or by the stored mu^i when
   ``marginalise="behaviour"``; state values for ``gae``);
3. GPAE (``gpae_ref.jax_backend.gpae_jax``) on the K rollouts joined in time
   (they are consecutive segments of the same envs), bootstrapped with the
   critic at the last observation;
4. ``update_epochs`` passes of PPO with each agent's ratio r = pi/mu clipped
   around the start-of-update ratio r_k = pi_k/mu:
       L = -mean(min(r A, clip(r, r_k (1 - eps), r_k (1 + eps)) A)),
   A normalised per (mini)batch, plus the value-clipped critic loss on the
   value targets.

The newest rollout's behaviour log-probs are *defined* as pi_k's recomputed
ones (its behaviour policy is pi_k: same parameters, same GRU start state), so
on fresh data every ratio and every trace is exactly 1 rather than 1 up to
float noise of two XLA programs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gpae_ref.jax_backend import gpae_jax, trace_coefficients_jax
from gpae_ref.learner.config import LearnerConfig, check_scenario
from gpae_ref.learner.env import EnvObs, EnvSpec, SmaxEnv
from gpae_ref.learner.networks import Actor, QCritic, StateCritic, critic_action_input
from gpae_ref.learner.runfolder import DataSpec

LOG_RATIO_CLIP = 20.0  # exp(20) ~ 5e8: keeps float32 finite on stale data; inactive on fresh data


class NetState(NamedTuple):
    params: Any
    opt_state: Any


class Buffer(NamedTuple):
    """The last K rollouts, segment-major ``[K, T, B, ...]``; index K-1 is the newest."""

    obs: jax.Array  # [K, T, B, N, obs_dim]
    world_state: jax.Array  # [K, T, B, N, state_dim]
    avail: jax.Array  # [K, T, B, N, A]
    action: jax.Array  # [K, T, B, N] int32
    reset: jax.Array  # [K, T, B, N] bool: GRU reset before this step
    reward: jax.Array  # [K, T, B]
    done: jax.Array  # [K, T, B] episode ended after this step
    logp_mu: jax.Array  # [K, T, B, N] behaviour log-prob of the action taken
    probs_mu: jax.Array  # [K, T, B, N, A] behaviour probabilities
    h_actor: jax.Array  # [K, B, N, H] actor GRU state at each rollout's start
    h_critic: jax.Array  # [K, B, N, H] critic GRU state at each rollout's start


class LearnerState(NamedTuple):
    actor: NetState
    critic: NetState
    env_state: Any
    obs: EnvObs  # [B, ...] observation to act on next
    reset: jax.Array  # [B, N] GRU reset flag for the next step
    h_actor: jax.Array  # [B, N, H]
    h_critic: jax.Array  # [B, N, H] critic carry at the end of the newest rollout
    buffer: Buffer
    rng: jax.Array  # training randomness
    eval_rng: jax.Array  # evaluation randomness (folded with ``update``)
    update: jax.Array  # int32, updates done
    env_steps: jax.Array  # int32, env steps collected (incl. the K-1 prefill rollouts)


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
    init_fn: Callable  # rng -> LearnerState
    update_fn: Callable  # state -> (state, UpdateMetrics)
    scan_updates: Callable  # (state, n: int) -> (state, UpdateMetrics [n])
    evaluate_fn: Callable  # state -> EvalMetrics
    init: Callable
    run_updates: Callable  # jitted scan_updates, n static
    evaluate: Callable
    data: DataSpec  # the state's data buffer and how much of it the next update reads again


class _Prepared(NamedTuple):
    """Everything the epochs need, fixed at the start of the update."""

    buffer: Buffer
    logp_k: jax.Array  # [K, T, B, N]
    values_k: jax.Array  # [K, T, B, N]
    critic_in: jax.Array  # [K, T, B, N, N*A] (zeros [..., 1] for gae)
    advantages: jax.Array  # [K, T, B, N]
    targets: jax.Array  # [K, T, B, N]


def _swap(x):
    return jnp.swapaxes(x, 0, 1)


def _logp_of(logits, actions):
    return jnp.take_along_axis(jax.nn.log_softmax(logits), actions[..., None], axis=-1)[..., 0]


def _entropy(logits):
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


def make_train(config: LearnerConfig) -> Trainer:
    """Build the pure training functions for ``config`` (see module docstring)."""
    check_scenario(config)
    if config.advantage == "dop":  # its own state (replay buffer, mixer, target critic): see learner/dop.py
        from gpae_ref.learner.dop import make_dop_train

        return make_dop_train(config)
    env = SmaxEnv(config.scenario)
    spec = env.spec
    K, T, B, N, A, H = (config.reuse, config.num_steps, config.envs_per_rollout,
                        spec.num_agents, spec.num_actions, config.hidden_size)
    M, E = config.num_minibatches, config.update_epochs
    q_critic = config.advantage in ("gpae", "coma")
    net_kw = dict(hidden=H, layers=config.num_layers, layer_norm=config.layer_norm,
                  norm_input=config.norm_input, head_layers=config.head_layers)
    actor_net = Actor(num_actions=A, **net_kw)
    critic_net = (QCritic if q_critic else StateCritic)(**net_kw)
    act_in_dim = N * A if q_critic else 1
    num_updates = config.num_updates

    def schedule(count):
        # count = optimiser steps; one update = E * M steps. Clamped at 0 past the budget.
        frac = 1.0 - (count // (E * M)) / num_updates
        return config.lr * jnp.maximum(frac, 0.0) if config.anneal_lr else config.lr

    def make_tx():
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                           optax.adam(learning_rate=schedule, eps=config.adam_eps))

    tx_actor, tx_critic = make_tx(), make_tx()

    def critic_input(actions, probs):
        if not q_critic:
            return jnp.zeros(actions.shape + (1,), jnp.float32)
        return critic_action_input(actions, probs)

    # ---------------------------------------------------------------- rollout
    def rollout(state: LearnerState):
        return rollout_scan(actor_net, env, state.actor.params, state, T)

    # ------------------------------------------------ collect + recompute (steps 1-3)
    def collect(state: LearnerState):
        (env_state, last_obs, last_reset, h_end, rng), (obs, action, reset, out) = rollout(state)
        push = lambda old, new: jnp.concatenate([old[1:], new[None]], axis=0)
        buf = state.buffer
        buf = buf._replace(
            obs=push(buf.obs, obs.obs), world_state=push(buf.world_state, obs.world_state),
            avail=push(buf.avail, obs.avail), action=push(buf.action, action),
            reset=push(buf.reset, reset), reward=push(buf.reward, out.reward * config.reward_scale),
            done=push(buf.done, out.done.astype(jnp.float32)),
            h_actor=push(buf.h_actor, state.h_actor), h_critic=push(buf.h_critic, state.h_critic),
            # placeholders for the newest rollout, set below from the recomputed pi_k
            logp_mu=push(buf.logp_mu, buf.logp_mu[-1]), probs_mu=push(buf.probs_mu, buf.probs_mu[-1]),
        )
        # Current policy on all kept data, each rollout from its own stored GRU state.
        _, logits = actor_net.apply(state.actor.params, buf.h_actor, _swap(buf.obs), _swap(buf.reset),
                                    _swap(buf.avail))
        logits = _swap(logits)  # [K, T, B, N, A]
        logp_k = _logp_of(logits, buf.action)
        probs_k = jax.nn.softmax(logits)
        # Fresh rollout: its behaviour policy is pi_k (see module docstring).
        buf = buf._replace(logp_mu=buf.logp_mu.at[-1].set(logp_k[-1]),
                           probs_mu=buf.probs_mu.at[-1].set(probs_k[-1]))
        marg = probs_k if config.marginalise == "current" else buf.probs_mu
        critic_in = critic_input(buf.action, marg)
        carries, values = critic_net.apply(state.critic.params, buf.h_critic, _swap(buf.world_state),
                                           _swap(buf.reset), _swap(critic_in))
        values = _swap(values)
        # Bootstrap E^i(s_T, a^-i_T) with a_T ~ pi_k at the last observation.
        rng, k_boot = jax.random.split(rng)
        _, logits_T = actor_net.apply(state.actor.params, h_end, last_obs.obs[None], last_reset[None],
                                      last_obs.avail[None])
        a_T = jax.random.categorical(k_boot, logits_T[0]).astype(jnp.int32)
        in_T = critic_input(a_T, jax.nn.softmax(logits_T[0]))
        _, v_T = critic_net.apply(state.critic.params, carries[-1], last_obs.world_state[None],
                                  last_reset[None], in_T[None])
        values_all = jnp.concatenate([values.reshape((K * T, B, N)), v_T], axis=0)
        est = gpae_jax(
            buf.reward.reshape(K * T, B), values_all, buf.done.reshape(K * T, B),
            logp_k.reshape(K * T, B, N), buf.logp_mu.reshape(K * T, B, N),
            gamma=config.gamma, lam=config.effective_lam, correction=config.effective_correction,
            eta=config.eta,
        )
        prepared = _Prepared(buf, logp_k, values, critic_in, est.advantages.reshape(K, T, B, N),
                             est.value_targets.reshape(K, T, B, N))
        new_state = state._replace(
            env_state=env_state, obs=last_obs, reset=last_reset, h_actor=h_end, h_critic=carries[-1],
            buffer=buf, rng=rng, env_steps=state.env_steps + T * B,
        )
        return new_state, prepared, out

    # ------------------------------------------------------------ losses (step 4)
    def actor_loss(params, mb: _Prepared, adv):
        b = mb.buffer
        _, logits = actor_net.apply(params, b.h_actor, _swap(b.obs), _swap(b.reset), _swap(b.avail))
        logits = _swap(logits)
        logp = _logp_of(logits, b.action)
        log_r = jnp.clip(logp - b.logp_mu, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
        log_rk = jnp.clip(mb.logp_k - b.logp_mu, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
        r, r_k = jnp.exp(log_r), jnp.exp(log_rk)
        eps = config.clip_eps
        surrogate = jnp.minimum(r * adv, jnp.clip(r, r_k * (1 - eps), r_k * (1 + eps)) * adv)
        entropy = _entropy(logits).mean()
        loss = -surrogate.mean() - config.ent_coef * entropy
        log_x = logp - mb.logp_k  # current vs start-of-update policy
        x = jnp.exp(log_x)
        aux = (entropy, ((x - 1) - log_x).mean(), (jnp.abs(x - 1) > eps).mean())
        return loss, aux

    def critic_loss(params, mb: _Prepared):
        b = mb.buffer
        _, v = critic_net.apply(params, b.h_critic, _swap(b.world_state), _swap(b.reset),
                                _swap(mb.critic_in))
        v = _swap(v)
        loss_plain = jnp.square(v - mb.targets)
        if config.value_clip:
            v_clip = mb.values_k + jnp.clip(v - mb.values_k, -config.clip_eps, config.clip_eps)
            loss_plain = jnp.maximum(loss_plain, jnp.square(v_clip - mb.targets))
        value_loss = 0.5 * loss_plain.mean()
        return config.vf_coef * value_loss, value_loss

    def minibatch_step(nets, mb: _Prepared):
        actor, critic = nets
        adv = (mb.advantages - mb.advantages.mean()) / (mb.advantages.std() + 1e-8)
        (a_loss, (ent, kl, cf)), g_a = jax.value_and_grad(actor_loss, has_aux=True)(actor.params, mb, adv)
        (_, v_loss), g_c = jax.value_and_grad(critic_loss, has_aux=True)(critic.params, mb)
        upd_a, opt_a = tx_actor.update(g_a, actor.opt_state, actor.params)
        upd_c, opt_c = tx_critic.update(g_c, critic.opt_state, critic.params)
        actor = NetState(optax.apply_updates(actor.params, upd_a), opt_a)
        critic = NetState(optax.apply_updates(critic.params, upd_c), opt_c)
        stats = jnp.stack([a_loss, v_loss, ent, kl, cf, optax.tree.norm(g_a), optax.tree.norm(g_c)])
        return (actor, critic), stats

    def split_minibatches(prepared: _Prepared, key):
        # Whole sequences move together: permute and split the env axis (axis 2; h_* axis 1).
        perm = jax.random.permutation(key, B)

        def env_axis(path, x):
            name = jax.tree_util.keystr(path)
            return 1 if ("h_actor" in name or "h_critic" in name) else 2

        def split(path, x):
            ax = env_axis(path, x)
            x = jnp.take(x, perm, axis=ax)
            x = x.reshape(x.shape[:ax] + (M, B // M) + x.shape[ax + 1:])
            return jnp.moveaxis(x, ax, 0)

        return jax.tree_util.tree_map_with_path(split, prepared)

    # ------------------------------------------------------------------ update
    def update_fn(state: LearnerState):
        state, prep, out = collect(state)

        def epoch(carry, key):
            nets = carry
            nets, stats = jax.lax.scan(minibatch_step, nets, split_minibatches(prep, key))
            return nets, stats

        rng, k_epochs = jax.random.split(state.rng)
        (actor, critic), stats = jax.lax.scan(epoch, (state.actor, state.critic),
                                              jax.random.split(k_epochs, E))
        stats = stats.reshape(-1, stats.shape[-1]).mean(0)
        lr_now = schedule(state.update * (E * M))  # the rate of this update's first step

        # How off-policy the kept data is (at the start of the update).
        log_rho = prep.logp_k - prep.buffer.logp_mu
        log_others = log_rho.sum(-1, keepdims=True) - log_rho
        coef = trace_coefficients_jax(log_rho.reshape(K * T, B, N),
                                      correction=config.effective_correction, eta=config.eta)
        rho, rho_o = jnp.exp(log_rho), jnp.exp(log_others)
        finished = out.done.astype(jnp.float32)  # [T, B] newest rollout
        n_ep = finished.sum()
        nan = jnp.float32(jnp.nan)
        metrics = UpdateMetrics(
            update=state.update + 1, env_steps=state.env_steps,
            train_win_rate=jnp.where(n_ep > 0, (out.won * finished).sum() / jnp.maximum(n_ep, 1), nan),
            train_return=jnp.where(n_ep > 0, (out.episode_return * finished).sum() / jnp.maximum(n_ep, 1), nan),
            train_episodes=n_ep,
            actor_loss=stats[0], value_loss=stats[1], entropy=stats[2], approx_kl=stats[3], clip_frac=stats[4],
            own_ratio_mean=rho.mean(), own_ratio_max=rho.max(),
            others_ratio_mean=rho_o.mean(), others_ratio_max=rho_o.max(),
            trace_mean=coef.mean(), trace_truncated=(coef < 1.0).mean(),
            value_mean=prep.values_k.mean(), actor_grad_norm=stats[5], critic_grad_norm=stats[6],
            lr=jnp.asarray(lr_now, jnp.float32),
        )
        state = state._replace(actor=actor, critic=critic, rng=rng, update=state.update + 1)
        return state, metrics

    def scan_updates(state: LearnerState, n: int):
        """``n`` updates as one ``lax.scan`` -> (state, UpdateMetrics with leading axis n)."""
        return jax.lax.scan(lambda s, _: update_fn(s), state, None, n)

    # -------------------------------------------------------------------- init
    def init_fn(rng) -> LearnerState:
        """Fresh networks, optimisers, envs and a buffer filled by K-1 rollouts of the initial policy."""
        rng, k_actor, k_critic, k_env, k_eval = jax.random.split(rng, 5)
        zeros_h = jnp.zeros((B, N, H), jnp.float32)
        obs, env_state = env.reset(k_env, B)
        no_reset = jnp.zeros((1, B, N), bool)
        actor_params = actor_net.init(k_actor, zeros_h, obs.obs[None], no_reset, obs.avail[None])
        critic_params = critic_net.init(k_critic, zeros_h, obs.world_state[None], no_reset,
                                        jnp.zeros((1, B, N, act_in_dim), jnp.float32))
        z = lambda *shape, dtype=jnp.float32: jnp.zeros((K, T, B, N) + shape, dtype)
        buffer = Buffer(
            obs=z(spec.obs_dim), world_state=z(spec.state_dim), avail=jnp.ones((K, T, B, N, A), jnp.float32),
            action=z(dtype=jnp.int32), reset=z(dtype=bool), reward=jnp.zeros((K, T, B)),
            done=jnp.zeros((K, T, B)), logp_mu=z(), probs_mu=jnp.full((K, T, B, N, A), 1.0 / A),
            h_actor=jnp.zeros((K, B, N, H)), h_critic=jnp.zeros((K, B, N, H)),
        )
        state = LearnerState(
            actor=NetState(actor_params, tx_actor.init(actor_params)),
            critic=NetState(critic_params, tx_critic.init(critic_params)),
            env_state=env_state, obs=obs, reset=jnp.zeros((B, N), bool), h_actor=zeros_h, h_critic=zeros_h,
            buffer=buffer, rng=rng, eval_rng=k_eval, update=jnp.int32(0), env_steps=jnp.int32(0),
        )
        if K > 1:
            state, _ = jax.lax.scan(lambda s, _: (collect(s)[0], None), state, None, K - 1)
        # jaxmarl's reset returns a weakly typed leaf (the heuristic enemy's
        # last_attacked_enemy) that a step makes strong: without this cast the
        # second call of run_updates would compile the whole update again.
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype), state)

    # ---------------------------------------------------------------- evaluate
    def evaluate_fn(state: LearnerState) -> EvalMetrics:
        """Greedy (argmax, masked) policy on ``eval_envs`` fresh envs; the first episode of each counts."""
        return greedy_evaluate(actor_net, env, config.eval_envs, H, state.actor.params, state.eval_rng, state.update)

    return Trainer(
        config=config, spec=spec, init_fn=init_fn, update_fn=update_fn, scan_updates=scan_updates,
        evaluate_fn=evaluate_fn, init=jax.jit(init_fn),
        run_updates=jax.jit(scan_updates, static_argnums=1), evaluate=jax.jit(evaluate_fn),
        # The next update drops the oldest rollout before reading the buffer (collect's push).
        data=DataSpec("buffer", keep=K - 1),
    )
