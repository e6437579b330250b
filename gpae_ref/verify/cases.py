"""The cases of every check: estimator calls plus what their outputs must equal.

A ``Case`` holds one or more ``Call``s and a ``relation`` between their
outputs and an expectation (see ``Counterexample`` in ``report.py``). Every
call belongs to one of four *groups*, each with one fixed set of options, so
that the runner can stack all calls of a group and correction into a single
estimator call (a jitted estimator compiles one program per group):

=====  =====  ====  ====  ==========================  =================================
group  gamma  lam   eta   layout                      cases
=====  =====  ====  ====  ==========================  =================================
``A``  0.9    0.6   0.9   per-agent values, mask      P1, P3/P4, P6 (none = GAE, N = 1),
                                                      P7 (whole batches), reference
``B``  0.9    1.0   1.02  per-agent values, no mask   P1, P2, P3/P4, P6 (on-policy, N = 1),
                                                      reference
``C``  0.99   0.0   1.02  state values [T+1, B]       P6 (lam = 0 is delta), reference
``D``  0.9    0.6   0.9   per-agent values, mask      P7 (the split halves, apart from
                                                      their whole batch), long reference cases
``W``  0.9    0.6   0.9   per-agent values, mask      reference: 128 agents with wide ratios,
                                                      for st, dt, full only (the corrections
                                                      that use the joint ratio)
=====  =====  ====  ====  ==========================  =================================

So a full verify is 23 calls, one with a single correction 4 or 5. W is apart
because padding the other cases to 128 agents would multiply their size.

Arrays here are always ``[T, B, N]``; the runner adapts them to ``agents=1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpae_ref import oracle
from gpae_ref.corrections import JOINT_RATIO_CORRECTIONS  # the others never form rho^-i: the 128-agent case is moot
from gpae_ref.reference import gpae as reference_gpae

GROUPS: dict[str, dict[str, float]] = {
    "A": dict(gamma=0.9, lam=0.6, eta=0.9),
    "B": dict(gamma=0.9, lam=1.0, eta=1.02),
    "C": dict(gamma=0.99, lam=0.0, eta=1.02),
    "D": dict(gamma=0.9, lam=0.6, eta=0.9),
    "W": dict(gamma=0.9, lam=0.6, eta=0.9),
}
MASKED_GROUPS = ("A", "D", "W")  # these always pass mask= (ones where a case has none), unless masks=False
SHARED_VALUE_GROUPS = ("C",)

CHECK_NAMES = ("P1", "P2", "P3/P4 operator", "P6 reductions", "P7 symmetries", "matches reference")


@dataclass
class Call:
    """One estimator call: arrays ``[T, B, N]`` (values ``[T+1, B, N]``, or ``[T+1, B]`` in group C)."""

    arrays: dict[str, np.ndarray]
    correction: str
    group: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(GROUPS[self.group], correction=self.correction)

    @property
    def shape(self) -> tuple[int, int, int]:
        T, B, N = np.shape(self.arrays["logp_target"])
        return T, B, N


@dataclass
class Case:
    """Calls, a relation between their outputs, and (for ``direct``/``expectation``) the exact values."""

    check: str
    correction: str
    title: str
    description: str
    calls: list[Call]
    relation: str
    expected: tuple[np.ndarray, np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    shrinkable: bool = False
    baseline: np.ndarray | None = None  # the E^i_t of the value target, shaped like the expected outputs

    def expected_output(self, what: int, value_targets: str = "clipped") -> np.ndarray:
        """Exact advantages (``what`` 0) or value targets (1) in a convention of ``options.VALUE_TARGETS``.

        clipped: v = E + min(1, rho^i) A (the spec's); plain: v = E + A (so E[v] = E + E[A]: the
        baseline is fixed given s_0, a_0).
        """
        if what == 0 or value_targets == "clipped":
            return np.asarray(self.expected[what], np.float64)
        return np.asarray(self.baseline, np.float64) + np.asarray(self.expected[0], np.float64)


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------


def random_inputs(rng: np.random.Generator, T: int, B: int, N: int, *, done_prob: float = 0.0,
                  mask_prob: float = 0.0, shared_values: bool = False, on_policy: bool = False,
                  min_prob: float = 0.05) -> dict:
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
    return dict(
        rewards=rng.uniform(-1, 1, size=(T, B)),
        values=rng.uniform(-1, 1, size=(T + 1, B, N)),
        dones=np.zeros((T, B)),
        logp_target=logp_t,
        logp_behaviour=logp_t - l,
    )


def slice_inputs(inputs: dict, *, t0: int | None = None, t1: int | None = None, cols=None, agents=None) -> dict:
    """Sub-input: time rows [t0, t1) (values [t0, t1]), batch columns, agents."""
    T = np.shape(inputs["rewards"])[0]
    t0 = 0 if t0 is None else t0
    t1 = T if t1 is None else t1
    out = {}
    for k, x in inputs.items():
        x = np.asarray(x)
        x = x[t0: t1 + 1] if k == "values" else x[t0:t1]
        if cols is not None:
            x = x[:, cols]
        if agents is not None and x.ndim == 3:
            x = x[:, :, agents]
        out[k] = x
    return out


def describe_inputs(title: str, inputs: dict, options: dict) -> str:
    T, B, N = np.shape(inputs["logp_target"])
    opts = " ".join(f"{k}={v!r}" for k, v in options.items())
    return f"T={T} B={B} N={N} {opts}"


# ----------------------------------------------------------------------------
# Independent formulas (P6)
# ----------------------------------------------------------------------------


def gae_with_traces(r, E, d, c, gamma: float, lam: float) -> np.ndarray:
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


def _single_agent_trace(rho: np.ndarray, correction: str, eta: float) -> np.ndarray:
    """N = 1: others' ratio is 1, so it = st = min(1, rho), dt = min(1, rho min(eta, 1))."""
    return {"none": np.ones_like(rho), "it": np.minimum(1, rho), "st": np.minimum(1, rho),
            "dt": np.minimum(1, rho * min(eta, 1.0)), "full": rho}[correction]


