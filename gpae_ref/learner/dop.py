"""DOP in the SMAX learner: decomposed critic, replay buffer, TB(lambda) / TD(lambda) targets (spec section 9).

Wang et al., "Off-Policy Multi-Agent Decomposed Policy Gradients", ICLR 2021.
The actor, its masks, the rollout, the greedy evaluation and the clipped
surrogate are the other variants' (``gpae_ref.learner.parts``), so a comparison
differs in credit assignment only. What is DOP's:

* critic: per-agent Q_i(s, .) = ``DOPCritic`` (an MLP on the world state with
  agent id, one output per own action) mixed linearly by ``DOPMixer``:
      Q_tot(s, a) = sum_i k_i(s) Q_i(s, a^i) + b(s),   k_i(s) proportional to sum_e |W1(s)|_{ie} |w2(s)|_e >= 0, sum_i k_i = 1;
* targets: on the fresh rollout TD(lambda) of Q_tot at the actions taken; on
  ``dop_off_batch`` sequences drawn from the replay buffer (the last
  ``dop_buffer_rollouts`` rollouts) tree-backup TB(lambda) with the current
  policy's probabilities as traces and V(s) = sum_i k_i sum_a pi^i(a) Q_i(s, a) + b
  as the expected value (exact for linear mixing). Both from the target critic;
  critic loss kappa * TB loss + (1 - kappa) * TD loss, ``update_epochs`` Adam steps;
* actor: the per-agent advantage A^i = k_i(s) (Q_i(s, a^i) - sum_b pi^i(b) Q_i(s, b))
  of the critic after its steps, normalised per batch, in the same clipped
  surrogate as the other variants (on fresh data, whose ratio starts at 1, its
  first step is DOP's policy gradient sum_i k_i grad log pi^i A^i).

Each sequence's last step has no next state in the buffer, so targets and
losses use steps 0..T-2, bootstrapping with step T-1.

The math of every estimator is ``gpae_ref.dop``'s (NumPy references, tested on
the tabular oracle); this module says it in JAX, traceable under ``jit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gpae_ref.learner.config import LearnerConfig
from gpae_ref.learner.env import EnvObs, EnvSpec, SmaxEnv
from gpae_ref.learner.networks import Actor, _mlp
from gpae_ref.learner.parts import (
    LOG_RATIO_CLIP, apply_gradients, build_trainer, clipped_surrogate_loss, episode_metrics, logp_of,
    lr_schedule, make_optimiser, normalised, policy_drift, rollout_scan, run_epochs, split_minibatches,
    strong_types,
)
from gpae_ref.learner.dataspec import DataSpec
from gpae_ref.learner.types import NetState, Trainer, UpdateMetrics

MIXER_EMBED = 32  # DOP's mixing_embed_dim


# ----------------------------------------------------------------------------- estimators


def tree_backup_jax(rewards, q_taken, values, dones, pi_taken, *, gamma, lam, steps: int):
    """TB(lambda) targets ``[T, B]`` (``gpae_ref.dop.tree_backup_targets``), ``steps`` static.

    y_t = Q_t + sum_{k < min(steps, T - t)} (gamma lam)^k C_{t,k} delta_{t+k}, summed over k
    with shifted arrays (steps is small) rather than a scan.
    """
    T = rewards.shape[0]
    delta = rewards + gamma * (1.0 - dones) * values[1:] - q_taken
    # factor[j - 1] carries the trace from step j - 1 to step j: gamma lam (1 - d_{j-1}) pi_j
    factor = gamma * lam * (1.0 - dones[:-1]) * pi_taken[1:]

    def padded(x):  # x of length T - k, zeros appended up to T: row t reads step t + k, 0 past the data
        return jnp.concatenate([x, jnp.zeros((T - x.shape[0],) + x.shape[1:], x.dtype)], axis=0)

    acc, coef = delta, jnp.ones_like(delta)
    for k in range(1, min(steps, T)):
        coef = coef * padded(factor[k - 1:])  # C_{t,k} = C_{t,k-1} * factor[t + k - 1]
        acc = acc + coef * padded(delta[k:])
    return q_taken + acc


def td_lambda_jax(rewards, q_taken, dones, *, gamma, lam):
    """TD(lambda) returns ``[T, B]`` of q_taken ``[T+1, B]`` (``gpae_ref.dop.td_lambda_targets``)."""

    def step(g, xs):
        r, d, q_next = xs
        g = r + gamma * (1.0 - d) * ((1.0 - lam) * q_next + lam * g)
        return g, g

    _, out = jax.lax.scan(step, q_taken[-1], (rewards, dones, q_taken[1:]), reverse=True)
    return out


def dop_advantages_jax(q_values, actions, probs, k):
    """A^i = k_i (Q_i(a^i) - sum_b pi^i(b) Q_i(b)), ``[..., N]`` (``gpae_ref.dop.dop_advantages``)."""
    taken = jnp.take_along_axis(q_values, actions[..., None], axis=-1)[..., 0]
    return k * (taken - jnp.sum(probs * q_values, axis=-1))


def mixed_q_jax(q_values, k, b, actions=None, probs=None):
    """sum_i k_i Q_i(a^i) + b at ``actions``, or sum_i k_i sum_a pi^i Q_i + b under ``probs`` (``gpae_ref.dop.mixed_q``)."""
    if probs is not None:
        own = jnp.sum(probs * q_values, axis=-1)
    else:
        own = jnp.take_along_axis(q_values, actions[..., None], axis=-1)[..., 0]
    return jnp.sum(k * own, axis=-1) + b


# ----------------------------------------------------------------------------- networks


class DOPCritic(nn.Module):
    """Q_i(s, .): LN(world state with agent id) -> [Dense, LN, ReLU] x L -> Dense(A). Not recurrent:
    the world state is the critic's input, and replayed windows need no stored critic state."""

    num_actions: int
    hidden: int = 128
    layers: int = 2
    layer_norm: bool = True
    norm_input: bool = True

    @nn.compact
    def __call__(self, world_state):
        x = nn.LayerNorm()(world_state) if self.norm_input else world_state
        x = _mlp(x, width=self.hidden, layers=self.layers, layer_norm=self.layer_norm)
        return nn.Dense(self.num_actions)(x)


