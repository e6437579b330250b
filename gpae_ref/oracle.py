"""Exact tabular oracle for GPAE: every expectation by linear algebra or enumeration.

A small cooperative Markov game (states s, N agents, joint action a, shared
reward r(s, a), transition P(s'|s, a), discount gamma) and product policies
pi = prod_j pi^j, mu = prod_j mu^j given as per-agent ``[S, K_j]`` tables. All
quantities are float64 and exact up to rounding (no sampling):

* V^pi, Q^pi, the per-agent value EQ^{pi,i}(s, a^-i) = sum_{a^i} pi^i Q^pi, the
  per-agent advantage A^{pi,i} = Q^pi - EQ^{pi,i}, the marginal advantage;
* the per-agent operator T^i of the spec (section 6) as an affine map, its
  sup-norm modulus and its fixed point;
* the exact conditional expectation E[A^i_t | s_t, a_t] of the estimator's
  advantage, by linear algebra (infinite horizon or truncated at T), and
* the exact expectation of *any* black-box estimator, by enumerating every
  trajectory of length T as one batch column and averaging with the
  trajectory probabilities (``estimator_expectation``).

Conventions. A joint action is one index a in ``range(A)``, A = prod_j K_j,
ordered like ``numpy.ravel_multi_index`` over ``n_actions`` (agent 0 slowest).
Per-agent tables such as E^i(s, a^-i) are stored *lifted* over joint actions,
``[S, A, N]``, constant along agent i's own action (``lift``/``reduce_others``
go between the two forms). Transitions may be sub-stochastic: the missing mass
1 - sum_s' P(s'|s, a) is the probability that the episode ends after (s, a),
which a trajectory records as ``done = 1``.

Only numpy and scipy are used: this module is the ground truth the estimators
are checked against, so it shares no code with them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import scipy.linalg

# CORRECTIONS is re-exported: the names of the one table of corrections (spec section 4).
from gpae_ref.corrections import CORRECTIONS, correction_row


_TOL = 1e-9  # slack for "sums to 1" and "probability >= 0" checks


# ----------------------------------------------------------------------------
# The game
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Game:
    """A cooperative Markov game with a shared reward.

    rewards      ``[S, A]``     r(s, a), joint action a as one index
    transitions  ``[S, A, S]``  P(s'|s, a); rows sum to <= 1, the deficit is the
                                probability the episode ends after (s, a)
    n_actions    ``(K_0, ..., K_{N-1})`` per-agent action counts, A = prod K_j
    gamma        discount in [0, 1)
    """

    rewards: np.ndarray
    transitions: np.ndarray
    n_actions: tuple[int, ...]
    gamma: float
    action_table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        n_actions = tuple(int(k) for k in self.n_actions)
        if len(n_actions) < 1 or min(n_actions) < 1:
            raise ValueError(f"n_actions must be a non-empty sequence of counts >= 1; got {self.n_actions!r}.")
        n_joint = int(np.prod(n_actions))
        r = np.array(self.rewards, dtype=np.float64)
        p = np.array(self.transitions, dtype=np.float64)
        if r.ndim != 2 or r.shape[1] != n_joint:
            raise ValueError(f"rewards must have shape [S, A] with A = prod(n_actions) = {n_joint}; got {r.shape}.")
        S = r.shape[0]
        if S < 1:
            raise ValueError("rewards must have at least one state.")
        if p.shape != (S, n_joint, S):
            raise ValueError(f"transitions must have shape [S, A, S] = {(S, n_joint, S)}; got {p.shape}.")
        if not np.all(np.isfinite(r)):
            raise ValueError("rewards must be finite.")
        if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(-1) > 1 + _TOL):
            raise ValueError("transitions must be probabilities with rows summing to <= 1 (deficit = episode ends).")
        g = float(self.gamma)
        if not 0.0 <= g < 1.0:
            raise ValueError(f"gamma must be in [0, 1); got {self.gamma!r}.")
        r.setflags(write=False)
        p.setflags(write=False)
        table = np.array(list(itertools.product(*[range(k) for k in n_actions])), dtype=np.int64)
        table = table.reshape(n_joint, len(n_actions))
        table.setflags(write=False)
        object.__setattr__(self, "rewards", r)
        object.__setattr__(self, "transitions", p)
        object.__setattr__(self, "n_actions", n_actions)
        object.__setattr__(self, "gamma", g)
        object.__setattr__(self, "action_table", table)

    @property
    def n_states(self) -> int:
        return self.rewards.shape[0]

    @property
    def n_agents(self) -> int:
        return len(self.n_actions)

    @property
    def n_joint(self) -> int:
        return self.rewards.shape[1]

    @property
    def exit_probability(self) -> np.ndarray:
        """``[S, A]``: probability 1 - sum_s' P(s'|s, a) that the episode ends after (s, a)."""
        return np.clip(1.0 - self.transitions.sum(-1), 0.0, 1.0)

    def joint_index(self, actions: Sequence[int]) -> int:
        """Joint index of per-agent actions (a^0, ..., a^{N-1})."""
        return int(np.ravel_multi_index(tuple(int(a) for a in actions), self.n_actions))

    def actions_of(self, index: int) -> tuple[int, ...]:
        """Per-agent actions of joint index ``index``."""
        return tuple(int(a) for a in self.action_table[int(index)])

    def with_gamma(self, gamma: float) -> "Game":
        return Game(self.rewards, self.transitions, self.n_actions, gamma)


def others_index(game: Game, i: int) -> np.ndarray:
    """``[A]``: for each joint action, the index of a^-i among prod_{j!=i} K_j others' actions."""
    _check_agent(game, i)
    dims = tuple(k for j, k in enumerate(game.n_actions) if j != i)
    if not dims:
        return np.zeros(game.n_joint, dtype=np.int64)
    cols = np.delete(game.action_table, i, axis=1)
    return np.ravel_multi_index(tuple(cols.T), dims).astype(np.int64)


