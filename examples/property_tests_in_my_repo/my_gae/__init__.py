"""my_gae: a throwaway package standing for your library, with one advantage estimator to test."""

import numpy as np


def gae(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction="none", eta=1.02, mask=None):
    """Per-agent GAE on time-major [T, B, N] arrays: GPAE's correction 'none' (no trace correction)."""
    if correction != "none":
        raise NotImplementedError(f"my_gae implements only correction 'none'; got {correction!r}")
    l = np.asarray(logp_target, np.float64) - logp_behaviour
    if mask is not None:
        l = np.where(np.asarray(mask) > 0, l, 0.0)  # a dead agent's ratio is 1
    T, B, N = l.shape
    E = np.asarray(values, np.float64)
    if E.ndim == 2:  # a state value [T+1, B]: the same for every agent
        E = np.repeat(E[:, :, None], N, axis=2)
    live = (1.0 - np.asarray(dones, np.float64))[:, :, None]  # a done cuts bootstrap and trace
    delta = np.asarray(rewards, np.float64)[:, :, None] + gamma * live * E[1:] - E[:-1]
    adv, nxt = np.zeros((T, B, N)), np.zeros((B, N))
    for t in reversed(range(T)):
        nxt = delta[t] + gamma * lam * live[t] * nxt
        adv[t] = nxt
    return adv, E[:-1] + np.exp(np.minimum(0.0, l)) * adv  # value target E + min(1, rho^i) A
