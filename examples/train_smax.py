"""Train GPAE on SMAX 3m (the README's demo) through the same entry point as the CLI, then read what it wrote.

    python examples/train_smax.py                 # = python -m gpae_ref.train --preset demo
    python examples/train_smax.py --reuse 2       # any flag of `python -m gpae_ref.train --help` passes through

Shows: the demo run (GPAE with DT-ISR, 655,360 env steps on 3m), then where
its results are. Prints training progress, then the run folder, the last
metrics row and the final greedy win rate. About 5 min on 2 CPU cores (about
20 s of it compiling; the README has the measured time).

Where things go, ``runs/<name>/`` (``<name>`` = ``--name``, default
``<scenario>_<advantage>_K<reuse>_s<seed>``, here ``3m_gpae_K1_s0``):

* ``run.json``: every learner setting, the schedule, the jaxmarl version,
  the one ``train`` command that reproduces the run, and every resume;
* ``metrics.csv``: one row per update (losses, trace and ratio statistics,
  training win rate; ``eval_win_rate`` on evaluation rows, every ``--eval-every``);
* ``curve.png``: training and greedy win rate against env steps;
* ``ckpt/state.safetensors`` (the full checkpoint, ignored by git) and
  ``resume.safetensors.xz`` (the compact resume state, small enough to commit):
  written every ``--checkpoint-every`` updates and at the end.

Resume: stop with Ctrl-C (or ``--max-updates U``), then
``python -m gpae_ref.train --resume runs/3m_gpae_K1_s0`` continues from the last
checkpoint with the run's own settings, dropping metric rows written after it.

On a GPU: install JAX's CUDA build into the same environment, as JAX's
installation guide says for your CUDA version (e.g. ``pip install -U
"jax[cuda12]"``), and run the same command: JAX picks the GPU by itself and the
run's header line says ``device cuda:0`` instead of ``device cpu:0``. The learner is one jitted program,
so nothing else changes; a GPU pays off at the authors' scale
(``--settings authors --preset paper``: 128 envs x 128 steps, 1e7 env steps)
rather than on the small demo. Not yet measured here (no GPU was available).
"""

import csv
import sys
from pathlib import Path

from gpae_ref.train import build_parser, config_from_args
from gpae_ref.train import main as train


def run_folder(argv):
    """The folder a ``train`` command writes to: ``--resume`` itself, else ``--runs-dir``/``--name``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        return Path(args.resume)
    cfg = config_from_args(args, parser)
    return Path(args.runs_dir) / (args.name or f"{cfg.scenario}_{cfg.advantage}_K{cfg.reuse}_s{cfg.seed}")


def main(argv=(), trainers=None):
    """Run ``train --preset demo`` plus ``argv`` (or ``--resume DIR``); return (exit code, run folder, metrics rows).

    ``trainers``: a dict kept across calls in one process (a notebook) reuses the compiled update.
    """
    argv = list(argv) if "--resume" in argv else ["--preset", "demo", *argv]
    rc = train(argv, trainers=trainers)
    run = run_folder(argv)
    if rc != 0 or not (run / "metrics.csv").is_file():
        return rc, run, []
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    print(f"\nrun folder {run}: run.json, metrics.csv ({len(rows)} rows), curve.png, ckpt/state.safetensors, "
          f"resume.safetensors.xz")
    print(f"last row: update {last['update']}, {last['env_steps']} env steps, training win rate "
          f"{last['train_win_rate']}, mean trace {last['trace_mean']}")
    print(f"continue it after a stop with: python -m gpae_ref.train --resume {run}")
    return rc, run, rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:])[0])
