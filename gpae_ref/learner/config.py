"""The learner's settings: one frozen, typed dataclass, a doc line per field.

Defaults are the authors' SMAX settings (kim-seongmin/GPAE ``config/rnn_smax.yaml``);
derive variants with ``dataclasses.replace``, never by mutation.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gpae_ref.corrections import CORRECTIONS
from gpae_ref.validation import ETA_RANGE  # the one table of corrections; eta's range

ADVANTAGES = ("gae", "gpae", "coma", "dop")
MARGINALISE = ("current", "behaviour")


class Range(NamedTuple):
    """The values a numeric field accepts: lo .. hi, each end closed unless said open."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x) -> bool:
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return bool(above and below)

    def __str__(self) -> str:
        def end(v):
            if isinstance(v, int) and v > 2**32:
                return f"2^{v.bit_length() - 1}" if v & (v - 1) == 0 else f"{float(v):g}"
            return f"{v:g}" if isinstance(v, float) else str(v)
        return f"{'(' if self.lo_open else '['}{end(self.lo)}, {end(self.hi)}{')' if self.hi_open else ']'}"


#: Non-numeric field types (annotations are strings here): the Python type and how to say it.
_PLAIN_TYPES = {"str": (str, "must be a string"), "bool": (bool, "must be true or false")}


def ranged(default, lo, hi, *, lo_open: bool = False, hi_open: bool = False):
    """A field with its accepted range in its metadata: ``__post_init__`` and the CLI
    (``gpae_ref.learner.settings``) read it there, the one place it is written."""
    return dataclasses.field(default=default, metadata={"range": Range(lo, hi, lo_open, hi_open)})


def field_range(f: dataclasses.Field) -> Range | None:
    """The accepted range of a numeric field (None for strings and flags)."""
    return f.metadata.get("range")


#: Upper ends of sizes and multipliers: far beyond any run this learner can make (1e12 env
#: steps is decades on one machine at ~3,000 steps/s) and small enough that sizes fit the
#: int32 arithmetic of jitted code and multiplied float32 losses, rewards and gradients stay
#: finite (float32's max is 3.4e38): 1e20 steps or a 1e308 coefficient mean a typo.
MAX_STEPS = 10**12
MAX_SIZE = 2**20  # envs, steps per rollout, minibatches, replayed sequences
MAX_COUNT = 1000  # epochs, layers, tree-backup terms, rollouts kept, target-refresh period
MAX_SCALE = 1e6  # loss coefficients, reward scale, gradient-norm clip
#: The lower end of settings that must be > 0: float32's smallest normal number, below which
#: the float32 learner would hold 0 or a denormal (an Adam epsilon of 0 divides by zero).
MIN_POSITIVE = float(np.finfo(np.float32).tiny)


def known_scenarios() -> tuple[str, ...]:
    """Map names jaxmarl's SMAX knows (``map_name_to_scenario``)."""
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    return tuple(MAP_NAME_TO_SCENARIO)


