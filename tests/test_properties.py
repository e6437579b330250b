"""Properties P1-P4, P6, P7 of the spec (section 7), exact up to float64 rounding.

P1/P2 are checked on the reference estimator ``gpae_ref.reference.gpae`` by
enumerating every trajectory (its exact expectation) and by linear algebra;
P3/P4 on the exact operator T^i; P6/P7 on the reference with Hypothesis inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpae_ref import oracle
from gpae_ref import strategies as gst
from gpae_ref.reference import gpae

TOL = 1e-9
small = dict(max_states=2, max_agents=3, max_actions=2, max_joint=4)


# --- P1: on-policy unbiasedness ------------------------------------------------------------


@given(gst.games_with_policies(off_policy=False, **small), gst.lams, gst.corrections,
       st.sampled_from([0.5, 0.9, 1.0, 1.02, 2.0]), st.integers(1, 3))
def test_p1_on_policy_unbiased_by_enumeration(gp, lam, correction, eta, horizon):
    """mu = pi, E = EQ^{pi,i}: E[A^i_0 | s, a] = A^{pi,i}(s, a), any lam, correction, eta (even < 1), any T."""
    game, pi, _ = gp
    EQ = oracle.per_agent_values(game, pi)
    want = oracle.per_agent_advantages(game, pi)
    got, vt = oracle.estimator_expectation(gpae, game, pi, pi, EQ, horizon, lam=lam, correction=correction, eta=eta)
    np.testing.assert_allclose(got, want, atol=TOL)
    np.testing.assert_allclose(vt, EQ + want, atol=TOL)


@given(gst.games_with_policies(off_policy=False), gst.lams, gst.corrections, st.sampled_from([0.5, 1.02]))
def test_p1_on_policy_unbiased_infinite_horizon(gp, lam, correction, eta):
    game, pi, _ = gp
    G = oracle.expected_advantage(game, pi, pi, oracle.per_agent_values(game, pi), lam=lam,
                                  correction=correction, eta=eta)
    np.testing.assert_allclose(G, oracle.per_agent_advantages(game, pi), atol=TOL)


# --- P2: lam = 1, any values ---------------------------------------------------------------


@given(gst.games_with_policies(off_policy=False, **small), gst.corrections, st.integers(1, 3), st.data())
def test_p2_lam1_any_values_finite_horizon(gp, correction, horizon, data):
    """Horizon-T game, time-indexed random E: E[A^i_0 | s, a] = Q_0(s, a) - E_0(s, a^-i)."""
    game, pi, _ = gp
    E = data.draw(gst.value_tables(game, horizon))
    Q0 = oracle.finite_horizon_q(game, pi, horizon)[0]
    got, _ = oracle.estimator_expectation(gpae, game, pi, pi, E, horizon, lam=1.0, correction=correction,
                                          eta=1.02, final_done=True)
    np.testing.assert_allclose(got, Q0[:, :, None] - E[0], atol=TOL)


@given(gst.games_with_policies(off_policy=False), gst.corrections, st.data())
def test_p2_lam1_any_values_discounted(gp, correction, data):
    game, pi, _ = gp
    E = data.draw(gst.value_tables(game))
    G = oracle.expected_advantage(game, pi, pi, E, lam=1.0, correction=correction, eta=1.02)
    np.testing.assert_allclose(G, oracle.q_values(game, pi)[:, :, None] - E, atol=TOL)


def test_p2_needs_eta_at_least_1_for_dt():
    """Finding: on-policy dt with eta < 1 has c = eta, so lam = 1 acts as lam = eta: P2 fails (see theory.md)."""
    game = oracle.random_game(0, 1, (2,), 0.9)
    pi = oracle.random_policy(1, game)
    E = np.zeros((1, 2, 1))
    G = oracle.expected_advantage(game, pi, pi, E, lam=1.0, correction="dt", eta=0.9)
    assert np.abs(G - oracle.q_values(game, pi)[:, :, None]).max() > 0.1
    G_eff = oracle.expected_advantage(game, pi, pi, E, lam=0.9, correction="none")
    np.testing.assert_allclose(G, G_eff, atol=TOL)


# --- P3: on-policy contraction -------------------------------------------------------------


@given(gst.games_with_policies(off_policy=False, exit_probability=0.0), gst.lams, gst.corrections, st.data())
def test_p3_on_policy_modulus_and_fixed_point(gp, lam, correction, data):
    game, pi, _ = gp
    i = data.draw(st.integers(0, game.n_agents - 1))
    op = oracle.operator(game, pi, pi, i, lam=lam, correction=correction, eta=1.02)
    want = oracle.on_policy_modulus(game.gamma, lam)
    assert abs(op.modulus - want) < TOL
    assert want <= game.gamma + TOL
    EQ = oracle.reduce_others(game, oracle.per_agent_values(game, pi)[:, :, i], i)
    np.testing.assert_allclose(op.apply(EQ), EQ, atol=TOL)
    if want < 1 - 1e-6:
        np.testing.assert_allclose(op.fixed_point(), EQ, atol=1e-8)


@given(gst.games_with_policies(off_policy=False, exit_probability=0.2), gst.lams, st.sampled_from([0.5, 1.02]))
def test_p3_with_episode_ends_modulus_is_at_most_the_formula(gp, lam, eta):
    """With termination (sub-stochastic P) the modulus is <= the formula; dt with eta < 1 uses lam eta."""
    game, pi, _ = gp
    op = oracle.operator(game, pi, pi, 0, lam=lam, correction="dt", eta=eta)
    assert op.modulus <= oracle.on_policy_modulus(game.gamma, lam * min(eta, 1.0)) + TOL
    EQ = oracle.reduce_others(game, oracle.per_agent_values(game, pi)[:, :, 0], 0)
    np.testing.assert_allclose(op.fixed_point(), EQ, atol=1e-8)


# --- P4: off-policy contraction and bias ---------------------------------------------------


@given(gst.games_with_policies(off_policy=True), gst.lams, st.sampled_from(["none", "it", "st", "dt"]),
       st.sampled_from([0.5, 1.0, 1.02, 2.0]), st.data())
def test_p4_off_policy_modulus_bound(gp, lam, correction, eta, data):
    game, pi, mu = gp
    i = data.draw(st.integers(0, game.n_agents - 1))
    op = oracle.operator(game, pi, mu, i, lam=lam, correction=correction, eta=eta)
    assert op.modulus <= oracle.off_policy_modulus_bound(game, pi, mu, i) + TOL
    assert op.modulus < 1.0


# The documented example (docs/theory.md): the demo game, seed 0.
def _p4_example():
    game = oracle.random_game(0, 3, (2, 2, 2), 0.95)
    pi = oracle.random_policy(1, game, min_prob=0.05, concentration=0.5)
    mu = oracle.random_policy(2, game, min_prob=0.05, concentration=0.5)
    return game, pi, mu


@pytest.mark.parametrize("correction", ["none", "it", "st", "dt"])
def test_p4_off_policy_fixed_point_is_biased(correction):
    game, pi, mu = _p4_example()
    op = oracle.operator(game, pi, mu, 0, lam=0.95, correction=correction)
    EQ = oracle.reduce_others(game, oracle.per_agent_values(game, pi)[:, :, 0], 0)
    assert np.abs(op.fixed_point() - EQ).max() > 1.0


def test_p4_full_can_fail_to_contract():
    """`full` (untruncated joint ratio): sup-norm modulus 12.25 > 1 on the documented example."""
    game, pi, mu = _p4_example()
    op = oracle.operator(game, pi, mu, 0, lam=0.95, correction="full")
    assert op.modulus > 1.0
    assert op.modulus == pytest.approx(12.2506, abs=1e-4)


def test_p4_full_tiny_example():
    """Smallest documented case (docs/theory.md): S = 1, N = 2, K = (2, 2), gamma = 0.9, lam = 1,
    pi^j = (0.9, 0.1), mu^j = (0.1, 0.9). By hand: T^0 has linear part
    (1 - beta) I + beta gamma/(1 - gamma) 1 (mu^1 - pi^1)^T with beta = 0.2, i.e.
    [[-0.64, 1.44], [-1.44, 2.24]], sup-norm modulus 3.68 > 1 (both eigenvalues 0.8)."""
    game = oracle.Game(np.array([[1.0, 0.0, 0.0, 0.0]]), np.ones((1, 4, 1)), (2, 2), 0.9)
    pi = (np.array([[0.9, 0.1]]),) * 2
    mu = (np.array([[0.1, 0.9]]),) * 2
    op = oracle.operator(game, pi, mu, 0, lam=1.0, correction="full")
    np.testing.assert_allclose(op.matrix, [[-0.64, 1.44], [-1.44, 2.24]], atol=1e-12)
    assert op.modulus == pytest.approx(3.68, abs=1e-12)
    np.testing.assert_allclose(np.linalg.eigvals(op.matrix), [0.8, 0.8], atol=1e-6)
    # the truncated corrections on the same game obey P4
    for correction in ("none", "it", "st", "dt"):
        m = oracle.operator(game, pi, mu, 0, lam=1.0, correction=correction).modulus
        assert m <= oracle.off_policy_modulus_bound(game, pi, mu, 0) + TOL


# --- P6: reductions ------------------------------------------------------------------------


def _gae(r, E, d, c, gamma, lam):
    """Plain per-agent GAE with traces, written independently of the reference."""
    T = r.shape[0]
    A = np.zeros(E[:T].shape)
    for b in range(E.shape[1]):
        for i in range(E.shape[2]):
            acc = 0.0
            for t in reversed(range(T)):
                nd = 1.0 - d[t, b]
                delta = r[t, b] + gamma * nd * E[t + 1, b, i] - E[t, b, i]
                ct = c[t + 1, b, i] if t + 1 < T else 1.0
                acc = delta + gamma * lam * nd * ct * acc
                A[t, b, i] = acc
    return A


def _per_agent(x):
    E = np.asarray(x["values"])
    if E.ndim == 2:
        E = np.repeat(E[:, :, None], x["logp_target"].shape[2], axis=2)
    return E


@given(gst.estimator_inputs(), gst.gammas, gst.lams)
def test_p6_none_is_gae_on_per_agent_values(x, gamma, lam):
    A, v = gpae(**x, gamma=gamma, lam=lam, correction="none")
    E = _per_agent(x)
    want = _gae(x["rewards"], E, x["dones"], np.ones(x["logp_target"].shape), gamma, lam)
    np.testing.assert_allclose(A, want, atol=TOL)


@given(gst.estimator_inputs(), gst.gammas, gst.corrections, gst.etas)
def test_p6_lam0_is_td_error(x, gamma, correction, eta):
    A, _ = gpae(**x, gamma=gamma, lam=0.0, correction=correction, eta=eta)
    E = _per_agent(x)
    delta = x["rewards"][:, :, None] + gamma * (1 - x["dones"])[:, :, None] * E[1:] - E[:-1]
    np.testing.assert_allclose(A, delta, atol=TOL)


@given(gst.estimator_inputs(max_N=1, shared_values=True, mask=False), gst.gammas, gst.lams,
       gst.corrections, st.sampled_from([0.5, 1.0, 1.02]))
def test_p6_single_agent_is_gae_with_traces(x, gamma, lam, correction, eta):
    rho = np.exp(x["logp_target"] - x["logp_behaviour"])
    c = {"none": np.ones_like(rho), "it": np.minimum(1, rho), "st": np.minimum(1, rho),
         "dt": np.minimum(1, rho * min(eta, 1.0)), "full": rho}[correction]
    A, v = gpae(**x, gamma=gamma, lam=lam, correction=correction, eta=eta)
    V = x["values"][:, :, None]
    want = _gae(x["rewards"], V, x["dones"], c, gamma, lam)
    np.testing.assert_allclose(A, want, atol=TOL)
    np.testing.assert_allclose(v, V[:-1] + np.minimum(1, rho) * want, atol=TOL)


@given(gst.estimator_inputs(on_policy=True), gst.gammas, gst.lams, st.sampled_from([1.0, 1.02, 2.0]))
def test_p6_on_policy_every_correction_is_the_same(x, gamma, lam, eta):
    outs = [gpae(**x, gamma=gamma, lam=lam, correction=c, eta=eta) for c in gst.CORRECTIONS]
    for A, v in outs[1:]:
        np.testing.assert_allclose(A, outs[0][0], atol=TOL)
        np.testing.assert_allclose(v, outs[0][1], atol=TOL)


# --- P7: symmetries ------------------------------------------------------------------------


@given(gst.estimator_inputs(), gst.estimator_settings(), st.randoms(use_true_random=False))
def test_p7_permuting_agents(x, kw, rnd):
    N = x["logp_target"].shape[2]
    perm = list(range(N))
    rnd.shuffle(perm)
    xp = dict(x)
    for k in ("logp_target", "logp_behaviour", "mask"):
        if xp[k] is not None:
            xp[k] = xp[k][..., perm]
    if np.ndim(x["values"]) == 3:
        xp["values"] = x["values"][..., perm]
    A, v = gpae(**x, **kw)
    Ap, vp = gpae(**xp, **kw)
    np.testing.assert_allclose(Ap, A[..., perm], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(vp, v[..., perm], atol=TOL, rtol=TOL)


@given(gst.estimator_inputs(), gst.estimator_settings(), st.floats(0.01, 100.0))
def test_p7_scaling(x, kw, c):
    A, v = gpae(**x, **kw)
    As, vs = gpae(**dict(x, rewards=c * x["rewards"], values=c * x["values"]), **kw)
    scale = 1 + np.abs(c * A)
    np.testing.assert_allclose(As / scale, c * A / scale, atol=TOL)
    np.testing.assert_allclose(vs / (1 + np.abs(c * v)), c * v / (1 + np.abs(c * v)), atol=TOL)


@given(gst.estimator_inputs(max_T=8), gst.estimator_settings(), st.data())
def test_p7_split_at_done(x, kw, data):
    T = x["rewards"].shape[0]
    t0 = data.draw(st.integers(0, T - 1))
    d = x["dones"].copy()
    d[t0] = 1.0
    x = dict(x, dones=d)

    def part(lo, hi):
        return {k: (None if v is None else (v[lo:hi + 1] if k == "values" else v[lo:hi])) for k, v in x.items()}

    A, v = gpae(**x, **kw)
    A1, v1 = gpae(**part(0, t0 + 1), **kw)
    np.testing.assert_allclose(A[: t0 + 1], A1, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(v[: t0 + 1], v1, atol=TOL, rtol=TOL)
    if t0 + 1 < T:
        A2, v2 = gpae(**part(t0 + 1, T), **kw)
        np.testing.assert_allclose(A[t0 + 1:], A2, atol=TOL, rtol=TOL)
        np.testing.assert_allclose(v[t0 + 1:], v2, atol=TOL, rtol=TOL)
