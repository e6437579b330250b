"""Planted bugs: estimators with one classic mistake each, for tests of ``verify``.

Each has the signature of ``gpae_ref.reference.gpae``; ``verify`` must report a
failure for every one of them. Written plainly (float64, no validation).
"""

from __future__ import annotations

import numpy as np


def _ratios(logp_target, logp_behaviour, mask):
    l = np.asarray(logp_target, np.float64) - np.asarray(logp_behaviour, np.float64)
    if mask is not None:
        l = np.where(np.asarray(mask) > 0, l, 0.0)
    return l


def _log_space_trace(l, correction, eta):
    joint = l.sum(-1, keepdims=True)
    if correction == "none":
        return np.ones_like(l)
    if correction == "it":
        return np.exp(np.minimum(0.0, l))
    if correction == "st":
        return np.broadcast_to(np.exp(np.minimum(0.0, joint)), l.shape)
    if correction == "dt":
        return np.exp(np.minimum(0.0, l + np.minimum(np.log(eta), joint - l)))
    return np.broadcast_to(np.exp(joint), l.shape)


def _linear_space_trace(l, correction, eta):
    """Bug (d): the others' ratio as a product of ratios in linear space."""
    rho = np.exp(l)
    joint = np.prod(rho, axis=-1, keepdims=True)  # over/underflows for many agents
    with np.errstate(all="ignore"):
        others = joint / rho
    if correction == "none":
        return np.ones_like(l)
    if correction == "it":
        return np.minimum(1.0, rho)
    if correction == "st":
        return np.broadcast_to(np.minimum(1.0, joint), l.shape)
    if correction == "dt":
        return np.minimum(1.0, rho * np.minimum(eta, others))
    return np.broadcast_to(joint, l.shape)


def _estimator(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction="dt",
               eta=1.02, mask=None, trace_at_t=False, done_cuts_trace=True, lam_on_delta=False,
               linear_product=False):
    r = np.asarray(rewards, np.float64)
    d = np.asarray(dones, np.float64)
    l = _ratios(logp_target, logp_behaviour, mask)
    T, B, N = l.shape
    E = np.asarray(values, np.float64)
    if E.ndim == 2:
        E = np.repeat(E[:, :, None], N, axis=2)
    c = (_linear_space_trace if linear_product else _log_space_trace)(l, correction, eta)
    A = np.zeros((T, B, N))
    nxt = np.zeros((B, N))
    for t in reversed(range(T)):
        nd = (1.0 - d[t])[:, None]
        delta = r[t][:, None] + gamma * nd * E[t + 1] - E[t]
        c_used = c[t] if trace_at_t else (c[t + 1] if t + 1 < T else np.ones((B, N)))
        cut = nd if done_cuts_trace else 1.0
        if lam_on_delta:
            A[t] = lam * delta + gamma * cut * c_used * nxt
        else:
            A[t] = delta + gamma * lam * cut * c_used * nxt
        nxt = A[t]
    return A, E[:T] + np.exp(np.minimum(0.0, l)) * A


def correct(*args, **kwargs):
    """No bug: the same recursion as the reference (a control for the planted ones)."""
    return _estimator(*args, **kwargs)


def trace_at_t(*args, **kwargs):
    """Bug (a): A_t = delta_t + gamma lam c_t A_{t+1} (the trace of step t, not t+1)."""
    return _estimator(*args, trace_at_t=True, **kwargs)


def done_keeps_trace(*args, **kwargs):
    """Bug (b): a done cuts the bootstrap but not the trace."""
    return _estimator(*args, done_cuts_trace=False, **kwargs)


def lam_on_delta(*args, **kwargs):
    """Bug (c): A_t = lam delta_t + gamma c_{t+1} A_{t+1} (lam on the TD error, not the trace)."""
    return _estimator(*args, lam_on_delta=True, **kwargs)


def linear_product(*args, **kwargs):
    """Bug (d): others' ratio rho^-i = prod_j rho^j / rho^i formed in linear space."""
    return _estimator(*args, linear_product=True, **kwargs)


