"""Running experiments: S seeds of a variant as one vmapped program through the learner's run loop.

The loop (chunks, evaluations, CSV rows, checkpoints, resume, NaN stop) is
``gpae_ref.learner.runloop``'s and the folder (record, states, lock, SMAX check)
``gpae_ref.learner.runfolder``'s, both shared with ``python -m gpae_ref.train``;
this module adds seeds, variants, the results layout and twins.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gpae_ref.experiments.definitions import (SCALES, Experiment, Scale, Variant, eval_every, exp_dirname,
                                              get_experiment, select_seeds, select_variants, variant_config)
from gpae_ref.learner.runfolder import (CKPT_DIR, FORMAT, Lock, RunFolder, RunFolderError, check_record, check_smax,
                                        keep_rows, load_state, read_json, reproduce_command, resume_entry,
                                        write_json)
from gpae_ref.learner.config import LearnerConfig
from gpae_ref.learner.devices import leading_axis_shardings, make_mesh, pick_devices, place
from gpae_ref.learner.runloop import Program, run_loop, StopFlag
from gpae_ref.learner.schedule import Schedule

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

    return {"format": FORMAT, "experiment": exp.name, "version": exp.version, "scale": scale_name,
            "variant": variant.name, "seeds": list(seeds), "config": config.to_dict(), "smax": smax_version()}


def same_config(old: dict | None, new: dict) -> bool:
    """Two recorded learner configs are the same config: a field added to ``LearnerConfig`` after a
    run was recorded is missing from its record and counts as its default."""
    if old is None:
        return False
    try:
        return LearnerConfig.from_dict(old) == LearnerConfig.from_dict(new)
    except (TypeError, ValueError):  # a field since removed or an invalid value: not this config
        return False


def record_smax(record: dict) -> str | None:
    """The jaxmarl version a run.json's results used (older records: their machine's jaxmarl)."""
    return record.get("smax") or (record.get("machine") or {}).get("jaxmarl")


def _check_same_definition(path: Path, record: dict) -> None:
    """A variant folder belongs to one definition: refuse to mix results of a changed one."""
    if not path.exists():
        return
    old = check_record(read_json(path), path)
    keys = ("experiment", "version", "scale", "variant", "seeds")
    if any(old.get(k) != record[k] for k in keys) or not same_config(old.get("config"), record["config"]):
        raise ValueError(f"experiment: {path.parent} holds results of a different definition "
                         f"(version {old.get('version')} vs {record['version']}); move it away or "
                         f"bump the experiment's version.")
    check_smax(record_smax(old), record["smax"], f"{path.parent} (its results)", flag="experiment")


# -------------------------------------------------------------------- running
@dataclass(frozen=True)
class VariantOutcome:
    """What ``run_variant`` did."""

    variant: str
    status: str  # "done" (already finished: nothing run), "copied" (a twin's results), "finished", "stopped"
    updates: int
    num_updates: int
    wall_s: float
    interrupted: bool = False
    """Stopped by Ctrl-C (SIGINT): the caller runs no further variant."""
    out_of_time: bool = False
    """Stopped at the deadline: the caller runs no further variant."""


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


def run_variant(exp: Experiment, scale_name: str, variant: Variant, root: Path, *,
                max_chunks: int | None = None, cache: dict | None = None, seeds=None,
                restart: bool = False, devices: int | None = None, deadline: float | None = None,
                log: Callable[[str], None] = print) -> VariantOutcome:
    """Train all seeds of one variant as one vmapped program, resuming from its checkpoint.

    ``max_chunks`` stops after that many evaluation chunks (a checkpoint is written
    after each), as an interruption would; the next call resumes. ``cache`` (a dict
    the caller owns) keeps the compiled functions per config between calls, so a
    resume in the same process does not compile again. ``seeds`` (a subset of the
    scale's) trains only those, with a checkpoint of their own: a long scale can run
    one seed at a time. Rows without their checkpoint (a fresh clone of a partial run:
    checkpoints are not in git) raise ``ValueError`` unless ``restart``, which replaces
    them by a run from update 0. ``devices``: how many devices the seed axis is split over
    (default: as many of the visible ones as divide the seed count; ``gpae_ref.learner.devices``).
    ``deadline`` (a ``time.time()`` value): stop, with a checkpoint, at the first chunk boundary
    from which one more chunk would end past it (``runloop.StopFlag``).
    """
    scale = exp.scale(scale_name)
    config = variant_config(exp, scale_name, variant)
    check_scale_smax(scale, scale_name)
    seeds = select_seeds(scale, seeds)
    vdir = Path(root) / exp_dirname(exp, scale_name) / variant.name
    total = config.num_updates
    record = _run_record(exp, scale_name, variant, config, scale.seeds)
    _check_same_definition(vdir / "run.json", record)
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

    folder = variant_folder(vdir, scale, seeds)
    folder.create()
    with Lock(folder):
        return _train_variant(exp, scale_name, variant, folder, config, record, max_chunks, cache, log,
                              restart, devices, deadline)


def variant_folder(vdir: Path, scale: Scale, seeds) -> RunFolder:
    """The run folder of ``seeds`` of a variant: state files ``state.safetensors`` /
    ``resume.safetensors.xz`` for all the scale's seeds, tagged ``-s<k>-...`` for a subset."""
    tag = "" if tuple(seeds) == tuple(scale.seeds) else "-s" + "-".join(str(s) for s in seeds)
    return RunFolder(vdir, tuple(seeds), tag)


def check_scale_smax(scale: Scale, scale_name: str) -> None:
    """ValueError naming ``scale`` if it needs another SMAX (jaxmarl) version than the one installed."""
    from gpae_ref.learner.env import smax_version

    check_smax(scale.smax, smax_version(), f"scale {scale_name!r} (the authors' settings)", flag="scale")


def eval_updates(total: int, every: int) -> list[int]:
    """The updates after which ``_train_variant`` evaluates: every ``every``-th, and the last."""
    return sorted({*range(every, total + 1, every), total})


def _has_progress(vdir: Path, seeds) -> bool:
    states = [*(vdir / CKPT_DIR).glob("state*.safetensors"), *vdir.glob("resume*.safetensors.xz")]
    return bool(states) or any(last_update(seed_csv(vdir, s)) > 0 for s in seeds)


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
        if old.get("copied_from") or not same_config(old.get("config"), record["config"]) \
                or old.get("seeds") != record["seeds"] \
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
    machine = read_json(src / "run.json").get("machine")
    origin = f"{src.parent.name}/{src.name}"
    write_json(vdir / "run.json", {**record, "machine": machine, "copied_from": origin})


def copied_from(vdir: Path) -> str | None:
    """The ``<exp>/<variant>`` whose results ``vdir`` holds a copy of (None if trained here)."""
    path = vdir / "run.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("copied_from")


def _train_variant(exp, scale_name, variant, folder: RunFolder, config, record, max_chunks, cache, log,
                   restart=False, devices=None, deadline=None) -> VariantOutcome:
    """The body of ``run_variant`` once the variant's folder is locked: the shared run loop with
    one chunk per evaluation, each followed by a checkpoint."""
    total, seeds = config.num_updates, folder.seeds
    mesh = make_mesh(pick_devices(devices, len(seeds), "seeds"))
    trainer, init, run, evaluate = _compiled(config, cache)
    state, wall0, resumes = _start_state(folder, init, config, record, total, restart, log,
                                         f"{exp.name}/{variant.name}")
    if mesh.size > 1:  # the seed axis split over the devices; one device: left where init put it
        state = place(state, leading_axis_shardings(mesh, state))
    every = eval_every(config, exp.scale(scale_name))
    schedule = Schedule(every, every, every)
    write_json(folder.record_path, {**record, "schedule": schedule.to_dict(), "resumes": resumes,
                                    "machine": machine_info(),
                                    "train_commands": train_commands(exp, scale_name, variant)})
    log(f"{exp.name}/{variant.name} ({scale_name}): {config.scenario} {total} updates x "
        f"{config.steps_per_update} env steps x {len(seeds)} seeds, eval every {every}"
        + (f", seeds over {mesh.size} devices." if mesh.size > 1 else "."))
    program = Program(run=run, evaluate=evaluate, folder=folder, data=trainer.data,
                      steps_per_update=config.steps_per_update,
                      meta=lambda st, wall: {"record": record, "config": config.to_dict(),
                                             "schedule": schedule.to_dict()})

    def on_chunk(c):
        log(f"  update {c['update']}/{total}  env steps {int(c['env_steps'].reshape(-1)[0]):,}  greedy win "
            f"{' '.join(f'{w:.2f}' for w in np.asarray(c['evaluation'].win_rate))}  "
            f"({c['seconds']:.1f} s chunk, {c['wall']:,.0f} s total)")

    with StopFlag(deadline=deadline) as stop:
        out = run_loop(program, state, total=total, schedule=schedule, wall0=wall0,
                       max_chunks=max_chunks, stop=stop, on_chunk=on_chunk)
    if out.status == "nan":
        log(f"{exp.name}/{variant.name}: NaN/inf at update {out.bad_update}; last finite state "
            f"(update {out.update}) kept in {folder.full_path}.")
    return VariantOutcome(variant.name, out.status, out.update, total, out.wall_s, out.interrupted,
                          out.out_of_time)


def _compiled(config, cache: dict | None):
    """(trainer, init, run, evaluate) of ``config``, from ``cache`` when it holds them."""
    from gpae_ref.learner.core import make_train

    cache = {} if cache is None else cache
    if config not in cache:
        trainer = make_train(config)
        cache[config] = (trainer, *make_vmapped(trainer))
    return cache[config]


def _start_state(folder: RunFolder, init, config, record, total, restart, log, name):
    """(state, wall_s, resumes): the saved state (full checkpoint, else compact state) with the seed
    CSVs cut back to it, or a fresh one; rows without any saved state are refused unless ``restart``
    (which replaces them)."""
    import jax
    keys = seed_keys(folder.seeds)
    done = max(last_update(p) for p in folder.csv_paths)
    path = folder.record_path
    old = check_record(read_json(path), path) if path.exists() else {}
    resumes = list(old.get("resumes") or [])
    if folder.has_state():
        state, meta, kind = load_state(folder, jax.eval_shape(init, keys),
                                       {"config": config.to_dict(), "seeds": list(folder.seeds)})
        u = int(np.asarray(state.update)[0])
        keep_rows(folder, u)  # rows written after the state would be duplicated by the rerun
        log(f"{name}: resuming at update {u}/{total} from the {kind} state.")
        return jax.block_until_ready(state), float(meta.get("wall_s", 0.0)), resumes + [resume_entry(u, kind)]
    if done > 0 and not restart:
        raise RunFolderError(
            f"{folder.path}: {done} of {total} updates are recorded in the seed CSVs but no saved state is "
            f"there ({folder.full_path.relative_to(folder.path)} or {folder.compact_path.name}: a checkpoint "
            f"stays on the machine that wrote it, the compact state travels in git), so this run cannot "
            f"continue here. Copy a state into place to resume, or pass --restart to train from update 0 "
            f"(the recorded rows are replaced).")
    folder.remove_state()  # rows without a state cannot be continued: start over
    # Wait for init before compiling and dispatching the update: a run dispatched while another
    # program was still executing hung twice in the XLA CPU runtime (jax 0.10.2, 2 cores).
    return jax.block_until_ready(init(keys)), 0.0, []


def train_commands(exp: Experiment, scale_name: str, variant: Variant) -> dict[str, str]:
    """Per seed, the ``python -m gpae_ref.train`` command that runs the same learner, seed and schedule
    alone (one seed, not vmapped: equal settings, not necessarily bit-equal numbers)."""
    config = variant_config(exp, scale_name, variant)
    every = eval_every(config, exp.scale(scale_name))
    return {str(s): reproduce_command(dataclasses.replace(config, seed=s), Schedule(every, every, every),
                                      f"{exp_dirname(exp, scale_name)}_{variant.name}_s{s}")
            for s in exp.scale(scale_name).seeds}


def _final_wall(vdir: Path, seeds) -> float:
    from gpae_ref.learner.logbook import read_rows

    rows = read_rows(seed_csv(vdir, seeds[0]))
    return float(rows[-1]["wall_s"]) if rows else 0.0


def run_experiment(name: str, scale_name: str = "local", root="results", *, variants: str | None = None,
                   max_chunks: int | None = None, cache: dict | None = None, seeds=None,
                   restart: bool = False, devices: int | None = None, deadline: float | None = None,
                   log: Callable[[str], None] = print) -> list[VariantOutcome]:
    """Run (or resume, or skip) every variant of experiment ``name`` at ``scale_name``, in order.

    Ctrl-C stops the running variant at its next chunk boundary (state saved) and runs
    no later variant: the last outcome says ``interrupted``; so does ``deadline`` (one for
    the whole call; ``out_of_time``). ``max_chunks`` is a budget per variant; each gets it.
    """
    exp = get_experiment(name)
    exp.scale(scale_name)
    if scale_name not in SCALES:
        raise ValueError(f"scale: unknown {scale_name!r}; known: {', '.join(SCALES)}.")
    outcomes = []
    for v in select_variants(exp, variants):
        if deadline is not None and time.time() >= deadline:
            break  # not even the start of another variant (loading, compiling) fits
        outcomes.append(run_variant(exp, scale_name, v, Path(root), max_chunks=max_chunks, cache=cache,
                                    seeds=seeds, restart=restart, devices=devices, deadline=deadline, log=log))
        if outcomes[-1].interrupted or outcomes[-1].out_of_time:
            break
    return outcomes
