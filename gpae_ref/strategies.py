"""Hypothesis strategies for testing GPAE implementations (needs the ``test`` extra).

Bounded inputs instead of loose tolerances: probabilities >= ``min_prob``
(default 0.05), rewards and values in [-1, 1], so float64 results can be
compared at 1e-9. Games and policies are drawn as (sizes, seed) and built with
``gpae_ref.oracle.random_game`` / ``random_policy``: every example is
reproducible from the printed seed.

    from hypothesis import given
    from gpae_ref import strategies as gst

    @given(gst.games_with_policies(off_policy=True))
    def test_mine(gp):
        game, pi, mu = gp
        ...
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpae_ref import oracle

CORRECTIONS = oracle.CORRECTIONS
SEEDS = st.integers(0, 2**32 - 1)

gammas = st.sampled_from([0.0, 0.5, 0.9, 0.99]) | st.floats(0.0, 0.99)
lams = st.sampled_from([0.0, 0.5, 0.95, 1.0]) | st.floats(0.0, 1.0)
etas = st.sampled_from([1.0, 1.02, 1.05, 2.0])
corrections = st.sampled_from(CORRECTIONS)


@st.composite
def games(draw, max_states: int = 3, max_agents: int = 3, max_actions: int = 3, max_joint: int = 12,
          gamma=None, exit_probability=None) -> oracle.Game:
    """A random ``oracle.Game`` with S <= max_states, N <= max_agents, K_j <= max_actions, A <= max_joint.

    ``gamma``/``exit_probability``: a fixed value, a strategy, or None (drawn;
    exit probability 0 or 0.2, the latter producing episode ends).
    """
    S = draw(st.integers(1, max_states))
    N = draw(st.integers(1, max_agents))
    ks = []
    for _ in range(N):
        room = max_joint // int(np.prod(ks, dtype=np.int64)) if ks else max_joint
        ks.append(draw(st.integers(1, max(1, min(max_actions, room)))))
    g = draw(gammas) if gamma is None else (draw(gamma) if isinstance(gamma, st.SearchStrategy) else gamma)
    if exit_probability is None:
        e = draw(st.sampled_from([0.0, 0.2]))
    else:
        e = draw(exit_probability) if isinstance(exit_probability, st.SearchStrategy) else exit_probability
    return oracle.random_game(draw(SEEDS), S, tuple(ks), float(g), exit_probability=float(e))


def policies(game: oracle.Game, min_prob: float = 0.05):
    """A product policy for ``game``: per-agent [S, K_j] tables, every probability >= min_prob."""
    conc = st.sampled_from([0.3, 1.0, 3.0])
    return st.builds(lambda seed, c: oracle.random_policy(seed, game, min_prob=min_prob, concentration=c), SEEDS, conc)


def behaviour_policies(game: oracle.Game, pi, min_prob: float = 0.05):
    """A behaviour mu for target pi: pi itself, a mixture near pi, or an independent policy."""
    far = policies(game, min_prob)
    near = st.builds(
        lambda mu, w: tuple((1 - w) * p + w * m for p, m in zip(pi, mu)), far, st.floats(0.05, 0.5)
    )
    return st.just(tuple(pi)) | near | far


@st.composite
def games_with_policies(draw, off_policy: bool = True, **game_kwargs):
    """(game, pi, mu); mu is pi when ``off_policy`` is False."""
    game = draw(games(**game_kwargs))
    pi = draw(policies(game))
    mu = draw(behaviour_policies(game, pi)) if off_policy else pi
    return game, pi, mu


def value_tables(game: oracle.Game, horizon: int | None = None):
    """Per-agent value tables E^i(s, a^-i) lifted to [S, A, N] (or time-indexed [H+1, S, A, N]), in [-1, 1].

    Drawn per (s, a^-i) and lifted, so each table is a genuine function of the others' actions.
    """
    S, N = game.n_states, game.n_agents
    lead = () if horizon is None else (horizon + 1,)

    def lift_all(raw):
        out = np.empty(lead + (S, game.n_joint, N))
        for i in range(N):
            out[..., i] = raw[i][..., oracle.others_index(game, i)]
        return out

    per_agent = [hnp.arrays(np.float64, lead + (S, oracle.n_others(game, i)), elements=st.floats(-1, 1))
                 for i in range(N)]
    return st.tuples(*per_agent).map(lift_all)


@st.composite
def estimator_inputs(draw, max_T: int = 6, max_B: int = 4, max_N: int = 4, min_prob: float = 0.05,
                     dones: bool = True, mask: bool = True, shared_values: bool | None = None,
                     on_policy: bool = False) -> dict:
    """Keyword inputs of an estimator: rewards [T,B], values [T+1,B,N] or [T+1,B], dones,
    logp_target, logp_behaviour [T,B,N], mask [T,B,N] or None. Log-probs of probabilities in [min_prob, 1].
    """
    T = draw(st.integers(1, max_T))
    B = draw(st.integers(1, max_B))
    N = draw(st.integers(1, max_N))
    unit = st.floats(-1, 1)
    prob = st.floats(min_prob, 1.0)
    shared = draw(st.booleans()) if shared_values is None else shared_values
    vshape = (T + 1, B) if shared else (T + 1, B, N)
    logp_b = np.log(draw(hnp.arrays(np.float64, (T, B, N), elements=prob)))
    logp_t = logp_b.copy() if on_policy else np.log(draw(hnp.arrays(np.float64, (T, B, N), elements=prob)))
    out = dict(
        rewards=draw(hnp.arrays(np.float64, (T, B), elements=unit)),
        values=draw(hnp.arrays(np.float64, vshape, elements=unit)),
        dones=(draw(hnp.arrays(np.float64, (T, B), elements=st.sampled_from([0.0, 0.0, 1.0]))) if dones
               else np.zeros((T, B))),
        logp_target=logp_t,
        logp_behaviour=logp_b,
        mask=None,
    )
    if mask and draw(st.booleans()):
        out["mask"] = draw(hnp.arrays(np.float64, (T, B, N), elements=st.sampled_from([0.0, 1.0, 1.0])))
    return out


@st.composite
def estimator_settings(draw, corrections_=corrections) -> dict:
    """Keyword settings: gamma, lam, correction, eta."""
    return dict(gamma=float(draw(gammas)), lam=float(draw(lams)), correction=draw(corrections_),
                eta=float(draw(etas)))
