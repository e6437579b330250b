"""The authors' script, JaxMARL's MAPPO and this learner side by side: same settings, same seed, same SMAX.

Runs, from the user's own copy (none of their code is in this project), either

- the paper authors' ``baselines/MAPPO/gpae_rnn_smax.py`` (github.com/kim-seongmin/GPAE,
  ``--authors-repo PATH/TO/GPAE``) at their yaml (``config/rnn_smax.yaml``), in GPAE mode
  (dt correction, eta 1.02, K = 1 i.e. BUFFER_SIZE 1) or MAPPO mode (GAE with a state-value
  critic), beside ``python -m gpae_ref.train --settings authors``; or
- JaxMARL's ``baselines/MAPPO/mappo_rnn_smax.py`` (github.com/FLAIROx/JaxMARL,
  ``--jaxmarl-repo PATH/TO/JaxMARL``) at its ``config/mappo_homogenous_rnn_smax.yaml``
  (mode ``jaxmarl``: the JaxMARL MAPPO anchor), beside ``python -m gpae_ref.train --settings
  jaxmarl``;

on one SMAX map, and writes for each run

- ``<out>/<who>-<mode>-s<seed>.csv``: one row per update: update, env_steps,
  train_win_rate, train_return, train_episodes (blank for the authors' script, which logs
  only the means), wall_s (seconds since the run started, compilation included);
- ``<out>/<who>-<mode>-s<seed>.json``: the settings of both sides (and their differences),
  wall time, env-steps/s.

env-steps/s: ``steps_per_s`` excludes compilation: from the end of the first update (the
authors' script, whose whole run is one jitted scan, so the first update's callback comes
after the one compilation) or of the first chunk (this learner, whose first call of each
chunk length compiles) to the end of the run; ``steps_per_s_total`` is all env steps over
the whole wall time, compilation included. Both sides get the same XLA_FLAGS (the learner
CLI's CPU flags, unless ``--xla-defaults``).

The authors' script imports ``wandb`` and ``hydra`` at module level: both are replaced, in
``sys.modules``, by small in-memory modules (``wandb.log`` appends a CSV row; ``hydra.main``
leaves the function as it is), and the yaml is loaded with omegaconf (it needs distrax,
tensorflow-probability and omegaconf: ``make env-authors-script``, in ``.venv-authors``
with the authors' SMAX, pip jaxmarl 0.0.7).

    python benchmarks/authors_side_by_side.py --authors-repo PATH/TO/GPAE --who authors --mode gpae
    python benchmarks/authors_side_by_side.py --who ours --mode gpae
    python benchmarks/authors_side_by_side.py --jaxmarl-repo PATH/TO/JaxMARL --who jaxmarl
    python benchmarks/authors_side_by_side.py --who ours --mode jaxmarl
    python benchmarks/authors_side_by_side.py --plot
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path("baselines/MAPPO/gpae_rnn_smax.py")
YAML = Path("baselines/MAPPO/config/rnn_smax.yaml")
JAXMARL_SCRIPT = Path("baselines/MAPPO/mappo_rnn_smax.py")
JAXMARL_YAML = Path("baselines/MAPPO/config/mappo_homogenous_rnn_smax.yaml")
COLUMNS = ("update", "env_steps", "train_win_rate", "train_return", "train_episodes", "wall_s")
MODES = ("gpae", "mappo", "jaxmarl")
WHO = ("authors", "ours", "jaxmarl")

# The authors' yaml keys and the LearnerConfig field each one sets (the one vocabulary of --override).
AUTHORS_TO_OURS = {
    "MAP_NAME": "scenario", "SEED": "seed", "TOTAL_TIMESTEPS": "total_steps", "NUM_ENVS": "num_envs",
    "NUM_STEPS": "num_steps", "UPDATE_EPOCHS": "update_epochs", "NUM_MINIBATCHES": "num_minibatches",
    "LR": "lr", "ANNEAL_LR": "anneal_lr", "GAMMA": "gamma", "GAE_LAMBDA": "lam", "CLIP_EPS": "clip_eps",
    "ENT_COEF": "ent_coef", "VF_COEF": "vf_coef", "MAX_GRAD_NORM": "max_grad_norm",
    "HIDDEN_SIZE": "hidden_size", "NUM_LAYERS": "num_layers", "LAYER_NORM": "layer_norm",
    "NORM_INPUT": "norm_input", "REWARD_SCALE": "reward_scale", "BUFFER_SIZE": "reuse", "DT_ETA": "eta",
}
# Yaml keys with no LearnerConfig field, and the value this learner has built in (compared, not set).
BUILT_IN = {
    "ACTIVATION": "relu",
    "SCALE_CLIP_EPS": False,
    "OBS_WITH_AGENT_ID": False,
    "STATE_WITH_AGENT_ID": True,
    "ENV_NAME": "HeuristicEnemySMAX",
    "ENV_KWARGS": {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"},
}
# JaxMARL's MAPPO yaml keys and the LearnerConfig field each one sets (both widths are hidden_size).
JAXMARL_TO_OURS = {
    "MAP_NAME": "scenario", "SEED": "seed", "TOTAL_TIMESTEPS": "total_steps", "NUM_ENVS": "num_envs",
    "NUM_STEPS": "num_steps", "UPDATE_EPOCHS": "update_epochs", "NUM_MINIBATCHES": "num_minibatches",
    "LR": "lr", "ANNEAL_LR": "anneal_lr", "GAMMA": "gamma", "GAE_LAMBDA": "lam", "CLIP_EPS": "clip_eps",
    "ENT_COEF": "ent_coef", "VF_COEF": "vf_coef", "MAX_GRAD_NORM": "max_grad_norm",
    "FC_DIM_SIZE": "hidden_size", "GRU_HIDDEN_DIM": "hidden_size",
}
# Its OBS_WITH_AGENT_ID puts the agent id into the critic's world state, as this learner always does.
JAXMARL_BUILT_IN = {
    "ACTIVATION": "relu",
    "SCALE_CLIP_EPS": False,
    "OBS_WITH_AGENT_ID": True,
    "ENV_NAME": "HeuristicEnemySMAX",
    "ENV_KWARGS": {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"},
}
# Yaml keys that do not change training (logging, sweeps).
IGNORED = {"EXP_TAG", "WANDB_MODE", "ENTITY", "PROJECT", "HYP_TUNE"}
# --tiny: a smoke run (seconds of training after compilation), not a measurement.
TINY = {"NUM_ENVS": 8, "NUM_STEPS": 16, "HIDDEN_SIZE": 32, "UPDATE_EPOCHS": 2}
# JaxMARL's script builds its GRU carry at width 128 whatever the yaml says: --tiny keeps the width.
JAXMARL_TINY = {"NUM_ENVS": 8, "NUM_STEPS": 16, "UPDATE_EPOCHS": 2, "NUM_MINIBATCHES": 2}
TINY_STEPS = 8 * 16 * 4  # --tiny without --steps: 4 updates
FULL_STEPS = 3_000_000
SET_BY_FLAGS = ("MAP_NAME", "SEED", "TOTAL_TIMESTEPS", "BUFFER_SIZE")


@dataclasses.dataclass(frozen=True)
class Source:
    """A script run beside this learner: its place in its repository, its yaml's keys, and the
    named learner setting (``train --settings``) that holds what has no yaml key (the architecture)."""

    who: str
    url: str
    repo_flag: str
    script: Path
    yaml: Path
    to_ours: dict
    built_in: dict
    tiny: dict
    settings: str


AUTHORS = Source("authors", "github.com/kim-seongmin/GPAE", "--authors-repo", SCRIPT, YAML,
                 AUTHORS_TO_OURS, BUILT_IN, TINY, "authors")
JAXMARL = Source("jaxmarl", "github.com/FLAIROx/JaxMARL", "--jaxmarl-repo", JAXMARL_SCRIPT, JAXMARL_YAML,
                 JAXMARL_TO_OURS, JAXMARL_BUILT_IN, JAXMARL_TINY, "jaxmarl")
MODE_SOURCE = {"gpae": AUTHORS, "mappo": AUTHORS, "jaxmarl": JAXMARL}


def parse_steps(text: str) -> int:
    """``3e6`` -> 3000000 (argparse type; a positive whole number of env steps)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(x) or x < 1 or x != int(x):
        raise argparse.ArgumentTypeError(f"must be a positive whole number of env steps, got {text!r}")
    return int(x)