def n_others(game: Game, i: int) -> int:
    """prod_{j != i} K_j, the number of others' joint actions a^-i."""
    return int(np.prod([k for j, k in enumerate(game.n_actions) if j != i], dtype=np.int64))


def lift(game: Game, table: np.ndarray, i: int) -> np.ndarray:
    """``[S, A^-i] -> [S, A]``: E(s, a^-i) copied along agent i's own action."""
    return np.asarray(table, np.float64)[:, others_index(game, i)]


def reduce_others(game: Game, table: np.ndarray, i: int) -> np.ndarray:
    """``[S, A] -> [S, A^-i]``: read a table that is constant along a^i at each a^-i.

    Raises ValueError (argument ``table``) if it is not constant along a^i.
    """
    table = np.asarray(table, np.float64)
    idx = others_index(game, i)
    out = np.zeros((game.n_states, n_others(game, i)))
    out[:, idx] = table
    if not np.allclose(out[:, idx], table, rtol=0, atol=1e-12 * (1 + np.abs(table).max())):
        raise ValueError(f"table must be constant along agent {i}'s own action to be a per-agent table.")
    return out


# ----------------------------------------------------------------------------
# Policies
# ----------------------------------------------------------------------------


def check_policy(game: Game, policy, name: str = "pi") -> tuple[np.ndarray, ...]:
    """Validate a product policy: one ``[S, K_j]`` row-stochastic table per agent.

    Returns the tables as read-only float64 arrays; raises ValueError naming
    ``name`` for a wrong count, shape, negative entry or a row not summing to 1.
    """
    if isinstance(policy, np.ndarray) or not isinstance(policy, (list, tuple)):
        raise ValueError(f"{name} must be a list or tuple of per-agent [S, K_j] arrays; got {type(policy).__name__}.")
    if len(policy) != game.n_agents:
        raise ValueError(f"{name} must have one table per agent ({game.n_agents}); got {len(policy)}.")
    out = []
    for j, (table, k) in enumerate(zip(policy, game.n_actions)):
        t = np.array(table, dtype=np.float64)
        if t.shape != (game.n_states, k):
            raise ValueError(f"{name}[{j}] must have shape [S, K_{j}] = {(game.n_states, k)}; got {t.shape}.")
        if not np.all(np.isfinite(t)) or np.any(t < -_TOL):
            raise ValueError(f"{name}[{j}] must hold probabilities >= 0.")
        sums = t.sum(-1)
        if np.any(np.abs(sums - 1.0) > 1e-8):
            s = int(np.argmax(np.abs(sums - 1.0)))
            raise ValueError(f"{name}[{j}] row {s} must sum to 1; it sums to {sums[s]!r}.")
        t = np.clip(t, 0.0, None)
        t.setflags(write=False)
        out.append(t)
    return tuple(out)


