"""DOP (spec section 9): exact tests of the NumPy references on the oracle's games,
the JAX versions against them, and the learner on a tiny budget.

Expectations are exact: every trajectory of a small game is enumerated
(``gpae_ref.oracle.enumerate_trajectories``) and weighted by its probability.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpae_ref import dop, oracle

TOL = 1e-10


def _game(seed, exit_probability=0.2, n_actions=(2, 2)):
    game = oracle.random_game(seed, n_states=2, n_actions=n_actions, gamma=0.9, exit_probability=exit_probability)
    pi = oracle.random_policy(seed + 1, game, min_prob=0.1)
    mu = oracle.random_policy(seed + 2, game, min_prob=0.1)
    return game, pi, mu


def _tb_inputs(game, pi, mu, q, horizon):
    """Enumerated trajectories under mu and the TB inputs along them (critic table q)."""
    zeros = np.zeros((game.n_states, game.n_joint))
    enum = oracle.enumerate_trajectories(game, pi, mu, zeros, horizon)
    s, a = enum.states, enum.actions
    jp = oracle.joint_policy(game, pi)
    v = (jp * q).sum(-1)
    return enum, dict(rewards=enum.rewards, q_taken=q[s[:-1], a[:-1]], values=v[s], dones=enum.dones,
                      pi_taken=jp[s[:-1], a[:-1]])


# ----------------------------------------------------------------------------- TB(lambda)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("horizon,steps", [(1, 5), (3, 2), (3, 5)])
def test_tree_backup_expectation_matches_linear_algebra(seed, horizon, steps):
    """Any critic table: the sample targets' exact expectation is q + sum_k (gamma lam M_pi)^k d."""
    game, pi, mu = _game(seed)
    q = np.random.default_rng(seed).normal(size=(game.n_states, game.n_joint))
    enum, inputs = _tb_inputs(game, pi, mu, q, horizon)
    y = dop.tree_backup_targets(**inputs, gamma=game.gamma, lam=0.93, steps=steps)
    got = oracle.weighted_by_start(game, enum, y[0])
    want = dop.tree_backup_expectation(game, pi, mu, q, lam=0.93, steps=min(steps, horizon))
    np.testing.assert_allclose(got, want, atol=TOL)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("lam", [0.0, 0.93, 1.0])
def test_tree_backup_unbiased_off_policy(seed, lam):
    """Critic = Q^pi, data from mu != pi: E_mu[y_t | s_t, a_t] = Q^pi exactly (no importance ratio)."""
    game, pi, mu = _game(seed)
    q_pi = oracle.q_values(game, pi)
    enum, inputs = _tb_inputs(game, pi, mu, q_pi, horizon=3)
    y = dop.tree_backup_targets(**inputs, gamma=game.gamma, lam=lam, steps=5)
    np.testing.assert_allclose(oracle.weighted_by_start(game, enum, y[0]), q_pi, atol=TOL)


def test_tree_backup_operator_contracts_to_q_pi():
    """The expected update's fixed point is Q^pi for an off-policy mu, and it contracts."""
    game, pi, mu = _game(5, exit_probability=0.0)
    op = dop.tree_backup_operator(game, pi, mu, lam=0.93, steps=5)
    q_pi = oracle.q_values(game, pi)
    np.testing.assert_allclose(op.fixed_point().reshape(q_pi.shape), q_pi, atol=1e-9)
    assert op.modulus < 1.0
    q = np.zeros(q_pi.size)
    q = op.matrix @ q + op.vector
    np.testing.assert_allclose(q.reshape(q_pi.shape),
                               dop.tree_backup_expectation(game, pi, mu, np.zeros_like(q_pi), lam=0.93, steps=5),
                               atol=TOL)
    for _ in range(400):
        q = op.matrix @ q + op.vector
    np.testing.assert_allclose(q.reshape(q_pi.shape), q_pi, atol=1e-8)