class DOPMixer(nn.Module):
    """k(s) ``[..., N]`` >= 0, sum_i k_i = 1, and b(s) ``[...]`` from the global state:
    k_i proportional to sum_e |W1(s)|_{ie} |w2(s)|_e (DOP's two-layer QMIX hypernetwork collapsed by
    linearity), b = Dense(1)(ReLU(Dense(E)(s)))."""

    num_agents: int
    embed: int = MIXER_EMBED
    norm_input: bool = True

    @nn.compact
    def __call__(self, state):
        s = nn.LayerNorm()(state) if self.norm_input else state
        w1 = jnp.abs(nn.Dense(self.num_agents * self.embed)(s)).reshape(s.shape[:-1] + (self.num_agents, self.embed))
        w2 = jnp.abs(nn.Dense(self.embed)(s))
        k = jnp.sum(w1 * w2[..., None, :], axis=-1)
        # Normalised to sum_i k_i = 1 as in DOP's code: the scale lives in the Q_i, and an
        # unnormalised k (a sum of E products) starts Q_tot about E times too large.
        k = k / (jnp.sum(k, axis=-1, keepdims=True) + 1e-8)
        b = nn.Dense(1)(nn.relu(nn.Dense(self.embed)(s)))[..., 0]
        return k, b


# ----------------------------------------------------------------------------- state


class Replay(NamedTuple):
    """The last R rollouts, ``[R, T, B, ...]``; ``cursor`` is the slot the next rollout overwrites."""

    obs: jax.Array  # [R, T, B, N, obs_dim]
    state: jax.Array  # [R, T, B, S] global state (the world state without the agent id, stored once)
    avail: jax.Array  # [R, T, B, N, A] bool
    action: jax.Array  # [R, T, B, N] int32
    reset: jax.Array  # [R, T, B, N] bool: actor GRU reset before this step
    reward: jax.Array  # [R, T, B]
    done: jax.Array  # [R, T, B] float 0/1
    logp_mu: jax.Array  # [R, T, B, N] behaviour log-prob (diagnostics only: tree backup needs none)
    h_actor: jax.Array  # [R, B, N, H] actor GRU state at each rollout's start
    cursor: jax.Array  # int32
    filled: jax.Array  # int32, rollouts stored (<= R)


class DOPState(NamedTuple):
    actor: NetState
    critic: NetState  # params {"q": DOPCritic, "mixer": DOPMixer}
    target: Any  # target critic params (same structure as critic.params)
    env_state: Any
    obs: EnvObs
    reset: jax.Array  # [B, N]
    h_actor: jax.Array  # [B, N, H]
    replay: Replay
    rng: jax.Array
    eval_rng: jax.Array
    update: jax.Array
    env_steps: jax.Array