def check_coverage(game: Game, pi, mu) -> None:
    """Raise ValueError (argument ``mu``) where mu^j = 0 but pi^j > 0 (spec section 1)."""
    pi = check_policy(game, pi, "pi")
    mu = check_policy(game, mu, "mu")
    for j, (p, m) in enumerate(zip(pi, mu)):
        bad = (m <= 0) & (p > 0)
        if np.any(bad):
            s, a = (int(x) for x in np.argwhere(bad)[0])
            raise ValueError(f"mu[{j}] is 0 at state {s}, action {a} where pi[{j}] > 0: coverage fails.")


def joint_policy(game: Game, policy) -> np.ndarray:
    """``[S, A]``: pi(a|s) = prod_j pi^j(a^j|s)."""
    policy = check_policy(game, policy)
    out = np.ones((game.n_states, game.n_joint))
    for j, t in enumerate(policy):
        out *= t[:, game.action_table[:, j]]
    return out


def agent_probabilities(game: Game, policy) -> np.ndarray:
    """``[S, A, N]``: pi^j(a^j|s) of each agent's own action inside joint action a."""
    policy = check_policy(game, policy)
    return np.stack([t[:, game.action_table[:, j]] for j, t in enumerate(policy)], axis=-1)


def random_game(
    seed: int,
    n_states: int = 2,
    n_actions: Sequence[int] = (2, 2),
    gamma: float = 0.9,
    exit_probability: float = 0.0,
    reward_scale: float = 1.0,
) -> Game:
    """A seeded random game: rewards uniform in [-scale, scale], P(.|s, a) Dirichlet(1).

    ``exit_probability`` in [0, 1): every (s, a) ends the episode with this
    probability (the transition rows are scaled by 1 - exit_probability).
    """
    if not 0.0 <= exit_probability < 1.0:
        raise ValueError(f"exit_probability must be in [0, 1); got {exit_probability!r}.")
    rng = np.random.default_rng(seed)
    n_actions = tuple(int(k) for k in n_actions)
    A = int(np.prod(n_actions))
    r = rng.uniform(-reward_scale, reward_scale, size=(n_states, A))
    p = rng.dirichlet(np.ones(n_states), size=(n_states, A)) * (1.0 - exit_probability)
    return Game(r, p, n_actions, gamma)


def random_policy(seed: int, game: Game, min_prob: float = 0.05, concentration: float = 1.0) -> tuple[np.ndarray, ...]:
    """A seeded random product policy with every probability >= ``min_prob``.

    Each row is min_prob + (1 - K min_prob) * Dirichlet(concentration), so it
    stays a distribution and ratios stay bounded (tight tolerances work).
    """
    rng = np.random.default_rng(seed)
    out = []
    for k in game.n_actions:
        if not 0.0 <= min_prob * k <= 1.0:
            raise ValueError(f"min_prob must be in [0, 1/K] = [0, {1.0 / k}]; got {min_prob!r}.")
        t = min_prob + (1.0 - k * min_prob) * rng.dirichlet(np.full(k, concentration), size=game.n_states)
        out.append(t)
    return tuple(out)


# ----------------------------------------------------------------------------
# Exact values
# ----------------------------------------------------------------------------


def state_values(game: Game, pi) -> np.ndarray:
    """``[S]``: V^pi = (I - gamma P_pi)^{-1} r_pi, P_pi(s'|s) = sum_a pi(a|s) P(s'|s, a)."""
    jp = joint_policy(game, pi)
    r_pi = (jp * game.rewards).sum(-1)
    p_pi = np.einsum("sa,sat->st", jp, game.transitions)
    return np.linalg.solve(np.eye(game.n_states) - game.gamma * p_pi, r_pi)


def q_values(game: Game, pi) -> np.ndarray:
    """``[S, A]``: Q^pi(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) V^pi(s')."""
    return game.rewards + game.gamma * game.transitions @ state_values(game, pi)


def per_agent_values(game: Game, pi) -> np.ndarray:
    """``[S, A, N]``: EQ^{pi,i}(s, a^-i) = sum_{a^i} pi^i(a^i|s) Q^pi(s, a^i, a^-i), lifted.

    Entry [s, a, i] depends on a only through a^-i (constant along a^i).
    """
    pi = check_policy(game, pi)
    return _marginalise_own(game, pi, q_values(game, pi))


