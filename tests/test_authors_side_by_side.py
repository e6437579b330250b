"""benchmarks/authors_side_by_side.py without training: arguments, the settings mapping, the
wandb/hydra stubs and the CSV rows they write, the timing of each side, the table and plot.

No jaxmarl 0.0.7, no network, no copy of the authors' script: a fake module in tmp_path
stands in for it (it only imports wandb and hydra and logs like the authors' callback).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from gpae_ref.learner.config import LearnerConfig

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("authors_side_by_side", ROOT / "benchmarks/authors_side_by_side.py")
sbs = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sbs  # its dataclass looks its module up there
_spec.loader.exec_module(sbs)

FAKE_SCRIPT = '''
import wandb
import hydra

def make_train(config):
    def train(rng):
        for u in range(config["UPDATES"]):
            wandb.log({"returns": 0.5 + u, "win_rate": u / 10, "env_step": u * config["NUM_ENVS"] * config["NUM_STEPS"],
                       "actor_loss": 0.0})
        return {"runner_state": None}
    return train

@hydra.main(version_base=None, config_path="config", config_name="rnn_smax")
def main(config):
    return "main ran"
'''


def parse(*argv):
    p = sbs.build_parser()
    args = p.parse_args(list(argv))
    sbs.check_args(p, args)
    return args


def fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "GPAE"
    (repo / sbs.YAML).parent.mkdir(parents=True)
    (repo / sbs.SCRIPT).write_text(FAKE_SCRIPT)
    (repo / sbs.YAML).write_text("LR: 0.0005\n")
    return repo


def test_parse_steps_and_overrides():
    assert sbs.parse_steps("3e6") == 3_000_000 and sbs.parse_steps("512") == 512
    for bad in ("0", "-5", "1.5", "inf", "nan", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            sbs.parse_steps(bad)
    assert sbs.parse_override("num_envs=8") == ("NUM_ENVS", 8)
    assert sbs.parse_override("LR=1e-4") == ("LR", 1e-4)
    assert sbs.parse_override("ANNEAL_LR=false") == ("ANNEAL_LR", False)
    for bad in ("NUM_ENVS", "NOPE=1", "SEED=3", "TOTAL_TIMESTEPS=5", "BUFFER_SIZE=2", "MAP_NAME=3m"):
        with pytest.raises(argparse.ArgumentTypeError):
            sbs.parse_override(bad)


def test_defaults_and_tiny():
    args = parse("--who", "ours")
    assert (args.mode, args.map, args.steps, args.seed, args.eval_every) == ("gpae", "3m", 3_000_000, 0, 0)
    assert args.out == Path("results/side-by-side")
    assert parse("--who", "ours", "--tiny").steps == sbs.TINY_STEPS
    assert parse("--who", "ours", "--tiny", "--steps", "2048").steps == 2048


def test_check_args_refuses(tmp_path, capsys):
    for argv in ((), ("--who", "authors"), ("--who", "authors", "--authors-repo", str(tmp_path)),
                 ("--who", "authors", "--authors-repo", str(ROOT))):
        with pytest.raises(SystemExit):
            parse(*argv)
    assert "outside this repository" in capsys.readouterr().err
    repo = fake_repo(tmp_path)
    assert parse("--who", "authors", "--authors-repo", str(repo)).authors_repo == repo
    assert parse("--plot").plot


def test_modes_map_onto_the_learner():
    base = sbs.default_authors_yaml()
    g = sbs.authors_config(base, parse("--who", "ours", "--mode", "gpae", "--seed", "3"))
    assert (g["ADVANTAGE"], g["CORRECTION"], g["DT_ETA"], g["BUFFER_SIZE"]) == ("gpae", "dt", 1.02, 1)
    assert (g["SEED"], g["MAP_NAME"], g["TOTAL_TIMESTEPS"], g["WANDB_MODE"]) == (3, "3m", 3_000_000, "disabled")
    f = sbs.ours_fields(g)
    assert (f["advantage"], f["correction"], f["eta"], f["reuse"], f["seed"], f["total_steps"]) == \
        ("gpae", "dt", 1.02, 1, 3, 3_000_000)
    m = sbs.ours_fields(sbs.authors_config(base, parse("--who", "ours", "--mode", "mappo")))
    assert m["advantage"] == "gae" and "correction" not in m and "eta" not in m and m["reuse"] == 1


def test_ours_argv_rebuilds_the_same_config():
    """The flags the harness gives ``gpae_ref.train`` parse back to the mapped LearnerConfig."""
    from gpae_ref.learner.settings import config_fields
    from gpae_ref.train import build_parser

    acfg = sbs.authors_config(sbs.default_authors_yaml(),
                              parse("--who", "ours", "--tiny", "--override", "LR=0.001", "--override",
                                    "ANNEAL_LR=false"))
    fields = sbs.ours_fields(acfg)
    args = build_parser().parse_args(sbs.ours_argv(fields))
    cfg = LearnerConfig(**config_fields(args, args.settings))
    assert cfg == LearnerConfig(**fields)
    assert (cfg.num_envs, cfg.num_steps, cfg.hidden_size, cfg.lr, cfg.anneal_lr) == (8, 16, 32, 0.001, False)


def test_authors_yaml_defaults_equal_the_learner_defaults():
    """--settings authors is LearnerConfig's defaults: every mapped key agrees, nothing unmapped."""
    acfg = sbs.authors_config(sbs.default_authors_yaml(), parse("--who", "ours"))
    cmp = sbs.compare_settings(acfg, LearnerConfig(**sbs.ours_fields(acfg)).to_dict())
    assert cmp["differ"] == {} and cmp["unmapped"] == []
    assert {"NUM_ENVS", "NUM_STEPS", "UPDATE_EPOCHS", "NUM_MINIBATCHES", "LR", "ANNEAL_LR", "GAMMA",
            "GAE_LAMBDA", "CLIP_EPS", "ENT_COEF", "HIDDEN_SIZE", "NUM_LAYERS", "DT_ETA"} <= set(cmp["same"])


