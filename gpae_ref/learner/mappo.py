"""The MAPPO-style learner with GAE, GPAE or COMA advantages (spec section 8).

One update, with K = ``reuse`` rollouts kept:

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

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gpae_ref.jax_backend import gpae_jax, trace_coefficients_jax
from gpae_ref.learner.config import LearnerConfig
from gpae_ref.learner.env import EnvObs, SmaxEnv
from gpae_ref.learner.networks import Actor, QCritic, StateCritic, critic_action_input
from gpae_ref.learner.parts import (
    LOG_RATIO_CLIP, apply_gradients, build_trainer, clipped_surrogate_loss, episode_metrics, logp_of,
    lr_schedule, make_optimiser, normalised, policy_drift, rollout_scan, run_epochs, split_minibatches,
    strong_types, swap_leading,
)
from gpae_ref.learner.dataspec import DataSpec
from gpae_ref.learner.types import NetState, Trainer, UpdateMetrics


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


class Prepared(NamedTuple):
    """Everything the epochs need, fixed at the start of the update."""

    buffer: Buffer
    logp_k: jax.Array  # [K, T, B, N]
    values_k: jax.Array  # [K, T, B, N]
    critic_in: jax.Array  # [K, T, B, N, N*A] (zeros [..., 1] for gae)
    advantages: jax.Array  # [K, T, B, N]
    targets: jax.Array  # [K, T, B, N]


class Sizes(NamedTuple):
    """K rollouts kept, T steps, B envs per rollout, N agents, A actions, H hidden, M minibatches, E epochs."""

    K: int
    T: int
    B: int
    N: int
    A: int
    H: int
    M: int
    E: int


@dataclass(frozen=True, eq=False)
class Mappo:
    """The fixed pieces of one configuration: env, networks, optimisers, sizes."""

    config: LearnerConfig
    env: SmaxEnv
    sizes: Sizes
    actor_net: Actor
    critic_net: Any  # QCritic (gpae, coma) or StateCritic (gae)
    tx_actor: Any
    tx_critic: Any

    @property
    def q_critic(self) -> bool:
        return uses_q_critic(self.config)


def uses_q_critic(config: LearnerConfig) -> bool:
    """gpae and coma learn Q(s, a^-i, pi^i) of the joint action; gae a state value V(s)."""
    return config.advantage in ("gpae", "coma")


def build(config: LearnerConfig) -> Mappo:
    """The env, networks and optimisers of ``config`` (one optimiser step per minibatch and epoch)."""
    env = SmaxEnv(config.scenario)
    spec = env.spec
    sizes = Sizes(config.reuse, config.num_steps, config.envs_per_rollout, spec.num_agents, spec.num_actions,
                  config.hidden_size, config.num_minibatches, config.update_epochs)
    net_kw = dict(hidden=sizes.H, layers=config.num_layers, layer_norm=config.layer_norm,
                  norm_input=config.norm_input, head_layers=config.head_layers)
    critic_net = (QCritic if uses_q_critic(config) else StateCritic)(**net_kw)
    steps_per_update = sizes.E * sizes.M  # optimiser steps of one update
    tx_actor, tx_critic = (make_optimiser(config, config.lr, steps_per_update) for _ in range(2))
    return Mappo(config, env, sizes, Actor(num_actions=sizes.A, **net_kw), critic_net, tx_actor, tx_critic)


# ----------------------------------------------------------------------------- networks on the buffer


def critic_input(m: Mappo, actions, probs):
    """The Q critic's action input (others' one-hots, own ``probs``); a zero feature for ``gae``."""
    if not m.q_critic:
        return jnp.zeros(actions.shape + (1,), jnp.float32)
    return critic_action_input(actions, probs)


def policy_logits(m: Mappo, params, buf: Buffer):
    """Logits ``[K, T, B, N, A]`` on all kept data, each rollout from its own stored GRU state."""
    _, logits = m.actor_net.apply(params, buf.h_actor, swap_leading(buf.obs), swap_leading(buf.reset),
                                  swap_leading(buf.avail))
    return swap_leading(logits)


def critic_values(m: Mappo, params, buf: Buffer, critic_in):
    """(final GRU carries, values ``[K, T, B, N]``) on all kept data from the stored critic states."""
    carries, values = m.critic_net.apply(params, buf.h_critic, swap_leading(buf.world_state),
                                         swap_leading(buf.reset), swap_leading(critic_in))
    return carries, swap_leading(values)


# ----------------------------------------------------------------------------- collect (steps 1-3)


def push_rollout(buf: Buffer, state: LearnerState, rollout, reward_scale: float) -> Buffer:
    """``buf`` without its oldest rollout and with ``rollout`` as the newest; its behaviour
    log-probs and probabilities are placeholders (``collect`` sets them from pi_k)."""
    obs, action, reset, out = rollout
    push = lambda old, new: jnp.concatenate([old[1:], new[None]], axis=0)
    return buf._replace(
        obs=push(buf.obs, obs.obs), world_state=push(buf.world_state, obs.world_state),
        avail=push(buf.avail, obs.avail), action=push(buf.action, action),
        reset=push(buf.reset, reset), reward=push(buf.reward, out.reward * reward_scale),
        done=push(buf.done, out.done.astype(jnp.float32)),
        h_actor=push(buf.h_actor, state.h_actor), h_critic=push(buf.h_critic, state.h_critic),
        logp_mu=push(buf.logp_mu, buf.logp_mu[-1]), probs_mu=push(buf.probs_mu, buf.probs_mu[-1]),
    )


def bootstrap_value(m: Mappo, state: LearnerState, critic_carry, last, key):
    """E^i(s_T, a^-i_T) ``[1, B, N]`` with a_T ~ pi_k at the last observation ``last`` = (obs, reset, h_actor)."""
    last_obs, last_reset, h_end = last
    _, logits_T = m.actor_net.apply(state.actor.params, h_end, last_obs.obs[None], last_reset[None],
                                    last_obs.avail[None])
    a_T = jax.random.categorical(key, logits_T[0]).astype(jnp.int32)
    in_T = critic_input(m, a_T, jax.nn.softmax(logits_T[0]))
    _, v_T = m.critic_net.apply(state.critic.params, critic_carry, last_obs.world_state[None],
                                last_reset[None], in_T[None])
    return v_T


def estimate(m: Mappo, buf: Buffer, values, v_T, logp_k):
    """GPAE on the K rollouts joined in time -> (advantages, value targets), both ``[K, T, B, N]``."""
    K, T, B, N = m.sizes.K, m.sizes.T, m.sizes.B, m.sizes.N
    config = m.config
    values_all = jnp.concatenate([values.reshape((K * T, B, N)), v_T], axis=0)
    est = gpae_jax(
        buf.reward.reshape(K * T, B), values_all, buf.done.reshape(K * T, B),
        logp_k.reshape(K * T, B, N), buf.logp_mu.reshape(K * T, B, N),
        gamma=config.gamma, lam=config.effective_lam, correction=config.effective_correction,
        eta=config.eta,
    )
    return est.advantages.reshape(K, T, B, N), est.value_targets.reshape(K, T, B, N)


def collect(m: Mappo, state: LearnerState):
    """Steps 1-3: roll out, push, recompute pi_k and the values, estimate -> (state, Prepared, StepOut)."""
    (env_state, last_obs, last_reset, h_end, rng), rollout = rollout_scan(
        m.actor_net, m.env, state.actor.params, state, m.sizes.T)
    buf = push_rollout(state.buffer, state, rollout, m.config.reward_scale)
    logits = policy_logits(m, state.actor.params, buf)
    logp_k = logp_of(logits, buf.action)
    probs_k = jax.nn.softmax(logits)
    # Fresh rollout: its behaviour policy is pi_k (see module docstring).
    buf = buf._replace(logp_mu=buf.logp_mu.at[-1].set(logp_k[-1]),
                       probs_mu=buf.probs_mu.at[-1].set(probs_k[-1]))
    marg = probs_k if m.config.marginalise == "current" else buf.probs_mu
    critic_in = critic_input(m, buf.action, marg)
    carries, values = critic_values(m, state.critic.params, buf, critic_in)
    rng, k_boot = jax.random.split(rng)
    v_T = bootstrap_value(m, state, carries[-1], (last_obs, last_reset, h_end), k_boot)
    advantages, targets = estimate(m, buf, values, v_T, logp_k)
    prepared = Prepared(buf, logp_k, values, critic_in, advantages, targets)
    new_state = state._replace(
        env_state=env_state, obs=last_obs, reset=last_reset, h_actor=h_end, h_critic=carries[-1],
        buffer=buf, rng=rng, env_steps=state.env_steps + m.sizes.T * m.sizes.B,
    )
    _, _, _, out = rollout
    return new_state, prepared, out


# ----------------------------------------------------------------------------- losses (step 4)


def actor_loss(m: Mappo, params, mb: Prepared, adv):
    """The clipped surrogate around r_k = pi_k / mu -> (loss, (entropy, approx KL, clip fraction))."""
    b = mb.buffer
    logits = policy_logits(m, params, b)
    logp = logp_of(logits, b.action)
    log_r = jnp.clip(logp - b.logp_mu, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    log_rk = jnp.clip(mb.logp_k - b.logp_mu, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    loss, mean_entropy = clipped_surrogate_loss(logits, jnp.exp(log_r), adv, clip_eps=m.config.clip_eps,
                                                ent_coef=m.config.ent_coef, r_k=jnp.exp(log_rk))
    log_x = logp - mb.logp_k  # current vs start-of-update policy
    kl, clip_frac = policy_drift(jnp.exp(log_x), log_x, m.config.clip_eps)
    return loss, (mean_entropy, kl, clip_frac)


def critic_loss(m: Mappo, params, mb: Prepared):
    """vf_coef * 0.5 mean(max((V - y)^2, (V_clip - y)^2)), V_clip = V_k + clip(V - V_k, +-eps) when
    ``value_clip`` -> (loss, the unweighted value loss)."""
    config = m.config
    _, v = critic_values(m, params, mb.buffer, mb.critic_in)
    loss_plain = jnp.square(v - mb.targets)
    if config.value_clip:
        v_clip = mb.values_k + jnp.clip(v - mb.values_k, -config.clip_eps, config.clip_eps)
        loss_plain = jnp.maximum(loss_plain, jnp.square(v_clip - mb.targets))
    value_loss = 0.5 * loss_plain.mean()
    return config.vf_coef * value_loss, value_loss


def minibatch_step(m: Mappo, nets, mb: Prepared):
    """One Adam step of actor and critic on a minibatch -> (nets, stats [7])."""
    actor, critic = nets
    adv = normalised(mb.advantages)
    (a_loss, (ent, kl, cf)), g_a = jax.value_and_grad(partial(actor_loss, m), has_aux=True)(actor.params, mb, adv)
    (_, v_loss), g_c = jax.value_and_grad(partial(critic_loss, m), has_aux=True)(critic.params, mb)
    actor = apply_gradients(m.tx_actor, actor, g_a)
    critic = apply_gradients(m.tx_critic, critic, g_c)
    stats = jnp.stack([a_loss, v_loss, ent, kl, cf, optax.tree.norm(g_a), optax.tree.norm(g_c)])
    return (actor, critic), stats


# ----------------------------------------------------------------------------- update


def update_metrics(m: Mappo, state: LearnerState, prep: Prepared, out, stats) -> UpdateMetrics:
    """The update's metrics; ``state`` after collecting, ``stats`` the epochs' mean of ``minibatch_step``'s."""
    K, T, B, N, M, E = m.sizes.K, m.sizes.T, m.sizes.B, m.sizes.N, m.sizes.M, m.sizes.E
    config = m.config
    lr_now = lr_schedule(config, config.lr, E * M)(state.update * (E * M))  # the rate of this update's first step
    # How off-policy the kept data is (at the start of the update).
    log_rho = prep.logp_k - prep.buffer.logp_mu
    log_others = log_rho.sum(-1, keepdims=True) - log_rho
    coef = trace_coefficients_jax(log_rho.reshape(K * T, B, N),
                                  correction=config.effective_correction, eta=config.eta)
    rho, rho_o = jnp.exp(log_rho), jnp.exp(log_others)
    return UpdateMetrics(
        update=state.update + 1, env_steps=state.env_steps, **episode_metrics(out),
        actor_loss=stats[0], value_loss=stats[1], entropy=stats[2], approx_kl=stats[3], clip_frac=stats[4],
        own_ratio_mean=rho.mean(), own_ratio_max=rho.max(),
        others_ratio_mean=rho_o.mean(), others_ratio_max=rho_o.max(),
        trace_mean=coef.mean(), trace_truncated=(coef < 1.0).mean(),
        value_mean=prep.values_k.mean(), actor_grad_norm=stats[5], critic_grad_norm=stats[6],
        lr=jnp.asarray(lr_now, jnp.float32),
    )