def _marginalise_own(game: Game, pi, q: np.ndarray) -> np.ndarray:
    """``[S, A] -> [S, A, N]``: sum_{a^i} pi^i(a^i|s) q(s, a^i, a^-i), lifted, for each i."""
    S, N = game.n_states, game.n_agents
    shape = (S,) + game.n_actions
    q = q.reshape(shape)
    out = np.empty((S, game.n_joint, N))
    for i, t in enumerate(pi):
        bshape = [S] + [1] * N
        bshape[1 + i] = game.n_actions[i]
        avg = (q * t.reshape(bshape)).sum(axis=1 + i, keepdims=True)
        out[:, :, i] = np.broadcast_to(avg, shape).reshape(S, game.n_joint)
    return out


def per_agent_advantages(game: Game, pi) -> np.ndarray:
    """``[S, A, N]``: A^{pi,i}(s, a) = Q^pi(s, a) - EQ^{pi,i}(s, a^-i)."""
    q = q_values(game, pi)
    return q[:, :, None] - per_agent_values(game, pi)


def marginal_advantages(game: Game, pi) -> list[np.ndarray]:
    """Per agent ``[S, K_i]``: Q^{pi,i}(s, a^i) - V^pi(s), Q^{pi,i} = E_{a^-i ~ pi^-i} Q^pi.

    Equals E_{a^-i ~ pi^-i} A^{pi,i}(s, a^i, a^-i) (spec section 2).
    """
    pi = check_policy(game, pi)
    S, N = game.n_states, game.n_agents
    q = q_values(game, pi).reshape((S,) + game.n_actions)
    v = state_values(game, pi)
    out = []
    for i in range(N):
        m = q
        # average out every other agent j != i with pi^j (highest axis first keeps indices valid)
        for j in reversed(range(N)):
            if j == i:
                continue
            bshape = [S] + [1] * (m.ndim - 1)
            bshape[1 + j] = game.n_actions[j]
            m = (m * pi[j].reshape(bshape)).sum(axis=1 + j, keepdims=True)
        out.append(m.reshape(S, game.n_actions[i]) - v[:, None])
    return out


def finite_horizon_q(game: Game, pi, horizon: int) -> np.ndarray:
    """``[H, S, A]``: Q_t of the game that ends after step H-1 (time-indexed, exact).

    Q_{H-1} = r, Q_t = r + gamma P V_{t+1}, V_t(s) = sum_a pi(a|s) Q_t(s, a).
    """
    if int(horizon) < 1:
        raise ValueError(f"horizon must be >= 1; got {horizon!r}.")
    jp = joint_policy(game, pi)
    out = np.empty((horizon, game.n_states, game.n_joint))
    v_next = np.zeros(game.n_states)
    for t in reversed(range(horizon)):
        out[t] = game.rewards + game.gamma * game.transitions @ v_next
        v_next = (jp * out[t]).sum(-1)
    return out


def finite_horizon_per_agent_values(game: Game, pi, horizon: int) -> np.ndarray:
    """``[H+1, S, A, N]``: EQ^{pi,i}_t of the game ending after step H-1; row H is 0."""
    pi = check_policy(game, pi)
    q = finite_horizon_q(game, pi, horizon)
    out = np.zeros((horizon + 1, game.n_states, game.n_joint, game.n_agents))
    for t in range(horizon):
        out[t] = _marginalise_own(game, pi, q[t])
    return out


# ----------------------------------------------------------------------------
# Traces and the operator
# ----------------------------------------------------------------------------


def trace_table(game: Game, pi, mu, correction: str = "dt", eta: float = 1.02) -> np.ndarray:
    """``[S, A, N]``: trace coefficient c^i(s, a) of the spec's table (section 4).

    Formed directly from probabilities (tiny games cannot overflow), with the
    table's ratio form (``gpae_ref.CORRECTION_TABLE``'s ``coefficient``), not the
    estimators' log-space one: rho^j = pi^j/mu^j, rho^-i = prod_{j!=i} rho^j.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}; got {correction!r}.")
    if not (np.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a finite number > 0; got {eta!r}.")
    check_coverage(game, pi, mu)
    rho = _ratios(game, pi, mu)
    others = np.stack([np.delete(rho, i, axis=-1).prod(-1) for i in range(game.n_agents)], axis=-1)
    c = correction_row(correction).coefficient(rho, others, eta, np)
    return np.broadcast_to(c, rho.shape).copy()


def _ratios(game: Game, pi, mu) -> np.ndarray:
    """``[S, A, N]``: rho^j = pi^j/mu^j of each agent's own action (0 where both are 0)."""
    p = agent_probabilities(game, pi)
    m = agent_probabilities(game, mu)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, p / np.where(m > 0, m, 1.0), 0.0)


