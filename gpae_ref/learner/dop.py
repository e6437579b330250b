"""DOP in the SMAX learner: decomposed critic, replay buffer, TB(lambda) / TD(lambda) targets (spec section 9).

Wang et al., "Off-Policy Multi-Agent Decomposed Policy Gradients", ICLR 2021.
The actor, its masks, the rollout and the greedy evaluation are the other
variants' (``gpae_ref.learner.core``), so a comparison differs in credit
assignment only. What is DOP's:

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

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gpae_ref.learner.config import LearnerConfig
from gpae_ref.learner.core import (
    LOG_RATIO_CLIP, EvalMetrics, NetState, Trainer, UpdateMetrics, _entropy, _logp_of, _swap, greedy_evaluate,
    rollout_scan,
)
from gpae_ref.learner.env import EnvObs, EnvSpec, SmaxEnv
from gpae_ref.learner.networks import Actor, _mlp
from gpae_ref.learner.runfolder import DataSpec

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


def make_dop_train(config: LearnerConfig) -> Trainer:
    """``core.make_train`` for ``advantage="dop"``: same Trainer interface, ``DOPState`` as state."""
    env = SmaxEnv(config.scenario)
    spec = env.spec
    T, B, N, A, H = config.num_steps, config.num_envs, spec.num_agents, spec.num_actions, config.hidden_size
    R, M, E = config.dop_buffer_rollouts, config.num_minibatches, config.update_epochs
    Boff, n_tb = config.dop_off_batch, config.dop_tb_steps
    S = spec.state_dim - N
    actor_net = Actor(num_actions=A, hidden=H, layers=config.num_layers, layer_norm=config.layer_norm,
                      norm_input=config.norm_input, head_layers=config.head_layers)
    q_net = DOPCritic(num_actions=A, hidden=H, layers=config.num_layers, layer_norm=config.layer_norm,
                      norm_input=config.norm_input)
    mixer_net = DOPMixer(num_agents=N, norm_input=config.norm_input)
    num_updates = config.num_updates
    gamma, kappa = config.gamma, config.dop_kappa

    def schedule(base, per_update):
        def fn(count):
            frac = 1.0 - (count // per_update) / num_updates
            return base * jnp.maximum(frac, 0.0) if config.anneal_lr else base
        return fn

    def make_tx(lr, per_update):
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                           optax.adam(learning_rate=schedule(lr, per_update), eps=config.adam_eps))

    tx_actor, tx_critic = make_tx(config.lr, E * M), make_tx(config.dop_critic_lr, E)

    def world_state(state):  # [..., S] -> [..., N, S + N]: the critic's per-agent input
        ws = jnp.broadcast_to(state[..., None, :], state.shape[:-1] + (N, S))
        ids = jnp.broadcast_to(jnp.eye(N, dtype=state.dtype), state.shape[:-1] + (N, N))
        return jnp.concatenate([ws, ids], axis=-1)

    def critic_apply(params, state):
        """Q_i(s, .) ``[..., N, A]``, k ``[..., N]``, b ``[...]`` from global states ``[..., S]``."""
        q = q_net.apply(params["q"], world_state(state))
        k, b = mixer_net.apply(params["mixer"], state)
        return q, k, b

    def policy(params, h0, obs, reset, avail):
        """Actor over time-major sequences ``[T, Bx, N, ...]`` from GRU states ``[Bx, N, H]`` -> logits."""
        _, logits = actor_net.apply(params, h0, obs, reset, avail)
        return logits

    # ----------------------------------------------------------- targets
    def td_targets(target, seq_state, action, reward, done):
        """TD(lambda) of Q_tot at the taken actions, steps 0..T-2 (bootstrap: step T-1) -> ``[T-1, B]``."""
        q, k, b = critic_apply(target, seq_state)
        q_tot = mixed_q_jax(q, k, b, actions=action)  # [T, B]
        return td_lambda_jax(reward[:-1], q_tot, done[:-1], gamma=gamma, lam=config.dop_td_lambda)

    def tb_targets(target, seq_state, action, reward, done, logits):
        """TB(lambda) with the current policy's traces, steps 0..T-2 -> (targets ``[T-1, Bx]``, pi_taken)."""
        q, k, b = critic_apply(target, seq_state)
        probs = jax.nn.softmax(logits)
        q_tot = mixed_q_jax(q, k, b, actions=action)
        v = mixed_q_jax(q, k, b, probs=probs)
        pi_taken = jnp.exp(jnp.sum(_logp_of(logits, action), axis=-1))  # joint pi(a_t | .)
        y = tree_backup_jax(reward[:-1], q_tot[:-1], v, done[:-1], pi_taken[:-1], gamma=gamma,
                            lam=config.dop_tb_lambda, steps=n_tb)
        return y, pi_taken

    def sample_replay(replay: Replay, key):
        """``Boff`` (rollout, env) sequences uniformly from the filled rollouts, time-major ``[T, Boff, ...]``."""
        k_r, k_b = jax.random.split(key)
        r_idx = jax.random.randint(k_r, (Boff,), 0, jnp.maximum(replay.filled, 1))
        b_idx = jax.random.randint(k_b, (Boff,), 0, B)
        take = lambda x: jnp.swapaxes(x[r_idx, :, b_idx], 0, 1)  # [Boff, T, ...] -> [T, Boff, ...]
        seq = {name: take(getattr(replay, name)) for name in
               ("obs", "state", "avail", "action", "reset", "reward", "done", "logp_mu")}
        seq["h_actor"] = replay.h_actor[r_idx, b_idx]
        return seq

    # ------------------------------------------------------------ update
    def update_fn(state: DOPState):
        (env_state, last_obs, last_reset, h_end, rng), (obs, action, reset, out) = rollout_scan(
            actor_net, env, state.actor.params, state, T)
        reward = out.reward * config.reward_scale
        done = out.done.astype(jnp.float32)
        glob = obs.world_state[:, :, 0, :S]  # [T, B, S]
        rp = state.replay
        c = rp.cursor
        # current policy pi_k on the fresh rollout (its behaviour policy: ratios start at exactly 1)
        logits_k = policy(state.actor.params, state.h_actor, obs.obs, reset, obs.avail)
        logp_k = _logp_of(logits_k, action)
        put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), c, 0)
        rp = Replay(obs=put(rp.obs, obs.obs), state=put(rp.state, glob), avail=put(rp.avail, obs.avail > 0),
                    action=put(rp.action, action), reset=put(rp.reset, reset), reward=put(rp.reward, reward),
                    done=put(rp.done, done), logp_mu=put(rp.logp_mu, logp_k),
                    h_actor=put(rp.h_actor, state.h_actor), cursor=(c + 1) % R,
                    filled=jnp.minimum(rp.filled + 1, R))

        target = jax.tree_util.tree_map(
            lambda t, p: jnp.where(state.update % config.dop_target_every == 0, p, t), state.target,
            state.critic.params)
        y_on = td_targets(target, glob, action, reward, done)  # [T-1, B]
        rng, k_critic, k_actor = jax.random.split(rng, 3)

        def critic_step(critic: NetState, key):
            seq = sample_replay(rp, key)
            logits_off = policy(state.actor.params, seq["h_actor"], seq["obs"], seq["reset"],
                                seq["avail"].astype(jnp.float32))
            y_off, pi_off = tb_targets(target, seq["state"], seq["action"], seq["reward"], seq["done"],
                                       logits_off)

            def loss_fn(params):
                q, k, b = critic_apply(params, glob[:-1])
                on = jnp.mean(jnp.square(mixed_q_jax(q, k, b, actions=action[:-1]) - y_on))
                q, k, b = critic_apply(params, seq["state"][:-1])
                off = jnp.mean(jnp.square(mixed_q_jax(q, k, b, actions=seq["action"][:-1]) - y_off))
                return kappa * off + (1.0 - kappa) * on, (on, off)

            (loss, (on, off)), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic.params)
            upd, opt = tx_critic.update(grads, critic.opt_state, critic.params)
            critic = NetState(optax.apply_updates(critic.params, upd), opt)
            log_rho = jnp.clip(_logp_of(logits_off, seq["action"]) - seq["logp_mu"], -LOG_RATIO_CLIP,
                               LOG_RATIO_CLIP)
            log_others = log_rho.sum(-1, keepdims=True) - log_rho
            diag = jnp.stack([loss, optax.tree.norm(grads), jnp.exp(log_rho).mean(), jnp.exp(log_rho).max(),
                              jnp.exp(log_others).mean(), jnp.exp(log_others).max(), pi_off.mean(),
                              (pi_off < 1.0).mean()])
            return critic, diag

        critic, cdiag = jax.lax.scan(critic_step, state.critic, jax.random.split(k_critic, E))
        cdiag = cdiag.mean(0)

        # DOP's advantage from the trained critic, on the fresh rollout
        q, k, b = critic_apply(critic.params, glob)
        adv_all = dop_advantages_jax(q, action, jax.nn.softmax(logits_k), k)  # [T, B, N]
        q_tot_mean = mixed_q_jax(q, k, b, actions=action).mean()

        def actor_loss(params, mb):
            logits = policy(params, mb["h0"], mb["obs"], mb["reset"], mb["avail"])
            logp = _logp_of(logits, mb["action"])
            adv = (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)
            log_r = jnp.clip(logp - mb["logp_k"], -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
            r = jnp.exp(log_r)
            eps = config.clip_eps
            surrogate = jnp.minimum(r * adv, jnp.clip(r, 1 - eps, 1 + eps) * adv)
            entropy = _entropy(logits).mean()
            loss = -surrogate.mean() - config.ent_coef * entropy
            aux = (entropy, ((r - 1) - log_r).mean(), (jnp.abs(r - 1) > eps).mean())
            return loss, aux

        data = dict(h0=state.h_actor, obs=obs.obs, reset=reset, avail=obs.avail, action=action, logp_k=logp_k,
                    adv=adv_all)

        def epoch(actor: NetState, key):
            perm = jax.random.permutation(key, B)

            def split(name, x):
                ax = 0 if name == "h0" else 1  # env axis
                x = jnp.take(x, perm, axis=ax)
                x = x.reshape(x.shape[:ax] + (M, B // M) + x.shape[ax + 1:])
                return jnp.moveaxis(x, ax, 0)

            mbs = {name: split(name, x) for name, x in data.items()}

            def mb_step(actor, mb):
                (loss, (ent, kl, cf)), g = jax.value_and_grad(actor_loss, has_aux=True)(actor.params, mb)
                upd, opt = tx_actor.update(g, actor.opt_state, actor.params)
                return NetState(optax.apply_updates(actor.params, upd), opt), jnp.stack(
                    [loss, ent, kl, cf, optax.tree.norm(g)])

            return jax.lax.scan(mb_step, actor, mbs)

        actor, adiag = jax.lax.scan(epoch, state.actor, jax.random.split(k_actor, E))
        adiag = adiag.reshape(-1, adiag.shape[-1]).mean(0)

        n_ep = out.done.astype(jnp.float32).sum()
        nan = jnp.float32(jnp.nan)
        metrics = UpdateMetrics(
            update=state.update + 1, env_steps=state.env_steps + T * B,
            train_win_rate=jnp.where(n_ep > 0, (out.won * done).sum() / jnp.maximum(n_ep, 1), nan),
            train_return=jnp.where(n_ep > 0, (out.episode_return * done).sum() / jnp.maximum(n_ep, 1), nan),
            train_episodes=n_ep,
            actor_loss=adiag[0], value_loss=cdiag[0], entropy=adiag[1], approx_kl=adiag[2], clip_frac=adiag[3],
            own_ratio_mean=cdiag[2], own_ratio_max=cdiag[3], others_ratio_mean=cdiag[4], others_ratio_max=cdiag[5],
            trace_mean=cdiag[6], trace_truncated=cdiag[7], value_mean=q_tot_mean,
            actor_grad_norm=adiag[4], critic_grad_norm=cdiag[1],
            lr=jnp.asarray(schedule(config.lr, 1)(state.update), jnp.float32),
        )
        new_state = DOPState(
            actor=actor, critic=critic, target=target, env_state=env_state, obs=last_obs, reset=last_reset,
            h_actor=h_end, replay=rp, rng=rng, eval_rng=state.eval_rng, update=state.update + 1,
            env_steps=state.env_steps + T * B,
        )
        return new_state, metrics

    def scan_updates(state, n: int):
        """``n`` updates as one ``lax.scan`` -> (state, UpdateMetrics with leading axis n)."""
        return jax.lax.scan(lambda s, _: update_fn(s), state, None, n)

    def init_fn(rng) -> DOPState:
        """Fresh networks and optimisers, target = critic, an empty replay buffer."""
        rng, k_actor, k_q, k_mix, k_env, k_eval = jax.random.split(rng, 6)
        zeros_h = jnp.zeros((B, N, H), jnp.float32)
        obs, env_state = env.reset(k_env, B)
        actor_params = actor_net.init(k_actor, zeros_h, obs.obs[None], jnp.zeros((1, B, N), bool), obs.avail[None])
        glob = obs.world_state[:, 0, :S]
        critic_params = {"q": q_net.init(k_q, world_state(glob)), "mixer": mixer_net.init(k_mix, glob)}
        z = lambda *shape, dtype=jnp.float32: jnp.zeros((R, T, B) + shape, dtype)
        replay = Replay(
            obs=z(N, spec.obs_dim), state=z(S), avail=z(N, A, dtype=bool), action=z(N, dtype=jnp.int32),
            reset=z(N, dtype=bool), reward=z(), done=z(), logp_mu=z(N), h_actor=jnp.zeros((R, B, N, H)),
            cursor=jnp.int32(0), filled=jnp.int32(0),
        )
        state = DOPState(
            actor=NetState(actor_params, tx_actor.init(actor_params)),
            critic=NetState(critic_params, tx_critic.init(critic_params)), target=critic_params,
            env_state=env_state, obs=obs, reset=jnp.zeros((B, N), bool), h_actor=zeros_h, replay=replay,
            rng=rng, eval_rng=k_eval, update=jnp.int32(0), env_steps=jnp.int32(0),
        )
        # strong types (see core.init_fn: a weakly typed leaf recompiles the second chunk)
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype), state)

    def evaluate_fn(state) -> EvalMetrics:
        """The other variants' greedy evaluation (``core.greedy_evaluate``) of this actor."""
        return greedy_evaluate(actor_net, env, config.eval_envs, H, state.actor.params, state.eval_rng, state.update)

    return Trainer(
        config=config, spec=spec, init_fn=init_fn, update_fn=update_fn, scan_updates=scan_updates,
        evaluate_fn=evaluate_fn, init=jax.jit(init_fn),
        run_updates=jax.jit(scan_updates, static_argnums=1), evaluate=jax.jit(evaluate_fn),
        data=DataSpec("replay", keep=None),  # windows are sampled from every stored rollout
    )
