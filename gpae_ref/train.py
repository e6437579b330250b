"""Train the SMAX learner from the command line.

    python -m gpae_ref.train --preset demo
    python -m gpae_ref.train --settings authors --scenario 5m_vs_6m --advantage gpae --reuse 2 --seed 0
    python -m gpae_ref.train --settings cpu --scenario 3m --advantage gae --total-steps 2000000 --name my_run
    python -m gpae_ref.train --resume runs/my_run

Every LearnerConfig field is a flag (``--help`` lists them with their meaning);
``--settings`` names a whole setting (authors: the authors' yaml; cpu: the
CPU-sized learner), ``--preset`` a job; explicit flags override both.
Writes the run folder runs/<name>/ (``gpae_ref.learner.runfolder``): run.json (the
learner config, the schedule, the SMAX version, the one command that reproduces
the run, every resume), metrics.csv (one row per update), curve.png, and every
--checkpoint-every updates (and at the end, and on Ctrl-C) the full checkpoint
ckpt/state.safetensors (machine-local) and the compact resume.safetensors.xz (small:
commit it, and the run continues from a fresh clone). ``--resume`` restores every
setting from run.json.
Ctrl-C once: finish the running chunk, checkpoint, stop; twice: stop at once.
JAX picks its default device (a GPU if it has one).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from gpae_ref._xla_flags import SAFE_CPU_FLAGS, xla_flags
from gpae_ref.learner.config import check_scenario, LearnerConfig
from gpae_ref.learner.devices import (env_axes, env_shardings, initialize_distributed, is_writer,
                                      make_mesh, pick_devices, place)
from gpae_ref.learner.runfolder import (check_smax, keep_rows, load_state, Lock, new_record, read_record,
                                        record_config, reproduce_command, resume_entry, RunFolder,
                                        RunFolderError, write_json)
from gpae_ref.learner.runloop import Program, StopFlag, add_time_limit_flag, deadline, run_loop, save
from gpae_ref.learner.schedule import Schedule, SCHEDULE_FIELDS
from gpae_ref.learner.settings import SETTINGS_HELP, add_config_flags, config_fields, given_config_flags

PRESETS = {
    # The README's main job: GPAE on 3m in about 10 minutes on 2 CPU cores (see docs/learner.md).
    "demo": dict(scenario="3m", advantage="gpae", total_steps=655_360),
    # The authors' budget (1e7 steps); hours on a CPU.
    "paper": dict(total_steps=10_000_000),
}
SMAX_HINT = 'pip install -e ".[smax]"   (or: make demo, which sets up .venv with it)'


def build_parser() -> argparse.ArgumentParser:
    """The CLI; builds without jax or jaxmarl (``--help`` works before the smax extra is installed)."""
    d = Schedule()
    p = argparse.ArgumentParser(prog="python -m gpae_ref.train", description=__doc__.split("\n\n")[0],
                                epilog=f"Training needs the smax extra: {SMAX_HINT}")
    p.add_argument("--settings", choices=sorted(SETTINGS_HELP),
                   help="named learner settings: " + "; ".join(f"{k}: {v}" for k, v in SETTINGS_HELP.items()))
    p.add_argument("--preset", choices=sorted(PRESETS), help="named job (map, budget) on top of --settings")
    p.add_argument("--name", help="run name (default: <scenario>_<advantage>_K<reuse>_s<seed>)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint, "
                   "with every setting it was started with")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder's files")
    p.add_argument("--allow-unchecked-checkpoint", action="store_true",
                   help="--resume from a trusted checkpoint written before checkpoints had checksums")
    p.add_argument("--eval-every", type=int, default=None,
                   help=f"updates between greedy evaluations (default {d.eval_every}; 0 = never, not even at "
                        f"the end)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"updates between checkpoints (default {d.checkpoint_every})")
    p.add_argument("--chunk", type=int, default=None,
                   help=f"updates per jitted call / progress refresh (default {d.chunk})")
    p.add_argument("--max-updates", type=int, default=None,
                   help="stop (with a checkpoint) after this many updates in this invocation; continue with --resume")
    add_time_limit_flag(p)
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--devices", type=int, default=None,
                   help="split each rollout's environments over this many devices (data parallel; default 1; "
                        "with several hosts: all devices of all hosts)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="several hosts: the address of process 0 (jax.distributed.initialize; without these "
                        "flags JAX's environment variables, e.g. JAX_COORDINATOR_ADDRESS, are read)")
    p.add_argument("--num-processes", type=int, default=None, help="several hosts: how many processes in all")
    p.add_argument("--process-id", type=int, default=None, help="several hosts: this process's index (0 writes)")
    p.add_argument("--xla-defaults", action="store_true",
                   help="do not add " + " ".join(SAFE_CPU_FLAGS) + " to XLA_FLAGS (see docs/results.md)")
    add_config_flags(p)
    return p


def missing_smax() -> str | None:
    """The first module of the smax extra that does not import (None if all do)."""
    import importlib

    for mod in ("jax", "flax", "optax", "jaxmarl", "safetensors", "matplotlib", "rich"):
        try:
            importlib.import_module(mod)
        except ImportError:
            return mod
    return None


def config_from_args(args, parser):
    """LearnerConfig from --settings, --preset and the field flags; errors name the flag."""
    try:
        cfg = LearnerConfig(**config_fields(args, args.settings, PRESETS.get(args.preset)))
        check_scenario(cfg)
    except ValueError as e:
        parser.error(f"--{str(e).split(':')[0].replace('_', '-')}: {e}")
    return cfg


def schedule_from(args, parser, saved: dict | None = None):
    """Schedule: the flags given, else the saved run's (``--resume``), else the defaults."""
    fields = dict(saved or {})
    fields.update({k: getattr(args, k) for k in SCHEDULE_FIELDS if getattr(args, k) is not None})
    try:
        return Schedule(**{k: v for k, v in fields.items() if k in SCHEDULE_FIELDS})
    except ValueError as e:
        parser.error(str(e))