def transition_matrix(game: Game, mu) -> np.ndarray:
    """``[SA, SA]``: M(x, x') = P(s'|x) mu(a'|s') over joint state-actions x = (s, a), flattened s-major."""
    jm = joint_policy(game, mu)
    S, A = game.n_states, game.n_joint
    return (game.transitions[:, :, :, None] * jm[None, None, :, :]).reshape(S * A, S * A)


def _td_means(game: Game, mu, values_now: np.ndarray, values_next: np.ndarray | None) -> np.ndarray:
    """``[SA, N]``: d(x) = r(x) + gamma sum_x' M(x, x') E(x') - E(x) (no bootstrap if values_next is None)."""
    S, A, N = game.n_states, game.n_joint, game.n_agents
    d = np.repeat(game.rewards.reshape(S * A, 1), N, axis=1) - values_now.reshape(S * A, N)
    if values_next is not None:
        d = d + game.gamma * transition_matrix(game, mu) @ values_next.reshape(S * A, N)
    return d


def _check_values_table(game: Game, values, name: str = "values", time_indexed: int | None = None) -> np.ndarray:
    v = np.asarray(values, np.float64)
    S, A, N = game.n_states, game.n_joint, game.n_agents
    if v.shape == (S, A):
        v = np.repeat(v[:, :, None], N, axis=2)
    if time_indexed is None:
        ok = v.shape == (S, A, N)
        want = f"[S, A, N] = {(S, A, N)} or [S, A]"
    else:
        if v.shape in ((S, A, N),):
            v = np.broadcast_to(v, (time_indexed + 1, S, A, N))
        if v.shape == (time_indexed + 1, S, A):
            v = np.repeat(v[..., None], N, axis=-1)
        ok = v.shape == (time_indexed + 1, S, A, N)
        want = f"[S, A, N] = {(S, A, N)}, [S, A] or time-indexed [H+1, S, A, N] = {(time_indexed + 1, S, A, N)}"
    if not ok:
        raise ValueError(f"{name} must have shape {want}; got {np.shape(values)}.")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite.")
    return v


def expected_advantage(
    game: Game,
    pi,
    mu,
    values,
    *,
    lam: float,
    correction: str = "dt",
    eta: float = 1.02,
    horizon: int | None = None,
    final_done: bool = False,
) -> np.ndarray:
    """``[S, A, N]``: exact E_mu[A^i_0 | s_0, a_0] of the estimator (spec sections 5-6).

    With M_c(x, x') = M(x, x') c^i(x') and d(x) = r(x) + gamma sum_x' M(x, x') E(x') - E(x):

    * ``horizon=None``: G = (I - gamma lam M_c)^{-1} d (infinite horizon);
    * ``horizon=T``: G_0 with G_t = d_t + gamma lam M_c G_{t+1}, G_T = 0, i.e.
      sum_{k<T} (gamma lam M_c)^k d for stationary values: what a length-T
      rollout with A_T = 0 computes. ``values`` may then be time-indexed
      ``[T+1, S, A, N]`` (row t used at step t). With ``final_done`` every
      trajectory ends after step T-1 (no bootstrap at T), as in a game of horizon T.

    ``values`` is the table E^i(s, a^-i), lifted ``[S, A, N]`` (or ``[S, A]``,
    the same value for every agent). Uses sub-stochastic P as termination.
    """
    check_coverage(game, pi, mu)
    S, A, N = game.n_states, game.n_joint, game.n_agents
    c = trace_table(game, pi, mu, correction, eta).reshape(S * A, N)
    M = transition_matrix(game, mu)
    gl = game.gamma * lam
    if horizon is None:
        if final_done:
            raise ValueError("final_done needs a finite horizon.")
        E = _check_values_table(game, values)
        d = _td_means(game, mu, E, E)
        out = np.empty((S * A, N))
        for i in range(N):
            out[:, i] = np.linalg.solve(np.eye(S * A) - gl * M * c[None, :, i], d[:, i])
        return out.reshape(S, A, N)
    horizon = int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1; got {horizon!r}.")
    E = _check_values_table(game, values, time_indexed=horizon)
    G = np.zeros((S * A, N))
    for t in reversed(range(horizon)):
        nxt = None if (final_done and t == horizon - 1) else E[t + 1]
        d = _td_means(game, mu, E[t], nxt)
        G = d + gl * (M @ (c * G))
    return G.reshape(S, A, N)