def test_td_lambda_is_tree_backup_with_unit_traces():
    rng = np.random.default_rng(0)
    T, B = 7, 3
    r, q = rng.normal(size=(T, B)), rng.normal(size=(T + 1, B))
    d = (rng.uniform(size=(T, B)) < 0.2).astype(float)
    want = dop.tree_backup_targets(r, q[:-1], q, d, np.ones((T, B)), gamma=0.9, lam=0.8, steps=T)
    np.testing.assert_allclose(dop.td_lambda_targets(r, q, d, gamma=0.9, lam=0.8), want, atol=1e-12)
    # one step of TB is the expected-SARSA target whatever the traces
    v = rng.normal(size=(T + 1, B))
    one = dop.tree_backup_targets(r, q[:-1], v, d, rng.uniform(size=(T, B)), gamma=0.9, lam=0.8, steps=1)
    np.testing.assert_allclose(one, r + 0.9 * (1 - d) * v[1:], atol=1e-12)


def test_td_lambda_unbiased_on_policy_only():
    """E[G_0] = Q^pi on-policy; off-policy (data from mu) it is Q^mu, not Q^pi: why DOP uses TB on replay."""
    game, pi, mu = _game(2)

    def expectation(behaviour, q):
        zeros = np.zeros((game.n_states, game.n_joint))
        enum = oracle.enumerate_trajectories(game, pi, behaviour, zeros, 3)
        g = dop.td_lambda_targets(enum.rewards, q[enum.states, enum.actions], enum.dones, gamma=game.gamma, lam=0.8)
        return oracle.weighted_by_start(game, enum, g[0])

    q_pi, q_mu = oracle.q_values(game, pi), oracle.q_values(game, mu)
    np.testing.assert_allclose(expectation(pi, q_pi), q_pi, atol=TOL)
    np.testing.assert_allclose(expectation(mu, q_mu), q_mu, atol=TOL)
    assert np.abs(expectation(mu, q_pi) - q_pi).max() > 1e-2