def returns_nan(*args, **kwargs):
    """Returns NaN everywhere: verify must report it, not crash."""
    A, v = _estimator(*args, **kwargs)
    return A * np.nan, v


def raises(*args, **kwargs):
    """Always raises: verify must report it, not crash."""
    raise RuntimeError("planted failure")


# ----------------------------------------------------------------------------
# Partial estimators: what other libraries implement
# ----------------------------------------------------------------------------


def gae_only(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction="none", eta=1.02,
             mask=None):
    """Plain per-agent GAE (correction 'none' only), as most libraries have it."""
    if correction != "none":
        raise NotImplementedError(f"only plain GAE; correction {correction!r} is not implemented")
    return _estimator(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
                      correction="none", mask=mask)


def no_full(*args, correction="dt", **kwargs):
    """Every truncated correction, but not 'full' (V-trace-style code cannot express untruncated traces)."""
    if correction == "full":
        raise NotImplementedError("untruncated traces are not supported")
    return _estimator(*args, correction=correction, **kwargs)


def ignores_mask(*args, mask=None, **kwargs):
    """Bug: takes mask= but ignores it (dead agents' ratios still enter the traces)."""
    return _estimator(*args, **kwargs)


def no_mask_argument(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction="dt", eta=1.02):
    """Correct, but has no mask argument at all."""
    return _estimator(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
                      correction=correction, eta=eta)


def couples_large_batches(*args, **kwargs):
    """Bug that shows only in big batches: past 10,000 columns, every column uses column 0's dones."""
    A, v = _estimator(*args, **kwargs)
    if np.shape(args[0])[1] > 10_000:
        d = np.repeat(np.asarray(args[2])[:, :1], np.shape(args[0])[1], axis=1)
        A, v = _estimator(args[0], args[1], d, *args[3:], **kwargs)
    return A, v


def single_agent_retrace(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction="it",
                         eta=1.02, mask=None, bug=False):
    """A single-agent [T, B] GAE with truncated IS traces c = min(1, rho) (V-trace-style), written plainly.

    Corrections: none (c = 1), it/st (min(1, rho)), dt (min(1, rho min(eta, 1)): one agent has no others).
    """
    r, V, d = (np.asarray(x, np.float64) for x in (rewards, values, dones))
    rho = np.exp(np.asarray(logp_target, np.float64) - np.asarray(logp_behaviour, np.float64))
    if mask is not None:
        rho = np.where(np.asarray(mask) > 0, rho, 1.0)
    c = {"none": np.ones_like(rho), "it": np.minimum(1, rho), "st": np.minimum(1, rho),
         "dt": np.minimum(1, rho * min(eta, 1.0))}[correction]
    T = r.shape[0]
    A = np.zeros_like(r)
    nxt = np.zeros(r.shape[1])
    for t in reversed(range(T)):
        delta = r[t] + gamma * (1 - d[t]) * V[t + 1] - V[t]
        trace = c[t + 1] if t + 1 < T else 1.0
        A[t] = delta + gamma * lam * (1 if bug else (1 - d[t])) * trace * nxt
        nxt = A[t]
    return A, V[:T] + np.minimum(1, rho) * A


def single_agent_retrace_bug(*args, **kwargs):
    """Bug: the done cuts the bootstrap but not the trace (single-agent layout)."""
    return single_agent_retrace(*args, bug=True, **kwargs)


# ----------------------------------------------------------------------------
# Estimators as they come from elsewhere: another convention, dtype or layout
# ----------------------------------------------------------------------------


def plain_value_targets(*args, **kwargs):
    """Correct advantages; value targets V + A (what most GAE libraries return), not E + min(1, rho^i) A."""
    A, _ = _estimator(*args, **kwargs)
    E = np.asarray(args[1], np.float64)
    E = E if E.ndim == 3 else np.repeat(E[:, :, None], A.shape[2], axis=2)
    return A, E[:-1] + A