def expected_value_target(game: Game, pi, mu, values, advantage: np.ndarray, time0_values=None) -> np.ndarray:
    """``[S, A, N]``: E[v^i_0 | s_0, a_0] = E(s_0, a^-i_0) + min(1, rho^i_0) E[A^i_0 | s_0, a_0].

    rho^i_0 is fixed by (s_0, a_0), so the expectation passes through.
    """
    E0 = _check_values_table(game, values if time0_values is None else time0_values)
    own_clip = np.minimum(1.0, _ratios(game, pi, mu))
    return E0 + own_clip * advantage


class Operator(NamedTuple):
    """T^i E = matrix @ E + vector on per-agent tables E[s, a^-i] flattened s-major."""

    matrix: np.ndarray
    vector: np.ndarray
    agent: int
    n_states: int
    n_others: int

    @property
    def modulus(self) -> float:
        """Sup-norm Lipschitz constant: max_row sum_col |matrix| (exact for an affine map)."""
        return float(np.abs(self.matrix).sum(1).max())

    def apply(self, table: np.ndarray) -> np.ndarray:
        t = np.asarray(table, np.float64).reshape(-1)
        return (self.matrix @ t + self.vector).reshape(self.n_states, self.n_others)

    def fixed_point(self) -> np.ndarray:
        """``[S, A^-i]``: the E with T^i E = E, solving (I - matrix) E = vector.

        Raises ValueError if I - matrix is singular (no unique fixed point).
        """
        n = self.matrix.shape[0]
        lhs = np.eye(n) - self.matrix
        if np.linalg.cond(lhs) > 1e12:
            raise ValueError("the operator has no unique fixed point (I - matrix is singular).")
        return np.linalg.solve(lhs, self.vector).reshape(self.n_states, self.n_others)


def operator(
    game: Game, pi, mu, i: int, *, lam: float, correction: str = "dt", eta: float = 1.02
) -> Operator:
    """The per-agent operator T^i of the spec (section 6) as an exact affine map.

    (T^i E)(s, a^-i) = E(s, a^-i) + sum_{a^i} mu^i(a^i|s) min(1, rho^i) G(s, a^i, a^-i),
    G = H d, H = (I - gamma lam M_c)^{-1}, d = r + (gamma M - I) L E, with L the
    lift [S, A^-i] -> [S, A]. Writing W for the weighted sum over a^i with weights
    mu^i min(1, rho^i) = min(pi^i, mu^i):

        T^i E = (I + W H (gamma M - I) L) E + W H r.
    """
    _check_agent(game, i)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1]; got {lam!r}.")
    check_coverage(game, pi, mu)
    pi = check_policy(game, pi, "pi")
    mu = check_policy(game, mu, "mu")
    S, A = game.n_states, game.n_joint
    K = n_others(game, i)
    oidx = others_index(game, i)
    c = trace_table(game, pi, mu, correction, eta)[:, :, i].reshape(S * A)
    M = transition_matrix(game, mu)
    H = np.linalg.inv(np.eye(S * A) - game.gamma * lam * M * c[None, :])
    # L: [S*A, S*K] lift; W: [S*K, S*A] weighted own-action sum
    L = np.zeros((S * A, S * K))
    W = np.zeros((S * K, S * A))
    w = np.minimum(pi[i], mu[i])[:, game.action_table[:, i]]  # [S, A]
    for s in range(S):
        for a in range(A):
            L[s * A + a, s * K + oidx[a]] = 1.0
            W[s * K + oidx[a], s * A + a] = w[s, a]
    matrix = np.eye(S * K) + W @ H @ (game.gamma * M - np.eye(S * A)) @ L
    vector = W @ H @ game.rewards.reshape(S * A)
    return Operator(matrix, vector, int(i), S, K)