def _value_baseline(inputs: dict) -> np.ndarray:
    """E^i_t for t < T as [T, B, N] (a state value [T+1, B] is every agent's)."""
    v = np.asarray(inputs["values"], np.float64)[:-1]
    return v if v.ndim == 3 else np.broadcast_to(v[..., None], np.shape(inputs["logp_target"]))


def _direct(check, correction, title, inputs, group, expected, **kw) -> Case:
    call = Call(inputs, correction, group)
    return Case(check, correction, title, describe_inputs(title, inputs, call.options), [call], "direct",
                expected, baseline=_value_baseline(inputs), **kw)


def _reference_expected(inputs: dict, group: str, correction: str) -> tuple[np.ndarray, np.ndarray]:
    a = dict(inputs)
    out = reference_gpae(a.pop("rewards"), a.pop("values"), a.pop("dones"), a.pop("logp_target"),
                         a.pop("logp_behaviour"), correction=correction, mask=a.pop("mask", None), **GROUPS[group])
    return out.advantages, out.value_targets


# ----------------------------------------------------------------------------
# Game-based checks (P1, P2, P3/P4)
# ----------------------------------------------------------------------------


def exact_games(seed: int, agents: int | None):
    """Tiny games, smallest first: (label, game, horizon); gamma 0.9 everywhere (groups A and B)."""
    if agents == 1:
        spec = [(1, (2,), 0.0, 3), (2, (3,), 0.2, 3), (3, (2,), 0.0, 3)]
    else:
        spec = [(1, (2,), 0.0, 3), (2, (2, 2), 0.0, 3), (2, (2, 2), 0.2, 3), (2, (2, 2, 2), 0.0, 2),
                (3, (3, 2), 0.1, 2)]
    games = []
    for k, (S, K, exit_p, horizon) in enumerate(spec):
        label = f"S={S} K={K} gamma=0.9" + (f" exit={exit_p}" if exit_p else "")
        games.append((label, oracle.random_game(seed + k, S, K, 0.9, exit_probability=exit_p), horizon))
    return games


