"""The reference against numbers worked out by hand, and its log-space ratios.

The property suite (test_properties.py) checks the reference against the exact
oracle; these tests pin the recursion itself on cases small enough to read.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpae_ref import reference


def two_agent_two_step(correction: str, eta: float = 1.02):
    """T=2, B=1, N=2 with hand-picked ratios: rho_{t=1} = (2, 0.5)."""
    rewards = np.array([[1.0], [2.0]])
    values = np.array([[[0.5, 0.25]], [[1.0, 2.0]], [[3.0, 4.0]]])  # [T+1, B, N]
    dones = np.zeros((2, 1))
    logp_behaviour = np.log(np.array([[[0.5, 0.5]], [[0.25, 0.5]]]))
    logp_target = np.log(np.array([[[0.25, 0.5]], [[0.5, 0.25]]]))  # rho_0 = (0.5, 1), rho_1 = (2, 0.5)
    return reference.gpae(rewards, values, dones, logp_target, logp_behaviour,
                          gamma=0.9, lam=0.5, correction=correction, eta=eta)


# c^i_1 for agents (0, 1) with rho_1 = (2, 0.5), joint rho_1 = 1:
HAND_TRACES = {
    "none": (1.0, 1.0),
    "it": (1.0, 0.5),
    "st": (1.0, 1.0),
    "dt": (min(1, 2 * min(1.02, 0.5)), min(1, 0.5 * min(1.02, 2))),  # (1.0, 0.51)
    "full": (1.0, 1.0),
}


@pytest.mark.parametrize("correction", sorted(HAND_TRACES))
def test_two_step_recursion_by_hand(correction):
    gamma, lam = 0.9, 0.5
    out = two_agent_two_step(correction)
    for i, (E0, E1, E2) in enumerate([(0.5, 1.0, 3.0), (0.25, 2.0, 4.0)]):
        delta1 = 2.0 + gamma * E2 - E1
        delta0 = 1.0 + gamma * E1 - E0
        adv1 = delta1
        adv0 = delta0 + gamma * lam * HAND_TRACES[correction][i] * adv1
        assert out.advantages[1, 0, i] == pytest.approx(adv1, abs=1e-12)
        assert out.advantages[0, 0, i] == pytest.approx(adv0, abs=1e-12)
    # value targets use the own ratio clipped at 1: rho_0 = (0.5, 1), rho_1 = (2, 0.5)
    own_clip = np.array([[0.5, 1.0], [1.0, 0.5]])
    E = np.array([[0.5, 0.25], [1.0, 2.0]])
    np.testing.assert_allclose(out.value_targets[:, 0], E + own_clip * out.advantages[:, 0], atol=1e-12)


def test_done_cuts_bootstrap_and_trace():
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.arange(1.0, 5.0).reshape(4, 1, 1)
    dones = np.array([[0.0], [1.0], [0.0]])
    logp = np.zeros((3, 1, 1))
    out = reference.gpae(rewards, values, dones, logp, logp, gamma=0.9, lam=1.0)
    # step 1 ends the episode: A_1 = r_1 - E_1, and nothing from step 2 flows back.
    assert out.advantages[1, 0, 0] == pytest.approx(2.0 - 2.0)
    assert out.advantages[2, 0, 0] == pytest.approx(3.0 + 0.9 * 4.0 - 3.0)
    assert out.advantages[0, 0, 0] == pytest.approx(1.0 + 0.9 * 2.0 - 1.0 + 0.9 * out.advantages[1, 0, 0])


def test_dt_with_eta_below_one_cuts_traces_on_policy():
    logp = np.log(np.full((3, 2, 4), 0.25))
    coef = reference.trace_coefficients(logp, logp, correction="dt", eta=0.9)
    np.testing.assert_allclose(coef, 0.9)


def test_ratios_are_formed_in_log_space_for_many_agents():
    """200 agents each with ratio e^4: the joint ratio e^800 overflows float64,
    yet DT-ISR's coefficients are exact: min(1, e^4 * min(eta, e^796)) = 1,
    and for an agent with ratio e^-10 it is e^-10 * eta."""
    T, B, N = 2, 1, 200
    logp_behaviour = np.full((T, B, N), -5.0)
    logp_target = logp_behaviour + 4.0
    logp_target[:, :, 0] = -15.0  # agent 0: log ratio -10
    coef = reference.trace_coefficients(logp_target, logp_behaviour, correction="dt", eta=1.02)
    assert np.all(np.isfinite(coef))
    assert coef[0, 0, 0] == pytest.approx(math.exp(-10.0) * 1.02, rel=1e-12)
    np.testing.assert_array_equal(coef[:, :, 1:], 1.0)
    st = reference.trace_coefficients(logp_target, logp_behaviour, correction="st")
    np.testing.assert_array_equal(st, 1.0)
    out = reference.gpae(np.ones((T, B)), np.zeros((T + 1, B, N)), np.zeros((T, B)),
                         logp_target, logp_behaviour, gamma=0.9, lam=0.9)
    assert np.all(np.isfinite(out.advantages))


def test_float32_inputs_are_computed_in_float64():
    rng = np.random.default_rng(1)
    args = (rng.normal(size=(3, 2)), rng.normal(size=(4, 2, 2)), np.zeros((3, 2)),
            -rng.uniform(size=(3, 2, 2)), -rng.uniform(size=(3, 2, 2)))
    out64 = reference.gpae(*args, gamma=0.9, lam=0.9)
    out32 = reference.gpae(*(a.astype(np.float32) for a in args), gamma=0.9, lam=0.9)
    assert out32.advantages.dtype == np.float64
    np.testing.assert_allclose(out32.advantages, out64.advantages, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# the one table of corrections
# ----------------------------------------------------------------------------


def test_table_names_codes_and_exports_agree():
    import gpae_ref
    from gpae_ref import corrections, oracle
    from gpae_ref.learner import config

    names = tuple(row.name for row in corrections.CORRECTION_TABLE)
    assert names == corrections.CORRECTIONS == gpae_ref.CORRECTIONS == oracle.CORRECTIONS
    assert config.CORRECTIONS is corrections.CORRECTIONS
    codes = [row.code for row in corrections.CORRECTION_TABLE]
    assert len(set(codes)) == len(codes)  # the kernels branch on distinct codes
    assert dict(corrections.CORRECTION_CODES) == dict(zip(names, codes))
    assert gpae_ref.CORRECTIONS[3] == "dt"  # the default correction


def test_table_ratio_and_log_forms_agree():
    """Each row's ratio form (the oracle's) equals exp of its log form (the estimators')."""
    from gpae_ref.corrections import CORRECTION_TABLE

    rng = np.random.default_rng(3)
    l = rng.uniform(-3, 3, (50, 4))  # own log-ratios of 4 agents
    L = l.sum(-1, keepdims=True)
    own, others = np.exp(l), np.exp(L - l)
    for eta in (0.8, 1.0, 1.02, 1.5):
        for row in CORRECTION_TABLE:
            ratio_form = np.broadcast_to(row.coefficient(own, others, eta, np), l.shape)
            log_form = np.exp(np.broadcast_to(row.log_coefficient(l, L, math.log(eta), np), l.shape))
            np.testing.assert_allclose(ratio_form, log_form, rtol=1e-12, err_msg=row.name)
            if row.truncated:
                assert np.all(ratio_form <= 1.0), row.name


def test_table_matches_the_hand_values():
    """The hand-worked traces of two_agent_two_step come out of the table."""
    from gpae_ref.corrections import CORRECTION_TABLE

    own = np.array([2.0, 0.5])
    others = own[::-1].copy()
    for row in CORRECTION_TABLE:
        np.testing.assert_allclose(np.broadcast_to(row.coefficient(own, others, 1.02, np), (2,)),
                                   HAND_TRACES[row.name], rtol=1e-12)


def test_docs_state_the_table():
    """README and the trace_coefficients docstring give every row's formula, as in the table."""
    from pathlib import Path

    from gpae_ref.corrections import CORRECTION_TABLE

    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = " ".join(readme.read_text().split()) if readme.exists() else None
    for row in CORRECTION_TABLE:
        assert f"{row.name:5s} c = {row.formula}" in reference.trace_coefficients.__doc__
        if text is not None:  # an installed package has no README beside it
            assert f"`{row.name}` {row.formula}" in text, row.name


def test_unknown_correction_names_the_argument():
    from gpae_ref.corrections import correction_row

    with pytest.raises(ValueError, match="^correction must be one of 'none', 'it', 'st', 'dt', 'full'"):
        correction_row("vtrace")