def update(m: Mappo, state: LearnerState):
    """One update (module docstring) -> (state, UpdateMetrics)."""
    state, prep, out = collect(m, state)
    rng, k_epochs = jax.random.split(state.rng)
    # Whole sequences move together: the env axis is 2 ([K, T, B, ...]), 1 for the GRU start states.
    minibatches_of = partial(split_minibatches, prep, num_envs=m.sizes.B, num_minibatches=m.sizes.M,
                             env_axis=2, start_states=("h_actor", "h_critic"))
    (actor, critic), stats = run_epochs(partial(minibatch_step, m), (state.actor, state.critic), k_epochs,
                                        m.sizes.E, minibatches_of)
    metrics = update_metrics(m, state, prep, out, stats)
    state = state._replace(actor=actor, critic=critic, rng=rng, update=state.update + 1)
    return state, metrics


# ----------------------------------------------------------------------------- init


def empty_buffer(m: Mappo) -> Buffer:
    """K rollouts of zeros (all actions available, uniform behaviour probabilities)."""
    K, T, B, N, A, H = m.sizes.K, m.sizes.T, m.sizes.B, m.sizes.N, m.sizes.A, m.sizes.H
    spec = m.env.spec
    z = lambda *shape, dtype=jnp.float32: jnp.zeros((K, T, B, N) + shape, dtype)
    return Buffer(
        obs=z(spec.obs_dim), world_state=z(spec.state_dim), avail=jnp.ones((K, T, B, N, A), jnp.float32),
        action=z(dtype=jnp.int32), reset=z(dtype=bool), reward=jnp.zeros((K, T, B)),
        done=jnp.zeros((K, T, B)), logp_mu=z(), probs_mu=jnp.full((K, T, B, N, A), 1.0 / A),
        h_actor=jnp.zeros((K, B, N, H)), h_critic=jnp.zeros((K, B, N, H)),
    )


