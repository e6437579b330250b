"""Train the SMAX learner from the command line.

    python -m gpae_ref.train --preset demo
    python -m gpae_ref.train --scenario 3m --advantage gpae --correction dt --eta 1.02 --reuse 1 \
        --total-steps 2000000 --seed 0 --name my_run
    python -m gpae_ref.train --resume runs/my_run

Writes runs/<name>/config.json, metrics.csv (one row per update), curve.png,
checkpoint.safetensors (every --checkpoint-every updates, at the end, on Ctrl-C).
Ctrl-C once: finish the running chunk, checkpoint, stop; twice: stop at once.
JAX picks its default device (a GPU if it has one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

from gpae_ref._xla_flags import SAFE_CPU_FLAGS, xla_flags

PRESETS = {
    # The README's main job: GPAE on 3m in about 10 minutes on 2 CPU cores (see docs/learner.md).
    "demo": dict(scenario="3m", advantage="gpae", total_steps=655_360),
    # The authors' budget (1e7 steps); hours on a CPU.
    "paper": dict(total_steps=10_000_000),
}

# CLI flag -> LearnerConfig field (flags left unset keep the preset's or the dataclass's value).
FLAGS = {
    "scenario": str, "advantage": str, "correction": str, "eta": float, "reuse": int,
    "marginalise": str, "total_steps": int, "num_envs": int, "num_steps": int, "update_epochs": int,
    "num_minibatches": int, "lr": float, "gamma": float, "lam": float, "clip_eps": float,
    "ent_coef": float, "eval_envs": int, "seed": int,
}


def build_parser() -> argparse.ArgumentParser:
    from gpae_ref.learner.config import ADVANTAGES, CORRECTIONS, MARGINALISE

    p = argparse.ArgumentParser(prog="python -m gpae_ref.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), help="named settings; explicit flags override them")
    choices = {"advantage": ADVANTAGES, "correction": CORRECTIONS, "marginalise": MARGINALISE}
    for name, typ in FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                       choices=choices.get(name))
    p.add_argument("--epochs", dest="update_epochs", type=int, default=None, help="alias of --update-epochs")
    p.add_argument("--name", help="run name (default: <scenario>_<advantage>_K<reuse>_s<seed>)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder's files")
    p.add_argument("--eval-every", type=int, default=10, help="updates between greedy evaluations (default 10; 0 = never, not even at the end)")
    p.add_argument("--checkpoint-every", type=int, default=20, help="updates between checkpoints (default 20)")
    p.add_argument("--chunk", type=int, default=5, help="updates per jitted call / progress refresh (default 5)")
    p.add_argument("--max-updates", type=int, default=None,
                   help="stop (with a checkpoint) after this many updates in this invocation; continue with --resume")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--xla-defaults", action="store_true",
                   help="do not add " + " ".join(SAFE_CPU_FLAGS) + " to XLA_FLAGS (see docs/results.md)")
    return p


def config_from_args(args, parser):
    from gpae_ref.learner.config import LearnerConfig, check_scenario

    fields = dict(PRESETS.get(args.preset, {}))
    fields.update({k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None})
    try:
        cfg = LearnerConfig(**fields)
        check_scenario(cfg)
    except ValueError as e:
        parser.error(f"--{str(e).split(':')[0].replace('_', '-')}: {e}")
    return cfg


class _StopFlag:
    """First SIGINT: stop at the next chunk boundary; second: the default KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this chunk (press again to abort without a checkpoint).", flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)
        return False