def off_policy_modulus_bound(game: Game, pi, mu, i: int) -> float:
    """1 - (1 - gamma) min_s sum_{a^i} min(pi^i, mu^i)(a^i|s): the P4 bound for c <= 1."""
    pi = check_policy(game, pi, "pi")
    mu = check_policy(game, mu, "mu")
    beta = np.minimum(pi[i], mu[i]).sum(-1).min()
    return float(1.0 - (1.0 - game.gamma) * beta)


def on_policy_modulus(gamma: float, lam: float) -> float:
    """gamma (1 - lam) / (1 - gamma lam): the P3 modulus with every c = 1."""
    return gamma * (1.0 - lam) / (1.0 - gamma * lam)


# ----------------------------------------------------------------------------
# Enumeration: exact expectation of any black-box estimator
# ----------------------------------------------------------------------------


class Enumeration(NamedTuple):
    """Every trajectory of length T as one batch column of estimator inputs.

    rewards [T, B], values [T+1, B, N], dones [T, B], logp_target and
    logp_behaviour [T, B, N]; ``weight`` [B] the probability of the column given
    its start, ``start`` [B] the flat start index s_0 * A + a_0.
    """

    rewards: np.ndarray
    values: np.ndarray
    dones: np.ndarray
    logp_target: np.ndarray
    logp_behaviour: np.ndarray
    weight: np.ndarray
    start: np.ndarray
    states: np.ndarray  # [T+1, B]
    actions: np.ndarray  # [T+1, B] joint indices


def n_trajectories(game: Game, horizon: int) -> int:
    """Upper bound on the batch size of ``enumerate_trajectories``: (SA)^(T+1) plus exits."""
    x = game.n_states * game.n_joint + (1 if np.any(game.exit_probability > 0) else 0)
    return game.n_states * game.n_joint * x**horizon


def enumerate_trajectories(
    game: Game,
    pi,
    mu,
    values,
    horizon: int,
    *,
    final_done: bool = False,
    max_columns: int = 200_000,
) -> Enumeration:
    """All length-``horizon`` trajectories from every start (s_0, a_0) under mu.

    Steps t = 1..T draw s_t ~ P(.|x_{t-1}) and a_t ~ mu(.|s_t); the row T action
    is drawn too, because the bootstrap value E^i(s_T, a^-i_T) depends on it.
    If the episode ends after step t (probability 1 - sum_s' P), ``dones[t] = 1``
    and the rest of the column is a deterministic filler episode (state 0, joint
    action 0, its real reward and values): an estimator that lets a trace or a
    bootstrap cross the done picks it up and is caught. With ``final_done``,
    ``dones[T-1] = 1`` for every column. Zero-probability branches are pruned.
    ``values``: lifted ``[S, A, N]`` / ``[S, A]`` or time-indexed ``[T+1, S, A, N]``.
    """
    horizon = int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1; got {horizon!r}.")
    check_coverage(game, pi, mu)
    pi = check_policy(game, pi, "pi")
    mu = check_policy(game, mu, "mu")
    for name, pol in (("pi", pi), ("mu", mu)):
        if any(np.any(t <= 0) for t in pol):
            raise ValueError(f"{name} must be > 0 everywhere to enumerate (log-probabilities must be finite).")
    if n_trajectories(game, horizon) > max_columns:
        raise ValueError(
            f"horizon {horizon} gives up to {n_trajectories(game, horizon)} columns (> max_columns={max_columns}); "
            "use a smaller game or horizon."
        )
    E = _check_values_table(game, values, time_indexed=horizon)
    S, A, N = game.n_states, game.n_joint, game.n_agents
    jm = joint_policy(game, mu)
    exitp = game.exit_probability
    # partial trajectories, one row each
    states = np.repeat(np.arange(S), A)[:, None]
    actions = np.tile(np.arange(A), S)[:, None]
    weight = np.ones(S * A)
    alive = np.ones(S * A, dtype=bool)
    dones = np.zeros((S * A, 0))
    start = np.arange(S * A)
    outcome_s = np.repeat(np.arange(S), A)
    outcome_a = np.tile(np.arange(A), S)
    for _t in range(horizon):
        s, a = states[:, -1], actions[:, -1]
        # continuing branches: (s', a') with probability P(s'|s,a) mu(a'|s')
        p_next = game.transitions[s, a][:, outcome_s] * jm[outcome_s, outcome_a]  # [n, SA]
        p_next = np.where(alive[:, None], p_next, 0.0)
        rows, cols = np.nonzero(p_next > 0)
        cont_states = np.concatenate([states[rows], outcome_s[cols, None]], axis=1)
        cont_actions = np.concatenate([actions[rows], outcome_a[cols, None]], axis=1)
        cont_w = weight[rows] * p_next[rows, cols]
        cont_d = np.concatenate([dones[rows], np.zeros((len(rows), 1))], axis=1)
        # ending branches (and columns already ended): filler step at state 0, action 0
        p_end = np.where(alive, exitp[s, a], 1.0)
        ends = np.nonzero(p_end > 0)[0]
        end_states = np.concatenate([states[ends], np.zeros((len(ends), 1), np.int64)], axis=1)
        end_actions = np.concatenate([actions[ends], np.zeros((len(ends), 1), np.int64)], axis=1)
        end_w = weight[ends] * p_end[ends]
        end_d = np.concatenate([dones[ends], alive[ends, None].astype(np.float64)], axis=1)
        states = np.concatenate([cont_states, end_states])
        actions = np.concatenate([cont_actions, end_actions])
        weight = np.concatenate([cont_w, end_w])
        dones = np.concatenate([cont_d, end_d])
        start = np.concatenate([start[rows], start[ends]])
        alive = np.concatenate([np.ones(len(rows), bool), np.zeros(len(ends), bool)])
    states, actions, dones = states.T, actions.T, dones.T  # time-major
    if final_done:
        dones = dones.copy()
        dones[-1] = 1.0
    t_idx = np.arange(horizon + 1)[:, None]
    lp_pi = np.log(agent_probabilities(game, pi))
    lp_mu = np.log(agent_probabilities(game, mu))
    return Enumeration(
        rewards=game.rewards[states[:-1], actions[:-1]],
        values=E[t_idx, states, actions],
        dones=dones,
        logp_target=lp_pi[states[:-1], actions[:-1]],
        logp_behaviour=lp_mu[states[:-1], actions[:-1]],
        weight=weight,
        start=start,
        states=states,
        actions=actions,
    )


