"""The numbers docs/results.md quotes beside the generated hard-authors tables.

Reads the committed per-seed CSVs of ``hard --scale authors`` (seed 0) and prints, per
arm: greedy win rate at the last evaluation, its mean over all evaluations and over
the last ten, and the training win rate over the run's last 4M env steps (episodes
pooled); then, for every other arm against MAPPO at the authors' settings (``mappo``), at
how many of that arm's evaluation points its greedy win rate is above, below or equal to
MAPPO's (MAPPO interpolated to the same env steps).

    python benchmarks/hard_authors_numbers.py [--root results/hard-authors]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def load(csv_path: Path):
    rows = list(csv.DictReader(open(csv_path)))
    steps = np.array([int(r["env_steps"]) for r in rows])
    wins = np.array([float(r["train_win_rate"]) * float(r["train_episodes"]) for r in rows])
    episodes = np.array([float(r["train_episodes"]) for r in rows])
    evals = np.array([(int(r["env_steps"]), float(r["eval_win_rate"])) for r in rows if r["eval_win_rate"]])
    return steps, wins, episodes, evals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results/hard-authors", help="the experiment folder")
    root = Path(ap.parse_args().root)
    arms = {p.name: load(p / "seed0.csv") for p in sorted(root.glob("*")) if (p / "seed0.csv").is_file()}
    if not arms:
        ap.error(f"--root {root}: no <arm>/seed0.csv below it; pass the experiment folder, "
                 "e.g. results/hard-authors")
    for name, (steps, wins, episodes, evals) in arms.items():
        last4m = steps > steps[-1] - 4_000_000
        print(f"{name}: {steps[-1]:,} env steps; greedy last {100 * evals[-1, 1]:.1f}%, "
              f"mean over {len(evals)} evals {100 * evals[:, 1].mean():.1f}%, "
              f"last ten {100 * evals[-10:, 1].mean():.1f}%; training win over the last 4M steps "
              f"{100 * wins[last4m].sum() / episodes[last4m].sum():.2f}%")
    if "mappo" in arms:
        mappo = arms["mappo"][3]
        for name, (_, _, _, evals) in arms.items():
            if name == "mappo":
                continue
            at = np.interp(evals[:, 0], mappo[:, 0], mappo[:, 1])
            above, below = int((evals[:, 1] > at + 1e-9).sum()), int((evals[:, 1] < at - 1e-9).sum())
            print(f"{name} vs mappo greedy at {name}'s {len(evals)} evaluation points: above {above}, "
                  f"below {below}, equal {len(evals) - above - below}")

if __name__ == "__main__":
    main()