def test_done_cuts_trace_and_bootstrap():
    """A done at step 0 leaves y_0 = r_0 + ... - nothing of later steps (values after it are poison)."""
    r = np.array([[1.0], [5.0], [7.0]])
    q = np.array([[0.5], [2.0], [3.0]])
    v = np.array([[0.0], [1e6], [1e6], [1e6]])
    d = np.array([[1.0], [0.0], [0.0]])
    y = dop.tree_backup_targets(r, q, v, d, np.ones((3, 1)), gamma=0.9, lam=1.0, steps=3)
    assert y[0, 0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- DOP's advantage


def _table_inputs(game, pi, q_own, k):
    """The tabular critic as a [S, A] batch of the sample function's inputs (equal action counts)."""
    S, A, N = game.n_states, game.n_joint, game.n_agents
    q_values = np.stack([np.broadcast_to(q_own[i][:, None, :], (S, A, q_own[i].shape[1])) for i in range(N)], axis=2)
    probs = np.stack([np.broadcast_to(pi[i][:, None, :], (S, A, pi[i].shape[1])) for i in range(N)], axis=2)
    actions = np.broadcast_to(game.action_table[None], (S, A, N))
    kk = np.broadcast_to(k[:, None, :], (S, A, N))
    return q_values, actions, probs, kk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dop_advantage_exact_on_decomposable_game(seed):
    """Q^pi = sum_i k_i Q_i + b exactly: DOP's advantage equals the true per-agent advantage."""
    dg = dop.decomposable_game(seed, n_states=3, n_actions=(3, 3, 3))
    game = dg.game
    pi = oracle.random_policy(seed + 10, game, min_prob=0.05)
    q_pi = oracle.q_values(game, pi)
    # the decomposition holds for this pi, with b(s) = Q^pi(s, a) - sum_i k_i Q_i(s, a^i)
    linear = sum(dg.k[:, [i]] * dg.q_own[i][:, game.action_table[:, i]] for i in range(game.n_agents))
    np.testing.assert_allclose(q_pi - linear, np.broadcast_to((q_pi - linear)[:, :1], q_pi.shape), atol=1e-12)
    q_values, actions, probs, k = _table_inputs(game, pi, dg.q_own, dg.k)
    adv = dop.dop_advantages(q_values, actions, probs, k)
    np.testing.assert_allclose(adv, oracle.per_agent_advantages(game, pi), atol=1e-12)
    # a decomposed critic fitted on any data is exact here, so its advantage is too
    mu_weights = oracle.joint_policy(game, oracle.random_policy(seed + 20, game))
    fitted = dop.fit_additive(game, q_pi, mu_weights)
    np.testing.assert_allclose(fitted, q_pi, atol=1e-10)
    np.testing.assert_allclose(dop.dop_advantage_table(game, pi, fitted), adv, atol=1e-10)


def _bias(seed):
    game = oracle.random_game(seed, n_states=3, n_actions=(3, 3), gamma=0.9)
    pi = oracle.random_policy(seed + 1, game, min_prob=0.05)
    mu = oracle.random_policy(seed + 2, game, min_prob=0.05)
    q_pi = oracle.q_values(game, pi)
    true_adv = oracle.per_agent_advantages(game, pi)
    marginal = np.stack([m[:, game.action_table[:, i]] for i, m in enumerate(oracle.marginal_advantages(game, pi))],
                        axis=-1)
    on = dop.dop_advantage_table(game, pi, dop.fit_additive(game, q_pi, oracle.joint_policy(game, pi)))
    off = dop.dop_advantage_table(game, pi, dop.fit_additive(game, q_pi, oracle.joint_policy(game, mu)))
    return game, pi, true_adv, marginal, on, off


def test_dop_advantage_bias_on_nondecomposable_game():
    """Q^pi with interactions. The decomposed critic fitted on pi's data (the exact least-squares
    fit of Q^pi) gives the marginal advantage exactly, so the expected policy gradient is unbiased;
    but per sample it misses A^{pi,i}'s dependence on a^-i, and fitted on mu's data (replay)
    its marginal is biased too. Numbers: docs/theory.md (DOP)."""
    game, pi, true_adv, marginal, on, off = _bias(0)
    np.testing.assert_allclose(dop.marginal_of(game, pi, on), marginal, atol=1e-10)
    np.testing.assert_allclose(dop.marginal_of(game, pi, true_adv), marginal, atol=1e-10)
    w = oracle.joint_policy(game, pi)[:, :, None]  # RMS under pi's state-uniform action frequencies

    def rms(x):
        return math.sqrt((w * x**2).sum() / (w.sum() * x.shape[-1]))

    assert rms(on - true_adv) / rms(true_adv) == pytest.approx(0.8537, abs=1e-4)
    assert rms(dop.marginal_of(game, pi, off) - marginal) / rms(marginal) == pytest.approx(0.9870, abs=1e-4)


def test_fit_additive_under_product_weights_is_anova():
    game, pi, _ = _game(4, n_actions=(2, 3))
    q = np.random.default_rng(4).normal(size=(game.n_states, game.n_joint))
    fitted = dop.fit_additive(game, q, oracle.joint_policy(game, pi))
    jp = oracle.joint_policy(game, pi)
    c = (jp * q).sum(-1, keepdims=True)
    anova = c + sum(dop.marginal_of(game, pi, np.repeat(q[:, :, None], 2, -1))[:, :, i] - c for i in range(2))
    np.testing.assert_allclose(fitted, anova, atol=1e-10)


def test_mixed_q_value_is_expectation_and_loss():
    rng = np.random.default_rng(1)
    T, B, N, A = 3, 2, 3, 4
    q = rng.normal(size=(T, B, N, A))
    p = rng.dirichlet(np.ones(A), size=(T, B, N))
    k, b = rng.uniform(size=(T, B, N)), rng.normal(size=(T, B))
    acts = np.stack(np.meshgrid(*[np.arange(A)] * N, indexing="ij"), -1).reshape(-1, N)
    expect = np.zeros((T, B))
    for a in acts:
        prob = np.prod(p[:, :, np.arange(N), a], axis=-1)
        expect += prob * dop.mixed_q(q, k, b, actions=np.broadcast_to(a, (T, B, N)))
    np.testing.assert_allclose(dop.mixed_q(q, k, b, probs=p), expect, atol=1e-12)
    assert dop.mixed_critic_loss(np.ones(3), np.zeros(3), np.zeros(2), np.zeros(2), kappa=1.0) == 1.0
    assert dop.mixed_critic_loss(np.ones(3), np.zeros(3), np.zeros(2), np.zeros(2), kappa=0.25) == 0.25


@pytest.mark.parametrize("call,match", [
    (lambda: dop.tree_backup_targets(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)),
                                     np.ones((2, 1)), gamma=0.9, lam=0.9, steps=1), "values"),
    (lambda: dop.tree_backup_targets(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((3, 1)), np.zeros((2, 1)),
                                     np.ones((2, 1)), gamma=0.9, lam=1.5, steps=1), "lam"),
    (lambda: dop.tree_backup_targets(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((3, 1)), np.zeros((2, 1)),
                                     np.ones((2, 1)), gamma=0.9, lam=0.5, steps=0), "steps"),
    (lambda: dop.tree_backup_targets(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((3, 1)), np.full((2, 1), 0.5),
                                     np.ones((2, 1)), gamma=0.9, lam=0.5, steps=1), "dones"),
    (lambda: dop.tree_backup_targets(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((3, 1)), np.zeros((2, 1)),
                                     np.full((2, 1), 2.0), gamma=0.9, lam=0.5, steps=1), "pi_taken"),
    (lambda: dop.td_lambda_targets(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), gamma=0.9, lam=0.5),
     "q_taken"),
    (lambda: dop.dop_advantages(np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2), int), np.full((1, 1, 2, 3), 1 / 3),
                                -np.ones((1, 1, 2))), "k"),
    (lambda: dop.dop_advantages(np.zeros((1, 1, 2, 3)), np.full((1, 1, 2), 3), np.full((1, 1, 2, 3), 1 / 3),
                                np.ones((1, 1, 2))), "actions"),
    (lambda: dop.mixed_critic_loss(np.ones(1), np.ones(1), np.ones(1), np.ones(1), kappa=-0.1), "kappa"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- JAX versions


def _random_sequences(seed, T=9, B=4, N=3, A=5):
    rng = np.random.default_rng(seed)
    return dict(
        rewards=rng.normal(size=(T, B)), dones=(rng.uniform(size=(T, B)) < 0.2).astype(float),
        q=rng.normal(size=(T + 1, B)), v=rng.normal(size=(T + 1, B)), pi=rng.uniform(0.05, 1, size=(T, B)),
        q_values=rng.normal(size=(T, B, N, A)), probs=rng.dirichlet(np.ones(A), size=(T, B, N)),
        actions=rng.integers(0, A, size=(T, B, N)), k=rng.uniform(0, 2, size=(T, B, N)), b=rng.normal(size=(T, B)),
    )


@pytest.mark.parametrize("steps", [1, 2, 5, 20])
def test_jax_estimators_match_numpy(steps):
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    import jax.numpy as jnp

    from gpae_ref.learner import dop as jdop

    x = _random_sequences(steps)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    got = jdop.tree_backup_jax(f32(x["rewards"]), f32(x["q"][:-1]), f32(x["v"]), f32(x["dones"]), f32(x["pi"]),
                               gamma=0.99, lam=0.93, steps=steps)
    want = dop.tree_backup_targets(x["rewards"], x["q"][:-1], x["v"], x["dones"], x["pi"], gamma=0.99, lam=0.93,
                                   steps=steps)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    got = jdop.td_lambda_jax(f32(x["rewards"]), f32(x["q"]), f32(x["dones"]), gamma=0.99, lam=0.8)
    want = dop.td_lambda_targets(x["rewards"], x["q"], x["dones"], gamma=0.99, lam=0.8)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    got = jdop.dop_advantages_jax(f32(x["q_values"]), jnp.asarray(x["actions"]), f32(x["probs"]), f32(x["k"]))
    want = dop.dop_advantages(x["q_values"], x["actions"], x["probs"], x["k"])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    for kw_np, kw_j in (({"actions": x["actions"]}, {"actions": jnp.asarray(x["actions"])}),
                        ({"probs": x["probs"]}, {"probs": f32(x["probs"])})):
        got = jdop.mixed_q_jax(f32(x["q_values"]), f32(x["k"]), f32(x["b"]), **kw_j)
        want = dop.mixed_q(x["q_values"], x["k"], x["b"], **kw_np)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_mixer_weights_are_non_negative():
    pytest.importorskip("flax")
    import jax

    from gpae_ref.learner.dop import DOPMixer

    net = DOPMixer(num_agents=3)
    s = jax.random.normal(jax.random.PRNGKey(0), (4, 7, 10))
    params = net.init(jax.random.PRNGKey(1), s)
    k, b = net.apply(params, s)
    assert k.shape == (4, 7, 3) and b.shape == (4, 7)
    assert float(k.min()) >= 0.0
    np.testing.assert_allclose(np.asarray(k.sum(-1)), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- the learner, tiny


def _tiny_config(**kw):
    from gpae_ref.learner.config import LearnerConfig

    base = dict(scenario="3m", advantage="dop", num_envs=4, num_steps=8, update_epochs=1, total_steps=128,
                eval_envs=2, dop_buffer_rollouts=2, dop_off_batch=4)
    return LearnerConfig(**{**base, **kw})


@pytest.mark.parametrize("field,value", [
    ("dop_tb_lambda", 1.5), ("dop_td_lambda", -0.1), ("dop_kappa", 2.0), ("dop_tb_steps", 0),
    ("dop_buffer_rollouts", 0), ("dop_off_batch", 0), ("dop_target_every", 0), ("dop_critic_lr", 0.0),
    ("reuse", 2),
])
def test_config_rejects_bad_dop_settings(field, value):
    with pytest.raises(ValueError, match=field):
        _tiny_config(**{field: value})


def test_config_rejects_buffer_smaller_than_a_batch():
    # one rollout of 4 envs holds 4 sequences: a batch of 5 cannot be drawn
    with pytest.raises(ValueError, match="dop_buffer_rollouts"):
        _tiny_config(dop_buffer_rollouts=1, dop_off_batch=5)


# One trainer per config for the module: the CLI test below reuses the compiled 2-update chunk.
_TRAINERS: dict = {}


@pytest.mark.smax
def test_dop_learner_updates_fill_the_buffer_and_stay_finite():
    """Three updates with a 2-rollout buffer: the ring wraps, every loss is finite, the
    newest slot holds the latest rollout's data, and the buffer is as large as replay_bytes says."""
    pytest.importorskip("jaxmarl")
    import jax

    from gpae_ref.learner.core import make_train
    from gpae_ref.learner.dop import DOPState, replay_bytes

    cfg = _tiny_config()
    tr = _TRAINERS.setdefault(cfg, make_train(cfg))
    state = tr.init(jax.random.PRNGKey(0))
    assert isinstance(state, DOPState) and int(state.replay.filled) == 0
    state, m = tr.run_updates(state, 2)
    assert int(state.replay.filled) == 2 and int(state.replay.cursor) == 0
    state, m = tr.run_updates(state, 2)
    assert int(state.replay.filled) == 2 and int(state.replay.cursor) == 0
    assert [int(u) for u in m.update] == [3, 4] and [int(s) for s in m.env_steps] == [96, 128]
    for name in ("actor_loss", "value_loss", "entropy", "critic_grad_norm", "trace_mean"):
        assert np.all(np.isfinite(np.asarray(getattr(m, name)))), name
    assert 0.0 < float(m.trace_mean[-1]) <= 1.0  # the tree-backup trace pi(a_t) of the current policy
    newest = np.asarray(state.replay.done[1])  # slot 1 was last written by update 4
    assert newest.shape == (8, 4) and set(np.unique(newest)) <= {0.0, 1.0}
    assert np.any(np.asarray(state.replay.obs[0]) != 0) and np.any(np.asarray(state.replay.obs[1]) != 0)
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state.replay))
    assert nbytes == replay_bytes(cfg, tr.spec)
    ev = tr.evaluate(state)
    assert 0.0 <= float(ev.win_rate) <= 1.0 and float(ev.episodes) <= 2


@pytest.mark.smax
def test_dop_cli_stops_and_resumes(tmp_path):
    """``--advantage dop`` through the CLI: 2 updates, a checkpoint of the DOP state (replay buffer
    included), ``--resume`` to the end: rows 1..4 once each, finite losses."""
    pytest.importorskip("jaxmarl")
    import csv

    from gpae_ref.train import main

    args = ["--scenario", "3m", "--advantage", "dop", "--num-envs", "4", "--num-steps", "8", "--epochs", "1",
            "--total-steps", "128", "--eval-envs", "2", "--eval-every", "0", "--checkpoint-every", "2", "--chunk", "2", "--no-progress",
            "--dop-buffer-rollouts", "2", "--dop-off-batch", "4", "--runs-dir", str(tmp_path), "--name", "d"]
    assert main(args + ["--max-updates", "2"], trainers=_TRAINERS) == 0
    assert main(["--resume", str(tmp_path / "d"), "--no-progress"], trainers=_TRAINERS) == 0
    with (tmp_path / "d" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["env_steps"]) for r in rows] == [32, 64, 96, 128]
    assert all(math.isfinite(float(r[c])) for r in rows for c in ("actor_loss", "value_loss", "entropy"))
