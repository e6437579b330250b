"""Train the SMAX learner from the command line.

    python -m gpae_ref.train --preset demo
    python -m gpae_ref.train --settings authors --scenario 5m_vs_6m --advantage gpae --reuse 2 --seed 0
    python -m gpae_ref.train --settings cpu --scenario 3m --advantage gae --total-steps 2000000 --name my_run
    python -m gpae_ref.train --resume runs/my_run

Every LearnerConfig field is a flag (``--help`` lists them with their meaning);
``--settings`` names a whole setting (authors: the authors' yaml; cpu: the
CPU-sized learner), ``--preset`` a job; explicit flags override both.
Writes runs/<name>/config.json (the learner config, the schedule, the SMAX version
and the one command that reproduces the run), metrics.csv (one row per update),
curve.png, checkpoint.safetensors (every --checkpoint-every updates, at the end,
on Ctrl-C). ``--resume`` restores every setting from config.json.
Ctrl-C once: finish the running chunk, checkpoint, stop; twice: stop at once.
JAX picks its default device (a GPU if it has one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gpae_ref._xla_flags import SAFE_CPU_FLAGS, xla_flags

PRESETS = {
    # The README's main job: GPAE on 3m in about 10 minutes on 2 CPU cores (see docs/learner.md).
    "demo": dict(scenario="3m", advantage="gpae", total_steps=655_360),
    # The authors' budget (1e7 steps); hours on a CPU.
    "paper": dict(total_steps=10_000_000),
}
RUN_FORMAT = "gpae-ref-run/1"
SCHEDULE_FLAGS = ("chunk", "eval_every", "checkpoint_every")
SMAX_HINT = 'pip install -e ".[smax]"   (or: make demo, which sets up .venv with it)'


def build_parser() -> argparse.ArgumentParser:
    """The CLI; builds without jax or jaxmarl (``--help`` works before the smax extra is installed)."""
    from gpae_ref.learner.runloop import Schedule
    from gpae_ref.learner.settings import SETTINGS_HELP, add_config_flags

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
    p.add_argument("--eval-every", type=int, default=None,
                   help=f"updates between greedy evaluations (default {d.eval_every}; 0 = never, not even at "
                        f"the end)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"updates between checkpoints (default {d.checkpoint_every})")
    p.add_argument("--chunk", type=int, default=None,
                   help=f"updates per jitted call / progress refresh (default {d.chunk})")
    p.add_argument("--max-updates", type=int, default=None,
                   help="stop (with a checkpoint) after this many updates in this invocation; continue with --resume")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
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
    from gpae_ref.learner.config import LearnerConfig, check_scenario
    from gpae_ref.learner.settings import config_fields

    try:
        cfg = LearnerConfig(**config_fields(args, args.settings, PRESETS.get(args.preset)))
        check_scenario(cfg)
    except ValueError as e:
        parser.error(f"--{str(e).split(':')[0].replace('_', '-')}: {e}")
    return cfg


def schedule_from(args, parser, saved: dict | None = None):
    """Schedule: the flags given, else the saved run's (``--resume``), else the defaults."""
    from gpae_ref.learner.runloop import Schedule

    fields = dict(saved or {})
    fields.update({k: getattr(args, k) for k in SCHEDULE_FLAGS if getattr(args, k) is not None})
    try:
        return Schedule(**{k: v for k, v in fields.items() if k in SCHEDULE_FLAGS})
    except ValueError as e:
        parser.error(str(e))