def replay_bytes(config: LearnerConfig, spec: EnvSpec) -> int:
    """Bytes of the replay buffer for ``config`` on a map with ``spec`` (its arrays' sizes, exactly)."""
    R, T, B, N, A, H = (config.dop_buffer_rollouts, config.num_steps, config.num_envs, spec.num_agents,
                        spec.num_actions, config.hidden_size)
    per_step = (4 * N * spec.obs_dim + 4 * (spec.state_dim - N) + N * A + 4 * N + N + 4 + 4 + 4 * N)
    return R * T * B * per_step + 4 * R * B * N * H + 8


# ----------------------------------------------------------------------------- trainer


class Sizes(NamedTuple):
    """T steps, B envs, N agents, A actions, H hidden, S global-state width, R rollouts replayed,
    M minibatches, E epochs (actor) and critic steps, Boff replayed sequences, n_tb tree-backup steps."""

    T: int
    B: int
    N: int
    A: int
    H: int
    S: int
    R: int
    M: int
    E: int
    Boff: int
    n_tb: int


@dataclass(frozen=True, eq=False)
class Dop:
    """The fixed pieces of one configuration: env, networks, optimisers, sizes."""

    config: LearnerConfig
    env: SmaxEnv
    sizes: Sizes
    actor_net: Actor
    q_net: DOPCritic
    mixer_net: DOPMixer
    tx_actor: Any
    tx_critic: Any


def build(config: LearnerConfig) -> Dop:
    """The env, networks and optimisers of ``config``."""
    env = SmaxEnv(config.scenario)
    spec = env.spec
    N, A = spec.num_agents, spec.num_actions
    sizes = Sizes(config.num_steps, config.num_envs, N, A, config.hidden_size, spec.state_dim - N,
                  config.dop_buffer_rollouts, config.num_minibatches, config.update_epochs, config.dop_off_batch,
                  config.dop_tb_steps)
    actor_net = Actor(num_actions=A, hidden=sizes.H, layers=config.num_layers, layer_norm=config.layer_norm,
                      norm_input=config.norm_input, head_layers=config.head_layers)
    q_net = DOPCritic(num_actions=A, hidden=sizes.H, layers=config.num_layers, layer_norm=config.layer_norm,
                      norm_input=config.norm_input)
    mixer_net = DOPMixer(num_agents=N, norm_input=config.norm_input)
    # The actor steps E * M times an update, the critic E times.
    return Dop(config, env, sizes, actor_net, q_net, mixer_net,
               make_optimiser(config, config.lr, sizes.E * sizes.M),
               make_optimiser(config, config.dop_critic_lr, sizes.E))


def agent_inputs(state, num_agents: int):
    """Global states ``[..., S]`` -> the critic's per-agent input ``[..., N, S + N]`` (state, agent id)."""
    N, S = num_agents, state.shape[-1]
    ws = jnp.broadcast_to(state[..., None, :], state.shape[:-1] + (N, S))
    ids = jnp.broadcast_to(jnp.eye(N, dtype=state.dtype), state.shape[:-1] + (N, N))
    return jnp.concatenate([ws, ids], axis=-1)


def critic_apply(d: Dop, params, state):
    """Q_i(s, .) ``[..., N, A]``, k ``[..., N]``, b ``[...]`` from global states ``[..., S]``."""
    q = d.q_net.apply(params["q"], agent_inputs(state, d.sizes.N))
    k, b = d.mixer_net.apply(params["mixer"], state)
    return q, k, b


def policy(d: Dop, params, h0, obs, reset, avail):
    """Actor over time-major sequences ``[T, Bx, N, ...]`` from GRU states ``[Bx, N, H]`` -> logits."""
    _, logits = d.actor_net.apply(params, h0, obs, reset, avail)
    return logits


# ----------------------------------------------------------------------------- targets


def td_targets(d: Dop, target, seq_state, action, reward, done):
    """TD(lambda) of Q_tot at the taken actions, steps 0..T-2 (bootstrap: step T-1) -> ``[T-1, B]``."""
    q, k, b = critic_apply(d, target, seq_state)
    q_tot = mixed_q_jax(q, k, b, actions=action)  # [T, B]
    return td_lambda_jax(reward[:-1], q_tot, done[:-1], gamma=d.config.gamma, lam=d.config.dop_td_lambda)


