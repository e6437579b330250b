"""Experiment definitions: named, versioned comparisons of learner variants at named scales.

Pure data and small functions (no jax): a ``Variant`` is a name and ``LearnerConfig``
overrides, a ``Scale`` a budget (steps, seeds, evaluations, named learner settings, the
SMAX version it needs), an ``Experiment`` the variants, scales and the question asked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gpae_ref.learner.settings import SETTINGS
from gpae_ref.learner.config import LearnerConfig

SCALES = ("tiny", "local", "paper", "authors")
PAPER_STEPS = 10_000_000
PAPER_SEEDS = (0, 1, 2, 3, 4)
@dataclass(frozen=True)
class Variant:
    """One learner setting of an experiment: a name and ``LearnerConfig`` overrides."""

    name: str
    overrides: tuple[tuple[str, Any], ...]
    paper: tuple[tuple[str, float], ...] = ()
    """(map, final win rate %) the paper reports for this variant (second-hand, see docs); shown
    beside ours only where our run used that map."""


@dataclass(frozen=True)
class Scale:
    """Budget of an experiment at one scale."""

    total_steps: int
    seeds: tuple[int, ...]
    base: tuple[tuple[str, Any], ...] = ()
    """``LearnerConfig`` overrides for every variant at this scale (e.g. fewer envs on a CPU)."""
    evals: int = 20
    """Greedy evaluations per run (evenly spaced in updates; each is also a checkpoint)."""
    smax: str | None = None
    """jaxmarl version (its SMAX) this scale must run on, e.g. ``0.0.7`` (the authors'); None: any."""


@dataclass(frozen=True)
class Experiment:
    """A named, versioned comparison. Bump ``version`` whenever a definition changes results."""

    name: str
    version: int
    question: str
    variants: tuple[Variant, ...]
    scales: tuple[tuple[str, Scale], ...]
    base: tuple[tuple[str, Any], ...] = ()
    """``LearnerConfig`` overrides shared by all variants (e.g. the map)."""

    def scale(self, name: str) -> Scale:
        """The budget at scale ``name``; ValueError naming ``scale`` if undefined."""
        table = dict(self.scales)
        if name not in table:
            raise ValueError(f"scale: {name!r} is not defined for experiment {self.name!r}; "
                             f"defined: {', '.join(table)}.")
        return table[name]


def _v(name: str, paper: dict | None = None, **overrides) -> Variant:
    return Variant(name, tuple(sorted(overrides.items())), tuple(sorted((paper or {}).items())))


# The paper's numbers at 1e7 steps, 5 seeds (second-hand, from notes on the paper: spec section 8).
PAPER_MAPPO = {"5m_vs_6m": 3.1, "3s5z_vs_3s6z": 2.6}
PAPER_GPAE = {"5m_vs_6m": 93.7, "3s5z_vs_3s6z": 87.3}
PAPER_ABLATION = {"dt": 93.7, "st": 44.4, "it": 58.6, "none": 34.5}  # 5m_vs_6m


# A CPU-sized learner: the authors' network and epochs, fewer envs per update so that
# a 2-core machine gets many updates into a budget of ~1e6 steps.
LOCAL_BASE = SETTINGS["cpu"]  # --settings cpu of python -m gpae_ref.train: one definition
# Tests: seconds per run.
TINY = Scale(total_steps=4 * 4 * 8, seeds=(0, 1),
             base=(("num_envs", 4), ("num_steps", 8), ("hidden_size", 8), ("num_layers", 1),
                   ("eval_envs", 2), ("update_epochs", 1)),
             evals=2)
PAPER = Scale(total_steps=PAPER_STEPS, seeds=PAPER_SEEDS, evals=40)
# At the paper's budget the comparisons move to the paper's hard map, where its numbers are.
PAPER_HARD = dataclasses.replace(PAPER, base=(("scenario", "5m_vs_6m"),))
LOCAL_SEEDS = (0, 1, 2)
AUTHORS_SMAX = "0.0.7"  # pip jaxmarl whose smax_env.py kim-seongmin/GPAE vendored (docs/learner.md)
REUSE_K = 2  # "GPAE with reuse" in main/ablation/eta: chosen before the reuse sweep (see docs/results.md)


def _scales(local_steps: int, local_seeds=LOCAL_SEEDS, paper: Scale = PAPER_HARD):
    return (("tiny", TINY), ("local", Scale(local_steps, tuple(local_seeds), LOCAL_BASE, evals=16)),
            ("paper", paper))


def _pilot() -> Experiment:
    maps = ("2s3z", "3s5z", "5m_vs_6m")
    return Experiment(
        name="pilot", version=1,
        question="Which map and budget make MAPPO learn without saturating on this machine?",
        variants=tuple(_v(f"{m}-gae", scenario=m, advantage="gae") for m in maps),
        scales=_scales(163_840, paper=PAPER),
    )


def _main() -> Experiment:
    return Experiment(
        name="main", version=1,
        question="MAPPO (GAE) vs COMA vs DOP vs GPAE on-policy vs GPAE with reuse.",
        base=(("scenario", "2s3z"),),
        variants=(_v("mappo", PAPER_MAPPO, advantage="gae"), _v("coma", advantage="coma"),
                  _v("gpae-K1", advantage="gpae", reuse=1),
                  _v(f"gpae-K{REUSE_K}", PAPER_GPAE, advantage="gpae", reuse=REUSE_K),
                  # 128 rollouts of 32 envs x 64 steps: 262,144 env steps, about the DOP
                  # authors' 5,000-episode buffer on 2s3z (0.77 GiB).
                  _v("dop", advantage="dop", dop_buffer_rollouts=128)),
        scales=_scales(327_680),
    )


def _ablation() -> Experiment:
    return Experiment(
        name="ablation", version=1,
        question=f"Trace corrections with reuse K={REUSE_K} (on-policy every trace is 1).",
        base=(("scenario", "2s3z"), ("advantage", "gpae"), ("reuse", REUSE_K)),
        variants=tuple(_v(c, {"5m_vs_6m": PAPER_ABLATION[c]}, correction=c) for c in ("dt", "st", "it", "none")),
        scales=_scales(327_680),
    )


def _eta() -> Experiment:
    return Experiment(
        name="eta", version=1,
        question=f"DT-ISR cap eta on the others' ratio, reuse K={REUSE_K}.",
        base=(("scenario", "2s3z"), ("advantage", "gpae"), ("correction", "dt"), ("reuse", REUSE_K)),
        variants=tuple(_v(f"eta{e}", eta=e) for e in (1.0, 1.02, 1.05, 1.1, 1.15)),
        scales=_scales(327_680),
    )


def _reuse() -> Experiment:
    return Experiment(
        name="reuse", version=1,
        question="Data reuse K in {1, 2, 4}: GPAE (dt) vs MAPPO with the same reuse.",
        base=(("scenario", "2s3z"),),
        variants=tuple(_v(f"{a}-K{k}", advantage=a, reuse=k) for a in ("gae", "gpae") for k in (1, 2, 4)),
        scales=_scales(327_680),
    )


def _reuse4() -> Experiment:
    # Added after `reuse`: K=4 was the one setting where the traces acted (mean 0.93, rho^-i up to
    # ~4.5) and GPAE led MAPPO by less than the noise floor of 3 seeds; 3 more seeds for those two.
    # gpae-K4-none came after `ablation4` (none matched dt on seeds 0-2): the same 3 more seeds for it.
    # Adding a variant leaves the others' results unchanged, so the version stays 1.
    return Experiment(
        name="reuse4", version=1,
        question="K=4, GPAE (dt, and no correction) vs MAPPO, on 3 more seeds (3, 4, 5) than `reuse`.",
        base=(("scenario", "2s3z"), ("reuse", 4)),
        variants=(_v("gae-K4", advantage="gae"), _v("gpae-K4", advantage="gpae"),
                  _v("gpae-K4-none", advantage="gpae", correction="none")),
        scales=_scales(327_680, local_seeds=(3, 4, 5)),
    )


def _ablation4() -> Experiment:
    # Added after `reuse4`: GPAE led MAPPO at K=4 on 6 of 6 seeds. Is that the trace correction
    # (which acts only with reuse) or the per-agent advantage with its Q critic? `none` keeps the
    # estimator and drops every trace; `dt` here is `reuse`'s gpae-K4 run (copied, not retrained).
    return Experiment(
        name="ablation4", version=1,
        question="Trace corrections with reuse K=4, where the traces act (mean ~0.93).",
        base=(("scenario", "2s3z"), ("advantage", "gpae"), ("reuse", 4)),
        variants=tuple(_v(c, correction=c) for c in ("dt", "st", "it", "none")),
        scales=_scales(327_680),
    )


def _hard() -> Experiment:
    # The paper's headline map at the paper's budget; 2 seeds even "locally" (many CPU hours), with
    # the CPU-sized learner of the other local experiments (more updates per env step, comparable).
    hard = Scale(PAPER_STEPS, (0, 1), LOCAL_BASE, evals=40)
    # The authors' settings (LearnerConfig's defaults: their rnn_smax.yaml) on the authors' SMAX
    # (jaxmarl 0.0.7, `make env-authors`); hours per seed on a CPU: run one seed at a time (--seeds).
    authors = Scale(PAPER_STEPS, (0, 1), evals=40, smax=AUTHORS_SMAX)
    return Experiment(
        name="hard", version=1,
        question="5m_vs_6m at 1e7 steps: MAPPO vs GPAE with reuse (and MAPPO at JaxMARL's own settings: is "
                 "the paper's MAPPO MAPPO's level on this map, or a weak baseline?).",
        base=(("scenario", "5m_vs_6m"),),
        variants=(_v("mappo", PAPER_MAPPO, advantage="gae"),
                  _v(f"gpae-K{REUSE_K}", PAPER_GPAE, advantage="gpae", reuse=REUSE_K),
                  # --settings jaxmarl over the scale's base: at `authors`, JaxMARL's MAPPO yaml exactly.
                  _v("mappo-jaxmarl", **dict(SETTINGS["jaxmarl"]))),
        scales=(("tiny", TINY), ("local", hard), ("paper", PAPER), ("authors", authors)),
    )


def experiments() -> dict[str, Experiment]:
    """All defined experiments by name (built fresh: no module-level mutable state)."""
    return {e.name: e for e in (_pilot(), _main(), _ablation(), _eta(), _reuse(), _reuse4(), _ablation4(), _hard())}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; ValueError naming ``experiment`` if unknown."""
    table = experiments()
    if name not in table:
        raise ValueError(f"experiment: unknown {name!r}; defined: {', '.join(table)}.")
    return table[name]


def variant_config(exp: Experiment, scale_name: str, variant: Variant):
    """The ``LearnerConfig`` of one variant at one scale (seed left at its default; seeds are vmapped)."""
    scale = exp.scale(scale_name)
    fields = dict(exp.base)
    fields.update(scale.base)
    fields.update(variant.overrides)
    fields["total_steps"] = scale.total_steps
    return LearnerConfig(**fields)


def exp_dirname(exp: Experiment, scale_name: str) -> str:
    """``<name>`` at the local scale, ``<name>-<scale>`` at the others (their results never mix)."""
    if scale_name not in SCALES:
        raise ValueError(f"scale: unknown {scale_name!r}; known: {', '.join(SCALES)}.")
    return exp.name if scale_name == "local" else f"{exp.name}-{scale_name}"


def eval_every(config, scale: Scale) -> int:
    """Updates between evaluations/checkpoints, about ``num_updates / evals``.

    Prefers a divisor of ``num_updates`` (the largest not above the target, if it
    is at least half of it): every chunk then has the same length, and a chunk
    length of its own would compile the whole update again (minutes on a CPU).
    """
    total = config.num_updates
    target = max(1, total // scale.evals)
    divisor = max(d for d in range(1, target + 1) if total % d == 0)
    return divisor if 2 * divisor >= target else target


def select_variants(exp: Experiment, names: str | None) -> tuple[Variant, ...]:
    """Variants named in a comma list (all if ``names`` is None); ValueError naming ``variants``."""
    if not names:
        return exp.variants
    table = {v.name: v for v in exp.variants}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in table]
    if unknown:
        raise ValueError(f"variants: unknown {unknown} for {exp.name!r}; defined: {', '.join(table)}.")
    return tuple(table[n] for n in wanted)


def select_seeds(scale: Scale, seeds) -> tuple[int, ...]:
    """``seeds`` (None: all of the scale's) as a tuple; ValueError naming ``seeds`` if not the scale's."""
    if seeds is None:
        return scale.seeds
    seeds = tuple(int(s) for s in seeds)
    bad = [s for s in seeds if s not in scale.seeds]
    if bad or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {list(seeds)} must be distinct seeds of the scale, {list(scale.seeds)}.")
    return tuple(s for s in scale.seeds if s in seeds)  # the scale's order: one checkpoint name per set
