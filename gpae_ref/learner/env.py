"""SMAX against the heuristic enemy, as batched arrays.

jaxmarl's env speaks dicts keyed by agent name; the learner speaks arrays
``[B, N, ...]`` (env, agent). ``SmaxEnv`` holds the (static) jaxmarl env and
turns one vmapped step into an ``EnvObs`` plus a ``StepOut``. Episodes auto-reset
inside jaxmarl's ``step`` (the observation after a terminal step is the first
of the next episode), and ``SMAXLogWrapper`` reports finished episodes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

def smax_version() -> str:
    """The installed jaxmarl's version: whose SMAX this is (0.0.7: the authors'; docs/learner.md)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxmarl")
    except PackageNotFoundError:
        return "unknown"


# Settings of the authors' config (ENV_KWARGS); also jaxmarl MAPPO's.
ENV_KWARGS = dict(see_enemy_actions=True, walls_cause_death=True, attack_mode="closest")


class EnvObs(NamedTuple):
    """What the agents and the critic see at one step, for B envs and N agents."""

    obs: jax.Array  # [B, N, obs_dim] each agent's observation (actor input)
    world_state: jax.Array  # [B, N, state_dim + N] global state + agent id one-hot (critic input)
    avail: jax.Array  # [B, N, A] available-action mask (1 = allowed)


class StepOut(NamedTuple):
    """Result of one step besides the next observation."""

    reward: jax.Array  # [B] team reward (identical for all allies in SMAX)
    done_agent: jax.Array  # [B, N] agent dead or episode over (the GRU reset flag of the next step)
    done: jax.Array  # [B] episode ended after this step
    won: jax.Array  # [B] the episode that ended here was won (0 where none ended)
    episode_return: jax.Array  # [B] return of the episode that ended here (0 where none ended)


class EnvSpec(NamedTuple):
    num_agents: int
    obs_dim: int
    state_dim: int  # world state incl. agent id
    num_actions: int
    max_steps: int


class SmaxEnv:
    """Batched, array-valued view of ``SMAXLogWrapper(HeuristicEnemySMAX(scenario))``."""

    def __init__(self, scenario: str):
        from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario
        from jaxmarl.wrappers.baselines import SMAXLogWrapper

        self.base = HeuristicEnemySMAX(scenario=map_name_to_scenario(scenario), **ENV_KWARGS)
        self.env = SMAXLogWrapper(self.base)
        self.agents = list(self.base.agents)
        n = len(self.agents)
        self.spec = EnvSpec(
            num_agents=n,
            obs_dim=int(self.base.obs_size),
            state_dim=int(self.base.state_size) + n,
            num_actions=int(self.base.action_space(self.agents[0]).n),
            max_steps=int(self.base.max_steps),
        )

    # -- one env -------------------------------------------------------------
    def _observe(self, obs: dict, log_state) -> EnvObs:
        n = self.spec.num_agents
        ws = jnp.broadcast_to(obs["world_state"], (n, obs["world_state"].shape[-1]))
        return EnvObs(
            obs=jnp.stack([obs[a] for a in self.agents]),
            world_state=jnp.concatenate([ws, jnp.eye(n, dtype=ws.dtype)], axis=-1),
            avail=self.avail_actions(log_state),
        )

    def avail_actions(self, log_state) -> jax.Array:
        """Allies' available actions ``[N, A]`` (float 0/1), as jaxmarl's ``get_avail_actions``.

        Same rule, vectorised: stop (action 4) always; the 4 moves if alive; attack
        enemy j (action 5 + j) if both alive and j is within the ally's attack range.
        jaxmarl's version (a vmap over per-agent jitted functions) made the whole
        environment step 1.7x slower on CPU; ``tests/test_learner.py`` checks equality.
        """
        smax = self.base._env
        s = log_state.env_state.state
        na, moves = smax.num_allies, smax.num_movement_actions
        alive, pos = s.unit_alive, s.unit_positions
        dist = jnp.linalg.norm(pos[:na, None, :] - pos[None, na:, :], axis=-1)  # [allies, enemies]
        reach = smax.unit_type_attack_ranges[s.unit_types[:na]][:, None]
        shoot = (dist < reach) & alive[None, na:] & alive[:na, None]
        move = jnp.broadcast_to(alive[:na, None], (na, moves - 1))
        stop = jnp.ones((na, 1), bool)
        return jnp.concatenate([move, stop, shoot], axis=-1).astype(jnp.float32)

    def reference_avail_actions(self, log_state) -> jax.Array:
        """jaxmarl's own mask ``[N, A]`` (for tests)."""
        avail = self.base.get_avail_actions(log_state.env_state)
        return jnp.stack([avail[a] for a in self.agents]).astype(jnp.float32)

    def _reset_one(self, key):
        obs, state = self.env.reset(key)
        return self._observe(obs, state), state

    def _step_one(self, key, state, actions):
        act = {a: actions[i] for i, a in enumerate(self.agents)}
        obs, state, reward, done, info = self.env.step(key, state, act)
        out = StepOut(
            reward=reward[self.agents[0]],
            done_agent=jnp.stack([done[a] for a in self.agents]),
            done=done["__all__"],
            won=info["returned_won_episode"][0] * done["__all__"],
            episode_return=info["returned_episode_returns"][0] * done["__all__"],
        )
        return self._observe(obs, state), state, out

    # -- batched -------------------------------------------------------------
    def reset(self, key, num_envs: int):
        """Reset ``num_envs`` envs from one key -> (EnvObs [B, ...], env_state)."""
        return jax.vmap(self._reset_one)(jax.random.split(key, num_envs))

    def step(self, key, state, actions):
        """Step all envs with ``actions [B, N]`` -> (EnvObs, env_state, StepOut); auto-resets."""
        num_envs = actions.shape[0]
        return jax.vmap(self._step_one)(jax.random.split(key, num_envs), state, actions)