def init_state(m: Mappo, rng) -> LearnerState:
    """Fresh networks, optimisers, envs and a buffer filled by K-1 rollouts of the initial policy."""
    K, B, N, H = m.sizes.K, m.sizes.B, m.sizes.N, m.sizes.H
    rng, k_actor, k_critic, k_env, k_eval = jax.random.split(rng, 5)
    zeros_h = jnp.zeros((B, N, H), jnp.float32)
    obs, env_state = m.env.reset(k_env, B)
    no_reset = jnp.zeros((1, B, N), bool)
    actor_params = m.actor_net.init(k_actor, zeros_h, obs.obs[None], no_reset, obs.avail[None])
    act_in_dim = N * m.sizes.A if m.q_critic else 1
    critic_params = m.critic_net.init(k_critic, zeros_h, obs.world_state[None], no_reset,
                                      jnp.zeros((1, B, N, act_in_dim), jnp.float32))
    buffer = empty_buffer(m)
    state = LearnerState(
        actor=NetState(actor_params, m.tx_actor.init(actor_params)),
        critic=NetState(critic_params, m.tx_critic.init(critic_params)),
        env_state=env_state, obs=obs, reset=jnp.zeros((B, N), bool), h_actor=zeros_h, h_critic=zeros_h,
        buffer=buffer, rng=rng, eval_rng=k_eval, update=jnp.int32(0), env_steps=jnp.int32(0),
    )
    if K > 1:
        state, _ = jax.lax.scan(lambda s, _: (collect(m, s)[0], None), state, None, K - 1)
    return strong_types(state)


def make_mappo_train(config: LearnerConfig) -> Trainer:
    """The Trainer of ``advantage`` gae, gpae or coma (module docstring); ``LearnerState`` as state."""
    m = build(config)
    return build_trainer(config, m.env, m.actor_net, partial(init_state, m), partial(update, m),
                         # The next update drops the oldest rollout before reading the buffer (push_rollout).
                         DataSpec("buffer", keep=m.sizes.K - 1))
