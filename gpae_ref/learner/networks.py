"""Recurrent actor and critics (the authors' SMAX architecture, written afresh).

All modules take time-major inputs ``[T, *batch, F]`` and a carry ``[*batch, H]``;
the batch may have any rank (the learner uses ``(K, B, N)``: rollout, env, agent).
A reset flag ``[T, *batch]`` zeroes the carry before the step it marks (new
episode, or a dead agent, as in MAPPO).

Q critic input (spec section 8): for agent i the joint action is the
concatenation of N slots of size A; slot j != i is a^j's one-hot, slot i is
pi^i's probability vector. Because the input is linear in that slot,
    x_i(p) = sum_a p(a) x_i(onehot(a)),
so one forward pass on x_i(pi^i) is the critic at the pi^i-mix of its one-hot
inputs (equal at the input level; the network output is EQ^i only insofar as
the critic learns to be linear there, which training on x_i(pi^i) asks of it).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

MASKED_LOGIT = -1e10


class _ResetGRUStep(nn.Module):
    features: int

    @nn.compact
    def __call__(self, carry, xs):
        x, reset = xs
        carry = jnp.where(reset[..., None], jnp.zeros_like(carry), carry)
        carry, y = nn.GRUCell(features=self.features)(carry, x)
        return carry, y


class ScannedGRU(nn.Module):
    """GRU over the leading time axis with per-step resets."""

    features: int

    @nn.compact
    def __call__(self, carry, x, resets):
        scan = nn.scan(
            _ResetGRUStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=0,
            out_axes=0,
        )
        return scan(self.features)(carry, (x, resets))


def _mlp(x, *, width: int, layers: int, layer_norm: bool):
    for _ in range(layers):
        x = nn.Dense(width)(x)
        if layer_norm:
            x = nn.LayerNorm()(x)
        x = nn.relu(x)
    return x


class Actor(nn.Module):
    """pi^i(. | history of o^i): LN(obs) -> [Dense, LN, ReLU] x L -> GRU -> [Dense, LN, ReLU] x H
    -> Dense(A), masked logits (H = ``head_layers``: 0 in the authors' network, 1 in JaxMARL's MAPPO)."""

    num_actions: int
    hidden: int = 128
    layers: int = 2
    layer_norm: bool = True
    norm_input: bool = True
    head_layers: int = 0

    @nn.compact
    def __call__(self, carry, obs, resets, avail):
        x = nn.LayerNorm()(obs) if self.norm_input else obs
        x = _mlp(x, width=self.hidden, layers=self.layers, layer_norm=self.layer_norm)
        carry, x = ScannedGRU(self.hidden)(carry, x, resets)
        x = _mlp(x, width=self.hidden, layers=self.head_layers, layer_norm=self.layer_norm)
        logits = nn.Dense(self.num_actions)(x)
        # Unavailable actions get probability 0 exactly (exp underflows), in sampling and loss.
        return carry, jnp.where(avail > 0, logits, MASKED_LOGIT)


class StateCritic(nn.Module):
    """MAPPO's V(world state with agent id): LN -> [Dense, LN, ReLU] x L -> GRU -> [Dense, LN, ReLU] x H -> Dense(1)."""

    hidden: int = 128
    layers: int = 2
    layer_norm: bool = True
    norm_input: bool = True
    head_layers: int = 0

    @nn.compact
    def __call__(self, carry, world_state, resets, action_input=None):
        del action_input  # same call signature as QCritic
        x = nn.LayerNorm()(world_state) if self.norm_input else world_state
        x = _mlp(x, width=self.hidden, layers=self.layers, layer_norm=self.layer_norm)
        carry, x = ScannedGRU(self.hidden)(carry, x, resets)
        x = _mlp(x, width=self.hidden, layers=self.head_layers, layer_norm=self.layer_norm)
        return carry, nn.Dense(1)(x)[..., 0]


class QCritic(nn.Module):
    """Q(world state with agent id, joint action): state and action halves, then shared layers -> GRU
    -> [Dense, LN, ReLU] x H -> Dense(1)."""

    hidden: int = 128
    layers: int = 2
    layer_norm: bool = True
    norm_input: bool = True
    head_layers: int = 0

    @nn.compact
    def __call__(self, carry, world_state, resets, action_input):
        s, a = world_state, action_input
        if self.norm_input:
            s, a = nn.LayerNorm()(s), nn.LayerNorm()(a)
        half = self.hidden // 2
        s = _mlp(s, width=half, layers=1, layer_norm=self.layer_norm)
        a = _mlp(a, width=half, layers=1, layer_norm=self.layer_norm)
        x = _mlp(jnp.concatenate([s, a], -1), width=self.hidden, layers=self.layers - 1,
                 layer_norm=self.layer_norm)
        carry, x = ScannedGRU(self.hidden)(carry, x, resets)
        x = _mlp(x, width=self.hidden, layers=self.head_layers, layer_norm=self.layer_norm)
        return carry, nn.Dense(1)(x)[..., 0]


def critic_action_input(actions, probs):
    """Per-agent joint-action input of the Q critic.

    ``actions [..., N]`` (int), ``probs [..., N, A]`` -> ``[..., N, N*A]``: row i is
    the concatenation over j of onehot(a^j), except slot i, which is probs^i.
    """
    n, a = probs.shape[-2], probs.shape[-1]
    onehot = jax.nn.one_hot(actions, a, dtype=probs.dtype)  # [..., N, A]
    eye = jnp.eye(n, dtype=probs.dtype)[:, :, None]  # [i, j, 1]: slot j of row i is agent i's own
    rows = eye * probs[..., None, :, :] + (1.0 - eye) * onehot[..., None, :, :]  # [..., i, j, A]
    return rows.reshape(rows.shape[:-2] + (n * a,))