def mixed_dtypes(*args, **kwargs):
    """Advantages computed in float32; value targets float64, from those float32 advantages."""
    cast = [np.asarray(a, np.float32) for a in args]
    mask = kwargs.pop("mask", None)
    A, _ = _estimator(*cast, mask=None if mask is None else np.asarray(mask, np.float32), **kwargs)
    A = A.astype(np.float32)
    l = _ratios(args[3], args[4], mask)
    E = np.asarray(args[1], np.float64)
    E = E if E.ndim == 3 else np.repeat(E[:, :, None], A.shape[2], axis=2)
    return A, E[:-1] + np.exp(np.minimum(0.0, l)) * A.astype(np.float64)


def ignores_correction(*args, correction="dt", **kwargs):
    """Plain GAE whatever ``correction`` says (a GAE library's function behind a GPAE signature)."""
    return _estimator(*args, correction="none", **kwargs)


def _from_layout(layout, arrays):
    """Arrays given in ``layout`` (letters of TBN) back to time-major."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        order = "".join(c for c in layout if c in "TBN"[: a.ndim])
        out.append(None if a is None else np.transpose(a, [order.index(c) for c in "TBN"[: a.ndim]]))
    return out


def _in_layout(layout, rewards, values, dones, logp_target, logp_behaviour, mask=None, **kwargs):
    back = _from_layout(layout, [rewards, values, dones, logp_target, logp_behaviour])
    if mask is not None:
        kwargs["mask"] = _from_layout(layout, [mask])[0]
    A, v = _estimator(*back, **kwargs)
    order = [("TBN").index(c) for c in layout]
    return np.transpose(A, order), np.transpose(v, order)


def batch_major(*args, **kwargs):
    """Correct, on batch-major [B, T, N] arrays (values [B, T+1, N])."""
    return _in_layout("BTN", *args, **kwargs)


def agents_before_batch(*args, **kwargs):
    """Correct, on [T, N, B] arrays: the agent axis in the batch's place."""
    return _in_layout("TNB", *args, **kwargs)


def _last_axis_size(x):
    return x.shape[3]  # a bug in a helper: the arrays have three axes


def raises_in_helper(rewards, values, dones, logp_target, logp_behaviour, **kwargs):
    """Raises IndexError inside a helper of the user's own code."""
    _last_axis_size(np.asarray(logp_target))
    return correct(rewards, values, dones, logp_target, logp_behaviour, **kwargs)


def off_by_rounding(*args, **kwargs):
    """Correct up to a relative error of 1e-7 (float64 at 1e-9 fails by about 100 x tolerance)."""
    A, v = _estimator(*args, **kwargs)
    return A * (1 + 1e-7), v * (1 + 1e-7)


def joint_for_dt(*args, correction="dt", **kwargs):
    """DT-ISR misread as the single truncation: rho^-i not capped at eta (st computed for dt)."""
    return _estimator(*args, correction="st" if correction == "dt" else correction, **kwargs)


def swapped_log_probs(rewards, values, dones, logp_target, logp_behaviour, **kwargs):
    """logp_target and logp_behaviour swapped: every ratio inverted."""
    return _estimator(rewards, values, dones, logp_behaviour, logp_target, **kwargs)


def float32_inside(*args, **kwargs):
    """Float32 inputs and results (as from a float32 network and trainer), returned as float64."""
    with np.errstate(over="ignore"):
        A, v = _estimator(*[np.asarray(a, np.float32) for a in args], **kwargs)
        return A.astype(np.float32).astype(np.float64), v.astype(np.float32).astype(np.float64)


def advantages_only(*args, **kwargs):
    """Returns the advantages alone (a GAE library's advantage function)."""
    return _estimator(*args, **kwargs)[0]


def swapped_outputs(*args, **kwargs):
    """Returns (value_targets, advantages): the pair the other way round (rlax-like order mix-ups)."""
    A, v = _estimator(*args, **kwargs)
    return v, A