def main(argv=None, *, trainers: dict | None = None) -> int:
    """Run the CLI; ``trainers`` (optional) maps LearnerConfig -> Trainer to reuse compiled
    functions across calls in one process (tests, notebooks)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("eval_every", "checkpoint_every", "chunk", "max_updates"):
        if getattr(args, flag) is not None and getattr(args, flag) < (0 if flag == "eval_every" else 1):
            parser.error(f"--{flag.replace('_', '-')} must be >= {0 if flag == 'eval_every' else 1}")
    evaluating = args.eval_every > 0
    # Read by XLA when jax first creates its CPU client (below); CLI only, never at import.
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), args.xla_defaults)

    import jax
    import numpy as np

    from gpae_ref.learner import logbook
    from gpae_ref.learner.checkpoint import load_checkpoint, save_checkpoint
    from gpae_ref.learner.config import LearnerConfig
    from gpae_ref.learner.core import make_train

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").exists() or not (run_dir / "checkpoint.safetensors").exists():
            parser.error(f"--resume: {run_dir} has no config.json and checkpoint.safetensors")
        cfg = LearnerConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        ignored = [k for k in FLAGS if getattr(args, k) is not None] + (["preset"] if args.preset else [])
        if ignored:
            print(f"--resume uses the run's config.json; ignoring {', '.join(ignored)}")
    else:
        cfg = config_from_args(args, parser)
        name = args.name or f"{cfg.scenario}_{cfg.advantage}_K{cfg.reuse}_s{cfg.seed}"
        run_dir = Path(args.runs_dir) / name
        if (run_dir / "metrics.csv").exists() and not args.overwrite:
            parser.error(f"--name: {run_dir} exists; use --resume {run_dir}, --overwrite or another --name")
        run_dir.mkdir(parents=True, exist_ok=True)
        for f in ("metrics.csv", "checkpoint.safetensors", "curve.png"):
            (run_dir / f).unlink(missing_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    csv_path, ckpt_path, png_path = run_dir / "metrics.csv", run_dir / "checkpoint.safetensors", run_dir / "curve.png"
    title = f"{cfg.scenario} {cfg.advantage}" + (f" ({cfg.correction}, eta {cfg.eta})" if cfg.advantage == "gpae" else "") \
        + f" K={cfg.reuse} seed {cfg.seed}"
    print(f"{title} | {cfg.num_updates} updates x {cfg.steps_per_update} env steps | device {jax.devices()[0]} | "
          f"run dir {run_dir}", flush=True)

    if trainers is not None and cfg in trainers:
        trainer = trainers[cfg]
    else:
        trainer = make_train(cfg)
        if trainers is not None:
            trainers[cfg] = trainer
    key = jax.random.PRNGKey(cfg.seed)
    wall0 = 0.0
    if args.resume:
        template = jax.eval_shape(trainer.init_fn, key)
        state, meta = load_checkpoint(ckpt_path, template)
        wall0 = float(meta.get("wall_s", 0.0))
        kept = logbook.truncate_rows(csv_path, int(state.update))
        print(f"resumed at update {int(state.update)} ({int(state.env_steps)} env steps); kept {kept} metric rows")
    else:
        state = trainer.init(key)

    def checkpoint(st, wall):
        save_checkpoint(ckpt_path, st, {"update": int(st.update), "env_steps": int(st.env_steps), "wall_s": wall,
                                        "config": cfg.to_dict()})
        logbook.plot_curve(csv_path, png_path, title)

    total = cfg.num_updates
    u = int(state.update)
    stop_at = total if args.max_updates is None else min(total, u + args.max_updates)
    last_eval = None
    t_start = time.perf_counter()
    timed_steps, timed_s, compiled = 0, 0.0, set()
    status = 0
    progress = None
    if not args.no_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn())
        progress.start()
        task = progress.add_task("env steps", total=total * cfg.steps_per_update, completed=int(state.env_steps)
                                 - (cfg.reuse - 1) * cfg.steps_per_update, info="compiling...")
    try:
        with _StopFlag() as stop:
            while u < stop_at and not stop.requested:
                boundary = lambda every: every - u % every
                n = min(args.chunk, stop_at - u, boundary(args.checkpoint_every),
                        boundary(args.eval_every) if evaluating else args.chunk)
                t0 = time.perf_counter()
                new_state, metrics = trainer.run_updates(state, n)
                metrics = jax.device_get(metrics)
                dt = time.perf_counter() - t0
                if not (logbook.finite(metrics.actor_loss) and logbook.finite(metrics.value_loss)):
                    bad = int(metrics.update[~(np.isfinite(metrics.actor_loss) & np.isfinite(metrics.value_loss))][0])
                    print(f"\nNaN/inf loss at update {bad}: stopping. Last good state (update {u}) kept in {ckpt_path}.",
                          file=sys.stderr)
                    checkpoint(state, wall0 + time.perf_counter() - t_start)
                    status = 1
                    break
                new_u = u + n
                evaluation = None
                if evaluating and (new_u % args.eval_every == 0 or new_u == total):
                    evaluation = jax.device_get(trainer.evaluate(new_state))
                    last_eval = (new_u, int(new_state.env_steps), evaluation)
                wall = wall0 + time.perf_counter() - t_start
                state, u = new_state, new_u
                logbook.append_rows(csv_path, logbook.metric_rows(metrics, wall, evaluation))
                if u % args.checkpoint_every == 0 or u == total:
                    checkpoint(state, wall)
                if n in compiled:  # a chunk length's first call includes compilation: not in steps/s
                    timed_steps += n * cfg.steps_per_update
                    timed_s += dt
                compiled.add(n)
                win = np.nanmean(metrics.train_win_rate) if np.any(np.isfinite(metrics.train_win_rate)) else float("nan")
                sps = timed_steps / timed_s if timed_s else float("nan")
                ev_txt = f" | greedy {float(last_eval[2].win_rate):.2f}" if last_eval else ""
                info = f"{sps:,.0f} steps/s | train win {win:.2f}{ev_txt}"
                if progress is not None:
                    progress.update(task, completed=int(state.env_steps) - (cfg.reuse - 1) * cfg.steps_per_update,
                                    info=info)
                else:
                    print(f"update {u}/{total} env steps {int(state.env_steps)} | {info}", flush=True)
            if status == 0 and u < total:
                checkpoint(state, wall0 + time.perf_counter() - t_start)
                print(f"stopped at update {u}/{total}; continue with: python -m gpae_ref.train --resume {run_dir}")
                status = 130 if stop.requested else 0
                if not stop.requested:
                    return 0
    except KeyboardInterrupt:
        print(f"\naborted; last checkpoint in {ckpt_path} (metrics rows after it are dropped on --resume)")
        status = 130
    finally:
        if progress is not None:
            progress.stop()
    if status == 0:
        if evaluating and (last_eval is None or last_eval[0] != u):
            ev = jax.device_get(trainer.evaluate(state))
            last_eval = (u, int(state.env_steps), ev)
        checkpoint(state, wall0 + time.perf_counter() - t_start)
        sps = f"{timed_steps / timed_s:,.0f}" if timed_s else "n/a"
        print(f"done: {u} updates, {int(state.env_steps):,} env steps in {wall0 + time.perf_counter() - t_start:,.0f} s "
              f"({sps} env steps/s after compilation)")
        if last_eval is not None:
            ev = last_eval[2]
            print(f"final greedy win rate: {float(ev.win_rate):.3f} over {int(ev.episodes)} episodes")
        print(f"curve: {png_path}  metrics: {csv_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