def prepare_new_run(args, parser, cfg):
    """The ``RunFolder`` of a new run, created and emptied of an old run's files; errors name the flag."""
    if args.name is not None and (args.name in ("", ".", "..") or "/" in args.name or os.sep in args.name):
        parser.error(f"--name: {args.name!r} is not a folder name; give one name (the run goes to "
                     f"--runs-dir/NAME; use --runs-dir to choose where).")
    name = args.name or default_name(cfg)
    runs = Path(args.runs_dir)
    if runs.exists() and not runs.is_dir():
        parser.error(f"--runs-dir: {runs} is a file, not a folder; give a folder (it is created if missing).")
    folder = RunFolder(runs / name)
    if folder.path.exists() and not folder.path.is_dir():
        parser.error(f"--name: {folder.path} is a file, not a run folder; choose another --name.")
    if folder.csv_paths[0].exists() and not args.overwrite:
        parser.error(f"--name: {folder.path} exists; use --resume {folder.path}, --overwrite or another --name")
    try:
        folder.path.mkdir(parents=True, exist_ok=True)
        probe = folder.path / ".write-test"
        probe.write_text("")
        probe.unlink()
        folder.create()
    except OSError as e:
        parser.error(f"--runs-dir: cannot write in {folder.path} ({e.strerror or e}); give a folder you can "
                     f"write to (--runs-dir PATH).")
    folder.remove_state()
    return folder


