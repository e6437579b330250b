"""``verify(estimator)``: check any GPAE implementation against the spec's properties.

The estimator must have the signature of ``gpae_ref.gpae``::

    estimator(rewards, values, dones, logp_target, logp_behaviour, *,
              gamma, lam, correction="dt", eta=1.02, mask=None)
        -> (advantages [T, B, N], value_targets [T, B, N])

Outputs are converted with ``numpy.asarray`` (JAX, CuPy on host, ... work).
Every check is exact up to float64 rounding: expectations come from
enumerating all trajectories of tiny games (``gpae_ref.oracle``), never from
sampling. For a float32 implementation pass looser ``atol``/``rtol`` (1e-4) or
run it in float64 (``jax.config.update("jax_enable_x64", True)``).

Checks (see the spec, section 7):

=====================  ========================================================
``P1``                 on-policy, E = EQ^{pi,i}: E[A^i_0|s,a] = A^{pi,i}(s,a), every correction
``P2``                 mu = pi, lam = 1, any E (horizon-T game): E[A^i_0|s,a] = Q_0(s,a) - E_0(s,a^-i)
``P3/P4 operator``     on/off-policy, any E: E[A^i_0|s,a] equals the linear-algebra
                       G_0 = sum_{k<T} (gamma lam M_c)^k d that defines T^i (section 6)
``P6 reductions``      none = GAE per agent; lam = 0 = delta; N = 1 = GAE with traces;
                       on-policy data: every correction gives the same outputs
``P7 symmetries``      permuting agents; scaling rewards and values by c > 0;
                       splitting the batch (columns, or time at a done)
``matches reference``  equals ``gpae_ref.reference.gpae`` on random inputs with dones,
                       masks, shared [T+1, B] values and a 128-agent wide-ratio case
=====================  ========================================================

An estimator that raises or returns NaN/inf fails the check it was called in
(the report says what it raised); ``verify`` itself does not raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gpae_ref import oracle
from gpae_ref.reference import gpae as reference_gpae

CORRECTIONS = ("none", "it", "st", "dt", "full")


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


@dataclass
class CheckResult:
    """One property: passed?, worst error over its cases, and the smallest failing case."""

    name: str
    passed: bool
    worst_error: float
    cases: int
    counterexample: str | None = None


@dataclass
class VerifyReport:
    """The results of ``verify``; ``ok`` is True when every check passed; ``str()`` is a table."""

    estimator: str
    seed: int
    atol: float
    rtol: float
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self) -> str:
        lines = [
            f"verify({self.estimator}) seed={self.seed} atol={self.atol:g} rtol={self.rtol:g}",
            f"{'check':<20} {'result':<6} {'worst error':>12} {'cases':>6}",
            "-" * 48,
        ]
        for r in self.results:
            lines.append(
                f"{r.name:<20} {'pass' if r.passed else 'FAIL':<6} {r.worst_error:>12.3g} {r.cases:>6}"
            )
        lines.append("-" * 48)
        lines.append("all checks passed" if self.ok else "SOME CHECKS FAILED")
        for r in self.results:
            if r.counterexample:
                lines.append("")
                lines.append(f"[{r.name}] smallest counterexample:")
                lines.extend("  " + s for s in r.counterexample.splitlines())
        return "\n".join(lines)


class _Tracker:
    """Accumulates the cases of one check; keeps the first (smallest) failure."""

    def __init__(self, name: str, atol: float, rtol: float):
        self.name, self.atol, self.rtol = name, atol, rtol
        self.worst = 0.0
        self.cases = 0
        self.failure: str | None = None

    def compare(self, got, expected, describe: Callable[[], str]) -> bool:
        """Record one case; ``describe`` is called only on a first failure."""
        self.cases += 1
        ok, err, where = _compare(got, expected, self.atol, self.rtol)
        self.worst = max(self.worst, err)
        if not ok and self.failure is None:
            g = np.asarray(got, np.float64)
            e = np.asarray(expected, np.float64)
            self.failure = (
                describe()
                + f"\nat index {where}: expected {e[where]!r}, got {g[where]!r} (|error| {err:.3g})"
            )
        return ok

    def error(self, exc: BaseException, describe: Callable[[], str]) -> None:
        self.cases += 1
        self.worst = float("inf")
        if self.failure is None:
            self.failure = describe() + f"\nthe estimator raised {type(exc).__name__}: {exc}"

    def result(self) -> CheckResult:
        return CheckResult(self.name, self.failure is None, self.worst, self.cases, self.failure)


class _BadOutput(Exception):
    """The estimator returned something that is not two finite [T, B, N] arrays."""


def _compare(got, expected, atol: float, rtol: float) -> tuple[bool, float, tuple[int, ...]]:
    g = np.asarray(got, np.float64)
    e = np.asarray(expected, np.float64)
    if g.shape != e.shape:
        return False, float("inf"), ()
    if g.size == 0:
        return True, 0.0, ()
    with np.errstate(invalid="ignore"):
        diff = np.abs(g - e)
        diff = np.where(np.isfinite(diff), diff, np.inf)
        excess = diff - (atol + rtol * np.abs(e))
    where = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), e.shape))
    return bool(excess[where] <= 0), float(diff.max()), where


def _call(estimator, inputs: dict, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Call the estimator; raise _BadOutput unless it returns two finite [T, B, N] arrays."""
    args = dict(inputs)
    mask = args.pop("mask", None)
    if mask is not None:
        kwargs = dict(kwargs, mask=mask)
    out = estimator(
        args["rewards"], args["values"], args["dones"], args["logp_target"], args["logp_behaviour"], **kwargs
    )
    try:
        adv, vt = out
    except (TypeError, ValueError) as exc:
        raise _BadOutput(f"expected (advantages, value_targets); got {type(out).__name__}") from exc
    adv = np.asarray(adv, np.float64)
    vt = np.asarray(vt, np.float64)
    T, B = np.shape(args["rewards"])
    N = np.shape(args["logp_target"])[2]
    for name, x in (("advantages", adv), ("value_targets", vt)):
        if x.shape != (T, B, N):
            raise _BadOutput(f"{name} has shape {x.shape}, expected [T, B, N] = {(T, B, N)}")
        if not np.all(np.isfinite(x)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise _BadOutput(f"{name} is not finite at index {bad}: {x[bad]!r}")
    return adv, vt


def _fmt(x) -> str:
    return np.array2string(np.asarray(x, np.float64), precision=6, separator=", ", threshold=60, max_line_width=100)


def _describe_inputs(title: str, inputs: dict, kwargs: dict) -> str:
    T, B = np.shape(inputs["rewards"])
    N = np.shape(inputs["logp_target"])[2]
    parts = [
        f"{title}",
        f"T={T} B={B} N={N} " + " ".join(f"{k}={v!r}" for k, v in kwargs.items()),
    ]
    for k in ("rewards", "values", "dones", "logp_target", "logp_behaviour", "mask"):
        if inputs.get(k) is not None:
            parts.append(f"{k} {list(np.shape(inputs[k]))} =\n{_fmt(inputs[k])}")
    return "\n".join(parts)


# ----------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------


def random_inputs(
    rng: np.random.Generator,
    T: int,
    B: int,
    N: int,
    *,
    done_prob: float = 0.0,
    mask_prob: float = 0.0,
    shared_values: bool = False,
    on_policy: bool = False,
    min_prob: float = 0.05,
) -> dict:
    """Bounded estimator inputs: rewards, values in [-1, 1], log-probs of probabilities in [min_prob, 1]."""
    logp_b = np.log(rng.uniform(min_prob, 1.0, size=(T, B, N)))
    logp_t = logp_b.copy() if on_policy else np.log(rng.uniform(min_prob, 1.0, size=(T, B, N)))
    vshape = (T + 1, B) if shared_values else (T + 1, B, N)
    out = dict(
        rewards=rng.uniform(-1, 1, size=(T, B)),
        values=rng.uniform(-1, 1, size=vshape),
        dones=(rng.uniform(size=(T, B)) < done_prob).astype(np.float64),
        logp_target=logp_t,
        logp_behaviour=logp_b,
    )
    if mask_prob > 0:
        out["mask"] = (rng.uniform(size=(T, B, N)) >= mask_prob).astype(np.float64)
    return out


def wide_ratio_inputs(rng: np.random.Generator, T: int = 3, N: int = 128) -> dict:
    """N agents with per-agent log-ratios of 12-14 units in sign blocks.

    Columns: negatives first, positives first, blocks of 32, random signs. The
    joint log-ratio stays moderate, but a product of ratios taken in linear
    space in agent order passes through e^(+-768): it overflows or underflows
    float64 and gives inf, 0 or NaN, while the log-space formula is exact.
    """
    half = N // 2
    patterns = [
        np.r_[-np.ones(half), np.ones(N - half)],
        np.r_[np.ones(half), -np.ones(N - half)],
        np.tile(np.r_[-np.ones(32), np.ones(32)], N // 64 + 1)[:N],
        rng.choice([-1.0, 1.0], size=N),
    ]
    B = len(patterns)
    sign = np.stack(patterns)[None].repeat(T, axis=0)  # [T, B, N]
    l = sign * rng.uniform(12.0, 14.0, size=(T, B, N))
    base = rng.uniform(0.0, 0.5, size=(T, B, N))
    logp_t = -base - np.maximum(0.0, -l)
    logp_b = logp_t - l
    return dict(
        rewards=rng.uniform(-1, 1, size=(T, B)),
        values=rng.uniform(-1, 1, size=(T + 1, B, N)),
        dones=np.zeros((T, B)),
        logp_target=logp_t,
        logp_behaviour=logp_b,
    )


def _slice(inputs: dict, *, t0: int | None = None, t1: int | None = None, cols=None, agents=None) -> dict:
    """Sub-input: time rows [t0, t1) (values [t0, t1]), batch columns, agents."""
    T = np.shape(inputs["rewards"])[0]
    t0 = 0 if t0 is None else t0
    t1 = T if t1 is None else t1
    out = {}
    for k, x in inputs.items():
        if x is None:
            out[k] = None
            continue
        x = np.asarray(x)
        x = x[t0 : t1 + 1] if k == "values" else x[t0:t1]
        if cols is not None:
            x = x[:, cols]
        if agents is not None and x.ndim == 3:
            x = x[:, :, agents]
        out[k] = x
    return out


# ----------------------------------------------------------------------------
# Independent formulas for the reductions (P6)
# ----------------------------------------------------------------------------


def _gae_with_traces(r, E, d, c, gamma: float, lam: float) -> np.ndarray:
    """Per column and agent: A_t = delta_t + gamma lam (1 - d_t) c_{t+1} A_{t+1}, A_T = 0."""
    T = r.shape[0]
    A = np.zeros(E[:T].shape)
    nxt = np.zeros(E.shape[1:])
    for t in reversed(range(T)):
        nd = (1.0 - d[t])[..., None]
        delta = r[t][..., None] + gamma * nd * E[t + 1] - E[t]
        carry = nd * c[t + 1] * nxt if t + 1 < T else 0.0
        A[t] = delta + gamma * lam * carry
        nxt = A[t]
    return A


# ----------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------


def _exact_games(seed: int):
    """Tiny games, smallest first: (label, game, horizon)."""
    return [
        ("S=1 K=(2,) gamma=0.9", oracle.random_game(seed, 1, (2,), 0.9), 4),
        ("S=2 K=(2,2) gamma=0.9", oracle.random_game(seed + 1, 2, (2, 2), 0.9), 3),
        ("S=2 K=(2,2) gamma=0.8 exit=0.2", oracle.random_game(seed + 2, 2, (2, 2), 0.8, exit_probability=0.2), 3),
        ("S=2 K=(2,2,2) gamma=0.9", oracle.random_game(seed + 3, 2, (2, 2, 2), 0.9), 2),
        ("S=3 K=(3,2) gamma=0.7 exit=0.1", oracle.random_game(seed + 4, 3, (3, 2), 0.7, exit_probability=0.1), 2),
    ]


_SETTINGS = [(c, 1.02) for c in CORRECTIONS] + [("dt", 0.9)]


def _expectation_case(tracker, estimator, game, label, pi, mu, values, horizon, *, lam, correction, eta,
                      expected_adv, expected_vt, final_done=False, extra=""):
    def describe():
        S, A, N = game.n_states, game.n_joint, game.n_agents
        return (
            f"game {label} (S={S}, joint actions A={A}, N={N}), horizon T={horizon}, "
            f"lam={lam}, correction={correction!r}, eta={eta}{extra}\n"
            f"E[A^i_0 | s_0, a_0] by enumerating every trajectory (one batch column each); "
            f"index = (s_0, joint a_0, agent i)"
        )

    try:
        adv, vt = oracle.estimator_expectation(
            lambda *a, **k: _call(estimator, dict(zip(("rewards", "values", "dones", "logp_target",
                                                         "logp_behaviour"), a)), **k),
            game, pi, mu, values, horizon, lam=lam, correction=correction, eta=eta, final_done=final_done,
        )
    except Exception as exc:  # the estimator may raise anything
        tracker.error(exc, describe)
        return
    if tracker.compare(adv, expected_adv, describe):
        tracker.compare(vt, expected_vt, lambda: describe() + "\n(value targets v^i_0)")


def check_p1(estimator, seed: int, atol: float, rtol: float) -> CheckResult:
    """P1: mu = pi, E = EQ^{pi,i}: E[A^i_0|s,a] = A^{pi,i}(s,a) for every correction and lam."""
    tr = _Tracker("P1", atol, rtol)
    for k, (label, game, horizon) in enumerate(_exact_games(seed)):
        pi = oracle.random_policy(seed + 100 + k, game)
        EQ = oracle.per_agent_values(game, pi)
        adv = oracle.per_agent_advantages(game, pi)
        for lam in (0.6, 1.0):
            for correction, eta in _SETTINGS:
                _expectation_case(tr, estimator, game, label, pi, pi, EQ, horizon, lam=lam,
                                  correction=correction, eta=eta, expected_adv=adv, expected_vt=EQ + adv,
                                  extra=", on-policy, values = EQ^{pi,i}")
    return tr.result()


def check_p2(estimator, seed: int, atol: float, rtol: float) -> CheckResult:
    """P2: mu = pi, lam = 1, any time-indexed E, horizon-T game: E[A^i_0|s,a] = Q_0(s,a) - E_0(s,a^-i)."""
    tr = _Tracker("P2", atol, rtol)
    for k, (label, game, horizon) in enumerate(_exact_games(seed)):
        rng = np.random.default_rng(seed + 200 + k)
        pi = oracle.random_policy(seed + 300 + k, game)
        E = rng.uniform(-1, 1, size=(horizon + 1, game.n_states, game.n_joint, game.n_agents))
        Q0 = oracle.finite_horizon_q(game, pi, horizon)[0][:, :, None]
        # eta >= 1 only: on-policy, dt with eta < 1 has c = eta < 1, an effective lam of eta (not P2's lam = 1)
        for correction in CORRECTIONS:
            eta = 1.02
            _expectation_case(tr, estimator, game, label, pi, pi, E, horizon, lam=1.0, correction=correction,
                              eta=eta, expected_adv=Q0 - E[0], expected_vt=np.broadcast_to(Q0, E[0].shape),
                              final_done=True, extra=", on-policy, random time-indexed values, done at T-1")
    return tr.result()


def check_operator(estimator, seed: int, atol: float, rtol: float) -> CheckResult:
    """P3/P4: on- and off-policy, any E: the estimator's E[A^i_0|s,a] is the G_0 that defines T^i."""
    tr = _Tracker("P3/P4 operator", atol, rtol)
    for k, (label, game, horizon) in enumerate(_exact_games(seed)):
        rng = np.random.default_rng(seed + 400 + k)
        pi = oracle.random_policy(seed + 500 + k, game)
        for off in (False, True):
            mu = oracle.random_policy(seed + 600 + k, game) if off else pi
            E = rng.uniform(-1, 1, size=(game.n_states, game.n_joint, game.n_agents))
            for lam in (0.6, 1.0):
                for correction, eta in _SETTINGS:
                    G = oracle.expected_advantage(game, pi, mu, E, lam=lam, correction=correction, eta=eta,
                                                  horizon=horizon)
                    vt = oracle.expected_value_target(game, pi, mu, E, G)
                    _expectation_case(tr, estimator, game, label, pi, mu, E, horizon, lam=lam,
                                      correction=correction, eta=eta, expected_adv=G, expected_vt=vt,
                                      extra=(", off-policy" if off else ", on-policy") + ", random values")
    return tr.result()


def _reference_cases(seed: int):
    """(title, inputs, kwargs), smallest first."""
    rng = np.random.default_rng(seed + 700)
    sizes = [(1, 1, 1), (2, 1, 2), (3, 2, 3), (5, 3, 2), (8, 4, 4), (12, 6, 3)]
    variants = [
        dict(),
        dict(done_prob=0.3),
        dict(done_prob=0.3, mask_prob=0.25),
        dict(done_prob=0.2, shared_values=True),
    ]
    scalars = [(0.99, 0.95, 1.02), (0.9, 1.0, 0.9), (0.0, 0.5, 1.05), (0.8, 0.0, 2.0)]
    cases = []
    for n, (T, B, N) in enumerate(sizes):
        for v, variant in enumerate(variants):
            gamma, lam, eta = scalars[(n + v) % len(scalars)]
            inputs = random_inputs(rng, T, B, N, **variant)
            for correction in CORRECTIONS:
                title = f"random inputs {variant or 'plain'}"
                cases.append((title, inputs, dict(gamma=gamma, lam=lam, correction=correction, eta=eta)))
    wide = wide_ratio_inputs(rng)
    for correction in CORRECTIONS:
        cases.append(("wide ratios: 128 agents, per-agent |log-ratio| 12-14 in sign blocks", wide,
                      dict(gamma=0.99, lam=0.95, correction=correction, eta=1.02)))
    return cases


def _fails_vs_reference(estimator, inputs, kwargs, atol, rtol) -> bool:
    try:
        got = _call(estimator, inputs, **kwargs)
    except Exception:
        return True
    want = _call(reference_gpae, inputs, **kwargs)
    return not all(_compare(g, w, atol, rtol)[0] for g, w in zip(got, want))


def _shrink(estimator, inputs, kwargs, atol, rtol, budget: int = 150) -> dict:
    """Greedy: drop batch columns, agents, and time steps while the disagreement persists."""
    current = inputs
    improved = True
    while improved and budget > 0:
        improved = False
        T, B = np.shape(current["rewards"])
        N = np.shape(current["logp_target"])[2]
        candidates = [_slice(current, cols=[b]) for b in range(B)] if B > 1 else []
        if current.get("mask") is not None:
            candidates.append({k: v for k, v in current.items() if k != "mask"})
        if N > 1:
            candidates += [_slice(current, agents=[j for j in range(N) if j != i]) for i in range(N)]
            if N > 8:
                candidates = [_slice(current, agents=list(range(N // 2))),
                              _slice(current, agents=list(range(N // 2, N)))] + candidates
        if T > 1:
            candidates += [_slice(current, t1=T - 1), _slice(current, t0=1)]
        for cand in candidates:
            budget -= 1
            if _fails_vs_reference(estimator, cand, kwargs, atol, rtol):
                current, improved = cand, True
                break
            if budget <= 0:
                break
    return current


def check_reference(estimator, seed: int, atol: float, rtol: float) -> CheckResult:
    """The estimator equals the float64 reference ``gpae_ref.reference.gpae`` on random inputs."""
    tr = _Tracker("matches reference", atol, rtol)
    for title, inputs, kwargs in _reference_cases(seed):
        want = _call(reference_gpae, inputs, **kwargs)
        try:
            got = _call(estimator, inputs, **kwargs)
            bad = not all(_compare(g, w, atol, rtol)[0] for g, w in zip(got, want))
        except Exception as exc:
            got, bad = exc, True
        if bad and tr.failure is None:
            small = _shrink(estimator, inputs, kwargs, atol, rtol)
            want_s = _call(reference_gpae, small, **kwargs)
            describe = lambda: _describe_inputs(title + " (shrunk)", small, kwargs)  # noqa: E731
            try:
                got_s = _call(estimator, small, **kwargs)
            except Exception as exc:
                tr.error(exc, describe)
                continue
            for g, w, what in zip(got_s, want_s, ("advantages", "value_targets")):
                if not tr.compare(g, w, lambda: describe() + f"\n({what})"):
                    break
            continue
        if isinstance(got, Exception):
            tr.error(got, lambda: _describe_inputs(title, inputs, kwargs))
            continue
        for g, w in zip(got, want):
            tr.compare(g, w, lambda: _describe_inputs(title, inputs, kwargs))
    return tr.result()


def _run_pair(tr: _Tracker, describe, fn_got, fn_want) -> None:
    """One case: compare fn_got() against fn_want() (each a tuple of arrays)."""
    try:
        got = fn_got()
        want = fn_want()
    except Exception as exc:
        tr.error(exc, describe)
        return
    for g, w, what in zip(got, want, ("advantages", "value_targets", "third")):
        if not tr.compare(g, w, lambda what=what: describe() + f"\n({what})"):
            return


def check_reductions(estimator, seed: int, atol: float, rtol: float) -> CheckResult:
    """P6: none = GAE on per-agent values; lam = 0 = delta; N = 1 = GAE with traces; on-policy all equal."""
    tr = _Tracker("P6 reductions", atol, rtol)
    rng = np.random.default_rng(seed + 800)
    for T, B, N in [(1, 1, 1), (3, 2, 2), (6, 3, 3)]:
        x = random_inputs(rng, T, B, N, done_prob=0.3)
        gamma, lam = 0.9, 0.8
        E = x["values"]
        own_clip = np.minimum(1.0, np.exp(x["logp_target"] - x["logp_behaviour"]))
        # none = GAE on the per-agent values
        kw = dict(gamma=gamma, lam=lam, correction="none", eta=1.02)
        gae = _gae_with_traces(x["rewards"], E, x["dones"], np.ones((T, B, N)), gamma, lam)
        _run_pair(tr, lambda kw=kw, x=x: _describe_inputs("correction 'none' = GAE on per-agent values", x, kw),
                  lambda kw=kw, x=x: _call(estimator, x, **kw), lambda gae=gae, E=E, oc=own_clip: (gae, E[:-1] + oc * gae))
        # lam = 0 = delta, every correction
        delta = _gae_with_traces(x["rewards"], E, x["dones"], np.ones((T, B, N)), gamma, 0.0)
        for correction in CORRECTIONS:
            kw = dict(gamma=gamma, lam=0.0, correction=correction, eta=1.02)
            _run_pair(tr, lambda kw=kw, x=x: _describe_inputs("lam = 0 gives the one-step TD error delta", x, kw),
                      lambda kw=kw, x=x: _call(estimator, x, **kw),
                      lambda d=delta, E=E, oc=own_clip: (d, E[:-1] + oc * d))
        # on-policy data: every correction (eta >= 1) gives the same outputs as 'none'
        xo = random_inputs(rng, T, B, N, done_prob=0.3, on_policy=True)
        base = _gae_with_traces(xo["rewards"], xo["values"], xo["dones"], np.ones((T, B, N)), gamma, lam)
        for correction in CORRECTIONS:
            for eta in (1.0, 1.5):
                kw = dict(gamma=gamma, lam=lam, correction=correction, eta=eta)
                _run_pair(tr, lambda kw=kw, x=xo: _describe_inputs("on-policy data: every correction equals GAE", x, kw),
                          lambda kw=kw, x=xo: _call(estimator, x, **kw),
                          lambda b=base, E=xo["values"]: (b, E[:-1] + b))
    # N = 1 with a state value: GAE with Retrace-style traces
    for T, B in [(1, 1), (4, 2), (8, 3)]:
        x = random_inputs(rng, T, B, 1, done_prob=0.25, shared_values=True)
        rho = np.exp(x["logp_target"] - x["logp_behaviour"])
        V = x["values"][:, :, None]
        for correction, eta in _SETTINGS:
            c = {"none": np.ones_like(rho), "it": np.minimum(1, rho), "st": np.minimum(1, rho),
                 "dt": np.minimum(1, rho * min(eta, 1.0)), "full": rho}[correction]
            want = _gae_with_traces(x["rewards"], V, x["dones"], c, 0.95, 0.9)
            kw = dict(gamma=0.95, lam=0.9, correction=correction, eta=eta)
            _run_pair(tr, lambda kw=kw, x=x: _describe_inputs("N = 1 with a state value: GAE with traces", x, kw),
                      lambda kw=kw, x=x: _call(estimator, x, **kw),
                      lambda w=want, V=V, r=rho: (w, V[:-1] + np.minimum(1, r) * w))
    return tr.result()


def check_symmetries(estimator, seed: int, atol: float, rtol: float) -> CheckResult:
    """P7: permuting agents permutes outputs; scaling by c > 0 scales them; splitting the batch changes nothing."""
    tr = _Tracker("P7 symmetries", atol, rtol)
    rng = np.random.default_rng(seed + 900)
    for T, B, N in [(2, 1, 2), (4, 3, 3), (7, 4, 4)]:
        for correction, eta in _SETTINGS:
            kw = dict(gamma=0.9, lam=0.9, correction=correction, eta=eta)
            x = random_inputs(rng, T, B, N, done_prob=0.2, mask_prob=0.2)
            # permuting agents
            perm = rng.permutation(N)
            while N > 1 and np.all(perm == np.arange(N)):
                perm = rng.permutation(N)
            xp = {k: (v[..., perm] if k in ("values", "logp_target", "logp_behaviour", "mask") else v)
                  for k, v in x.items()}
            _run_pair(tr, lambda kw=kw, x=x, p=perm: _describe_inputs(f"permuting agents by {p.tolist()}", x, kw),
                      lambda kw=kw, x=xp: _call(estimator, x, **kw),
                      lambda kw=kw, x=x, p=perm: tuple(o[..., p] for o in _call(estimator, x, **kw)))
            # scaling rewards and values by c > 0
            for c in (0.5, 3.0):
                xs = dict(x, rewards=c * x["rewards"], values=c * x["values"])
                _run_pair(tr, lambda kw=kw, x=x, c=c: _describe_inputs(f"scaling rewards and values by c={c}", x, kw),
                          lambda kw=kw, x=xs: _call(estimator, x, **kw),
                          lambda kw=kw, x=x, c=c: tuple(c * o for o in _call(estimator, x, **kw)))
            # splitting the batch: columns are independent
            if B > 1:
                cut = B // 2
                _run_pair(tr, lambda kw=kw, x=x: _describe_inputs(f"columns [:{cut}] and [{cut}:] computed separately", x, kw),
                          lambda kw=kw, x=x: _call(estimator, x, **kw),
                          lambda kw=kw, x=x, cut=cut: tuple(
                              np.concatenate(p, axis=1) for p in zip(
                                  _call(estimator, _slice(x, cols=list(range(cut))), **kw),
                                  _call(estimator, _slice(x, cols=list(range(cut, B))), **kw))))
            # splitting in time at a done (done in every column at t0)
            if T > 1:
                t0 = T // 2 - 1
                d = x["dones"].copy()
                d[t0] = 1.0
                xd = dict(x, dones=d)
                _run_pair(tr, lambda kw=kw, x=xd, t0=t0: _describe_inputs(
                              f"done at t={t0} in every column: steps [:{t0 + 1}] and [{t0 + 1}:] computed separately", x, kw),
                          lambda kw=kw, x=xd: _call(estimator, x, **kw),
                          lambda kw=kw, x=xd, t0=t0: tuple(
                              np.concatenate(p, axis=0) for p in zip(
                                  _call(estimator, _slice(x, t1=t0 + 1), **kw),
                                  _call(estimator, _slice(x, t0=t0 + 1), **kw))))
    return tr.result()


#: name -> check function; ``verify(checks=...)`` selects by name.
CHECKS: dict[str, Callable[..., CheckResult]] = {
    "P1": check_p1,
    "P2": check_p2,
    "P3/P4 operator": check_operator,
    "P6 reductions": check_reductions,
    "P7 symmetries": check_symmetries,
    "matches reference": check_reference,
}


def verify(
    estimator: Callable,
    *,
    seed: int = 0,
    atol: float = 1e-9,
    rtol: float = 1e-9,
    checks: tuple[str, ...] | None = None,
) -> VerifyReport:
    """Run the property checks on ``estimator`` and return a ``VerifyReport``.

    ``seed`` fixes every game, policy and input (same seed, same report).
    ``atol``/``rtol``: per-element tolerance |got - expected| <= atol + rtol |expected|;
    the defaults suit float64 implementations (inputs are bounded: probabilities
    >= 0.05, rewards and values in [-1, 1]). ``checks``: a subset of ``CHECKS``.
    """
    if not callable(estimator):
        raise ValueError(f"estimator must be callable; got {type(estimator).__name__}.")
    names = tuple(CHECKS) if checks is None else tuple(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"checks must be names from {list(CHECKS)}; got unknown {unknown}.")
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"atol and rtol must be >= 0; got atol={atol!r}, rtol={rtol!r}.")
    label = f"{getattr(estimator, '__module__', None) or '?'}:{getattr(estimator, '__qualname__', None) or repr(estimator)}"
    report = VerifyReport(label, int(seed), float(atol), float(rtol))
    with np.errstate(all="ignore"):  # the estimator's own overflow warnings are reported as failures
        for name in names:
            try:
                report.results.append(CHECKS[name](estimator, int(seed), float(atol), float(rtol)))
            except Exception as exc:  # a bug in a check must not hide the others
                report.results.append(CheckResult(name, False, float("inf"), 0,
                                                  f"the check itself raised {type(exc).__name__}: {exc}"))
    return report