def _game_case(check, correction, label, game, horizon, enum, group, expected, pi, mu, values, note) -> Case:
    options = dict(GROUPS[group], correction=correction)
    S, A, N = game.n_states, game.n_joint, game.n_agents
    description = (
        f"game {label} (S={S}, joint actions A={A}, N={N}), horizon T={horizon}, "
        + " ".join(f"{k}={v!r}" for k, v in options.items()) + f", {note}\n"
        "E[A^i_0 | s_0, a_0] by enumerating every trajectory (one batch column each); "
        "index = (s_0, joint a_0, agent i)"
    )
    arrays = dict(rewards=enum.rewards, values=enum.values, dones=enum.dones,
                  logp_target=enum.logp_target, logp_behaviour=enum.logp_behaviour)
    extra = dict(weight=enum.weight, start=enum.start, n_states=S, n_joint=A,
                 game=dict(rewards=game.rewards, transitions=game.transitions,
                           n_actions=np.array(game.n_actions), gamma=game.gamma, horizon=horizon,
                           values=np.asarray(values),
                           **{f"pi_{j}": p for j, p in enumerate(pi)}, **{f"mu_{j}": m for j, m in enumerate(mu)}))
    baseline = np.asarray(values)[0] if np.ndim(values) == 4 else np.asarray(values)  # E_0(s, a^-i): time 0
    return Case(check, correction, f"game {label}, {note}", description, [Call(arrays, correction, group)],
                "expectation", expected, extra, baseline=baseline)


def cases_p1(seed, corrections, agents):
    """P1: mu = pi, E = EQ^{pi,i}: E[A^i_0|s,a] = A^{pi,i}(s,a) for every correction and lam."""
    out = []
    for k, (label, game, horizon) in enumerate(exact_games(seed, agents)):
        pi = oracle.random_policy(seed + 100 + k, game)
        EQ = oracle.per_agent_values(game, pi)
        adv = oracle.per_agent_advantages(game, pi)
        enum = oracle.enumerate_trajectories(game, pi, pi, EQ, horizon)
        for group in ("A", "B"):
            for c in corrections:
                out.append(_game_case("P1", c, label, game, horizon, enum, group, (adv, EQ + adv), pi, pi, EQ,
                                      "on-policy, values = EQ^{pi,i}"))
    return out


def cases_p2(seed, corrections, agents):
    """P2: mu = pi, lam = 1, any time-indexed E, horizon-T game: E[A^i_0|s,a] = Q_0(s,a) - E_0(s,a^-i)."""
    out = []
    for k, (label, game, horizon) in enumerate(exact_games(seed, agents)):
        rng = np.random.default_rng(seed + 200 + k)
        pi = oracle.random_policy(seed + 300 + k, game)
        E = rng.uniform(-1, 1, size=(horizon + 1, game.n_states, game.n_joint, game.n_agents))
        Q0 = oracle.finite_horizon_q(game, pi, horizon)[0][:, :, None]
        enum = oracle.enumerate_trajectories(game, pi, pi, E, horizon, final_done=True)
        expected = (Q0 - E[0], np.broadcast_to(Q0, E[0].shape))
        for c in corrections:  # group B: lam = 1, eta >= 1 (on-policy dt with eta < 1 would cut traces)
            out.append(_game_case("P2", c, label, game, horizon, enum, "B", expected, pi, pi, E,
                                  "on-policy, random time-indexed values, done at T-1"))
    return out


def cases_operator(seed, corrections, agents):
    """P3/P4: on- and off-policy, any E: the estimator's E[A^i_0|s,a] is the G_0 that defines T^i."""
    out = []
    for k, (label, game, horizon) in enumerate(exact_games(seed, agents)):
        rng = np.random.default_rng(seed + 400 + k)
        pi = oracle.random_policy(seed + 500 + k, game)
        for off in (False, True):
            mu = oracle.random_policy(seed + 600 + k, game) if off else pi
            E = rng.uniform(-1, 1, size=(game.n_states, game.n_joint, game.n_agents))
            enum = oracle.enumerate_trajectories(game, pi, mu, E, horizon)
            for group in ("A", "B"):
                g = GROUPS[group]
                for c in corrections:
                    G = oracle.expected_advantage(game, pi, mu, E, lam=g["lam"], correction=c, eta=g["eta"],
                                                  horizon=horizon)
                    vt = oracle.expected_value_target(game, pi, mu, E, G)
                    note = ("off-policy" if off else "on-policy") + ", random values"
                    out.append(_game_case("P3/P4 operator", c, label, game, horizon, enum, group, (G, vt),
                                          pi, mu, E, note))
    return out


