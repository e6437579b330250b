"""The learner's settings: one frozen, typed dataclass, a doc line per field.

Defaults are the authors' SMAX settings (kim-seongmin/GPAE ``config/rnn_smax.yaml``);
derive variants with ``dataclasses.replace``, never by mutation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gpae_ref._validate import CORRECTIONS  # the one table of corrections

ADVANTAGES = ("gae", "gpae", "coma", "dop")
MARGINALISE = ("current", "behaviour")


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
    eta: float = 1.02
    """DT-ISR cap on the others' ratio rho^-i (authors: 1.02 on SMAX)."""
    reuse: int = 1
    """K: rollouts kept and trained on per update (1 = on-policy); each rollout uses num_envs / K envs."""
    marginalise: str = "current"
    """Which probabilities replace agent i's one-hot in the Q critic on reused data: ``current``
    (pi at the start of the update: EQ^{pi,i}, the spec) or ``behaviour`` (stored mu, the authors' code)."""
    total_steps: int = 10_000_000
    """Environment steps (transitions of one env) to train for; sets the number of updates and the LR schedule."""
    num_envs: int = 128
    """Parallel environments per update batch (split into K rollouts of num_envs / K envs)."""
    num_steps: int = 128
    """T: steps per rollout and environment."""
    update_epochs: int = 5
    """Passes over the kept data per update."""
    num_minibatches: int = 1
    """Minibatches per epoch (split along environments, whole sequences kept)."""
    lr: float = 5e-4
    """Adam learning rate (actor and critic)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over all updates."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip, applied to actor and critic separately."""
    gamma: float = 0.99
    """Discount."""
    lam: float = 0.95
    """GAE / GPAE lambda (``coma`` ignores it: lam = 0)."""
    clip_eps: float = 0.2
    """PPO clip range eps (also the value-clipping range)."""
    value_clip: bool = True
    """Clip the critic around its start-of-update prediction (MAPPO value clipping)."""
    vf_coef: float = 0.5
    """Critic loss coefficient."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    hidden_size: int = 128
    """Width of dense layers and GRU."""
    num_layers: int = 2
    """Dense layers before the GRU (the Q critic's first layer is split into state and action halves)."""
    head_layers: int = 0
    """Dense layers between the GRU and the output of actor and critic (the authors: 0; JaxMARL's MAPPO: 1;
    DOP's critic and mixer have none)."""
    layer_norm: bool = True
    """LayerNorm after each dense layer."""
    norm_input: bool = True
    """LayerNorm on network inputs."""
    reward_scale: float = 1.0
    """Multiplier on the team reward."""
    eval_envs: int = 64
    """Environments of the greedy evaluation (one episode each)."""
    dop_tb_lambda: float = 0.93
    """DOP: lambda of the tree-backup TB(lambda) target on replayed data (DOP's SMAC setting 0.93)."""
    dop_td_lambda: float = 0.8
    """DOP: lambda of the TD(lambda) target on the fresh rollout (DOP's SMAC setting 0.8)."""
    dop_tb_steps: int = 5
    """DOP: terms of the tree backup (DOP's SMAC setting 5)."""
    dop_kappa: float = 0.5
    """DOP: weight of the off-policy TB loss in the critic loss; 1 - kappa weights the on-policy TD(lambda) loss."""
    dop_critic_lr: float = 5e-4
    """DOP: Adam learning rate of the critic and mixer, annealed like ``lr`` (see docs/learner.md on DOP's 1e-4)."""
    dop_buffer_rollouts: int = 16
    """DOP: rollouts kept in the replay buffer (16 x 128 envs x 128 steps = 262,144 env steps, ~ DOP's 5,000 SMAC episodes)."""
    dop_off_batch: int = 32
    """DOP: replayed sequences (one env, num_steps long) per critic step for the TB loss (DOP: 32 episodes)."""
    dop_target_every: int = 1
    """DOP: updates between target-critic refreshes (1: targets from the critic at the start of each update)."""
    seed: int = 0
    """Seed of ``jax.random.PRNGKey`` for the CLI (the core takes explicit keys)."""

    def __post_init__(self):
        def check(ok: bool, name: str, msg: str):
            if not ok:
                raise ValueError(f"{name}: {msg}; got {getattr(self, name)!r}.")

        check(self.advantage in ADVANTAGES, "advantage", f"must be one of {', '.join(ADVANTAGES)}")
        check(self.correction in CORRECTIONS, "correction", f"must be one of {', '.join(CORRECTIONS)}")
        check(self.marginalise in MARGINALISE, "marginalise", f"must be one of {', '.join(MARGINALISE)}")
        check(self.eta > 0, "eta", "must be > 0")
        check(self.reuse >= 1, "reuse", "must be >= 1")
        check(self.num_envs >= 1, "num_envs", "must be >= 1")
        check(self.num_envs % self.reuse == 0, "num_envs", f"must be a multiple of reuse={self.reuse}")
        check(self.num_steps >= 1, "num_steps", "must be >= 1")
        check(self.update_epochs >= 1, "update_epochs", "must be >= 1")
        check(self.num_minibatches >= 1, "num_minibatches", "must be >= 1")
        check(
            (self.num_envs // self.reuse) % self.num_minibatches == 0,
            "num_minibatches",
            f"must divide num_envs / reuse = {self.num_envs // self.reuse}",
        )
        check(0.0 <= self.gamma < 1.0, "gamma", "must be in [0, 1)")
        check(0.0 <= self.lam <= 1.0, "lam", "must be in [0, 1]")
        check(self.clip_eps > 0, "clip_eps", "must be > 0")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.hidden_size >= 2 and self.hidden_size % 2 == 0, "hidden_size", "must be even and >= 2")
        check(self.num_layers >= 1, "num_layers", "must be >= 1")
        check(self.head_layers >= 0, "head_layers", "must be >= 0")
        check(self.eval_envs >= 1, "eval_envs", "must be >= 1")
        check(self.advantage != "dop" or self.reuse == 1, "reuse", "must be 1 for dop (it replays from its own buffer)")
        check(0.0 <= self.dop_tb_lambda <= 1.0, "dop_tb_lambda", "must be in [0, 1]")
        check(0.0 <= self.dop_td_lambda <= 1.0, "dop_td_lambda", "must be in [0, 1]")
        check(0.0 <= self.dop_kappa <= 1.0, "dop_kappa", "must be in [0, 1]")
        check(self.dop_tb_steps >= 1, "dop_tb_steps", "must be >= 1")
        check(self.dop_critic_lr > 0, "dop_critic_lr", "must be > 0")
        check(self.dop_off_batch >= 1, "dop_off_batch", "must be >= 1")
        check(self.dop_buffer_rollouts >= 1 and self.dop_buffer_rollouts * self.num_envs >= self.dop_off_batch,
              "dop_buffer_rollouts", f"must be >= 1 and hold at least dop_off_batch={self.dop_off_batch} "
              f"sequences ({self.num_envs} per rollout)")
        check(self.dop_target_every >= 1, "dop_target_every", "must be >= 1")
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


def check_scenario(config: LearnerConfig) -> None:
    """Raise ValueError naming ``scenario`` if jaxmarl does not know the map."""
    names = known_scenarios()
    if config.scenario not in names:
        raise ValueError(f"scenario: unknown SMAX map {config.scenario!r}; known: {', '.join(names)}.")
