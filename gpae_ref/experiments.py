"""Named, versioned SMAX experiments: S seeds as one vmapped program, resumable, one CSV per seed.

    python -m gpae_ref.experiments --list
    python -m gpae_ref.experiments pilot                 # --scale local (default): this CPU machine
    python -m gpae_ref.experiments main --scale paper    # the paper's 1e7 steps, 5 seeds (a GPU machine)
    python -m gpae_ref.experiments report                # docs/results.md tables + docs/figures/*.png

Layout (``<exp>`` is the experiment name at ``--scale local``, ``<name>-<scale>`` otherwise)::

    results/<exp>/<variant>/run.json           config, seeds, experiment version, machine
    results/<exp>/<variant>/seed<k>.csv        one row per update (the learner's logbook columns)
    results/<exp>/<variant>/ckpt/state.safetensors   vmapped LearnerState (large: keep out of git)
    docs/figures/<exp>.png

A finished variant is skipped (nothing is compiled or trained); a partial one
resumes from its checkpoint, dropping CSV rows written after it, so a long
experiment can run in several sittings. Each seed ``k`` starts from
``jax.random.PRNGKey(k)``, as ``python -m gpae_ref.train --seed k`` does.
Experiments share settings on purpose (ablation ``dt``, eta ``1.02`` and
reuse ``gpae-K2`` are main's ``gpae-K2``): a variant whose whole learner
config, seeds and evaluation schedule equal a finished run elsewhere under the
results folder copies that run's CSVs instead of training it again, and its
run.json names the origin (``copied_from``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gpae_ref._xla_flags import SAFE_CPU_FLAGS, xla_flags

SCALES = ("tiny", "local", "paper", "authors")
PAPER_STEPS = 10_000_000
PAPER_SEEDS = (0, 1, 2, 3, 4)
CKPT_DIR = "ckpt"
CKPT_FILE = "state.safetensors"



# ----------------------------------------------------------------- definitions
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
LOCAL_BASE = (("num_envs", 32), ("num_steps", 64), ("hidden_size", 64), ("eval_envs", 64))
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
        question="MAPPO (GAE) vs COMA vs GPAE on-policy vs GPAE with reuse.",
        base=(("scenario", "2s3z"),),
        variants=(_v("mappo", PAPER_MAPPO, advantage="gae"), _v("coma", advantage="coma"),
                  _v("gpae-K1", advantage="gpae", reuse=1),
                  _v(f"gpae-K{REUSE_K}", PAPER_GPAE, advantage="gpae", reuse=REUSE_K)),
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
        question="5m_vs_6m at 1e7 steps: MAPPO vs GPAE with reuse.",
        base=(("scenario", "5m_vs_6m"),),
        variants=(_v("mappo", PAPER_MAPPO, advantage="gae"),
                  _v(f"gpae-K{REUSE_K}", PAPER_GPAE, advantage="gpae", reuse=REUSE_K)),
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
    from gpae_ref.learner.config import LearnerConfig

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


# ---------------------------------------------------------------- bookkeeping
def seed_csv(vdir: Path, seed: int) -> Path:
    return vdir / f"seed{seed}.csv"


def last_update(csv_path: Path) -> int:
    """Highest ``update`` in a seed CSV (0 if absent or empty)."""
    from gpae_ref.learner.logbook import read_rows

    rows = read_rows(csv_path)
    return max((int(r["update"]) for r in rows), default=0)


def is_finished(vdir: Path, seeds, num_updates: int) -> bool:
    """Every seed's CSV reaches the last update."""
    return all(last_update(seed_csv(vdir, s)) >= num_updates for s in seeds)


def machine_info() -> dict:
    """What the results were measured on (recorded in run.json, shown in the docs)."""
    import jax

    try:
        from importlib.metadata import version

        jaxmarl_version = version("jaxmarl")
    except Exception:  # noqa: BLE001 - metadata missing is not fatal for a record
        jaxmarl_version = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "device": str(jax.devices()[0]), "jax": jax.__version__,
            "jaxmarl": jaxmarl_version, "python": platform.python_version()}


