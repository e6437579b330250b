"""NumPy references of DOP's estimators, and their exact tabular counterparts.

DOP: Wang, Ren, Liu, Yu, Zhang, "Off-Policy Multi-Agent Decomposed Policy
Gradients", ICLR 2021 (spec section 9). Its critic is linearly decomposed,

    Q_tot(s, a) = sum_i k_i(s) Q_i(s, a^i) + b(s),      k_i(s) >= 0,

trained on a mix of off-policy tree-backup TB(lambda) targets (replayed data)
and on-policy TD(lambda) targets; its actor follows
sum_i k_i(s) grad log pi^i(a^i) (Q_i(s, a^i) - sum_b pi^i(b) Q_i(s, b)).

Two halves, like ``gpae_ref.reference`` and ``gpae_ref.oracle``:

* sample estimators, plain loops over time in float64, time-major ``[T, B]``
  (``tree_backup_targets``, ``td_lambda_targets``, ``dop_advantages``,
  ``mixed_critic_loss``): the references the learner's JAX versions are
  tested against;
* exact tabular quantities on ``gpae_ref.oracle.Game`` (``tree_backup_expectation``,
  ``tree_backup_operator``, ``fit_additive``, ``dop_advantage_table``,
  ``decomposable_game``): what the estimators should give in expectation.

Only numpy is used; the core stays importable without jax.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from gpae_ref import oracle

# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def _array(x, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite.")
    return a


def _same_shape(name: str, a: np.ndarray, want: tuple) -> None:
    if a.shape != want:
        raise ValueError(f"{name} must have shape {want}; got {a.shape}.")


def _check_dones(d: np.ndarray) -> None:
    if not np.all((d == 0) | (d == 1)):
        raise ValueError("dones must hold 0 or 1 (1 = the episode ended after this step).")


def _check_gamma_lam(gamma, lam, lam_name: str = "lam") -> None:
    if not isinstance(gamma, numbers.Real) or not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be a number in [0, 1); got {gamma!r}.")
    if not isinstance(lam, numbers.Real) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"{lam_name} must be a number in [0, 1]; got {lam!r}.")


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (tree-backup steps); got {steps!r}.")
    return int(steps)


# ----------------------------------------------------------------------------
# Sample estimators
# ----------------------------------------------------------------------------


def tree_backup_targets(rewards, q_taken, values, dones, pi_taken, *, gamma: float, lam: float,
                        steps: int) -> np.ndarray:
    """TB(lambda) critic targets truncated at ``steps`` terms, float64 ``[T, B]``.

    Inputs, time-major: rewards ``[T, B]``; q_taken ``[T, B]`` the critic at the
    action taken, Q(s_t, a_t); values ``[T+1, B]`` the critic's value under the
    *target* policy, V(s_t) = sum_a pi(a|s_t) Q(s_t, a) (row T bootstraps);
    dones ``[T, B]`` (1 = the episode ended after step t); pi_taken ``[T, B]`` the
    target policy's probability of the joint action taken, pi(a_t|s_t) =
    prod_j pi^j(a^j_t) (no behaviour probability anywhere: tree backup needs none).

        delta_t = r_t + gamma (1 - d_t) V_{t+1} - Q_t
        y_t     = Q_t + sum_{k=0}^{n_t - 1} (gamma lam)^k C_{t,k} delta_{t+k},
        C_{t,0} = 1,  C_{t,k} = C_{t,k-1} (1 - d_{t+k-1}) pi_{t+k},  n_t = min(steps, T - t).

    A done cuts the bootstrap and the trace; the sum stops at the end of the
    data (a shorter tree backup, with the same expectation Q^pi for exact
    values). With pi_taken = 1, values = the next taken action's Q and steps >= T
    it is the TD(lambda) return (``td_lambda_targets``).
    """
    r = _array(rewards, "rewards", 2)
    T, B = r.shape
    q = _array(q_taken, "q_taken", 2)
    v = _array(values, "values", 2)
    d = _array(dones, "dones", 2)
    p = _array(pi_taken, "pi_taken", 2)
    _same_shape("q_taken", q, (T, B))
    _same_shape("values", v, (T + 1, B))
    _same_shape("dones", d, (T, B))
    _same_shape("pi_taken", p, (T, B))
    _check_dones(d)
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("pi_taken must hold probabilities in [0, 1].")
    _check_gamma_lam(gamma, lam)
    n = _check_steps(steps)

    delta = r + gamma * (1.0 - d) * v[1:] - q
    targets = np.empty((T, B))
    for t in range(T):
        acc = delta[t].copy()
        coef = np.ones(B)
        for k in range(1, min(n, T - t)):
            coef = coef * gamma * lam * (1.0 - d[t + k - 1]) * p[t + k]
            acc += coef * delta[t + k]
        targets[t] = q[t] + acc
    return targets


def td_lambda_targets(rewards, q_taken, dones, *, gamma: float, lam: float) -> np.ndarray:
    """On-policy TD(lambda) returns of the taken actions' Q, float64 ``[T, B]``.

    q_taken ``[T+1, B]``: Q(s_t, a_t) along the data, row T bootstraps. Backwards::

        G_T = Q_T,   G_t = r_t + gamma (1 - d_t) ((1 - lam) Q_{t+1} + lam G_{t+1}).

    Its expectation is Q^mu of the policy that chose the actions (SARSA(lambda)):
    a target for Q^pi only on on-policy data.
    """
    r = _array(rewards, "rewards", 2)
    T, B = r.shape
    q = _array(q_taken, "q_taken", 2)
    d = _array(dones, "dones", 2)
    _same_shape("q_taken", q, (T + 1, B))
    _same_shape("dones", d, (T, B))
    _check_dones(d)
    _check_gamma_lam(gamma, lam)
    out = np.empty((T, B))
    g = q[T]
    for t in reversed(range(T)):
        g = r[t] + gamma * (1.0 - d[t]) * ((1.0 - lam) * q[t + 1] + lam * g)
        out[t] = g
    return out


def _check_per_agent(q_values, probs, k):
    q = _array(q_values, "q_values", 4)
    p = _array(probs, "probs", 4)
    kk = _array(k, "k", 3)
    _same_shape("probs", p, q.shape)
    _same_shape("k", kk, q.shape[:3])
    if np.any(kk < 0):
        raise ValueError("k must be >= 0 (DOP's mixing weights are non-negative).")
    if np.any(p < 0) or np.any(np.abs(p.sum(-1) - 1.0) > 1e-6):
        raise ValueError("probs must be distributions over the last axis (>= 0, summing to 1).")
    return q, p, kk


def dop_advantages(q_values, actions, probs, k) -> np.ndarray:
    """DOP's per-agent advantage, float64 ``[T, B, N]``.

    q_values ``[T, B, N, A]`` the per-agent critic Q_i(s_t, .), actions ``[T, B, N]``
    (int) the actions taken, probs ``[T, B, N, A]`` the policy pi^i(.|.), k
    ``[T, B, N]`` the mixing weights k_i(s_t) >= 0::

        A^i_t = k_i(s_t) (Q_i(s_t, a^i_t) - sum_b pi^i(b) Q_i(s_t, b)).

    It is Q_tot(s, a) - sum_b pi^i(b) Q_tot(s, b, a^-i) of the decomposed critic:
    with linear mixing, agent i's counterfactual baseline needs only its own Q_i.
    """
    q, p, kk = _check_per_agent(q_values, probs, k)
    a = np.asarray(actions)
    _same_shape("actions", a, q.shape[:3])
    if not np.issubdtype(a.dtype, np.integer) or np.any(a < 0) or np.any(a >= q.shape[-1]):
        raise ValueError(f"actions must be integers in [0, {q.shape[-1]}).")
    T, B, N, _ = q.shape
    out = np.empty((T, B, N))
    for i in range(N):
        taken = np.take_along_axis(q[:, :, i], a[:, :, i, None], axis=-1)[..., 0]
        baseline = (p[:, :, i] * q[:, :, i]).sum(-1)
        out[:, :, i] = kk[:, :, i] * (taken - baseline)
    return out


def mixed_q(q_values, k, b, actions=None, probs=None) -> np.ndarray:
    """The decomposed critic ``[T, B]``: sum_i k_i Q_i(a^i) + b at ``actions``, or its value
    sum_i k_i sum_a pi^i(a) Q_i(a) + b under ``probs`` (exactly V = E_pi Q_tot: the mixing is linear).

    Give exactly one of ``actions`` ``[T, B, N]`` and ``probs`` ``[T, B, N, A]``; b is ``[T, B]``.
    """
    if (actions is None) == (probs is None):
        raise ValueError("give exactly one of actions (Q at the taken action) and probs (value under pi).")
    bb = _array(b, "b", 2)
    if probs is not None:
        q, p, kk = _check_per_agent(q_values, probs, k)
        own = (p * q).sum(-1)
    else:
        q = _array(q_values, "q_values", 4)
        kk = _array(k, "k", 3)
        _same_shape("k", kk, q.shape[:3])
        a = np.asarray(actions)
        _same_shape("actions", a, q.shape[:3])
        own = np.take_along_axis(q, a[..., None], axis=-1)[..., 0]
    _same_shape("b", bb, q.shape[:2])
    return (kk * own).sum(-1) + bb


def mixed_critic_loss(q_off, y_off, q_on, y_on, *, kappa: float) -> float:
    """DOP's critic loss: kappa * mean (Q - y_TB)^2 on replayed data + (1 - kappa) * mean (Q - y_TD)^2 on fresh data.

    q_off, y_off: the critic and its TB(lambda) targets on replayed sequences;
    q_on, y_on: the critic and its TD(lambda) targets on the fresh rollout (any
    equal shapes within each pair). kappa in [0, 1] (0: on-policy only).
    """
    if not isinstance(kappa, numbers.Real) or not 0.0 <= kappa <= 1.0:
        raise ValueError(f"kappa must be a number in [0, 1]; got {kappa!r}.")
    pairs = {}
    for name, x in (("q_off", q_off), ("y_off", y_off), ("q_on", q_on), ("y_on", y_on)):
        pairs[name] = np.asarray(x, np.float64)
    _same_shape("y_off", pairs["y_off"], pairs["q_off"].shape)
    _same_shape("y_on", pairs["y_on"], pairs["q_on"].shape)
    off = np.mean((pairs["q_off"] - pairs["y_off"]) ** 2)
    on = np.mean((pairs["q_on"] - pairs["y_on"]) ** 2)
    return float(kappa * off + (1.0 - kappa) * on)


# ----------------------------------------------------------------------------
# Exact tabular counterparts (on gpae_ref.oracle games)
# ----------------------------------------------------------------------------


def _state_value_of(game: oracle.Game, pi, q: np.ndarray) -> np.ndarray:
    """``[S]``: V_q(s) = sum_a pi(a|s) q(s, a)."""
    return (oracle.joint_policy(game, pi) * q).sum(-1)


def _target_trace_matrix(game: oracle.Game, pi, mu) -> np.ndarray:
    """``[SA, SA]``: M_pi(x, x') = P(s'|x) mu(a'|s') pi(a'|s'): one step under mu, weighted by the trace pi(a')."""
    jp = oracle.joint_policy(game, pi).reshape(-1)
    return oracle.transition_matrix(game, mu) * jp[None, :]


def tree_backup_expectation(game: oracle.Game, pi, mu, q, *, lam: float, steps: int) -> np.ndarray:
    """``[S, A]``: exact E_mu[y_0 | s_0, a_0] of ``tree_backup_targets`` with ``steps`` terms.

    With d(x) = r(x) + gamma sum_s' P(s'|x) V_q(s') - q(x), V_q = sum_a pi q::

        E[y_0 | x] = q(x) + sum_{k < steps} ((gamma lam M_pi)^k d)(x).

    For q = Q^pi, d = 0 and the expectation is Q^pi for every mu: tree backup
    is unbiased off-policy without importance ratios.
    """
    oracle.check_coverage(game, pi, mu)
    n = _check_steps(steps)
    _check_gamma_lam(game.gamma, lam)
    q = np.asarray(q, np.float64)
    _same_shape("q", q, (game.n_states, game.n_joint))
    d = game.rewards + game.gamma * game.transitions @ _state_value_of(game, pi, q) - q
    m = game.gamma * lam * _target_trace_matrix(game, pi, mu)
    total, term = np.zeros(q.size), d.reshape(-1)
    for _ in range(n):
        total += term
        term = m @ term
    return q + total.reshape(q.shape)


class AffineMap(NamedTuple):
    """x -> matrix @ x + vector on flattened ``[S, A]`` tables."""

    matrix: np.ndarray
    vector: np.ndarray

    @property
    def modulus(self) -> float:
        """Sup-norm Lipschitz constant max_row sum_col |matrix|."""
        return float(np.abs(self.matrix).sum(1).max())

    def fixed_point(self) -> np.ndarray:
        n = self.matrix.shape[0]
        return np.linalg.solve(np.eye(n) - self.matrix, self.vector)


def tree_backup_operator(game: oracle.Game, pi, mu, *, lam: float, steps: int) -> AffineMap:
    """The expected TB(lambda) update q -> E_mu[y_0] (``tree_backup_expectation``) as an affine map.

    With H = sum_{k < steps} (gamma lam M_pi)^k, P [SA, S] and Pi [S, SA] the
    average under pi: q -> (I + H (gamma P Pi - I)) q + H r. Its fixed point is
    Q^pi for every behaviour mu (H is invertible), and it contracts in the sup norm.
    """
    oracle.check_coverage(game, pi, mu)
    n = _check_steps(steps)
    _check_gamma_lam(game.gamma, lam)
    S, A = game.n_states, game.n_joint
    m = game.gamma * lam * _target_trace_matrix(game, pi, mu)
    h, power = np.zeros((S * A, S * A)), np.eye(S * A)
    for _ in range(n):
        h += power
        power = m @ power
    jp = oracle.joint_policy(game, pi)
    average = np.zeros((S, S * A))  # Pi: q -> V_q
    for s in range(S):
        average[s, s * A:(s + 1) * A] = jp[s]
    step = game.gamma * game.transitions.reshape(S * A, S) @ average - np.eye(S * A)
    return AffineMap(np.eye(S * A) + h @ step, h @ game.rewards.reshape(-1))


def fit_additive(game: oracle.Game, q, weights) -> np.ndarray:
    """``[S, A]``: the weighted least-squares fit of q by a linearly decomposed critic.

    At each state, q(s, .) is fitted by sum_i g_i(s, a^i) + c(s) (any k_i >= 0,
    Q_i, b give such a function, and every such function is one: k_i = 1) with
    weights ``[S, A]`` >= 0 on the joint actions: what a decomposed critic
    regressed on data with state-action frequencies ``weights`` converges to.
    Under a product weight w = prod_j w^j this is the ANOVA projection,
    c = E_w q, g_i = E_{w^-i} q(a^i, .) - c.
    """
    q = np.asarray(q, np.float64)
    w = np.asarray(weights, np.float64)
    S, A = game.n_states, game.n_joint
    _same_shape("q", q, (S, A))
    _same_shape("weights", w, (S, A))
    if np.any(w < 0):
        raise ValueError("weights must be >= 0.")
    cols = [np.ones((A, 1))] + [np.eye(k)[game.action_table[:, j]] for j, k in enumerate(game.n_actions)]
    design = np.concatenate(cols, axis=1)  # [A, 1 + sum_j K_j]
    out = np.empty((S, A))
    for s in range(S):
        root = np.sqrt(w[s])[:, None]
        coef, *_ = np.linalg.lstsq(root * design, root[:, 0] * q[s], rcond=None)
        out[s] = design @ coef
    return out


def dop_advantage_table(game: oracle.Game, pi, q_decomposed) -> np.ndarray:
    """``[S, A, N]``: DOP's advantage k_i (Q_i(a^i) - sum_b pi^i(b) Q_i(b)) of a decomposed critic.

    ``q_decomposed`` ``[S, A]`` is the decomposed critic's Q_tot (additive in the
    agents' actions, e.g. from ``fit_additive``). Its advantage for agent i is
    Q_tot(s, a) - sum_b pi^i(b) Q_tot(s, b, a^-i), which for an additive Q_tot
    depends on a^i alone: this reads k_i Q_i off Q_tot whatever the split into k_i, Q_i, b.
    """
    pi = oracle.check_policy(game, pi)
    q = np.asarray(q_decomposed, np.float64)
    _same_shape("q_decomposed", q, (game.n_states, game.n_joint))
    return q[:, :, None] - oracle._marginalise_own(game, pi, q)


def marginal_of(game: oracle.Game, pi, table) -> np.ndarray:
    """``[S, A, N]``: E_{a^-i ~ pi^-i} table(s, a^i, a^-i), lifted over a^-i (table ``[S, A, N]``).

    Of the true per-agent advantage this is the marginal advantage Q^{pi,i}(s, a^i) - V^pi(s),
    the only part of an advantage that the expected policy gradient of agent i sees.
    """
    pi = oracle.check_policy(game, pi)
    t = np.asarray(table, np.float64)
    S, N = game.n_states, game.n_agents
    _same_shape("table", t, (S, game.n_joint, N))
    out = np.empty_like(t)
    shape = (S,) + game.n_actions
    for i in range(N):
        m = t[:, :, i].reshape(shape)
        for j in reversed(range(N)):
            if j == i:
                continue
            bshape = [S] + [1] * N
            bshape[1 + j] = game.n_actions[j]
            m = (m * pi[j].reshape(bshape)).sum(axis=1 + j, keepdims=True)
        out[:, :, i] = np.broadcast_to(m, shape).reshape(S, game.n_joint)
    return out


class DecomposableGame(NamedTuple):
    """A game whose Q^pi is exactly sum_i k_i(s) Q_i(s, a^i) + b(s) for every pi."""

    game: oracle.Game
    k: np.ndarray  # [S, N] mixing weights > 0
    q_own: tuple  # per agent [S, K_i]: the reward's part of Q_i (Q_i itself for every pi)


def decomposable_game(seed: int, n_states: int = 3, n_actions=(2, 2), gamma: float = 0.9) -> DecomposableGame:
    """A seeded game with action-independent transitions and reward sum_i k_i(s) q_i(s, a^i) + b0(s).

    Then Q^pi(s, a) = sum_i k_i(s) q_i(s, a^i) + b0(s) + gamma sum_s' P(s'|s) V^pi(s'):
    linearly decomposed with Q_i = q_i and b(s) = b0(s) + gamma P V^pi (s).
    """
    rng = np.random.default_rng(seed)
    n_actions = tuple(int(x) for x in n_actions)
    N, A = len(n_actions), int(np.prod(n_actions))
    k = rng.uniform(0.2, 2.0, size=(n_states, N))
    q_own = tuple(rng.uniform(-1.0, 1.0, size=(n_states, kk)) for kk in n_actions)
    b0 = rng.uniform(-1.0, 1.0, size=n_states)
    table = np.array(np.unravel_index(np.arange(A), n_actions)).T  # [A, N], agent 0 slowest
    r = b0[:, None] + sum(k[:, [i]] * q_own[i][:, table[:, i]] for i in range(N))
    p_state = rng.dirichlet(np.ones(n_states), size=n_states)  # P(s'|s), the same for every a
    p = np.repeat(p_state[:, None, :], A, axis=1)
    return DecomposableGame(oracle.Game(r, p, n_actions, gamma), k, q_own)