def train_command(cfg, schedule) -> str:
    """The one command that reproduces a run (its name and folder aside)."""
    from gpae_ref.learner.settings import train_argv

    sched = [x for k, v in schedule.to_dict().items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return " ".join(["python -m gpae_ref.train", *train_argv(cfg), *sched])


def read_run(run_dir: Path, parser):
    """(LearnerConfig, saved schedule dict or None, smax version or None) of a run folder."""
    from gpae_ref.learner.config import LearnerConfig

    try:
        data = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        parser.error(f"--resume: cannot read {run_dir / 'config.json'} ({e}).")
    if "learner" in data:  # this format; an older config.json is the flat LearnerConfig
        return LearnerConfig.from_dict(data["learner"]), data.get("schedule"), data.get("smax")
    return LearnerConfig.from_dict(data), None, None


def prepare_new_run(args, parser, cfg) -> Path:
    """The run folder of a new run, created and emptied of an old run's files; errors name the flag."""
    name = args.name or f"{cfg.scenario}_{cfg.advantage}_K{cfg.reuse}_s{cfg.seed}"
    runs = Path(args.runs_dir)
    if runs.exists() and not runs.is_dir():
        parser.error(f"--runs-dir: {runs} is a file, not a folder; give a folder (it is created if missing).")
    run_dir = runs / name
    if run_dir.exists() and not run_dir.is_dir():
        parser.error(f"--name: {run_dir} is a file, not a run folder; choose another --name.")
    if (run_dir / "metrics.csv").exists() and not args.overwrite:
        parser.error(f"--name: {run_dir} exists; use --resume {run_dir}, --overwrite or another --name")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        parser.error(f"--runs-dir: cannot write in {run_dir} ({e.strerror or e}); give a folder you can write "
                     f"to (--runs-dir PATH).")
    for f in ("metrics.csv", "checkpoint.safetensors", "curve.png"):
        (run_dir / f).unlink(missing_ok=True)
    return run_dir


def main(argv=None, *, trainers: dict | None = None) -> int:
    """Run the CLI; ``trainers`` (optional) maps LearnerConfig -> Trainer to reuse compiled
    functions across calls in one process (tests, notebooks)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_updates is not None and args.max_updates < 1:
        parser.error(f"--max-updates must be >= 1 (got {args.max_updates}); leave it out to run to the end")
    missing = missing_smax()
    if missing:
        print(f"python -m gpae_ref.train needs the smax extra ({missing} is not installed): {SMAX_HINT}",
              file=sys.stderr)
        return 2
    # Read by XLA when jax first creates its CPU client (below); CLI only, never at import.
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), args.xla_defaults)

    import jax

    from gpae_ref.learner import logbook
    from gpae_ref.learner.checkpoint import CheckpointError, load_checkpoint
    from gpae_ref.learner.core import make_train
    from gpae_ref.learner.env import smax_version
    from gpae_ref.learner.runloop import Program, StopFlag, resume_rows, run_loop, write_json
    from gpae_ref.learner.settings import given_config_flags

    smax = smax_version()
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoint.safetensors").is_file():
            parser.error(f"--resume: {run_dir} has no config.json and checkpoint.safetensors")
        cfg, saved, run_smax = read_run(run_dir, parser)
        if run_smax not in (None, smax):
            parser.error(f"--resume: {run_dir} ran on SMAX from jaxmarl {run_smax}; this Python has jaxmarl "
                         f"{smax} (the authors' 0.0.7 is in .venv-authors: make env-authors).")
        ignored = given_config_flags(args) + [f"--{k}" for k in ("settings", "preset") if getattr(args, k)]
        if ignored:
            print(f"--resume uses the run's config.json; ignoring {', '.join(ignored)}")
        if saved is None:
            print("--resume: this run's config.json predates saved schedules; using the flags or defaults")
        schedule = schedule_from(args, parser, saved)
        changed = [k for k in SCHEDULE_FLAGS if saved and getattr(args, k) is not None and getattr(args, k)
                   != saved.get(k)]
        if changed:
            print(f"--resume: changing {', '.join('--' + k.replace('_', '-') for k in changed)} from the run's")
    else:
        cfg = config_from_args(args, parser)
        schedule = schedule_from(args, parser)
        run_dir = prepare_new_run(args, parser, cfg)
    csv_path, ckpt_path, png_path = run_dir / "metrics.csv", run_dir / "checkpoint.safetensors", run_dir / "curve.png"
    record = {"format": RUN_FORMAT, "learner": cfg.to_dict(), "schedule": schedule.to_dict(), "smax": smax,
              "command": train_command(cfg, schedule)}
    title = f"{cfg.scenario} {cfg.advantage}" + (f" ({cfg.correction}, eta {cfg.eta})" if cfg.advantage == "gpae" else "") \
        + f" K={cfg.reuse} seed {cfg.seed}"

    if trainers is not None and cfg in trainers:
        trainer = trainers[cfg]
    else:
        trainer = make_train(cfg)
        if trainers is not None:
            trainers[cfg] = trainer
    key = jax.random.PRNGKey(cfg.seed)
    wall0 = 0.0
    if args.resume:
        try:  # before anything in the folder changes: a bad checkpoint leaves the run as it was
            state, meta = load_checkpoint(ckpt_path, jax.eval_shape(trainer.init_fn, key))
        except CheckpointError as e:
            print(f"--resume: {e}", file=sys.stderr)
            return 2
        wall0 = float(meta.get("wall_s", 0.0))
        kept = resume_rows([csv_path], int(state.update))[0]
        print(f"resumed at update {int(state.update)} ({int(state.env_steps)} env steps); kept {kept} metric rows")
    else:
        state = trainer.init(key)
    try:
        write_json(run_dir / "config.json", record)
    except OSError as e:
        parser.error(f"--runs-dir: cannot write {run_dir / 'config.json'} ({e.strerror or e}).")
    print(f"{title} | {cfg.num_updates} updates x {cfg.steps_per_update} env steps | device {jax.devices()[0]} | "
          f"SMAX jaxmarl {smax} | run dir {run_dir}", flush=True)

    program = Program(run=trainer.run_updates, evaluate=trainer.evaluate, csv_paths=[csv_path], ckpt_path=ckpt_path,
                      steps_per_update=cfg.steps_per_update,
                      meta=lambda st, wall: {"config": cfg.to_dict(), "schedule": schedule.to_dict(), "smax": smax})
    total = cfg.num_updates
    u0 = int(state.update)
    stop_at = None if args.max_updates is None else u0 + args.max_updates
    progress, show = _progress(args.no_progress, cfg, state, total)

    def on_chunk(c):
        import numpy as np

        win = c["metrics"].train_win_rate
        win = float(np.nanmean(win)) if np.any(np.isfinite(win)) else float("nan")
        ev = c["last_eval"]
        ev_txt = f" | greedy {float(ev[1].win_rate):.2f}" if ev else ""
        show(c["update"], int(c["env_steps"]), f"{c['steps_per_s']:,.0f} steps/s | train win {win:.2f}{ev_txt}")
        if c["update"] % schedule.checkpoint_every == 0:
            logbook.plot_curve(csv_path, png_path, title)

    try:
        with StopFlag() as stop:
            out = run_loop(program, state, total=total, schedule=schedule, wall0=wall0, stop_at=stop_at,
                           stop=stop, on_chunk=on_chunk)
    except KeyboardInterrupt:
        print(f"\naborted; last checkpoint in {ckpt_path} (metrics rows after it are dropped on --resume)")
        return 130
    finally:
        if progress is not None:
            progress.stop()
    state, u = out.state, out.update
    logbook.plot_curve(csv_path, png_path, title)
    if out.status == "nan":
        print(f"\nNaN/inf at update {out.bad_update}: stopping. Last finite state (update {u}) kept in {ckpt_path}; "
              f"a --resume repeats the same updates, so change the settings (e.g. a lower --lr) in a new run.",
              file=sys.stderr)
        return 1
    if out.status == "stopped":
        print(f"stopped at update {u}/{total}; continue with: python -m gpae_ref.train --resume {run_dir}")
        return 130 if out.interrupted else 0
    last_eval = out.last_eval
    if schedule.eval_every and (last_eval is None or last_eval[0] != u):
        last_eval = (u, jax.device_get(trainer.evaluate(state)))
    from gpae_ref.learner.runloop import save

    save(program, state, out.wall_s)
    sps = f"{out.timed_steps / out.timed_s:,.0f}" if out.timed_s else "n/a"
    print(f"done: {u} updates, {int(state.env_steps):,} env steps in {out.wall_s:,.0f} s "
          f"({sps} env steps/s after compilation)")
    if last_eval is not None:
        ev = last_eval[1]
        print(f"final greedy win rate: {float(ev.win_rate):.3f} over {int(ev.episodes)} episodes")
    print(f"curve: {png_path}  metrics: {csv_path}")
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