@dataclass(frozen=True)
class LearnerConfig:
    """MAPPO-style learner on SMAX with a choice of advantage estimator (spec section 8)."""

    scenario: str = "3m"
    """SMAX map name (``jaxmarl.environments.smax.map_name_to_scenario``), against the heuristic enemy."""
    advantage: str = "gpae"
    """``gae``: MAPPO with a state-value critic V(world state); ``gpae``: per-agent Q critic + GPAE;
    ``coma``: the same Q critic with lam = 0 (one-step counterfactual advantage); ``dop``: DOP's linearly
    decomposed critic sum_i k_i(s) Q_i(s, a^i) + b(s), off-policy TB(lambda) + on-policy TD(lambda) targets."""
    correction: str = "dt"
    """Trace correction for ``gpae`` (spec section 4): none, it, st, dt, full."""
    eta: float = ranged(1.02, *ETA_RANGE)
    """DT-ISR cap on the others' ratio rho^-i (authors: 1.02 on SMAX)."""
    reuse: int = ranged(1, 1, MAX_COUNT)
    """K: rollouts kept and trained on per update (1 = on-policy); each rollout uses num_envs / K envs."""
    marginalise: str = "current"
    """Which probabilities replace agent i's one-hot in the Q critic on reused data: ``current``
    (pi at the start of the update: EQ^{pi,i}, the spec) or ``behaviour`` (stored mu, the authors' code)."""
    total_steps: int = ranged(10_000_000, 1, MAX_STEPS)
    """Environment steps (transitions of one env) to train for; sets the number of updates and the LR schedule."""
    num_envs: int = ranged(128, 1, MAX_SIZE)
    """Parallel environments per update batch (split into K rollouts of num_envs / K envs)."""
    num_steps: int = ranged(128, 1, MAX_SIZE)
    """T: steps per rollout and environment."""
    update_epochs: int = ranged(5, 1, MAX_COUNT)
    """Passes over the kept data per update."""
    num_minibatches: int = ranged(1, 1, MAX_SIZE)
    """Minibatches per epoch (split along environments, whole sequences kept)."""
    lr: float = ranged(5e-4, MIN_POSITIVE, 1.0)
    """Adam learning rate (actor and critic)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over all updates."""
    adam_eps: float = ranged(1e-5, MIN_POSITIVE, 1.0)
    """Adam epsilon."""
    max_grad_norm: float = ranged(1.0, MIN_POSITIVE, MAX_SCALE)
    """Global gradient-norm clip, applied to actor and critic separately."""
    gamma: float = ranged(0.99, 0.0, 1.0, hi_open=True)
    """Discount."""
    lam: float = ranged(0.95, 0.0, 1.0)
    """GAE / GPAE lambda (``coma`` ignores it: lam = 0)."""
    clip_eps: float = ranged(0.2, MIN_POSITIVE, 1.0)
    """PPO clip range eps (also the value-clipping range)."""
    value_clip: bool = True
    """Clip the critic around its start-of-update prediction (MAPPO value clipping)."""
    vf_coef: float = ranged(0.5, 0.0, MAX_SCALE)
    """Critic loss coefficient."""
    ent_coef: float = ranged(0.0, 0.0, MAX_SCALE)
    """Entropy bonus coefficient."""
    hidden_size: int = ranged(128, 2, MAX_SIZE)
    """Width of dense layers and GRU."""
    num_layers: int = ranged(2, 1, MAX_COUNT)
    """Dense layers before the GRU (the Q critic's first layer is split into state and action halves)."""
    head_layers: int = ranged(0, 0, MAX_COUNT)
    """Dense layers between the GRU and the output of actor and critic (the authors: 0; JaxMARL's MAPPO: 1;
    DOP's critic and mixer have none)."""
    layer_norm: bool = True
    """LayerNorm after each dense layer."""
    norm_input: bool = True
    """LayerNorm on network inputs."""
    reward_scale: float = ranged(1.0, MIN_POSITIVE, MAX_SCALE)
    """Multiplier on the team reward."""
    eval_envs: int = ranged(64, 1, MAX_SIZE)
    """Environments of the greedy evaluation (one episode each)."""
    dop_tb_lambda: float = ranged(0.93, 0.0, 1.0)
    """DOP: lambda of the tree-backup TB(lambda) target on replayed data (DOP's SMAC setting 0.93)."""
    dop_td_lambda: float = ranged(0.8, 0.0, 1.0)
    """DOP: lambda of the TD(lambda) target on the fresh rollout (DOP's SMAC setting 0.8)."""
    dop_tb_steps: int = ranged(5, 1, MAX_COUNT)
    """DOP: terms of the tree backup (DOP's SMAC setting 5)."""
    dop_kappa: float = ranged(0.5, 0.0, 1.0)
    """DOP: weight of the off-policy TB loss in the critic loss; 1 - kappa weights the on-policy TD(lambda) loss."""
    dop_critic_lr: float = ranged(5e-4, MIN_POSITIVE, 1.0)
    """DOP: Adam learning rate of the critic and mixer, annealed like ``lr`` (see docs/learner.md on DOP's 1e-4)."""
    dop_buffer_rollouts: int = ranged(16, 1, MAX_COUNT)
    """DOP: rollouts kept in the replay buffer (16 x 128 envs x 128 steps = 262,144 env steps, ~ DOP's 5,000 SMAC episodes)."""
    dop_off_batch: int = ranged(32, 1, MAX_SIZE)
    """DOP: replayed sequences (one env, num_steps long) per critic step for the TB loss (DOP: 32 episodes)."""
    dop_target_every: int = ranged(1, 1, MAX_COUNT)
    """DOP: updates between target-critic refreshes (1: targets from the critic at the start of each update)."""
    seed: int = ranged(0, 0, 2**63, hi_open=True)
    """Seed of ``jax.random.PRNGKey`` for the CLI (the core takes explicit keys)."""

    def __post_init__(self):
        def check(ok: bool, name: str, msg: str):
            if not ok:
                raise ValueError(f"{name}: {msg}; got {getattr(self, name)!r}.")

        for f in dataclasses.fields(self):
            if field_range(f) is not None:
                check(_in_range(f, getattr(self, f.name)), f.name, _range_text(f))
            elif f.type in _PLAIN_TYPES:  # numbers' types are the range check's; a run.json may hold anything
                check(type(getattr(self, f.name)) is _PLAIN_TYPES[f.type][0], f.name, _PLAIN_TYPES[f.type][1])
        check(self.advantage in ADVANTAGES, "advantage", f"must be one of {', '.join(ADVANTAGES)}")
        check(self.correction in CORRECTIONS, "correction", f"must be one of {', '.join(CORRECTIONS)}")
        check(self.marginalise in MARGINALISE, "marginalise", f"must be one of {', '.join(MARGINALISE)}")
        check(self.num_envs % self.reuse == 0, "num_envs", f"must be a multiple of reuse={self.reuse}")
        check(
            (self.num_envs // self.reuse) % self.num_minibatches == 0,
            "num_minibatches",
            f"must divide num_envs / reuse = {self.num_envs // self.reuse}",
        )
        check(self.hidden_size % 2 == 0, "hidden_size", "must be even")
        check(self.advantage != "dop" or self.reuse == 1, "reuse", "must be 1 for dop (it replays from its own buffer)")
        check(self.dop_buffer_rollouts * self.num_envs >= self.dop_off_batch,
              "dop_buffer_rollouts", f"must hold at least dop_off_batch={self.dop_off_batch} "
              f"sequences ({self.num_envs} per rollout)")
        check(self.total_steps >= self.steps_per_update, "total_steps",
              f"must be at least one update's env steps ({self.steps_per_update})")

    @property
    def envs_per_rollout(self) -> int:
        """B = num_envs / K: environments stepped per rollout."""
        return self.num_envs // self.reuse

    @property
    def steps_per_update(self) -> int:
        """New env steps per update: T * num_envs / K."""
        return self.num_steps * self.envs_per_rollout

    @property
    def num_updates(self) -> int:
        """Updates in a full run: total_steps // steps_per_update."""
        return self.total_steps // self.steps_per_update

    @property
    def effective_lam(self) -> float:
        """lam as used by the estimator (0 for ``coma``)."""
        return 0.0 if self.advantage == "coma" else self.lam

    @property
    def effective_correction(self) -> str:
        """The trace correction the estimator uses: ``none`` for MAPPO (``gae``)."""
        return "none" if self.advantage == "gae" else self.correction

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config: unknown fields {unknown}.")
        return cls(**d)


def _range_text(f: dataclasses.Field) -> str:
    kind = "an integer" if f.type == "int" else "a number"
    return f"must be {kind} in {field_range(f)}"


def _in_range(f: dataclasses.Field, value) -> bool:
    """Whether ``value`` is of the field's type (int: an integer; float: any real number,
    never a bool) and in its range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if f.type == "int" and not isinstance(value, numbers.Integral):
        return False
    return value in field_range(f)


def check_field(name: str, value) -> None:
    """ValueError naming field ``name`` if ``value`` is outside its range (for the CLI's flags)."""
    f = {f.name: f for f in dataclasses.fields(LearnerConfig)}[name]
    if field_range(f) is not None and not _in_range(f, value):
        raise ValueError(f"{name}: {_range_text(f)}; got {value!r}.")


def check_scenario(config: LearnerConfig) -> None:
    """Raise ValueError naming ``scenario`` if jaxmarl does not know the map."""
    names = known_scenarios()
    if config.scenario not in names:
        raise ValueError(f"scenario: unknown SMAX map {config.scenario!r}; known: {', '.join(names)}.")