def test_compare_settings_reports_differences():
    acfg = sbs.authors_config(sbs.default_authors_yaml(), parse("--who", "ours"))
    acfg.update(ACTIVATION="tanh", NEW_KEY=1, EXP_TAG="x")
    ours = dataclasses.replace(LearnerConfig(**sbs.ours_fields(acfg)), num_envs=64).to_dict()
    cmp = sbs.compare_settings(acfg, ours)
    assert cmp["differ"] == {"ACTIVATION": ["tanh", "relu"], "NUM_ENVS": [128, 64]}
    assert cmp["unmapped"] == ["NEW_KEY"]


def test_stubs_turn_wandb_log_into_csv_rows(tmp_path, monkeypatch):
    for name in ("wandb", "hydra"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    repo = fake_repo(tmp_path)
    sink = sbs.MetricSink(tmp_path / "authors-gpae-s0.csv", steps_per_update=4 * 2)
    mod = sbs.load_authors_module(repo, sbs.stub_modules(sink))
    assert mod.main({}) == "main ran"  # hydra.main left the function as it was
    mod.make_train({"UPDATES": 3, "NUM_ENVS": 4, "NUM_STEPS": 2})(None)
    sink.close()
    rows = sbs.read_csv(tmp_path / "authors-gpae-s0.csv")
    assert [r["update"] for r in rows] == ["1", "2", "3"]
    assert [r["env_steps"] for r in rows] == ["8", "16", "24"]  # their 0-based env_step + one update
    assert [float(r["train_win_rate"]) for r in rows] == [0.0, 0.1, 0.2]
    assert [float(r["train_return"]) for r in rows] == [0.5, 1.5, 2.5]
    assert list(rows[0]) == list(sbs.COLUMNS) and rows[0]["train_episodes"] == ""
    with pytest.raises(RuntimeError):
        sys.modules["wandb"].sweep({})


def test_timing_leaves_compilation_out():
    rows = [{"env_steps": 10 * (i + 1), "wall_s": w} for i, w in enumerate([30.0, 31.0, 33.0])]
    assert sbs.steps_per_s(rows, 1) == pytest.approx(20 / 3)
    assert math.isnan(sbs.steps_per_s(rows[:1], 1))
    # this learner: chunks of 2 share a wall_s; the last, shorter chunk compiles again and is left out
    ours = [{"env_steps": 10 * (i + 1), "wall_s": w} for i, w in enumerate([20, 20, 22, 22, 24, 24, 40])]
    assert sbs.chunk_timing(ours) == (2, pytest.approx(40 / 4))
    assert sbs.chunk_timing(ours[:2])[0] == 2 and math.isnan(sbs.chunk_timing(ours[:2])[1])


def test_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"update": u, "env_steps": 8 * u, "train_win_rate": u / 10, "train_return": 1.0,
             "train_episodes": "", "wall_s": float(u)} for u in range(1, 6)]
    for who in ("authors", "ours"):
        sbs.write_csv(tmp_path / f"{who}-gpae-s0.csv", rows)
    for who in ("jaxmarl", "ours"):
        sbs.write_csv(tmp_path / f"{who}-jaxmarl-s0.csv", rows)
    (tmp_path / "authors-gpae-s0.json").write_text(json.dumps({"steps_per_s": 1234.0, "wall_s": 5.0}))
    (tmp_path / "not-a-run.csv").write_text("x\n")
    found = sbs.collect(tmp_path)
    assert set(found) == {("authors", "gpae", 0), ("ours", "gpae", 0), ("jaxmarl", "jaxmarl", 0),
                          ("ours", "jaxmarl", 0)}
    lines = sbs.table(tmp_path, found)
    assert "| authors | gpae | 0 | 5 | 40 | 0.300 | 1.000 | 1,234 | 5 |" in lines
    fig = tmp_path / "fig.png"
    assert sbs.main(["--plot", "--out", str(tmp_path), "--figure", str(fig)]) == 0
    assert fig.stat().st_size > 0