def _run_record(exp: Experiment, scale_name: str, variant: Variant, config, seeds) -> dict:
    from gpae_ref.learner.env import smax_version

    return {"experiment": exp.name, "version": exp.version, "scale": scale_name, "variant": variant.name,
            "seeds": list(seeds), "config": config.to_dict(), "smax": smax_version()}


def record_smax(record: dict) -> str | None:
    """The jaxmarl version a run.json's results used (older records: their machine's jaxmarl)."""
    return record.get("smax") or (record.get("machine") or {}).get("jaxmarl")


def _check_record(path: Path, record: dict) -> None:
    """A variant folder belongs to one definition: refuse to mix results of a changed one."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    keys = ("experiment", "version", "scale", "variant", "seeds", "config")
    if any(old.get(k) != record[k] for k in keys):
        raise ValueError(f"experiment: {path.parent} holds results of a different definition "
                         f"(version {old.get('version')} vs {record['version']}); move it away or "
                         f"bump the experiment's version.")
    if record_smax(old) not in (None, "unknown", record["smax"]):
        raise ValueError(f"experiment: {path.parent} holds results on SMAX from jaxmarl {record_smax(old)}, "
                         f"this Python has {record['smax']}; run it with the Python of that version.")


# -------------------------------------------------------------------- running
@dataclass(frozen=True)
class VariantOutcome:
    """What ``run_variant`` did."""

    variant: str
    status: str  # "done" (already finished: nothing run), "copied" (a twin's results), "finished", "stopped"
    updates: int
    num_updates: int
    wall_s: float


def make_vmapped(trainer) -> tuple[Callable, Callable, Callable]:
    """(init, run, evaluate) of ``trainer`` vmapped over a leading seed axis and jitted.

    ``run(states, n)`` is ``n`` updates per seed, ``n`` static (one compile per distinct n).
    """
    import jax

    init = jax.jit(jax.vmap(trainer.init_fn))
    run = jax.jit(lambda s, n: jax.vmap(lambda x: trainer.scan_updates(x, n))(s), static_argnums=1)
    evaluate = jax.jit(jax.vmap(trainer.evaluate_fn))
    return init, run, evaluate


def seed_keys(seeds):
    """``[S, 2]`` keys, row k = ``jax.random.PRNGKey(seeds[k])`` (same as ``train.py --seed``)."""
    import jax
    import jax.numpy as jnp

    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def _seed_slice(tree, i: int):
    import jax

    return jax.tree_util.tree_map(lambda x: x[i], tree)


def run_variant(exp: Experiment, scale_name: str, variant: Variant, root: Path, *,
                max_chunks: int | None = None, cache: dict | None = None, seeds=None,
                log: Callable[[str], None] = print) -> VariantOutcome:
    """Train all seeds of one variant as one vmapped program, resuming from its checkpoint.

    ``max_chunks`` stops after that many evaluation chunks (a checkpoint is written
    after each), as an interruption would; the next call resumes. ``cache`` (a dict
    the caller owns) keeps the compiled functions per config between calls, so a
    resume in the same process does not compile again. ``seeds`` (a subset of the
    scale's) trains only those, with a checkpoint of their own: a long scale can run
    one seed at a time.
    """
    scale = exp.scale(scale_name)
    config = variant_config(exp, scale_name, variant)
    check_smax(scale, scale_name)
    seeds = select_seeds(scale, seeds)
    vdir = Path(root) / exp_dirname(exp, scale_name) / variant.name
    total = config.num_updates
    record = _run_record(exp, scale_name, variant, config, scale.seeds)
    _check_record(vdir / "run.json", record)
    if is_finished(vdir, seeds, total):
        wall = _final_wall(vdir, seeds)
        log(f"{exp.name}/{variant.name} ({scale_name}): done ({total} updates x {len(seeds)} seeds); skipping.")
        return VariantOutcome(variant.name, "done", total, total, wall)
    twin = None if seeds != scale.seeds or _has_progress(vdir, seeds) else find_twin(Path(root), vdir, record,
                                                            eval_updates(total, eval_every(config, scale)))
    if twin is not None:
        copy_twin(twin, vdir, record, seeds)
        log(f"{exp.name}/{variant.name} ({scale_name}): the same learner config and seeds already ran as "
            f"{twin.parent.name}/{twin.name}: copied its results (nothing trained).")
        return VariantOutcome(variant.name, "copied", total, total, _final_wall(vdir, seeds))

    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / CKPT_DIR).mkdir(exist_ok=True)
    with _variant_lock(vdir):
        return _train_variant(exp, scale_name, variant, vdir, config, record, seeds, max_chunks, cache, log)


def select_seeds(scale: Scale, seeds) -> tuple[int, ...]:
    """``seeds`` (None: all of the scale's) as a tuple; ValueError naming ``seeds`` if not the scale's."""
    if seeds is None:
        return scale.seeds
    seeds = tuple(int(s) for s in seeds)
    bad = [s for s in seeds if s not in scale.seeds]
    if bad or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {list(seeds)} must be distinct seeds of the scale, {list(scale.seeds)}.")
    return tuple(s for s in scale.seeds if s in seeds)  # the scale's order: one checkpoint name per set


def ckpt_path(vdir: Path, scale: Scale, seeds) -> Path:
    """The vmapped checkpoint of ``seeds``: ``state.safetensors`` for all the scale's seeds."""
    if tuple(seeds) == tuple(scale.seeds):
        return vdir / CKPT_DIR / CKPT_FILE
    return vdir / CKPT_DIR / ("state-s" + "-".join(str(s) for s in seeds) + ".safetensors")


def check_smax(scale: Scale, scale_name: str) -> None:
    """ValueError naming ``scale`` if it needs another SMAX (jaxmarl) version than the one installed."""
    from gpae_ref.learner.env import smax_version

    have = smax_version()
    if scale.smax is not None and have != scale.smax:
        raise ValueError(f"scale: {scale_name!r} runs on SMAX from jaxmarl {scale.smax} (the authors'), "
                         f"this Python has jaxmarl {have}; build it with `make env-authors` and run "
                         f"this command with .venv-authors/bin/python.")


def eval_updates(total: int, every: int) -> list[int]:
    """The updates after which ``_train_variant`` evaluates: every ``every``-th, and the last."""
    return sorted({*range(every, total + 1, every), total})


def _has_progress(vdir: Path, seeds) -> bool:
    return any((vdir / CKPT_DIR).glob("state*.safetensors")) or any(last_update(seed_csv(vdir, s)) > 0 for s in seeds)


def find_twin(root: Path, vdir: Path, record: dict, evals: list[int]) -> Path | None:
    """A finished variant folder under ``root`` that ran exactly this learner config and these seeds.

    Experiments share settings on purpose (ablation ``dt``, eta ``1.02`` and reuse
    ``gpae-K2`` are all main's ``gpae-K2``); a twin must match the whole
    ``LearnerConfig`` (map, budget, every hyperparameter), the seed list and the
    evaluation schedule, and must not itself be a copy, so its rows are exactly
    what this variant would have written (seed ``k`` starts from ``PRNGKey(k)``
    in either case).
    """
    for path in sorted(root.glob("*/*/run.json")):
        src = path.parent
        if src.resolve() == vdir.resolve():
            continue
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if old.get("copied_from") or old.get("config") != record["config"] or old.get("seeds") != record["seeds"] \
                or record_smax(old) != record["smax"]:
            continue
        if all(_eval_rows_updates(seed_csv(src, s)) == evals for s in record["seeds"]):
            return src  # the last evaluation is the last update: the twin is finished
    return None


def _eval_rows_updates(csv_path: Path) -> list[int]:
    from gpae_ref.learner.logbook import read_rows

    return [int(r["update"]) for r in read_rows(csv_path) if r.get("eval_win_rate") not in ("", None)]


def copy_twin(src: Path, vdir: Path, record: dict, seeds) -> None:
    """Copy ``src``'s per-seed CSVs into ``vdir``; run.json says where they came from."""
    import shutil

    vdir.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        shutil.copyfile(seed_csv(src, s), seed_csv(vdir, s))
    machine = json.loads((src / "run.json").read_text()).get("machine")
    origin = f"{src.parent.name}/{src.name}"
    (vdir / "run.json").write_text(json.dumps({**record, "machine": machine, "copied_from": origin},
                                              indent=1) + "\n")


def copied_from(vdir: Path) -> str | None:
    """The ``<exp>/<variant>`` whose results ``vdir`` holds a copy of (None if trained here)."""
    path = vdir / "run.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("copied_from")


class _variant_lock:
    """Refuse a variant another live process on this host is training (it would truncate its rows).

    The lock file holds ``host pid``; one left by a killed process is stale and taken over.
    """

    def __init__(self, vdir: Path):
        self.path = vdir / CKPT_DIR / "lock"  # beside the checkpoint: out of git with it

    def __enter__(self):
        me = f"{platform.node()} {os.getpid()}"
        if self.path.exists():
            host, _, pid = self.path.read_text().partition(" ")
            if host == platform.node() and pid.strip().isdigit() and _alive(int(pid)) \
                    and int(pid) != os.getpid():
                raise RuntimeError(f"{self.path.parent}: process {pid.strip()} is training this variant.")
        self.path.write_text(me)
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _train_variant(exp, scale_name, variant, vdir, config, record, seeds, max_chunks, cache, log) -> VariantOutcome:
    """The body of ``run_variant`` once the variant's folder is locked."""
    import jax
    import numpy as np

    from gpae_ref.learner import logbook
    from gpae_ref.learner.checkpoint import load_checkpoint, save_checkpoint
    from gpae_ref.learner.core import make_train

    scale = exp.scale(scale_name)
    total = config.num_updates
    ckpt = ckpt_path(vdir, scale, seeds)
    (vdir / "run.json").write_text(json.dumps({**record, "machine": machine_info()}, indent=1) + "\n")
    cache = {} if cache is None else cache
    if config not in cache:
        trainer = make_train(config)
        cache[config] = (trainer, *make_vmapped(trainer))
    trainer, init, run, evaluate = cache[config]
    keys = seed_keys(seeds)
    wall0 = 0.0
    if ckpt.exists():
        template = jax.eval_shape(init, keys)
        state, meta = load_checkpoint(ckpt, template)
        wall0 = float(meta.get("wall_s", 0.0))
        u = int(np.asarray(state.update)[0])
        for s in seeds:  # rows written after the checkpoint would be duplicated by the rerun
            logbook.truncate_rows(seed_csv(vdir, s), u)
        log(f"{exp.name}/{variant.name}: resuming at update {u}/{total}.")
    else:
        for s in seeds:  # rows without a checkpoint cannot be continued: start over
            seed_csv(vdir, s).unlink(missing_ok=True)
        state, u = init(keys), 0
    # Wait for init (or the load) before compiling and dispatching the update: a run
    # that was dispatched while another program was still executing hung twice in the
    # XLA CPU runtime (jax 0.10.2, 2 cores: every thread idle, BlockUntilReady forever).
    state = jax.block_until_ready(state)
    every = eval_every(config, scale)
    log(f"{exp.name}/{variant.name} ({scale_name}): {config.scenario} {total} updates x "
        f"{config.steps_per_update} env steps x {len(seeds)} seeds, eval every {every}.")
    t_start = time.perf_counter()
    chunks = 0
    while u < total and (max_chunks is None or chunks < max_chunks):
        n = min(every - u % every, total - u)
        t0 = time.perf_counter()
        state, metrics = jax.block_until_ready(run(state, n))
        ev = jax.device_get(evaluate(state))
        metrics = jax.device_get(metrics)
        u += n
        wall = wall0 + time.perf_counter() - t_start
        for i, s in enumerate(seeds):
            rows = logbook.metric_rows(_seed_slice(metrics, i), wall, _seed_slice(ev, i))
            logbook.append_rows(seed_csv(vdir, s), rows)
        # The checkpoint comes after the rows: a crash in between leaves extra rows, dropped on resume.
        save_checkpoint(ckpt, state, {"update": u, "wall_s": wall, "record": record})
        chunks += 1
        steps = int(np.asarray(state.env_steps)[0])
        log(f"  update {u}/{total}  env steps {steps:,}  greedy win "
            f"{' '.join(f'{w:.2f}' for w in np.asarray(ev.win_rate))}  "
            f"({time.perf_counter() - t0:.1f} s chunk, {wall:,.0f} s total)")
    wall = wall0 + time.perf_counter() - t_start
    status = "finished" if u >= total else "stopped"
    return VariantOutcome(variant.name, status, u, total, wall)


def _final_wall(vdir: Path, seeds) -> float:
    from gpae_ref.learner.logbook import read_rows

    rows = read_rows(seed_csv(vdir, seeds[0]))
    return float(rows[-1]["wall_s"]) if rows else 0.0


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


def run_experiment(name: str, scale_name: str = "local", root="results", *, variants: str | None = None,
                   max_chunks: int | None = None, cache: dict | None = None, seeds=None,
                   log: Callable[[str], None] = print) -> list[VariantOutcome]:
    """Run (or resume, or skip) every variant of experiment ``name`` at ``scale_name``."""
    exp = get_experiment(name)
    exp.scale(scale_name)
    if scale_name not in SCALES:
        raise ValueError(f"scale: unknown {scale_name!r}; known: {', '.join(SCALES)}.")
    return [run_variant(exp, scale_name, v, Path(root), max_chunks=max_chunks, cache=cache, seeds=seeds, log=log)
            for v in select_variants(exp, variants)]


# ------------------------------------------------------------------ analysis
@dataclass(frozen=True)
class Curve:
    """Greedy win rate of one variant's seeds at its evaluation points."""

    variant: str
    steps: Any  # [P] env steps (of seed 0; identical across seeds)
    win: Any  # [S, P] win rate per seed
    wall_s: float
    updates: int
    num_updates: int
    walls: Any = None  # [P] cumulative wall seconds at each evaluation point

    def chunk_rate(self) -> float | None:
        """Median env-steps/s (all seeds) over chunks after the first (which includes compilation)."""
        import numpy as np

        if self.walls is None or len(self.walls) < 3:
            return None
        d_steps, d_wall = np.diff(self.steps)[1:], np.diff(self.walls)[1:]
        ok = d_wall > 0
        return float(np.median(self.win.shape[0] * d_steps[ok] / d_wall[ok])) if ok.any() else None


def load_curve(vdir: Path, seeds, num_updates: int) -> Curve | None:
    """Read the evaluation rows of every seed CSV; None if nothing is there yet."""
    import numpy as np

    from gpae_ref.learner.logbook import read_rows

    per_seed = []
    for s in seeds:  # a seed not started yet (scales run one seed at a time) is left out
        rows = [r for r in read_rows(seed_csv(vdir, s)) if r["eval_win_rate"] not in ("", None)]
        if rows:
            per_seed.append(rows)
    p = min((len(r) for r in per_seed), default=0)
    if p == 0:
        return None
    steps = np.array([float(r["env_steps"]) for r in per_seed[0][:p]])
    win = np.array([[float(r["eval_win_rate"]) for r in rows[:p]] for rows in per_seed])
    updates = int(per_seed[0][p - 1]["update"])
    walls = np.array([float(r["wall_s"]) for r in per_seed[0][:p]])
    return Curve(vdir.name, steps, win, float(walls[-1]), updates, num_updates, walls)


def steps_to(curve: Curve, level: float) -> float | None:
    """First env steps at which the seed-mean greedy win rate reaches ``level`` (None if never)."""
    import numpy as np

    mean = curve.win.mean(0)
    hit = np.nonzero(mean >= level)[0]
    return float(curve.steps[hit[0]]) if hit.size else None


def experiment_curves(exp: Experiment, scale_name: str, root) -> list[tuple[Variant, Any, Curve | None]]:
    out = []
    for v in exp.variants:
        cfg = variant_config(exp, scale_name, v)
        vdir = Path(root) / exp_dirname(exp, scale_name) / v.name
        out.append((v, cfg, load_curve(vdir, exp.scale(scale_name).seeds, cfg.num_updates)))
    return out


def plot_experiment(exp: Experiment, scale_name: str, root, png_path: Path) -> bool:
    """Mean and min-max band of greedy win rate vs env steps, one panel per map; False if no data."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    curves = [(v, c, cur) for v, c, cur in experiment_curves(exp, scale_name, root) if cur is not None]
    if not curves:
        return False
    maps = list(dict.fromkeys(c.scenario for _, c, _ in curves))
    fig, axes = plt.subplots(1, len(maps), figsize=(5.2 * len(maps), 3.8), squeeze=False)
    for ax, m in zip(axes[0], maps):
        for i, (v, c, cur) in enumerate(x for x in curves if x[1].scenario == m):
            color = f"C{i}"
            ax.plot(cur.steps, cur.win.mean(0), color=color, label=f"{v.name} ({cur.win.shape[0]} seeds)")
            ax.fill_between(cur.steps, cur.win.min(0), cur.win.max(0), color=color, alpha=0.18, lw=0)
        ax.set_title(f"{exp.name} ({scale_name}): {m}", fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy win rate (mean, min-max band)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True


def _fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _fmt_steps(x: float | None) -> str:
    return "not reached" if x is None else f"{x / 1e6:.2f}M"


def experiment_table(exp: Experiment, scale_name: str, root) -> str:
    """Markdown table: final greedy win rate (mean ± std, min-max), steps to 50%/80%, the mean over
    all evaluation points (area under the curve: sample efficiency), progress, wall.

    Wall time is the whole vmapped program's (all seeds together, compilation
    included); env-steps/s is all seeds' env steps over that wall time, and the median
    over evaluation chunks after the first (no compilation in it).
    """
    head = ("| variant | map | K | final greedy win % (mean ± std) | min-max | steps to 50% | steps to 80% "
            "| mean over evals % | env steps done | wall | env-steps/s overall / median chunk "
            "| paper (1e7, 5 seeds) |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for v, cfg, cur in experiment_curves(exp, scale_name, root):
        twin = copied_from(Path(root) / exp_dirname(exp, scale_name) / v.name)
        name = v.name if twin is None else f"{v.name} (same run as {twin})"
        paper = dict(v.paper).get(cfg.scenario)
        paper = "-" if paper is None else f"{paper:.1f}%"
        if cur is None:
            lines.append(f"| {name} | {cfg.scenario} | {cfg.reuse} | not run | | | | | 0 / "
                         f"{cfg.total_steps / 1e6:.2f}M | | | {paper} |")
            continue
        final = cur.win[:, -1] * 100
        auc = cur.win.mean(1) * 100  # per seed: the area under the curve, in win % (sample efficiency)
        partial = "" if cur.updates >= cur.num_updates else f" (partial: {cur.updates}/{cur.num_updates} updates)"
        lines.append(
            f"| {name} | {cfg.scenario} | {cfg.reuse} | {final.mean():.1f} ± {final.std():.1f}{partial} | "
            f"{final.min():.0f}-{final.max():.0f} | {_fmt_steps(steps_to(cur, 0.5))} | "
            f"{_fmt_steps(steps_to(cur, 0.8))} | {auc.mean():.1f} ± {auc.std():.1f} | "
            f"{cur.steps[-1] / 1e6:.2f}M / {cfg.total_steps / 1e6:.2f}M | "
            f"{cur.wall_s / 60:.1f} min | {cur.win.shape[0] * cur.steps[-1] / max(cur.wall_s, 1e-9):,.0f} / "
            f"{_fmt_rate(cur.chunk_rate())} | {paper} |")
    return "\n".join(lines)


def trace_table(exp: Experiment, scale_name: str, root) -> str | None:
    """Markdown table of how much the trace correction acted, per GPAE variant with reuse (None if none).

    From the learner's per-update columns, over all updates and seeds: the mean
    trace c^i and the fraction of traces below 1 on all kept data (fresh data
    included, where every ratio is 1 at the update's start), and the median over
    updates of the largest own and others' ratio (rho^i, rho^-i).
    """
    import numpy as np

    from gpae_ref.learner.logbook import read_rows

    lines = ["| variant | correction | eta | mean trace c | share of c < 1 | median max rho^i "
             "| median max rho^-i |", "|---|---|---|---|---|---|---|"]
    for v, cfg, _ in experiment_curves(exp, scale_name, root):
        if cfg.advantage != "gpae" or cfg.reuse < 2:
            continue
        vdir = Path(root) / exp_dirname(exp, scale_name) / v.name
        rows = [r for s in exp.scale(scale_name).seeds for r in read_rows(seed_csv(vdir, s))]
        if not rows:
            continue
        col = lambda k: np.array([float(r[k]) for r in rows])  # noqa: E731 - local shorthand
        eta = cfg.eta if cfg.correction == "dt" else "-"  # only DT-ISR reads eta
        lines.append(f"| {v.name} | {cfg.correction} | {eta} | {col('trace_mean').mean():.3f} | "
                     f"{col('trace_truncated').mean():.3f} | {np.median(col('own_ratio_max')):.2f} | "
                     f"{np.median(col('others_ratio_max')):.2f} |")
    return "\n".join(lines) if len(lines) > 2 else None


def command_for(exp: Experiment, scale_name: str) -> str:
    scale = "" if scale_name == "local" else f" --scale {scale_name}"
    return f"python -m gpae_ref.experiments {exp.name}{scale}"


def report_section(exp: Experiment, scale_name: str, root, figures: Path, doc_dir: Path) -> str:
    """The generated part of one experiment's section in docs/results.md."""
    scale = exp.scale(scale_name)
    dname = exp_dirname(exp, scale_name)
    png = figures / f"{dname}.png"
    has_fig = plot_experiment(exp, scale_name, root, png)
    machine = _first_machine(Path(root) / dname, exp)
    cfg0 = variant_config(exp, scale_name, exp.variants[0])
    shared = {k: getattr(cfg0, k) for k in ("num_envs", "num_steps", "hidden_size", "num_layers",
                                               "update_epochs", "eval_envs")}
    lines = [f"Question: {exp.question}", "",
             f"Command: `{command_for(exp, scale_name)}` (experiment version {exp.version}, "
             f"{len(scale.seeds)} seeds {list(scale.seeds)}, {scale.total_steps:,} env steps per run; "
             f"learner settings besides the variants: {shared}).", ""]
    if machine:
        lines += [f"Measured on: {machine.get('cpu')} ({machine.get('cores')} cores), device "
                  f"{machine.get('device')}, jax {machine.get('jax')}, jaxmarl {machine.get('jaxmarl')} "
                  f"(pip SMAX).", ""]
    if has_fig:
        lines += [f"![{dname}]({os.path.relpath(png, doc_dir)})", ""]
    lines.append(experiment_table(exp, scale_name, root))
    traces = trace_table(exp, scale_name, root)
    if traces:
        lines += ["", "How much the trace correction acted (GPAE variants with reuse; over all updates "
                  "and seeds of each run):", "", traces]
    return "\n".join(lines)


def _first_machine(exp_dir: Path, exp: Experiment) -> dict | None:
    for v in exp.variants:
        p = exp_dir / v.name / "run.json"
        if p.exists():
            return json.loads(p.read_text()).get("machine")
    return None


def _markers(tag: str) -> tuple[str, str]:
    return f"<!-- BEGIN generated:{tag} -->", f"<!-- END generated:{tag} -->"


def splice(doc: str, tag: str, body: str) -> str:
    """Replace the text between ``tag``'s markers (append a marked block if absent); prose elsewhere stays."""
    begin, end = _markers(tag)
    block = f"{begin}\n{body}\n{end}"
    if begin in doc and end in doc:
        pre, rest = doc.split(begin, 1)
        _, post = rest.split(end, 1)
        return pre + block + post
    return doc.rstrip("\n") + f"\n\n## {tag}\n\n{block}\n"


def report(root="results", doc="docs/results.md", figures="docs/figures", scale_name: str = "local",
           names: tuple[str, ...] | None = None) -> Path:
    """Regenerate figures and the generated blocks of ``doc`` from the CSVs under ``root``."""
    doc, figures = Path(doc), Path(figures)
    text = doc.read_text() if doc.exists() else "# Results\n"
    for exp in experiments().values():
        if names and exp.name not in names:
            continue
        tag = exp_dirname(exp, scale_name)
        text = splice(text, tag, report_section(exp, scale_name, Path(root), figures, doc.parent))
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return doc


# ------------------------------------------------------------------------ CLI
def describe(exp: Experiment) -> str:
    """One paragraph per experiment for ``--list``."""
    out = [f"{exp.name} (v{exp.version}): {exp.question}"]
    for sname, sc in exp.scales:
        out.append(f"  --scale {sname}: {sc.total_steps:,} steps, seeds {list(sc.seeds)}"
                   + (f", {dict(sc.base)}" if sc.base else ""))
    base = f" base {dict(exp.base)}" if exp.base else ""
    out.append(f"  variants{base}: " + "; ".join(f"{v.name} {dict(v.overrides)}" for v in exp.variants))
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpae_ref.experiments", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="experiment name, or 'report'")
    p.add_argument("--scale", default="local", help=f"one of {', '.join(SCALES)} (default local)")
    p.add_argument("--list", action="store_true", help="list experiments and exit")
    p.add_argument("--variants", help="comma-separated subset of the experiment's variants")
    p.add_argument("--root", default="results", help="results folder (default results)")
    p.add_argument("--doc", default="docs/results.md", help="report: the document to update")
    p.add_argument("--figures", default="docs/figures", help="report: figure folder")
    p.add_argument("--max-chunks", type=int, default=None, help="stop each variant after this many chunks")
    p.add_argument("--seeds", help="comma-separated subset of the scale's seeds to train now (default: all)")
    p.add_argument("--xla-defaults", action="store_true",
                   help="do not add " + " ".join(SAFE_CPU_FLAGS) + " to XLA_FLAGS (see docs/results.md)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Read by XLA when jax creates its CPU client (first use, after this line); CLI only, never at import.
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), args.xla_defaults)
    if args.max_chunks is not None and args.max_chunks < 1:
        parser.error(f"--max-chunks must be >= 1 (got {args.max_chunks}); leave it out to run to the end")
    if args.list or not args.name:
        print("\n\n".join(describe(e) for e in experiments().values()))
        return 0
    try:
        if args.scale not in SCALES:
            raise ValueError(f"scale: unknown {args.scale!r}; known: {', '.join(SCALES)}.")
        if args.name == "report":
            path = report(args.root, args.doc, args.figures, args.scale)
            print(f"updated {path}")
            return 0
        seeds = None if args.seeds is None else [int(x) for x in args.seeds.split(",") if x.strip()]
        outcomes = run_experiment(args.name, args.scale, args.root, variants=args.variants,
                                  max_chunks=args.max_chunks, seeds=seeds, log=lambda m: print(m, flush=True))
    except ValueError as e:
        parser.error(str(e))
    for o in outcomes:
        print(f"{o.variant}: {o.status} ({o.updates}/{o.num_updates} updates, {o.wall_s:,.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