def tb_targets(d: Dop, target, seq_state, action, reward, done, logits):
    """TB(lambda) with the current policy's traces, steps 0..T-2 -> (targets ``[T-1, Bx]``, pi_taken)."""
    q, k, b = critic_apply(d, target, seq_state)
    probs = jax.nn.softmax(logits)
    q_tot = mixed_q_jax(q, k, b, actions=action)
    v = mixed_q_jax(q, k, b, probs=probs)
    pi_taken = jnp.exp(jnp.sum(logp_of(logits, action), axis=-1))  # joint pi(a_t | .)
    y = tree_backup_jax(reward[:-1], q_tot[:-1], v, done[:-1], pi_taken[:-1], gamma=d.config.gamma,
                        lam=d.config.dop_tb_lambda, steps=d.sizes.n_tb)
    return y, pi_taken


# ----------------------------------------------------------------------------- replay


class Fresh(NamedTuple):
    """The update's fresh rollout, time-major ``[T, B, ...]``."""

    obs: EnvObs
    glob: jax.Array  # [T, B, S] global state
    action: jax.Array  # [T, B, N]
    reset: jax.Array  # [T, B, N]
    reward: jax.Array  # [T, B] scaled
    done: jax.Array  # [T, B] float 0/1


def store_rollout(d: Dop, state: DOPState, fresh: Fresh, logp_k) -> Replay:
    """The replay buffer with the fresh rollout in the cursor's slot (its behaviour policy: pi_k)."""
    rp = state.replay
    c = rp.cursor
    put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), c, 0)
    return Replay(obs=put(rp.obs, fresh.obs.obs), state=put(rp.state, fresh.glob),
                  avail=put(rp.avail, fresh.obs.avail > 0), action=put(rp.action, fresh.action),
                  reset=put(rp.reset, fresh.reset), reward=put(rp.reward, fresh.reward),
                  done=put(rp.done, fresh.done), logp_mu=put(rp.logp_mu, logp_k),
                  h_actor=put(rp.h_actor, state.h_actor), cursor=(c + 1) % d.sizes.R,
                  filled=jnp.minimum(rp.filled + 1, d.sizes.R))


def sample_replay(d: Dop, replay: Replay, key):
    """``Boff`` (rollout, env) sequences uniformly from the filled rollouts, time-major ``[T, Boff, ...]``."""
    Boff = d.sizes.Boff
    k_r, k_b = jax.random.split(key)
    r_idx = jax.random.randint(k_r, (Boff,), 0, jnp.maximum(replay.filled, 1))
    b_idx = jax.random.randint(k_b, (Boff,), 0, d.sizes.B)
    take = lambda x: jnp.swapaxes(x[r_idx, :, b_idx], 0, 1)  # [Boff, T, ...] -> [T, Boff, ...]
    seq = {name: take(getattr(replay, name)) for name in
           ("obs", "state", "avail", "action", "reset", "reward", "done", "logp_mu")}
    seq["h_actor"] = replay.h_actor[r_idx, b_idx]
    return seq


# ----------------------------------------------------------------------------- critic


def critic_loss(d: Dop, params, fresh: Fresh, y_on, seq, y_off):
    """kappa * TB loss (replayed) + (1 - kappa) * TD loss (fresh) of Q_tot -> (loss, (on, off))."""
    kappa = d.config.dop_kappa
    q, k, b = critic_apply(d, params, fresh.glob[:-1])
    on = jnp.mean(jnp.square(mixed_q_jax(q, k, b, actions=fresh.action[:-1]) - y_on))
    q, k, b = critic_apply(d, params, seq["state"][:-1])
    off = jnp.mean(jnp.square(mixed_q_jax(q, k, b, actions=seq["action"][:-1]) - y_off))
    return kappa * off + (1.0 - kappa) * on, (on, off)