def open_resumed_run(args, parser, smax: str):
    """(RunFolder, LearnerConfig, Schedule, record) of ``--resume``; a bad folder ends in one line."""
    folder = RunFolder(Path(args.resume))
    if not folder.path.is_dir():
        parser.error(f"--resume: {folder.path} is not a folder; give a run folder (it holds run.json).")
    record = read_record(folder)
    cfg = record_config(record, folder.record_path)
    check_smax(record.get("smax"), smax, str(folder.path))
    if not folder.has_state():
        parser.error(f"--resume: {folder.path} has {folder.record_path.name} but no saved state "
                     f"({folder.full_path.relative_to(folder.path)} or {folder.compact_path.name}); start it "
                     f"again with --overwrite and the same flags ({record.get('command', 'see run.json')}).")
    ignored = given_config_flags(args) + [f"--{k}" for k in ("settings", "preset", "name", "overwrite")
                                          if getattr(args, k)]
    if ignored:
        print(f"--resume uses the run's run.json; ignoring {', '.join(ignored)}")
    saved = record.get("schedule")
    if saved is not None and not isinstance(saved, dict):
        parser.error(f"--resume: {folder.record_path}: 'schedule' is not an object; restore the file.")
    if saved is None and "format" in record:  # train has written a schedule since the format was recorded
        raise RunFolderError(f"{folder.record_path}: 'schedule' is missing; restore the file from git or a copy.")
    if saved is None:
        print("--resume: this run's record predates saved schedules; using the flags or defaults")
    schedule = schedule_from(args, parser, saved)
    changed = [k for k in SCHEDULE_FIELDS if saved and getattr(args, k) is not None and getattr(args, k)
               != saved.get(k)]
    if changed:
        print(f"--resume: changing {', '.join('--' + k.replace('_', '-') for k in changed)} from the run's")
    return folder, cfg, schedule, record


def get_trainer(cfg, trainers: dict | None):
    from gpae_ref.learner.core import make_train

    if trainers is not None and cfg in trainers:
        return trainers[cfg]
    trainer = make_train(cfg)
    if trainers is not None:
        trainers[cfg] = trainer
    return trainer


def restore(folder, trainer, cfg, allow_unchecked: bool, writer: bool = True):
    """(state, wall_s, resume entry) of a resumed run, its CSV cut back to the state's update;
    nothing in the folder changes before the state has loaded."""
    import jax

    template = jax.eval_shape(trainer.init_fn, jax.random.PRNGKey(cfg.seed))
    state, meta, kind = load_state(folder, template, {"config": cfg.to_dict(), "seeds": None},
                                   allow_unchecked=allow_unchecked)
    u = int(state.update)
    kept = keep_rows(folder, u)[0] if writer else 0
    print(f"resumed at update {u} ({int(state.env_steps)} env steps) from the {kind} "
          f"{'checkpoint' if kind == 'full' else 'state'}; kept {kept} metric rows")
    return state, float(meta.get("wall_s", 0.0)), resume_entry(u, kind)


