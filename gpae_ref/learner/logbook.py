"""metrics.csv (one row per update) and curve.png (win rate vs env steps)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from gpae_ref.learner.types import EvalMetrics, UpdateMetrics

EVAL_COLUMNS = ("eval_win_rate", "eval_return", "eval_episodes")
COLUMNS = UpdateMetrics._fields + ("wall_s",) + EVAL_COLUMNS


def metric_rows(metrics: UpdateMetrics, wall_s: float, evaluation: EvalMetrics | None) -> list[dict]:
    """Rows of a chunk's stacked metrics; the evaluation (if any) goes on the chunk's last row."""
    host = {k: np.asarray(v) for k, v in metrics._asdict().items()}
    n = len(host["update"])
    rows = []
    for i in range(n):
        row = {k: (int(v[i]) if k in ("update", "env_steps") else float(v[i])) for k, v in host.items()}
        row["wall_s"] = round(wall_s, 3)
        row.update({c: "" for c in EVAL_COLUMNS})
        rows.append(row)
    if evaluation is not None:
        rows[-1].update(eval_win_rate=float(evaluation.win_rate), eval_return=float(evaluation.episode_return),
                        eval_episodes=int(evaluation.episodes))
    return rows


def append_rows(path, rows: list[dict]) -> None:
    path = Path(path)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerows(rows)


def read_rows(path) -> list[dict]:
    """The complete rows of a metrics CSV.

    A kill during a write can leave a partial last line (e.g. ``3``, or a row cut
    inside its last number): the writer ends every row with a line break, so a last
    line without one is dropped, and so is any row with missing fields.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return [r for r in reader if None not in r and all(v is not None for v in r.values())]


def plot_curve(csv_path, png_path, title: str = "") -> None:
    """Training win rate (per update, and a moving average) and greedy evaluation win rate vs env steps."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    rows = read_rows(csv_path)
    if not rows:
        return
    steps = np.array([float(r["env_steps"]) for r in rows])
    win = np.array([float(r["train_win_rate"]) for r in rows])
    ev = [(float(r["env_steps"]), float(r["eval_win_rate"])) for r in rows if r["eval_win_rate"] not in ("", None)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = ~np.isnan(win)
    ax.plot(steps[ok], win[ok], lw=0.6, alpha=0.35, color="C0")
    w = max(1, min(20, int(ok.sum()) // 10))
    if ok.sum() >= w:
        smooth = np.convolve(win[ok], np.ones(w) / w, mode="valid")
        ax.plot(steps[ok][w - 1:], smooth, color="C0", label=f"training (moving avg {w})")
    if ev:
        x, y = zip(*ev)
        ax.plot(x, y, "o-", color="C3", ms=3, label="greedy evaluation")
    ax.set_xlabel("env steps")
    ax.set_ylabel("win rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def finite(x) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x))))