def test_recorded_commands_carry_no_machine_paths():
    inside = str(sbs.ROOT.resolve() / "runs" / "side-by-side")
    assert sbs._portable(inside) == str(Path("runs") / "side-by-side")
    assert sbs._portable("--seed") == "--seed"
    assert sbs._portable("/not/in/the/repo") == "/not/in/the/repo"


# JaxMARL's baselines/MAPPO/config/mappo_homogenous_rnn_smax.yaml (FLAIROx/JaxMARL, tags v0.0.7 to
# the 2.0 merge: unchanged), the keys that set training.
JAXMARL_YAML_VALUES = {
    "LR": 0.002, "NUM_ENVS": 128, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 1e7, "FC_DIM_SIZE": 128,
    "GRU_HIDDEN_DIM": 128, "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2, "SCALE_CLIP_EPS": False, "ENT_COEF": 0.0, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.25,
    "ACTIVATION": "relu", "OBS_WITH_AGENT_ID": True, "ENV_NAME": "HeuristicEnemySMAX", "MAP_NAME": "2s3z",
    "SEED": 0, "ENV_KWARGS": {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"},
    "ANNEAL_LR": True, "WANDB_MODE": "disabled", "ENTITY": "", "PROJECT": "",
}


def fake_jaxmarl_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "JaxMARL"
    (repo / sbs.JAXMARL_YAML).parent.mkdir(parents=True)
    (repo / sbs.JAXMARL_SCRIPT).write_text(FAKE_SCRIPT)
    (repo / sbs.JAXMARL_YAML).write_text("".join(f'"{k}": {json.dumps(v)}\n' for k, v in JAXMARL_YAML_VALUES.items()))
    return repo


def test_jaxmarl_mode_arguments(tmp_path, capsys):
    repo = fake_jaxmarl_repo(tmp_path)
    args = parse("--who", "jaxmarl", "--jaxmarl-repo", str(repo))
    assert args.mode == "jaxmarl" and sbs.source_repo(args) == repo
    assert parse("--who", "ours", "--mode", "jaxmarl").mode == "jaxmarl"
    refused = [("--who", "jaxmarl"),  # no copy of JaxMARL
               ("--who", "jaxmarl", "--jaxmarl-repo", str(repo), "--mode", "gpae"),
               ("--who", "authors", "--authors-repo", str(fake_repo(tmp_path)), "--mode", "jaxmarl"),
               ("--who", "ours", "--mode", "jaxmarl", "--override", "HIDDEN_SIZE=64"),  # the authors' key
               ("--who", "ours", "--mode", "gpae", "--override", "FC_DIM_SIZE=128"),  # JaxMARL's key
               ("--who", "ours", "--mode", "jaxmarl", "--override", "GRU_HIDDEN_DIM=64"),  # carry is 128
               ("--who", "jaxmarl", "--jaxmarl-repo", str(ROOT))]
    for argv in refused:
        with pytest.raises(SystemExit):
            parse(*argv)
    err = capsys.readouterr().err
    for text in ("--jaxmarl-repo PATH/TO/JaxMARL", "not --mode gpae", "not a key of mappo_homogenous_rnn_smax.yaml",
                 "width 128", "outside this repository"):
        assert text in err, text


def test_jaxmarl_yaml_is_the_jaxmarl_setting(tmp_path):
    """JaxMARL's yaml maps onto ``--settings jaxmarl`` with nothing differing and nothing unmapped, and the
    flags the harness gives ``train`` rebuild that config."""
    from gpae_ref.learner.settings import config_fields
    from gpae_ref.train import build_parser

    repo = fake_jaxmarl_repo(tmp_path)
    args = parse("--who", "ours", "--mode", "jaxmarl", "--jaxmarl-repo", str(repo))
    jcfg = sbs.authors_config(dict(JAXMARL_YAML_VALUES), args)  # the yaml as omegaconf loads it
    assert (jcfg["MAP_NAME"], jcfg["TOTAL_TIMESTEPS"], jcfg["LR"]) == ("3m", 3_000_000, 0.002)
    fields = sbs.ours_fields(jcfg, "jaxmarl")
    cfg = LearnerConfig(**fields)
    cmp = sbs.compare_settings(jcfg, cfg.to_dict(), "jaxmarl")
    assert cmp["differ"] == {} and cmp["unmapped"] == []
    assert (cfg.advantage, cfg.head_layers, cfg.num_layers, cfg.layer_norm, cfg.norm_input, cfg.reuse) == \
        ("gae", 1, 1, False, False, 1)
    targs = build_parser().parse_args(sbs.ours_argv(fields, "jaxmarl"))
    assert targs.settings == "jaxmarl" and LearnerConfig(**config_fields(targs, targs.settings)) == cfg
    # without a copy of JaxMARL, --who ours rebuilds the same yaml values from --settings jaxmarl
    no_repo = sbs.authors_config(sbs.default_authors_yaml("jaxmarl"), parse("--who", "ours", "--mode", "jaxmarl"))
    assert sbs.ours_fields(no_repo, "jaxmarl") == fields
    tiny = sbs.authors_config(sbs.default_authors_yaml("jaxmarl"),
                              parse("--who", "ours", "--mode", "jaxmarl", "--tiny"))
    assert (tiny["NUM_ENVS"], tiny["FC_DIM_SIZE"], tiny["GRU_HIDDEN_DIM"]) == (8, 128, 128)


def test_jaxmarl_script_runs_through_the_same_stubs(tmp_path, monkeypatch):
    for name in ("wandb", "hydra"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    repo = fake_jaxmarl_repo(tmp_path)
    sink = sbs.MetricSink(tmp_path / "jaxmarl-jaxmarl-s0.csv", steps_per_update=4 * 2)
    mod = sbs.load_script_module(repo / sbs.JAXMARL_SCRIPT, sbs.stub_modules(sink))
    mod.make_train({"UPDATES": 2, "NUM_ENVS": 4, "NUM_STEPS": 2})(None)
    sink.close()
    assert [r["env_steps"] for r in sbs.read_csv(tmp_path / "jaxmarl-jaxmarl-s0.csv")] == ["8", "16"]
    record = sbs.script_record(repo, sbs.JAXMARL)
    assert record["path"] == str(sbs.JAXMARL_SCRIPT) and record["commit"] is None  # not a git checkout
    assert record["sha256"] == hashlib.sha256(FAKE_SCRIPT.encode()).hexdigest()
    assert record["repository"] == "github.com/FLAIROx/JaxMARL"