def parse_value(text: str):
    """An override's value: bool, int, float, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text


def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with KEY one of the authors' yaml keys (argparse type)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip().upper()
    known = {k for src in (AUTHORS, JAXMARL) for k in (*src.to_ours, *src.built_in)}
    if key not in known:
        raise argparse.ArgumentTypeError(f"unknown key {key!r}; known: {', '.join(sorted(known))}")
    if key in SET_BY_FLAGS:
        raise argparse.ArgumentTypeError(f"{key} is set by --map / --seed / --steps / --mode, not --override")
    return key, parse_value(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authors-repo", type=Path, help="the user's copy of github.com/kim-seongmin/GPAE "
                   "(needed for --who authors; outside this repository)")
    p.add_argument("--jaxmarl-repo", type=Path, help="the user's copy of github.com/FLAIROx/JaxMARL "
                   "(needed for --who jaxmarl; outside this repository)")
    p.add_argument("--who", choices=WHO, help="authors: their script; jaxmarl: JaxMARL's MAPPO script; "
                   "ours: python -m gpae_ref.train")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="gpae: GPAE, dt correction, eta 1.02, K = 1; mappo: GAE with a state-value critic "
                        "(both at the authors' yaml); jaxmarl: JaxMARL's MAPPO yaml (default: jaxmarl for "
                        "--who jaxmarl, else gpae)")
    p.add_argument("--map", default="3m", help="SMAX map (default 3m)")
    p.add_argument("--steps", type=parse_steps, default=None,
                   help=f"env steps (default 3e6; with --tiny {TINY_STEPS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/side-by-side"), help="output folder")
    p.add_argument("--override", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                   help="a key of the mode's yaml (e.g. NUM_ENVS=8), applied to both sides; repeatable")
    p.add_argument("--tiny", action="store_true",
                   help=f"smoke-test settings ({', '.join(f'{k}={v}' for k, v in TINY.items())}); "
                        "and --steps default 512: a smoke test, not a measurement")
    p.add_argument("--eval-every", type=int, default=0,
                   help="ours only: greedy evaluations every N updates (default 0: none; the authors' "
                        "script has none, and the comparison is of training win rate)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/side-by-side"),
                   help="ours only: parent of the learner's run folder (run.json, metrics.csv, states; git-ignored)")
    p.add_argument("--chunk", type=int, default=None,
                   help="ours only: updates per jitted call (train's --chunk; default train's 5)")
    p.add_argument("--xla-defaults", action="store_true",
                   help="run both sides with XLA's default flags instead of the learner CLI's CPU flags")
    p.add_argument("--plot", action="store_true", help="draw every CSV in --out on one figure and print a table")
    p.add_argument("--figure", type=Path, default=Path("docs/figures/side_by_side_3m.png"))
    return p


def source_repo(args: argparse.Namespace) -> Path | None:
    """The user's copy of the mode's source repository (``--authors-repo`` or ``--jaxmarl-repo``)."""
    return args.jaxmarl_repo if MODE_SOURCE[args.mode] is JAXMARL else args.authors_repo


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.steps is None:
        args.steps = TINY_STEPS if args.tiny else FULL_STEPS
    if args.plot:
        return
    if args.who is None:
        p.error("--who authors|jaxmarl|ours is required (or --plot)")
    if args.mode is None:
        args.mode = "jaxmarl" if args.who == "jaxmarl" else "gpae"
    src = MODE_SOURCE[args.mode]
    if args.who not in ("ours", src.who):
        p.error(f"--who {args.who} runs {'mode jaxmarl' if args.who == 'jaxmarl' else 'modes gpae and mappo'}, "
                f"not --mode {args.mode}")
    for key, _ in args.override:
        if key not in src.to_ours and key not in src.built_in:
            p.error(f"--override {key}: not a key of {src.yaml.name} (mode {args.mode}); "
                    f"known: {', '.join(sorted(k for k in src.to_ours if k not in SET_BY_FLAGS))}")
    widths = {v for k, v in args.override if k in ("FC_DIM_SIZE", "GRU_HIDDEN_DIM")}
    if src is JAXMARL and widths - {128}:
        p.error("--override FC_DIM_SIZE/GRU_HIDDEN_DIM: JaxMARL's script builds its GRU carry at width 128 "
                "whatever the yaml says; keep both at 128")
    repo = source_repo(args)
    if args.who == src.who and repo is None:
        p.error(f"--who {src.who} needs {src.repo_flag} PATH/TO/{src.url.rsplit('/', 1)[1]} "
                f"(a copy of {src.url})")
    if repo is not None:
        inside = ROOT.resolve() in [repo.resolve(), *repo.resolve().parents]
        if inside:
            p.error(f"{src.repo_flag} must be outside this repository (its code never enters the project)")
        for rel in (src.script, src.yaml):
            if not (repo / rel).is_file():
                p.error(f"{src.repo_flag}: {repo / rel} not found")


# ---------------------------------------------------------------------------- settings

def mode_overrides(mode: str) -> dict:
    """The authors' yaml keys a mode sets. MAPPO: any ADVANTAGE other than gpae/coma gives
    their state-value critic; CORRECTION none makes the trace c = 1 (plain GAE)."""
    if mode == "gpae":
        return {"ADVANTAGE": "gpae", "CORRECTION": "dt", "DT_ETA": 1.02, "BUFFER_SIZE": 1}
    if mode == "mappo":
        return {"ADVANTAGE": "gae", "CORRECTION": "none", "BUFFER_SIZE": 1}
    if mode == "jaxmarl":  # JaxMARL's script is MAPPO only: its yaml as it is
        return {}
    raise ValueError(f"mode: unknown {mode!r}")


def authors_config(yaml_config: dict, args: argparse.Namespace) -> dict:
    """The mode's yaml (the authors' or JaxMARL's) with this run's map, steps, seed, mode and overrides."""
    cfg = dict(yaml_config)
    cfg.update(mode_overrides(args.mode))
    cfg.update(MAP_NAME=args.map, SEED=args.seed, TOTAL_TIMESTEPS=args.steps)
    if args.tiny:
        cfg.update(MODE_SOURCE[args.mode].tiny)
    cfg.update(dict(args.override))
    cfg["WANDB_MODE"] = "disabled"
    return cfg


def ours_fields(acfg: dict, mode: str = "gpae") -> dict:
    """LearnerConfig fields for the mode's config ``acfg``: the named setting of the mode's source
    (what has no yaml key: JaxMARL's architecture), then the mapped keys, then the advantage."""
    from gpae_ref.learner.settings import settings_overrides

    src = MODE_SOURCE[mode]
    fields = settings_overrides(src.settings)
    fields.update({src.to_ours[k]: v for k, v in acfg.items() if k in src.to_ours})
    if acfg.get("ADVANTAGE", "gae") == "gpae":
        fields.update(advantage="gpae", correction=acfg["CORRECTION"])
    else:
        fields.update(advantage="gae")
        fields.pop("eta", None)
    fields["total_steps"] = int(fields["total_steps"])
    return fields


def ours_argv(fields: dict, mode: str = "gpae") -> list[str]:
    """``gpae_ref.train`` flags setting every field of ``fields`` (on top of the mode's --settings)."""
    argv = ["--settings", MODE_SOURCE[mode].settings]
    for name, value in fields.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def compare_settings(acfg: dict, ours: dict, mode: str = "gpae") -> dict:
    """Each key of the mode's yaml and this learner's value: {'same': [...], 'differ': {key: [theirs,
    ours]}, 'unmapped': [...]} (``ours``: the LearnerConfig as a dict)."""
    src = MODE_SOURCE[mode]
    same, differ, unmapped = [], {}, []
    for key, value in sorted(acfg.items()):
        if key in IGNORED or key in ("ADVANTAGE", "CORRECTION"):
            continue
        if key in src.to_ours:
            mine = ours.get(src.to_ours[key])
        elif key in src.built_in:
            mine = src.built_in[key]
        else:
            unmapped.append(key)
            continue
        if key == "DT_ETA" and acfg.get("ADVANTAGE") != "gpae":
            continue
        equal = (float(value) == float(mine)) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and isinstance(mine, (int, float)) and not isinstance(mine, bool) else value == mine
        (same.append(key) if equal else differ.__setitem__(key, [value, mine]))
    return {"same": same, "differ": differ, "unmapped": unmapped}


def steps_per_s(rows: list[dict], first_timed: int) -> float:
    """env steps/s from the end of row ``first_timed - 1`` (compilation done) to the last row."""
    if len(rows) <= first_timed:
        return float("nan")
    a, b = rows[first_timed - 1], rows[-1]
    dt = float(b["wall_s"]) - float(a["wall_s"])
    return (int(b["env_steps"]) - int(a["env_steps"])) / dt if dt > 0 else float("nan")


def chunk_timing(rows: list[dict]) -> tuple[int, float]:
    """(first chunk's updates, env steps/s) of this learner's rows: the rows of one chunk share its
    wall_s; timed from the end of the first chunk (compiled in it) to the end of the last chunk of
    the same length (a different length compiles again)."""
    groups: list[list[dict]] = []
    for r in rows:
        if groups and float(r["wall_s"]) == float(groups[-1][-1]["wall_s"]):
            groups[-1].append(r)
        else:
            groups.append([r])
    if not groups:
        return 1, float("nan")
    n = len(groups[0])
    same = [g for g in groups[1:] if len(g) == n]
    if not same:
        return n, float("nan")
    a, b = groups[0][-1], same[-1][-1]
    dt = float(b["wall_s"]) - float(a["wall_s"])
    return n, ((int(b["env_steps"]) - int(a["env_steps"])) / dt if dt > 0 else float("nan"))


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def finite(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return x


# ---------------------------------------------------------------------------- the authors' side

class MetricSink:
    """What the stub ``wandb.log`` writes to: one CSV row per logged dict, flushed at once."""

    def __init__(self, path: Path, steps_per_update: int):
        self.path, self.steps_per_update = Path(path), steps_per_update
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self._f = self.path.open("w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=COLUMNS)
        self._w.writeheader()
        self._f.flush()

    def log(self, data: dict, *_, **__) -> None:
        # Their env_step is update_steps * NUM_ENVS * NUM_STEPS with update_steps counted from 0,
        # i.e. the steps before this update's rollout: +1 update gives the steps trained on (ours).
        update = int(round(float(data["env_step"]) / self.steps_per_update)) + 1
        row = {"update": update, "env_steps": update * self.steps_per_update,
               "train_win_rate": finite(data.get("win_rate")), "train_return": finite(data.get("returns")),
               "train_episodes": "", "wall_s": round(time.perf_counter() - self.t0, 3)}
        self.rows.append(row)
        self._w.writerow(row)
        self._f.flush()
        if update == 1 or update % 10 == 0:
            print(f"update {update} env steps {row['env_steps']} | train win {row['train_win_rate']:.3f} | "
                  f"return {row['train_return']:.3f} | {row['wall_s']:.0f} s", flush=True)

    def close(self) -> None:
        self._f.close()


def stub_modules(sink: MetricSink) -> dict:
    """In-memory ``wandb`` and ``hydra`` for the authors' module (put into sys.modules)."""
    wandb = types.ModuleType("wandb")
    wandb.__doc__ = "side-by-side stub: log() appends a CSV row; the rest does nothing"
    wandb.config = {}
    wandb.log = sink.log
    wandb.init = lambda *a, **k: types.SimpleNamespace(config={}, log=sink.log, finish=lambda: None)
    wandb.finish = lambda *a, **k: None
    wandb.login = lambda *a, **k: True
    wandb.sweep = wandb.agent = lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("side-by-side stub: wandb sweeps are not supported"))
    hydra = types.ModuleType("hydra")
    hydra.__doc__ = "side-by-side stub: main() leaves the function as it is"
    hydra.main = lambda *a, **k: (lambda fn: fn)
    return {"wandb": wandb, "hydra": hydra}


def load_script_module(path: Path, stubs: dict):
    """Import a script (the authors' or JaxMARL's) from the user's copy, with ``stubs`` in sys.modules."""
    sys.modules.update(stubs)
    path = Path(path)
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"side_by_side_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_authors_module(repo: Path, stubs: dict):
    """Import the authors' script from the user's copy, with ``stubs`` in sys.modules."""
    return load_script_module(Path(repo) / SCRIPT, stubs)


def script_record(repo: Path, src: Source) -> dict:
    """Which script ran: its path in its repository, sha256, and the checkout's commit if it is a git one."""
    path = Path(repo) / src.script
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"repository": src.url, "path": str(src.script), "commit": commit,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def load_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def run_authors(args: argparse.Namespace, stem: Path) -> dict:
    """Run the mode's script (the authors' or JaxMARL's: both log wandb rows the same way)."""
    src, repo = MODE_SOURCE[args.mode], source_repo(args)
    acfg = authors_config(load_yaml(repo / src.yaml), args)
    spu = int(acfg["NUM_ENVS"] / acfg.get("BUFFER_SIZE", 1)) * int(acfg["NUM_STEPS"])
    sink = MetricSink(stem.with_suffix(".csv"), spu)
    mod = load_script_module(repo / src.script, stub_modules(sink))
    import jax
    import jax.experimental  # noqa: F401 - their callback uses jax.experimental.io_callback

    t0 = time.perf_counter()
    sink.t0 = t0
    train = jax.jit(mod.make_train(dict(acfg)))  # make_train writes derived keys into its dict
    out = train(jax.random.PRNGKey(acfg["SEED"]))
    jax.block_until_ready(out)
    wall = time.perf_counter() - t0
    sink.close()
    rows = sink.rows
    return {"config": acfg, "script": script_record(repo, src), "wall_s": wall, "updates": len(rows),
            "env_steps": rows[-1]["env_steps"] if rows else 0,
            "first_update_s": rows[0]["wall_s"] if rows else None,
            "steps_per_s": steps_per_s(rows, 1),
            "steps_per_s_note": "from the end of update 1 (compilation + first update) to the end",
            "steps_per_s_total": (rows[-1]["env_steps"] / wall) if rows else float("nan")}


# ---------------------------------------------------------------------------- this learner's side

def _portable(arg: str) -> str:
    """A path inside this repository as relative to its root: records carry no machine's paths."""
    try:
        return str(Path(arg).relative_to(ROOT.resolve())) if arg.startswith("/") else arg
    except ValueError:
        return arg


def run_ours(args: argparse.Namespace, stem: Path, acfg: dict) -> dict:
    fields = ours_fields(acfg, args.mode)
    runs = args.runs_dir.resolve()  # the subprocess runs in the repository root
    name = stem.name
    argv = ours_argv(fields, args.mode) + ["--runs-dir", str(runs), "--name", name, "--overwrite", "--no-progress",
                                "--eval-every", str(args.eval_every)]
    if args.xla_defaults:
        argv.append("--xla-defaults")
    if args.chunk is not None:
        argv += ["--chunk", str(args.chunk)]
    cmd = [sys.executable, "-m", "gpae_ref.train", *argv]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    loop_sps = None
    for line in proc.stdout:
        print(line, end="", flush=True)
        m = re.search(r"\(([\d,.]+) env steps/s after compilation\)", line)
        if m:
            loop_sps = float(m.group(1).replace(",", ""))
    rc = proc.wait()
    wall = time.perf_counter() - t0
    run_dir = runs / name
    src = read_csv(run_dir / "metrics.csv") if (run_dir / "metrics.csv").exists() else []
    rows = [{"update": int(r["update"]), "env_steps": int(r["env_steps"]),
             "train_win_rate": finite(r["train_win_rate"]), "train_return": finite(r["train_return"]),
             "train_episodes": int(float(r["train_episodes"])), "wall_s": float(r["wall_s"])} for r in src]
    write_csv(stem.with_suffix(".csv"), rows)
    config = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    chunk, timed = chunk_timing(rows)
    return {"returncode": rc, "command": [_portable(a) for a in cmd[2:]], "learner": config.get("config"), "smax": config.get("smax"),
            "wall_s": wall, "updates": len(rows), "env_steps": rows[-1]["env_steps"] if rows else 0,
            "first_chunk_updates": chunk, "first_chunk_s": rows[0]["wall_s"] if rows else None,
            "steps_per_s": timed,
            "steps_per_s_note": "wall clock from the end of the first chunk (its compilation) to the end of the "
                                "last chunk of the same length (a shorter last chunk compiles again), "
                                "checkpoint writes and curve plots included",
            "steps_per_s_loop": loop_sps,
            "steps_per_s_loop_note": "train's own figure: jitted calls only, each chunk length's first call left out",
            "steps_per_s_total": (rows[-1]["env_steps"] / wall) if rows else float("nan")}


# ---------------------------------------------------------------------------- plot / table

def smooth(y: list[float], w: int = 5) -> list[float]:
    out = []
    for i in range(len(y)):
        window = [v for v in y[max(0, i - w + 1): i + 1] if math.isfinite(v)]
        out.append(sum(window) / len(window) if window else float("nan"))
    return out


def collect(out: Path) -> dict:
    """{(who, mode, seed): rows} of every CSV in ``out`` named <who>-<mode>-s<seed>.csv."""
    found = {}
    for path in sorted(Path(out).glob("*-*-s*.csv")):
        m = re.fullmatch(rf"({'|'.join(WHO)})-({'|'.join(MODES)})-s(\d+)", path.stem)
        if m:
            found[(m.group(1), m.group(2), int(m.group(3)))] = read_csv(path)
    return found


def table(out: Path, found: dict) -> list[str]:
    lines = ["| who | mode | seed | updates | env steps | train win (last 10 updates) | return (last 10) | "
             "env-steps/s (after compile) | wall s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (who, mode, seed), rows in sorted(found.items()):
        meta_path = Path(out) / f"{who}-{mode}-s{seed}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        tail = rows[-10:]
        win = [finite(r["train_win_rate"]) for r in tail]
        ret = [finite(r["train_return"]) for r in tail]
        win = [v for v in win if math.isfinite(v)]
        ret = [v for v in ret if math.isfinite(v)]
        lines.append(f"| {who} | {mode} | {seed} | {len(rows)} | {rows[-1]['env_steps'] if rows else 0} | "
                     f"{sum(win) / len(win) if win else float('nan'):.3f} | "
                     f"{sum(ret) / len(ret) if ret else float('nan'):.3f} | "
                     f"{finite(meta.get('steps_per_s')):,.0f} | {finite(meta.get('wall_s')):,.0f} |")
    return lines


def plot(out: Path, figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = collect(out)
    if not found:
        print(f"no <who>-<mode>-s<seed>.csv in {out}")
        return
    modes = [m for m in MODES if any(k[1] == m for k in found)]
    fig, axes = plt.subplots(2, len(modes), figsize=(5.5 * len(modes), 7), sharex=True, squeeze=False)
    colors = {"authors": "tab:red", "jaxmarl": "tab:green", "ours": "tab:blue"}
    labels = {"authors": "authors' script", "jaxmarl": "JaxMARL's script", "ours": "this learner"}
    titles = {"gpae": "gpae (dt, eta 1.02, K=1; authors' yaml)", "mappo": "mappo (GAE, V critic; authors' yaml)",
              "jaxmarl": "jaxmarl (MAPPO at JaxMARL's yaml)"}
    styles = ["-", "--", ":", "-."]
    for (who, mode, seed), rows in sorted(found.items()):
        col = modes.index(mode)
        x = [int(r["env_steps"]) for r in rows]
        for row, key in enumerate(("train_win_rate", "train_return")):
            y = [finite(r[key]) for r in rows]
            ax = axes[row][col]
            ax.plot(x, y, color=colors[who], alpha=0.15, linewidth=0.8)
            ax.plot(x, smooth(y), color=colors[who], linestyle=styles[seed % len(styles)],
                    label=f"{labels[who]} seed {seed}")
    for col, mode in enumerate(modes):
        axes[0][col].set_title(titles[mode], fontsize=10)
        axes[0][col].set_ylabel("training win rate")
        axes[1][col].set_ylabel("training return")
        axes[1][col].set_xlabel("env steps")
        if axes[0][col].get_legend_handles_labels()[0]:
            axes[0][col].legend(fontsize=8)
    fig.suptitle("side by side: the source scripts (the authors' gpae_rnn_smax.py, JaxMARL's mappo_rnn_smax.py) "
                 "vs this learner at the same settings\nfaint: per update; solid/dashed: moving average of "
                 "5 updates", fontsize=10)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    print(f"figure: {figure}")
    print("\n".join(table(out, found)))


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    if args.plot:
        plot(args.out, args.figure)
        return 0
    from gpae_ref._xla_flags import xla_flags

    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), args.xla_defaults)  # before jax starts
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.who}-{args.mode}-s{args.seed}"
    from gpae_ref.learner.env import smax_version

    src, repo = MODE_SOURCE[args.mode], source_repo(args)
    if args.who != "ours":
        info = run_authors(args, stem)
        acfg = info["config"]
    else:
        if repo is not None:
            acfg = authors_config(load_yaml(repo / src.yaml), args)
        else:  # the yaml's values are those of the named setting (--settings authors|jaxmarl): rebuilt from it
            acfg = authors_config(default_authors_yaml(args.mode), args)
        info = run_ours(args, stem, acfg)
    from gpae_ref.learner.config import LearnerConfig

    # this learner's side: the config its run recorded (--who ours), else the one it would build
    ours = info.get("learner") or LearnerConfig(**ours_fields(acfg, args.mode)).to_dict()
    info.update(who=args.who, mode=args.mode, map=args.map, seed=args.seed, tiny=args.tiny,
                smax_jaxmarl=smax_version(), xla_flags=os.environ.get("XLA_FLAGS", ""),
                **{f"{src.who}_config": acfg}, settings=compare_settings(acfg, ours, args.mode))
    info.pop("config", None)
    stem.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    print(f"wrote {stem.with_suffix('.csv')} and .json: {info['updates']} updates, {info['env_steps']} env steps, "
          f"{info['wall_s']:.0f} s, {finite(info['steps_per_s']):,.0f} env-steps/s after compilation; "
          f"settings differing: {info['settings']['differ'] or 'none'}")
    return int(info.get("returncode", 0) or 0)


def default_authors_yaml(mode: str = "gpae") -> dict:
    """The mode's yaml keys that matter, from its named setting (``--settings authors``: LearnerConfig's
    defaults; ``--settings jaxmarl``) and the built-in values: used by ``--who ours`` when no copy of
    the source repository is given."""
    from gpae_ref.learner.config import LearnerConfig
    from gpae_ref.learner.settings import settings_overrides

    src = MODE_SOURCE[mode]
    base = LearnerConfig(**settings_overrides(src.settings))
    cfg = {k: getattr(base, f) for k, f in src.to_ours.items()}
    cfg.update(src.built_in)
    if src is AUTHORS:
        cfg.update(ADVANTAGE=base.advantage, CORRECTION=base.correction)
    return cfg


if __name__ == "__main__":
    sys.exit(main())
