"""The exact tabular oracle: P5, Bellman consistency, linear algebra vs enumeration, input errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpae_ref import oracle
from gpae_ref import strategies as gst
from gpae_ref.reference import gpae

TOL = 1e-9


def _own_average(game, pi, table, i):
    """[S, A]: sum_{a^i} pi^i(a^i|s) table(s, a^i, a^-i), lifted (independent of oracle internals)."""
    S = game.n_states
    out = np.zeros_like(table)
    for s in range(S):
        for a in range(game.n_joint):
            acts = list(game.actions_of(a))
            total = 0.0
            for k in range(game.n_actions[i]):
                acts[i] = k
                total += pi[i][s, k] * table[s, game.joint_index(acts)]
            out[s, a] = total
    return out


@given(gst.games_with_policies(off_policy=False))
def test_p5_own_action_average_of_per_agent_advantage_is_zero(gp):
    game, pi, _ = gp
    adv = oracle.per_agent_advantages(game, pi)
    for i in range(game.n_agents):
        np.testing.assert_allclose(_own_average(game, pi, adv[:, :, i], i), 0.0, atol=TOL)


@given(gst.games_with_policies(off_policy=False))
def test_p5_marginal_identity(gp):
    """E_{a^-i ~ pi^-i} A^{pi,i}(s, a) = Q^{pi,i}(s, a^i) - V^pi(s)."""
    game, pi, _ = gp
    adv = oracle.per_agent_advantages(game, pi)
    jp = oracle.joint_policy(game, pi)
    marg = oracle.marginal_advantages(game, pi)
    for i in range(game.n_agents):
        own = oracle.agent_probabilities(game, pi)[:, :, i]
        for s in range(game.n_states):
            for k in range(game.n_actions[i]):
                sel = game.action_table[:, i] == k
                # pi^-i(a^-i|s) = pi(a|s) / pi^i(a^i|s)
                w = jp[s, sel] / own[s, sel]
                assert abs((w * adv[s, sel, i]).sum() - marg[i][s, k]) < TOL


@given(gst.games_with_policies(off_policy=False))
def test_bellman_consistency(gp):
    game, pi, _ = gp
    V = oracle.state_values(game, pi)
    Q = oracle.q_values(game, pi)
    jp = oracle.joint_policy(game, pi)
    np.testing.assert_allclose((jp * Q).sum(-1), V, atol=TOL)
    np.testing.assert_allclose(Q, game.rewards + game.gamma * game.transitions @ (jp * Q).sum(-1), atol=TOL)
    EQ = oracle.per_agent_values(game, pi)
    for i in range(game.n_agents):
        np.testing.assert_allclose(EQ[:, :, i], _own_average(game, pi, Q, i), atol=TOL)
        # a function of (s, a^-i) only
        oracle.reduce_others(game, EQ[:, :, i], i)


@given(gst.games_with_policies(off_policy=False, gamma=0.5))
def test_finite_horizon_values_converge_to_discounted(gp):
    game, pi, _ = gp
    q = oracle.finite_horizon_q(game, pi, 80)
    np.testing.assert_allclose(q[0], oracle.q_values(game, pi), atol=1e-20 + 2 * 0.5**80 * 100)
    eq = oracle.finite_horizon_per_agent_values(game, pi, 80)
    np.testing.assert_allclose(eq[0], oracle.per_agent_values(game, pi), atol=1e-12)
    assert np.all(eq[-1] == 0)


small_games = gst.games_with_policies(off_policy=True, max_states=2, max_agents=3, max_actions=2, max_joint=4)


@given(small_games, gst.lams, gst.corrections, gst.etas, st.integers(1, 3), st.booleans(), st.data())
def test_linear_algebra_matches_enumeration(gp, lam, correction, eta, horizon, final_done, data):
    """sum_{k<T} (gamma lam M_c)^k d equals the probability-weighted average over all trajectories."""
    game, pi, mu = gp
    E = data.draw(gst.value_tables(game, horizon))
    la = oracle.expected_advantage(game, pi, mu, E, lam=lam, correction=correction, eta=eta, horizon=horizon,
                                   final_done=final_done)
    en, vt = oracle.estimator_expectation(gpae, game, pi, mu, E, horizon, lam=lam, correction=correction,
                                          eta=eta, final_done=final_done)
    np.testing.assert_allclose(en, la, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(vt, oracle.expected_value_target(game, pi, mu, E[0], la), atol=TOL, rtol=TOL)


def test_enumeration_weights_are_distributions():
    game = oracle.random_game(3, 2, (2, 2), 0.9, exit_probability=0.3)
    pi, mu = oracle.random_policy(4, game), oracle.random_policy(5, game)
    en = oracle.enumerate_trajectories(game, pi, mu, oracle.per_agent_values(game, pi), 3)
    sums = np.bincount(en.start, weights=en.weight)
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    assert en.dones.any()  # exits appear as dones
    assert en.rewards.shape == en.dones.shape == (3, en.weight.size)
    assert en.values.shape == (4, en.weight.size, 2)


def test_infinite_horizon_is_the_limit_of_truncation():
    game = oracle.random_game(7, 2, (2, 2), 0.8)
    pi, mu = oracle.random_policy(8, game), oracle.random_policy(9, game)
    E = oracle.per_agent_values(game, mu)
    inf = oracle.expected_advantage(game, pi, mu, E, lam=0.9, correction="dt")
    fin = oracle.expected_advantage(game, pi, mu, E, lam=0.9, correction="dt", horizon=300)
    np.testing.assert_allclose(fin, inf, atol=1e-12)


def test_operator_affine_map_agrees_with_its_definition():
    """T^i E = E + sum_{a^i} min(pi^i, mu^i) G(s, a^i, a^-i), G from expected_advantage."""
    game = oracle.random_game(11, 2, (2, 3), 0.9)
    pi, mu = oracle.random_policy(12, game), oracle.random_policy(13, game)
    rng = np.random.default_rng(0)
    for i in range(2):
        op = oracle.operator(game, pi, mu, i, lam=0.7, correction="dt")
        table = rng.uniform(-1, 1, size=(game.n_states, oracle.n_others(game, i)))
        lifted = np.stack([oracle.lift(game, table, i)] * 2, axis=-1)
        G = oracle.expected_advantage(game, pi, mu, lifted, lam=0.7, correction="dt")[:, :, i]
        w = np.minimum(pi[i], mu[i])[:, game.action_table[:, i]]
        want = table.copy()
        np.add.at(want.T, oracle.others_index(game, i), (w * G).T)
        np.testing.assert_allclose(op.apply(table), want, atol=TOL)


def test_joint_index_round_trip():
    game = oracle.random_game(0, 1, (2, 3, 2), 0.5)
    for a in range(game.n_joint):
        assert game.joint_index(game.actions_of(a)) == a
    assert game.actions_of(game.joint_index((1, 2, 0))) == (1, 2, 0)


def test_bad_inputs_name_the_argument():
    game = oracle.random_game(0, 2, (2, 2), 0.9)
    pi = oracle.random_policy(1, game)
    bad = (np.array([[0.5, 0.6], [0.5, 0.5]]), pi[1])
    with pytest.raises(ValueError, match=r"pi\[0\] row 0 must sum to 1"):
        oracle.q_values(game, bad)
    mu = (np.array([[1.0, 0.0], [0.5, 0.5]]), pi[1])
    with pytest.raises(ValueError, match=r"mu\[0\] is 0"):
        oracle.expected_advantage(game, pi, mu, np.zeros((2, 4)), lam=0.5)
    with pytest.raises(ValueError, match="pi must have one table per agent"):
        oracle.state_values(game, pi[:1])
    with pytest.raises(ValueError, match="transitions"):
        oracle.Game(np.zeros((2, 4)), np.ones((2, 4, 2)), (2, 2), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        oracle.Game(np.zeros((2, 4)), np.full((2, 4, 2), 0.5), (2, 2), 1.0)
    with pytest.raises(ValueError, match="rewards"):
        oracle.Game(np.zeros((2, 3)), np.full((2, 4, 2), 0.5), (2, 2), 0.9)
    with pytest.raises(ValueError, match="values"):
        oracle.expected_advantage(game, pi, pi, np.zeros((3, 4)), lam=0.5)
    with pytest.raises(ValueError, match="correction"):
        oracle.trace_table(game, pi, pi, "bogus")
    with pytest.raises(ValueError, match="horizon"):
        oracle.enumerate_trajectories(game, pi, pi, np.zeros((2, 4)), 0)
    with pytest.raises(ValueError, match="max_columns"):
        oracle.enumerate_trajectories(game, pi, pi, np.zeros((2, 4)), 9)
    with pytest.raises(ValueError, match="i must be an agent index"):
        oracle.operator(game, pi, pi, 5, lam=0.5)
    with pytest.raises(ValueError, match="constant along agent 0"):
        oracle.reduce_others(game, np.arange(8.0).reshape(2, 4), 0)


def test_random_game_and_policy_are_seeded():
    a, b = oracle.random_game(5, 2, (2, 3), 0.9), oracle.random_game(5, 2, (2, 3), 0.9)
    assert np.array_equal(a.rewards, b.rewards) and np.array_equal(a.transitions, b.transitions)
    p, q = oracle.random_policy(6, a, 0.1), oracle.random_policy(6, a, 0.1)
    assert all(np.array_equal(x, y) for x, y in zip(p, q))
    assert all(np.all(x >= 0.1 - 1e-15) for x in p)