def weighted_by_start(game: Game, enum: Enumeration, column_values: np.ndarray) -> np.ndarray:
    """``[S, A, ...]``: sum over columns b with start x of weight_b * column_values[b]."""
    v = np.asarray(column_values, np.float64)
    out = np.zeros((game.n_states * game.n_joint,) + v.shape[1:])
    np.add.at(out, enum.start, enum.weight.reshape((-1,) + (1,) * (v.ndim - 1)) * v)
    return out.reshape((game.n_states, game.n_joint) + v.shape[1:])


def estimator_expectation(
    estimator: Callable,
    game: Game,
    pi,
    mu,
    values,
    horizon: int,
    *,
    lam: float,
    correction: str = "dt",
    eta: float = 1.02,
    final_done: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (E[A^i_0 | s_0, a_0], E[v^i_0 | s_0, a_0]), each ``[S, A, N]``, of a black-box estimator.

    Calls ``estimator(rewards, values, dones, logp_target, logp_behaviour, gamma=,
    lam=, correction=, eta=)`` once on every enumerated trajectory (one batch
    column each) and averages row 0 with the trajectory probabilities: the
    estimator's exact expectation, no Monte Carlo noise. Compare with
    ``expected_advantage(..., horizon=horizon)``.
    """
    enum = enumerate_trajectories(game, pi, mu, values, horizon, final_done=final_done)
    adv, vt = estimator(
        enum.rewards, enum.values, enum.dones, enum.logp_target, enum.logp_behaviour,
        gamma=game.gamma, lam=lam, correction=correction, eta=eta,
    )
    adv = np.asarray(adv, np.float64)
    vt = np.asarray(vt, np.float64)
    return weighted_by_start(game, enum, adv[0]), weighted_by_start(game, enum, vt[0])


def _check_agent(game: Game, i: int) -> None:
    if not 0 <= int(i) < game.n_agents:
        raise ValueError(f"i must be an agent index in [0, {game.n_agents}); got {i!r}.")