def critic_step(d: Dop, actor_params, target, fresh: Fresh, y_on, replay: Replay, critic: NetState, key):
    """One Adam step of the critic on the fresh rollout and a replayed batch -> (critic, diagnostics [8])."""
    seq = sample_replay(d, replay, key)
    logits_off = policy(d, actor_params, seq["h_actor"], seq["obs"], seq["reset"], seq["avail"].astype(jnp.float32))
    y_off, pi_off = tb_targets(d, target, seq["state"], seq["action"], seq["reward"], seq["done"], logits_off)
    (loss, (on, off)), grads = jax.value_and_grad(partial(critic_loss, d), has_aux=True)(
        critic.params, fresh, y_on, seq, y_off)
    critic = apply_gradients(d.tx_critic, critic, grads)
    # How off-policy the replayed batch is: rho^i = pi^i / mu^i and rho^-i, and the traces pi(a_t).
    log_rho = jnp.clip(logp_of(logits_off, seq["action"]) - seq["logp_mu"], -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    log_others = log_rho.sum(-1, keepdims=True) - log_rho
    diag = jnp.stack([loss, optax.tree.norm(grads), jnp.exp(log_rho).mean(), jnp.exp(log_rho).max(),
                      jnp.exp(log_others).mean(), jnp.exp(log_others).max(), pi_off.mean(),
                      (pi_off < 1.0).mean()])
    return critic, diag


# ----------------------------------------------------------------------------- actor


def actor_loss(d: Dop, params, mb):
    """The clipped surrogate (around 1) on DOP's advantages -> (loss, (entropy, approx KL, clip fraction))."""
    logits = policy(d, params, mb["h0"], mb["obs"], mb["reset"], mb["avail"])
    logp = logp_of(logits, mb["action"])
    adv = normalised(mb["adv"])
    log_r = jnp.clip(logp - mb["logp_k"], -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    r = jnp.exp(log_r)
    loss, mean_entropy = clipped_surrogate_loss(logits, r, adv, clip_eps=d.config.clip_eps,
                                                ent_coef=d.config.ent_coef)
    kl, clip_frac = policy_drift(r, log_r, d.config.clip_eps)
    return loss, (mean_entropy, kl, clip_frac)


def actor_step(d: Dop, actor: NetState, mb):
    """One Adam step of the actor on a minibatch -> (actor, stats [5])."""
    (loss, (ent, kl, cf)), g = jax.value_and_grad(partial(actor_loss, d), has_aux=True)(actor.params, mb)
    return apply_gradients(d.tx_actor, actor, g), jnp.stack([loss, ent, kl, cf, optax.tree.norm(g)])


# ----------------------------------------------------------------------------- update


def fresh_rollout(d: Dop, state: DOPState):
    """Roll out T steps -> (carry after it, Fresh, StepOut)."""
    carry, (obs, action, reset, out) = rollout_scan(d.actor_net, d.env, state.actor.params, state, d.sizes.T)
    fresh = Fresh(obs=obs, glob=obs.world_state[:, :, 0, :d.sizes.S], action=action, reset=reset,
                  reward=out.reward * d.config.reward_scale, done=out.done.astype(jnp.float32))
    return carry, fresh, out


def refreshed_target(d: Dop, state: DOPState):
    """The target critic: the critic's parameters every ``dop_target_every`` updates, else kept."""
    return jax.tree_util.tree_map(
        lambda t, p: jnp.where(state.update % d.config.dop_target_every == 0, p, t), state.target,
        state.critic.params)


def update_metrics(d: Dop, state: DOPState, out, adiag, cdiag, q_tot_mean) -> UpdateMetrics:
    """The update's metrics; ``state`` before it, ``adiag``/``cdiag`` the actor's/critic's mean step stats."""
    return UpdateMetrics(
        update=state.update + 1, env_steps=state.env_steps + d.sizes.T * d.sizes.B, **episode_metrics(out),
        actor_loss=adiag[0], value_loss=cdiag[0], entropy=adiag[1], approx_kl=adiag[2], clip_frac=adiag[3],
        own_ratio_mean=cdiag[2], own_ratio_max=cdiag[3], others_ratio_mean=cdiag[4], others_ratio_max=cdiag[5],
        trace_mean=cdiag[6], trace_truncated=cdiag[7], value_mean=q_tot_mean,
        actor_grad_norm=adiag[4], critic_grad_norm=cdiag[1],
        lr=jnp.asarray(lr_schedule(d.config, d.config.lr, 1)(state.update), jnp.float32),
    )


def update(d: Dop, state: DOPState):
    """One update: roll out, store, E critic steps, DOP's advantages from the trained critic, E epochs
    of the actor on the fresh rollout -> (state, UpdateMetrics)."""
    T, B, E = d.sizes.T, d.sizes.B, d.sizes.E
    (env_state, last_obs, last_reset, h_end, rng), fresh, out = fresh_rollout(d, state)
    # current policy pi_k on the fresh rollout (its behaviour policy: ratios start at exactly 1)
    logits_k = policy(d, state.actor.params, state.h_actor, fresh.obs.obs, fresh.reset, fresh.obs.avail)
    logp_k = logp_of(logits_k, fresh.action)
    replay = store_rollout(d, state, fresh, logp_k)
    target = refreshed_target(d, state)
    y_on = td_targets(d, target, fresh.glob, fresh.action, fresh.reward, fresh.done)  # [T-1, B]
    rng, k_critic, k_actor = jax.random.split(rng, 3)
    step = partial(critic_step, d, state.actor.params, target, fresh, y_on, replay)
    critic, cdiag = jax.lax.scan(step, state.critic, jax.random.split(k_critic, E))
    cdiag = cdiag.mean(0)
    # DOP's advantage from the trained critic, on the fresh rollout
    q, k, b = critic_apply(d, critic.params, fresh.glob)
    adv_all = dop_advantages_jax(q, fresh.action, jax.nn.softmax(logits_k), k)  # [T, B, N]
    q_tot_mean = mixed_q_jax(q, k, b, actions=fresh.action).mean()
    data = dict(h0=state.h_actor, obs=fresh.obs.obs, reset=fresh.reset, avail=fresh.obs.avail, action=fresh.action,
                logp_k=logp_k, adv=adv_all)
    # Whole sequences move together: the env axis is 1 ([T, B, ...]), 0 for the GRU start states.
    minibatches_of = partial(split_minibatches, data, num_envs=B, num_minibatches=d.sizes.M, env_axis=1,
                             start_states=("h0",))
    actor, adiag = run_epochs(partial(actor_step, d), state.actor, k_actor, E, minibatches_of)
    metrics = update_metrics(d, state, out, adiag, cdiag, q_tot_mean)
    new_state = DOPState(
        actor=actor, critic=critic, target=target, env_state=env_state, obs=last_obs, reset=last_reset,
        h_actor=h_end, replay=replay, rng=rng, eval_rng=state.eval_rng, update=state.update + 1,
        env_steps=state.env_steps + T * B,
    )
    return new_state, metrics


# ----------------------------------------------------------------------------- init


def empty_replay(d: Dop) -> Replay:
    """R rollouts of zeros, nothing stored (``filled`` 0)."""
    R, T, B, N, A, H = d.sizes.R, d.sizes.T, d.sizes.B, d.sizes.N, d.sizes.A, d.sizes.H
    z = lambda *shape, dtype=jnp.float32: jnp.zeros((R, T, B) + shape, dtype)
    return Replay(
        obs=z(N, d.env.spec.obs_dim), state=z(d.sizes.S), avail=z(N, A, dtype=bool), action=z(N, dtype=jnp.int32),
        reset=z(N, dtype=bool), reward=z(), done=z(), logp_mu=z(N), h_actor=jnp.zeros((R, B, N, H)),
        cursor=jnp.int32(0), filled=jnp.int32(0),
    )


def init_state(d: Dop, rng) -> DOPState:
    """Fresh networks and optimisers, target = critic, an empty replay buffer."""
    B, N, H = d.sizes.B, d.sizes.N, d.sizes.H
    rng, k_actor, k_q, k_mix, k_env, k_eval = jax.random.split(rng, 6)
    zeros_h = jnp.zeros((B, N, H), jnp.float32)
    obs, env_state = d.env.reset(k_env, B)
    actor_params = d.actor_net.init(k_actor, zeros_h, obs.obs[None], jnp.zeros((1, B, N), bool), obs.avail[None])
    glob = obs.world_state[:, 0, :d.sizes.S]
    critic_params = {"q": d.q_net.init(k_q, agent_inputs(glob, N)), "mixer": d.mixer_net.init(k_mix, glob)}
    replay = empty_replay(d)
    state = DOPState(
        actor=NetState(actor_params, d.tx_actor.init(actor_params)),
        critic=NetState(critic_params, d.tx_critic.init(critic_params)), target=critic_params,
        env_state=env_state, obs=obs, reset=jnp.zeros((B, N), bool), h_actor=zeros_h, replay=replay,
        rng=rng, eval_rng=k_eval, update=jnp.int32(0), env_steps=jnp.int32(0),
    )
    return strong_types(state)


def make_dop_train(config: LearnerConfig) -> Trainer:
    """The Trainer of ``advantage="dop"`` (module docstring); ``DOPState`` as state."""
    d = build(config)
    return build_trainer(config, d.env, d.actor_net, partial(init_state, d), partial(update, d),
                         DataSpec("replay", keep=None))  # windows are sampled from every stored rollout
