"""Reports: curves, tables and figures of experiments from their per-seed CSVs (docs/results.md)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpae_ref.experiments.definitions import Experiment, Variant, exp_dirname, experiments, variant_config
from gpae_ref.experiments.runner import copied_from, seed_csv, train_commands

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
        if self.walls is None or len(self.walls) < 3:
            return None
        d_steps, d_wall = np.diff(self.steps)[1:], np.diff(self.walls)[1:]
        ok = d_wall > 0
        return float(np.median(self.win.shape[0] * d_steps[ok] / d_wall[ok])) if ok.any() else None


def load_curve(vdir: Path, seeds, num_updates: int) -> Curve | None:
    """Read the evaluation rows of every seed CSV; None if nothing is there yet."""
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


def _seed_count(n: int) -> str:
    return f"{n} seed{'s' * (n != 1)}"


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
            ax.plot(cur.steps, cur.win.mean(0), color=color, label=f"{v.name} ({_seed_count(cur.win.shape[0])})")
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


TRAIN_WINDOWS = 20  # rows of the training-win-rate table: the budget in twentieths (0.5M at 1e7 steps)


def _fmt_window_end(steps: float) -> str:
    return f"{steps / 1e6:.3g}M" if steps >= 1e6 else f"{steps / 1e3:.3g}k"


def train_curve_table(exp: Experiment, scale_name: str, root, windows: int = TRAIN_WINDOWS) -> str | None:
    """Markdown table of the training win rate per window of env steps, one column per variant (None if no rows).

    A window is ``total_steps / windows`` env steps, labelled by its end; an update's
    row belongs to the window its last env step falls in. The rate pools every seed:
    wins (``train_win_rate * train_episodes``) over episodes that ended in the window.
    Tens of thousands of episodes per window resolve rates far below the 1/``eval_envs``
    step of a greedy evaluation, where a hard map's curves live. A cell of a window
    an unfinished run is still in says how far the run got ("to 3.28M").
    """
    from gpae_ref.learner.logbook import read_rows

    width = exp.scale(scale_name).total_steps / windows
    cols, last = [], -1
    for v, cfg, _ in experiment_curves(exp, scale_name, root):
        vdir = Path(root) / exp_dirname(exp, scale_name) / v.name
        wins, episodes, unfinished, seeds = np.zeros(windows), np.zeros(windows), 0, 0
        for s in exp.scale(scale_name).seeds:
            rows = read_rows(seed_csv(vdir, s))
            seeds += bool(rows)
            for r in rows:
                k = min(int((int(r["env_steps"]) - 1) // width), windows - 1)
                wins[k] += float(r["train_win_rate"]) * float(r["train_episodes"])
                episodes[k] += float(r["train_episodes"])
                last = max(last, k)
            if rows and int(rows[-1]["update"]) < cfg.num_updates:
                unfinished = max(unfinished, int(rows[-1]["env_steps"]))
        if seeds:  # a variant not run yet gets no empty column (its table row says "not run")
            cols.append((f"{v.name} ({_seed_count(seeds)})", wins, episodes, unfinished))
    if last < 0:
        return None
    lines = ["| env steps (window end) | " + " | ".join(c[0] for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for k in range(last + 1):
        cells = []
        for _, wins, episodes, unfinished in cols:
            cell = f"{100 * wins[k] / episodes[k]:.2f}" if episodes[k] else ""
            if cell and k * width < unfinished < (k + 1) * width:
                cell += f" (to {_fmt_window_end(unfinished)})"
            cells.append(cell)
        lines.append(f"| {_fmt_window_end((k + 1) * width)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
                  f"{machine.get('device')}, jax {machine.get('jax')}, SMAX from pip jaxmarl "
                  f"{machine.get('jaxmarl')}.", ""]
    if has_fig:
        lines += [f"![{dname}]({os.path.relpath(png, doc_dir)})", ""]
    first = exp.variants[-1]
    cmd = train_commands(exp, scale_name, first)[str(scale.seeds[0])]
    lines += [f"One seed of one variant alone, with `train` (e.g. {first.name}, seed {scale.seeds[0]}; every "
              f"variant's and seed's command is in its run.json, `train_commands`): `{cmd}`.", ""]
    lines.append(experiment_table(exp, scale_name, root))
    curve = train_curve_table(exp, scale_name, root)
    if curve:
        lines += ["", f"Training win rate %, per {_fmt_window_end(scale.total_steps / TRAIN_WINDOWS)} "
                  "env steps (episodes that ended in the window, seeds pooled):", "", curve]
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
        if (names and exp.name not in names) or scale_name not in dict(exp.scales):
            continue  # e.g. scale `authors` is defined for `hard` only
        tag = exp_dirname(exp, scale_name)
        text = splice(text, tag, report_section(exp, scale_name, Path(root), figures, doc.parent))
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return doc