# ----------------------------------------------------------------------------
# Input-based checks (P6, P7, reference)
# ----------------------------------------------------------------------------


def cases_reference(seed, corrections, agents, masks):
    """The estimator equals the float64 reference ``gpae_ref.reference.gpae`` on random inputs."""
    rng = np.random.default_rng(seed + 700)
    # Long cases go to the small groups C and D: padding groups A and B (thousands of game columns of
    # T <= 3) to T = 12 would triple their size.
    sizes = [(1, 1, 1), (2, 1, 2), (3, 2, 3), (3, 3, 2), (8, 4, 4), (12, 6, 3)]
    if agents == 1:
        sizes = [(T, B, 1) for T, B, _ in sizes]
    short = [("plain", "B", {}), ("dones", "A", dict(done_prob=0.3)),
             ("dones and masks", "A", dict(done_prob=0.3, mask_prob=0.25))]
    long = [("dones and masks", "D", dict(done_prob=0.3, mask_prob=0.25)), ("dones", "D", dict(done_prob=0.3))]
    shared = [("state values [T+1, B]", "C", dict(done_prob=0.2, shared_values=True))]
    out = []
    for T, B, N in sizes:
        for name, group, variant in (short if T <= 3 else long) + shared:
            if "mask_prob" in variant and not masks:
                continue
            inputs = random_inputs(rng, T, B, N, **variant)
            for c in corrections:
                out.append(_direct("matches reference", c, f"random inputs ({name})", inputs, group,
                                   _reference_expected(inputs, group, c), shrinkable=True))
    if agents is None:
        wide = wide_ratio_inputs(rng)
        for c in corrections:
            if c in JOINT_RATIO_CORRECTIONS:
                out.append(_direct("matches reference", c,
                                   "wide ratios: 128 agents, per-agent |log-ratio| 12-14 in sign blocks", wide, "W",
                                   _reference_expected(wide, "W", c), shrinkable=True))
    return out


def cases_reductions(seed, corrections, agents):
    """P6: none = GAE on per-agent values; lam = 0 = delta; N = 1 = GAE with traces; on-policy all equal."""
    rng = np.random.default_rng(seed + 800)
    out = []
    # T <= 3 here (the longest game horizon), so that stacking pads nothing in time; see cases_reference
    sizes = [(1, 1, 1), (3, 2, 2), (3, 3, 3)] if agents is None else [(1, 1, 1), (3, 2, 1), (3, 3, 1)]
    for T, B, N in sizes:
        x = random_inputs(rng, T, B, N, done_prob=0.3)
        E = x["values"]
        own_clip = np.minimum(1.0, np.exp(x["logp_target"] - x["logp_behaviour"]))
        if "none" in corrections:
            g = GROUPS["A"]
            gae = gae_with_traces(x["rewards"], E, x["dones"], np.ones((T, B, N)), g["gamma"], g["lam"])
            out.append(_direct("P6 reductions", "none", "correction 'none' = GAE on per-agent values", x, "A",
                               (gae, E[:-1] + own_clip * gae)))
        xs = random_inputs(rng, T, B, N, done_prob=0.3, shared_values=True)
        Es = np.broadcast_to(xs["values"][..., None], (T + 1, B, N))
        clip_s = np.minimum(1.0, np.exp(xs["logp_target"] - xs["logp_behaviour"]))
        delta = gae_with_traces(xs["rewards"], Es, xs["dones"], np.ones((T, B, N)), GROUPS["C"]["gamma"], 0.0)
        xo = random_inputs(rng, T, B, N, done_prob=0.3, on_policy=True)
        base = gae_with_traces(xo["rewards"], xo["values"], xo["dones"], np.ones((T, B, N)), GROUPS["B"]["gamma"],
                               GROUPS["B"]["lam"])
        for c in corrections:
            out.append(_direct("P6 reductions", c, "lam = 0 gives the one-step TD error delta (state values)", xs,
                               "C", (delta, Es[:-1] + clip_s * delta)))
            out.append(_direct("P6 reductions", c, "on-policy data: every correction equals GAE", xo, "B",
                               (base, xo["values"][:-1] + base)))
    for T, B, groups in [(1, 1, "AB"), (3, 2, "AB"), (8, 3, "D")]:
        x = random_inputs(rng, T, B, 1, done_prob=0.25)
        rho = np.exp(x["logp_target"] - x["logp_behaviour"])
        for group in groups:
            g = GROUPS[group]
            for c in corrections:
                want = gae_with_traces(x["rewards"], x["values"], x["dones"], _single_agent_trace(rho, c, g["eta"]),
                                       g["gamma"], g["lam"])
                out.append(_direct("P6 reductions", c, "N = 1: GAE with Retrace-style traces", x, group,
                                   (want, x["values"][:-1] + np.minimum(1, rho) * want)))
    return out