def main(argv=None, *, trainers: dict | None = None) -> int:
    """Run the CLI; ``trainers`` (optional) maps LearnerConfig -> Trainer to reuse compiled
    functions across calls in one process (tests, notebooks)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.stop_by = deadline(args.time_limit)  # counted from here: loading and compiling use the time too
    if args.max_updates is not None and args.max_updates < 1:
        parser.error(f"--max-updates must be >= 1 (got {args.max_updates}); leave it out to run to the end")
    # Read by XLA when jax first creates its CPU client (below); CLI only, never at import.
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), args.xla_defaults)
    start_hosts(args, parser)  # before anything imports jaxmarl, whose import starts jax's backend
    missing = missing_smax()
    if missing:
        print(f"python -m gpae_ref.train needs the smax extra ({missing} is not installed): {SMAX_HINT}",
              file=sys.stderr)
        return 2
    from gpae_ref.learner.env import smax_version
    smax = smax_version()
    try:
        if args.resume:
            folder, cfg, schedule, record = open_resumed_run(args, parser, smax)
        else:
            cfg, schedule = config_from_args(args, parser), schedule_from(args, parser)
        mesh = env_mesh(cfg, args.devices)  # refused here, before --overwrite empties anything
        if not args.resume:
            folder, record = (prepare_new_run(args, parser, cfg) if args.writer
                              else RunFolder(Path(args.runs_dir) / (args.name or default_name(cfg)))), None
        if not args.writer:  # another process owns the folder: it locks and writes
            return _train(args, folder, cfg, schedule, record, smax, trainers, mesh)
        with Lock(folder):
            return _train(args, folder, cfg, schedule, record, smax, trainers, mesh)
    except ValueError as e:  # CheckpointError, RunFolderError: one line naming the file and what to do
        prefix = "--resume: " if args.resume and not str(e).startswith("--resume") else ""
        print(f"{prefix}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while loading or compiling (the run loop says more itself), or a second Ctrl-C
        print("\ninterrupted; nothing more was saved (--resume continues from the last checkpoint, if one was "
              "written)", file=sys.stderr)
        return 130


def start_hosts(args, parser) -> None:
    """Several hosts: ``jax.distributed.initialize`` (before jax's first use); sets ``args.writer``."""
    given = [args.coordinator, args.num_processes, args.process_id]
    if any(v is not None for v in given) or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        if any(v is None for v in given) and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
            parser.error("--coordinator, --num-processes and --process-id go together (or set JAX's "
                         "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
        for flag, value in (("--num-processes", args.num_processes), ("--process-id", args.process_id)):
            if value is not None and value < (1 if flag == "--num-processes" else 0):
                parser.error(f"{flag}: got {value}; must be >= {1 if flag == '--num-processes' else 0}")
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            parser.error(f"--coordinator: several hosts need jax (the smax extra: {SMAX_HINT})")
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        args.writer = is_writer()
    else:
        args.writer = True


def default_name(cfg) -> str:
    return f"{cfg.scenario}_{cfg.advantage}_K{cfg.reuse}_s{cfg.seed}"


def env_mesh(cfg, requested: int | None):
    """The mesh of ``--devices`` (all of every host's when several hosts run; None: one device);
    a count that cannot work is refused before anything is compiled."""
    import jax

    if requested is None and jax.process_count() == 1:
        return None
    if requested is None:
        requested = len(jax.devices())
    return make_mesh(pick_devices(requested, cfg.envs_per_rollout, "envs per rollout"))


def spread_envs(state, cfg, trainer, mesh):
    """``state`` with its environments split over ``mesh`` (unchanged for None)."""
    import jax

    if mesh is None:
        return state
    key = jax.random.PRNGKey(cfg.seed)

    def shape_at(b):
        from gpae_ref.learner.core import make_train

        other = dataclasses.replace(cfg, num_envs=b * cfg.reuse, total_steps=max(cfg.total_steps, 2 * b * cfg.num_steps))
        return jax.eval_shape(trainer.init_fn if other == cfg else make_train(other).init_fn, key)

    return place(state, env_shardings(mesh, env_axes(shape_at, cfg.envs_per_rollout)))


def _train(args, folder, cfg, schedule, record, smax, trainers, mesh) -> int:
    import jax

    trainer = get_trainer(cfg, trainers)
    wall0, resumes = 0.0, []
    if args.resume:
        state, wall0, entry = restore(folder, trainer, cfg, args.allow_unchecked_checkpoint, args.writer)
        if int(state.update) >= cfg.num_updates:  # nothing to run: the record stays as it is
            print(f"{folder.path}: the run is complete ({int(state.update)}/{cfg.num_updates} updates); "
                  f"nothing to do (its results: {folder.csv_paths[0].name}, {folder.curve_path.name})")
            return 0
        resumes = list(record.get("resumes") or []) + [entry]
    else:
        state = trainer.init(jax.random.PRNGKey(cfg.seed))
    state = spread_envs(state, cfg, trainer, mesh)
    n_devices = 1 if mesh is None else mesh.size
    fresh = new_record(cfg, schedule, None, smax, reproduce_command(cfg, schedule))
    try:
        if args.writer:
            write_json(folder.record_path, {**fresh, "resumes": resumes})
    except OSError as e:
        print(f"--runs-dir: cannot write {folder.record_path} ({e.strerror or e}).", file=sys.stderr)
        return 2
    if args.writer:
        (folder.path / "config.json").unlink(missing_ok=True)  # a format-1 record, now in run.json
    title = f"{cfg.scenario} {cfg.advantage}" + (f" ({cfg.correction}, eta {cfg.eta})" if cfg.advantage == "gpae"
                                                 else "") + f" K={cfg.reuse} seed {cfg.seed}"
    where = f"device {jax.devices()[0]}" if n_devices == 1 else f"envs over {n_devices} devices"
    print(f"{title} | {cfg.num_updates} updates x {cfg.steps_per_update} env steps | {where} | "
          f"SMAX jaxmarl {smax} | run dir {folder.path}", flush=True)
    return _loop(args, folder, cfg, schedule, smax, trainer, state, wall0, title)


def _loop(args, folder, cfg, schedule, smax, trainer, state, wall0, title) -> int:
    from gpae_ref.learner import logbook
    program = Program(run=trainer.run_updates, evaluate=trainer.evaluate, folder=folder, data=trainer.data,
                      steps_per_update=cfg.steps_per_update,
                      meta=lambda st, wall: {"config": cfg.to_dict(), "schedule": schedule.to_dict(), "smax": smax},
                      writer=args.writer)
    total = cfg.num_updates
    stop_at = None if args.max_updates is None else int(state.update) + args.max_updates
    progress, show = _progress(args.no_progress, cfg, state, total)

    def on_chunk(c):
        win = c["metrics"].train_win_rate
        win = float(np.nanmean(win)) if np.any(np.isfinite(win)) else float("nan")
        ev = c["last_eval"]
        ev_txt = f" | greedy {float(ev[1].win_rate):.2f}" if ev else ""
        show(c["update"], int(c["env_steps"]), f"{c['steps_per_s']:,.0f} steps/s | train win {win:.2f}{ev_txt}")
        if c["update"] % schedule.checkpoint_every == 0 and args.writer:
            logbook.plot_curve(folder.csv_paths[0], folder.curve_path, title)

    try:
        with StopFlag(deadline=args.stop_by) as stop:
            out = run_loop(program, state, total=total, schedule=schedule, wall0=wall0, stop_at=stop_at,
                           stop=stop, on_chunk=on_chunk)
    except KeyboardInterrupt:
        print(f"\naborted; last checkpoint in {folder.full_path} (metrics rows after it are dropped on --resume)")
        return 130
    finally:
        if progress is not None:
            progress.stop()
    if args.writer:
        logbook.plot_curve(folder.csv_paths[0], folder.curve_path, title)
    return _report(out, folder, schedule, trainer, program)


def _report(out, folder, schedule, trainer, program) -> int:
    """Print how the run ended -> exit code."""
    import jax

    state, u, total = out.state, out.update, trainer.config.num_updates
    if out.status == "nan":
        print(f"\nNaN/inf at update {out.bad_update}: stopping. Last finite state (update {u}) kept in "
              f"{folder.full_path}; a --resume repeats the same updates, so change the settings (e.g. a lower "
              f"--lr) in a new run.", file=sys.stderr)
        return 1
    if out.status == "stopped":
        why = " (--time-limit)" if out.out_of_time else ""
        print(f"stopped at update {u}/{total}{why}; continue with: python -m gpae_ref.train --resume {folder.path}")
        return 130 if out.interrupted else 0
    last_eval = out.last_eval
    if schedule.eval_every and (last_eval is None or last_eval[0] != u):
        last_eval = (u, jax.device_get(trainer.evaluate(state)))
    save(program, state, out.wall_s)
    sps = f"{out.timed_steps / out.timed_s:,.0f}" if out.timed_s else "n/a"
    print(f"done: {u} updates, {int(state.env_steps):,} env steps in {out.wall_s:,.0f} s "
          f"({sps} env steps/s after compilation)")
    if last_eval is not None:
        ev = last_eval[1]
        print(f"final greedy win rate: {float(ev.win_rate):.3f} over {int(ev.episodes)} episodes")
    print(f"curve: {folder.curve_path}  metrics: {folder.csv_paths[0]}")
    return 0


def _progress(plain: bool, cfg, state, total):
    """(rich Progress or None, show(update, env_steps, info))."""
    offset = (cfg.reuse - 1) * cfg.steps_per_update  # the K-1 prefill rollouts are not training steps
    if plain:
        return None, lambda u, steps, info: print(f"update {u}/{total} env steps {steps} | {info}", flush=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn())
    progress.start()
    task = progress.add_task("env steps", total=total * cfg.steps_per_update,
                             completed=int(state.env_steps) - offset, info="compiling...")
    return progress, lambda u, steps, info: progress.update(task, completed=steps - offset, info=info)


if __name__ == "__main__":
    sys.exit(main())