def cases_symmetries(seed, corrections, agents, masks):
    """P7: permuting agents permutes outputs; scaling by c > 0 scales them; splitting the batch changes nothing."""
    rng = np.random.default_rng(seed + 900)
    out = []
    sizes = [(2, 1, 2), (3, 3, 3), (3, 4, 2)] if agents is None else [(2, 1, 1), (3, 3, 1), (3, 4, 1)]
    for T, B, N in sizes:
        for c in corrections:
            x = random_inputs(rng, T, B, N, done_prob=0.2, mask_prob=0.2 if masks else 0.0)
            opts = dict(GROUPS["A"], correction=c)

            def case(title, calls, relation, **extra):
                out.append(Case("P7 symmetries", c, title, describe_inputs(title, x, opts), calls, relation,
                                extra=extra))

            if N > 1:
                perm = rng.permutation(N)
                while np.all(perm == np.arange(N)):
                    perm = rng.permutation(N)
                xp = {k: (v[..., perm] if k in ("values", "logp_target", "logp_behaviour", "mask") else v)
                      for k, v in x.items()}
                case(f"permuting agents by {perm.tolist()}", [Call(xp, c, "A"), Call(x, c, "A")], "permute",
                     perm=perm)
            for scale in (0.5, 3.0):
                xs = dict(x, rewards=scale * x["rewards"], values=scale * x["values"])
                case(f"scaling rewards and values by c={scale}", [Call(xs, c, "A"), Call(x, c, "A")], "scale",
                     scale=scale)
            if B > 1:
                cut = B // 2
                case(f"columns [:{cut}] and [{cut}:] computed in separate calls",
                     [Call(x, c, "A"), Call(slice_inputs(x, cols=list(range(cut))), c, "D"),
                      Call(slice_inputs(x, cols=list(range(cut, B))), c, "D")], "concat_columns")
            if T > 1:
                t0 = T // 2 - 1
                xd = dict(x, dones=x["dones"].copy())
                xd["dones"][t0] = 1.0
                case(f"done at t={t0} in every column: steps [:{t0 + 1}] and [{t0 + 1}:] in separate calls",
                     [Call(xd, c, "A"), Call(slice_inputs(xd, t1=t0 + 1), c, "D"),
                      Call(slice_inputs(xd, t0=t0 + 1), c, "D")], "concat_time")
    return out


def build_cases(check: str, seed: int, corrections, agents, masks) -> list[Case]:
    """Every case of one check, smallest first."""
    if check == "P1":
        return cases_p1(seed, corrections, agents)
    if check == "P2":
        return cases_p2(seed, corrections, agents)
    if check == "P3/P4 operator":
        return cases_operator(seed, corrections, agents)
    if check == "P6 reductions":
        return cases_reductions(seed, corrections, agents)
    if check == "P7 symmetries":
        return cases_symmetries(seed, corrections, agents, masks)
    if check == "matches reference":
        return cases_reference(seed, corrections, agents, masks)
    raise ValueError(f"unknown check {check!r}")
