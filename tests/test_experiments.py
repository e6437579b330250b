"""The experiment runner: per-seed CSVs, skip when done, resume without lost or duplicated rows.

One tiny experiment (3m, 2 seeds vmapped, 4 updates of 32 env steps) is
compiled once per session; every later run reuses the compiled functions
through the runner's ``cache`` so the whole file stays well under a minute.
"""

from __future__ import annotations

import csv
import dataclasses

import pytest

pytest.importorskip("jaxmarl")

from gpae_ref import _xla_flags as xla  # noqa: E402
from gpae_ref import experiments as ex  # noqa: E402
from gpae_ref.experiments import runner  # noqa: E402
from gpae_ref.learner.runfolder import read_json  # noqa: E402

pytestmark = pytest.mark.smax

TINY_EXP = ex.Experiment(
    name="unit", version=1, question="runner test",
    base=(("scenario", "3m"),),
    variants=(ex.Variant("gpae", (("advantage", "gpae"),)),),
    scales=(("tiny", ex.TINY),),
)
VARIANT = TINY_EXP.variants[0]
SEEDS = ex.TINY.seeds


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _numbers(rows, drop=("wall_s",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


@pytest.fixture(scope="module")
def cache():
    return {}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache):
    """An uninterrupted run -> (root, outcome)."""
    root = tmp_path_factory.mktemp("full")
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, root, cache=cache, log=lambda m: None)
    return root, out


def test_writes_one_csv_per_seed(full_run):
    root, out = full_run
    cfg = ex.variant_config(TINY_EXP, "tiny", VARIANT)
    assert out.status == "finished" and out.updates == cfg.num_updates == 4
    vdir = root / "unit-tiny" / "gpae"
    for s in SEEDS:
        rows = _rows(vdir / f"seed{s}.csv")
        assert [int(r["update"]) for r in rows] == list(range(1, cfg.num_updates + 1))
        evals = [r for r in rows if r["eval_win_rate"] != ""]
        assert [int(r["update"]) for r in evals] == [2, 4]  # evals = 2 -> every 2 updates
        assert all(0.0 <= float(r["eval_win_rate"]) <= 1.0 for r in evals)
    # Seeds are different programs' randomness, not copies.
    a, b = (_rows(vdir / f"seed{s}.csv") for s in SEEDS)
    assert [r["actor_loss"] for r in a] != [r["actor_loss"] for r in b]
    assert (vdir / "ckpt" / "state.safetensors").exists()
    assert (vdir / "run.json").exists()


def test_rerun_of_finished_work_trains_nothing(full_run, monkeypatch):
    root, _ = full_run
    vdir = root / "unit-tiny" / "gpae"
    before = {s: (vdir / f"seed{s}.csv").read_text() for s in SEEDS}

    def boom(*a, **k):
        raise AssertionError("make_train called for a finished run")

    monkeypatch.setattr("gpae_ref.learner.core.make_train", boom)
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, root, cache={}, log=lambda m: None)
    assert out.status == "done"
    assert {s: (vdir / f"seed{s}.csv").read_text() for s in SEEDS} == before


def test_interrupted_run_resumes_without_duplicate_or_missing_rows(full_run, tmp_path, cache):
    root_full, _ = full_run
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, max_chunks=1, cache=cache, log=lambda m: None)
    assert out.status == "stopped" and out.updates == 2
    vdir = tmp_path / "unit-tiny" / "gpae"
    # A crash after writing rows but before the next checkpoint leaves rows past it: they must go.
    for s in SEEDS:
        rows = _rows(vdir / f"seed{s}.csv")
        with open(vdir / f"seed{s}.csv", "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writerow({**rows[-1], "update": "3"})
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, cache=cache, log=lambda m: None)
    assert out.status == "finished" and out.updates == 4
    for s in SEEDS:
        resumed = _rows(vdir / f"seed{s}.csv")
        full = _rows(root_full / "unit-tiny" / "gpae" / f"seed{s}.csv")
        assert [int(r["update"]) for r in resumed] == [1, 2, 3, 4]
        # Same compiled program, exact checkpoint round trip: the numbers are the uninterrupted run's.
        assert _numbers(resumed) == _numbers(full)


def test_a_fresh_clone_resumes_from_the_compact_state(full_run, tmp_path, cache):
    """A fresh clone of a partial run has its CSV rows and compact state but not its (git-ignored)
    full checkpoint: it resumes from the compact state, rows equal the uninterrupted run's."""
    root_full, _ = full_run
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, max_chunks=1, cache=cache, log=lambda m: None)
    assert out.status == "stopped" and out.updates == 2
    vdir = tmp_path / "unit-tiny" / "gpae"
    assert (vdir / "resume.safetensors.xz").exists() and (vdir / "ckpt" / ".gitignore").exists()
    (vdir / "ckpt" / "state.safetensors").unlink()
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, cache=cache, log=lambda m: None)
    assert out.status == "finished" and out.updates == 4
    for s in SEEDS:
        assert _numbers(_rows(vdir / f"seed{s}.csv")) == _numbers(_rows(root_full / "unit-tiny" / "gpae" / f"seed{s}.csv"))
    resumes = read_json(vdir / "run.json")["resumes"]
    assert [(r["update"], r["kind"]) for r in resumes] == [(2, "compact")]


def test_rows_without_any_saved_state_are_kept_unless_restart(full_run, tmp_path, cache):
    """Rows whose states are both gone (neither the checkpoint nor the compact state): refuse to
    wipe them silently; --restart trains from update 0 and replaces them."""
    root_full, _ = full_run
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, max_chunks=1, cache=cache, log=lambda m: None)
    assert out.status == "stopped" and out.updates == 2
    vdir = tmp_path / "unit-tiny" / "gpae"
    for state in [*(vdir / "ckpt").glob("*.safetensors"), *vdir.glob("resume*.xz")]:
        state.unlink()
    before = {p.name: p.read_bytes() for p in vdir.glob("*.csv")} | {"run.json": (vdir / "run.json").read_bytes()}
    with pytest.raises(ValueError, match=r"2 of 4 updates are recorded.*no saved state.*--restart"):
        ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, cache=cache, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in vdir.glob("*.csv")} | {"run.json": (vdir / "run.json").read_bytes()} == before
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, cache=cache, restart=True, log=lambda m: None)
    assert out.status == "finished" and out.updates == 4
    for s in SEEDS:
        assert _numbers(_rows(vdir / f"seed{s}.csv")) == _numbers(_rows(root_full / "unit-tiny" / "gpae" / f"seed{s}.csv"))


def test_cli_has_a_restart_flag():
    from gpae_ref.experiments.cli import build_parser

    assert build_parser().parse_args(["main", "--restart"]).restart
    assert not build_parser().parse_args(["main"]).restart


def test_same_config_in_another_experiment_copies_the_finished_run(full_run, tmp_path, monkeypatch):
    root, _ = full_run
    twin_exp = dataclasses.replace(TINY_EXP, name="unit2", variants=(ex.Variant("dt", (("advantage", "gpae"),
                                                                                     ("correction", "dt"))),))
    other = ex.Variant("gae", (("advantage", "gae"),))

    def boom(*a, **k):
        raise AssertionError("make_train called although a twin had finished")

    monkeypatch.setattr("gpae_ref.learner.core.make_train", boom)
    out = ex.run_variant(twin_exp, "tiny", twin_exp.variants[0], root, cache={}, log=lambda m: None)
    assert out.status == "copied" and out.updates == out.num_updates
    src, dst = root / "unit-tiny" / "gpae", root / "unit2-tiny" / "dt"
    for s in SEEDS:
        assert (dst / f"seed{s}.csv").read_text() == (src / f"seed{s}.csv").read_text()
    assert ex.copied_from(dst) == "unit-tiny/gpae" and ex.copied_from(src) is None
    assert ex.run_variant(twin_exp, "tiny", twin_exp.variants[0], root, log=lambda m: None).status == "done"
    # A different learner config, or an unfinished twin, is not a twin.
    cfg = ex.variant_config(TINY_EXP, "tiny", other)
    record = runner._run_record(TINY_EXP, "tiny", other, cfg, SEEDS)
    evals = ex.eval_updates(cfg.num_updates, ex.eval_every(cfg, ex.TINY))
    assert ex.find_twin(root, tmp_path / "x", record, evals) is None
    cfg = ex.variant_config(TINY_EXP, "tiny", VARIANT)
    record = runner._run_record(TINY_EXP, "tiny", VARIANT, cfg, SEEDS)
    assert ex.find_twin(root, tmp_path / "x", record, [2, 4]) == src
    assert ex.find_twin(root, tmp_path / "x", record, [2, 4, 6]) is None


def test_changed_definition_is_refused(full_run):
    root, _ = full_run
    changed = dataclasses.replace(TINY_EXP, version=2)
    with pytest.raises(ValueError, match="experiment"):
        ex.run_variant(changed, "tiny", VARIANT, root, log=lambda m: None)


def test_unknown_names_raise_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="^experiment"):
        ex.get_experiment("nope")
    with pytest.raises(ValueError, match="^scale"):
        ex.get_experiment("main").scale("huge")
    with pytest.raises(ValueError, match="^scale"):
        ex.run_experiment("main", "huge")
    with pytest.raises(ValueError, match="^variants"):
        ex.select_variants(ex.get_experiment("main"), "mappo,nope")


def test_definitions_build_valid_configs_at_every_scale():
    for exp in ex.experiments().values():
        assert len(exp.variants) >= 2
        for sname, scale in exp.scales:
            for v in exp.variants:
                cfg = ex.variant_config(exp, sname, v)  # LearnerConfig validates itself
                assert cfg.total_steps == scale.total_steps
        paper = exp.scale("paper")
        assert paper.total_steps == 10_000_000 and len(paper.seeds) == 5
        if exp.name != "hard":
            assert len(exp.scale("local").seeds) >= 3


def test_documented_shared_runs_have_equal_configs():
    # docs/results.md says these variants are one run shown twice; the runner copies only exact twins.
    def cfg(exp, variant):
        e = ex.get_experiment(exp)
        (v,) = [v for v in e.variants if v.name == variant]
        return ex.variant_config(e, "local", v), e.scale("local").seeds

    shared = [(("ablation", "dt"), ("main", "gpae-K2")), (("eta", "eta1.02"), ("main", "gpae-K2")),
              (("reuse", "gpae-K2"), ("main", "gpae-K2")), (("reuse", "gae-K1"), ("main", "mappo")),
              (("reuse", "gpae-K1"), ("main", "gpae-K1")), (("ablation4", "dt"), ("reuse", "gpae-K4"))]
    for a, b in shared:
        assert cfg(*a) == cfg(*b), (a, b)
    assert cfg("reuse4", "gpae-K4")[0] == cfg("reuse", "gpae-K4")[0]  # same config, other seeds
    assert cfg("reuse4", "gpae-K4")[1] != cfg("reuse", "gpae-K4")[1]
    assert cfg("reuse4", "gpae-K4-none")[0] == cfg("ablation4", "none")[0]


def test_report_writes_tables_and_figure(full_run, tmp_path):
    root, _ = full_run
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nhand-written prose stays\n")
    section = ex.report_section(TINY_EXP, "tiny", root, tmp_path / "fig", tmp_path)
    text = ex.splice(doc.read_text(), "unit-tiny", section)
    text = ex.splice(text, "unit-tiny", section)  # idempotent: replaces its own block
    assert text.count("BEGIN generated:unit-tiny") == 1
    assert "hand-written prose stays" in text
    assert "| gpae | 3m | 1 |" in text
    assert (tmp_path / "fig" / "unit-tiny.png").exists()


def test_trace_table_summarises_the_correction_of_reused_gpae_runs(full_run, tmp_path):
    root, _ = full_run
    assert ex.trace_table(TINY_EXP, "tiny", root) is None  # K=1: every trace is 1, nothing to show
    from gpae_ref.learner.logbook import COLUMNS

    reused = dataclasses.replace(TINY_EXP, name="k2", variants=(ex.Variant("dt", (("reuse", 2),)),))
    vdir = tmp_path / "k2-tiny" / "dt"
    vdir.mkdir(parents=True)
    for s, (c, share) in zip(SEEDS, [(0.9, 0.5), (0.7, 0.3)]):
        with open(vdir / f"seed{s}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, restval="0")
            w.writeheader()
            w.writerow({"update": 1, "trace_mean": c, "trace_truncated": share,
                        "own_ratio_max": 1.5, "others_ratio_max": 2.0})
    table = ex.trace_table(reused, "tiny", tmp_path)
    assert "| dt | dt | 1.02 | 0.800 | 0.400 | 1.50 | 2.00 |" in table


def test_time_limit_stops_the_experiment_at_a_chunk_boundary_and_the_same_command_resumes(tmp_path, cache,
                                                                                            monkeypatch, capsys):
    import os
    import time

    from gpae_ref.learner.runloop import StopFlag

    two = dataclasses.replace(TINY_EXP, variants=(VARIANT, ex.Variant("second", (("advantage", "gae"),))))
    monkeypatch.setattr(runner, "get_experiment", lambda name: two)
    chunks = []  # the clock jumps past the deadline once the first chunk is reported
    clock = lambda: time.time() + (7200 if chunks else 0)  # noqa: E731
    monkeypatch.setattr(runner, "StopFlag", lambda deadline=None: StopFlag(deadline=deadline, clock=clock))
    log = lambda m: chunks.append(m) if m.startswith("  update") else None  # noqa: E731
    outcomes = ex.run_experiment("unit", "tiny", tmp_path, cache=cache, deadline=time.time() + 3600, log=log)
    assert [(o.variant, o.status, o.out_of_time, o.interrupted) for o in outcomes] == [
        ("gpae", "stopped", True, False)]
    assert len(chunks) == 1 and 0 < outcomes[0].updates < outcomes[0].num_updates
    assert not (tmp_path / "unit-tiny" / "second").exists()
    stopped = outcomes
    monkeypatch.setattr(ex.cli, "run_experiment", lambda *a, **k: stopped)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main sets it; restored after
    assert ex.main(["unit", "--scale", "tiny", "--time-limit", "60"]) == 0  # planned, as --max-chunks
    assert "--time-limit 60: stopped after a chunk" in capsys.readouterr().out
    vdir = tmp_path / "unit-tiny" / "gpae"
    assert [int(r["update"]) for r in _rows(vdir / f"seed{SEEDS[0]}.csv")] == list(range(1, outcomes[0].updates + 1))
    # No time left at all: nothing starts, not even the next variant's loading.
    assert ex.run_experiment("unit", "tiny", tmp_path, cache=cache, deadline=time.time() - 1, log=log) == []
    monkeypatch.setattr(runner, "StopFlag", StopFlag)
    outcomes = ex.run_experiment("unit", "tiny", tmp_path, cache=cache, deadline=time.time() + 3600,
                                 log=lambda m: None)
    assert [(o.variant, o.status) for o in outcomes] == [("gpae", "finished"), ("second", "finished")]
    total = outcomes[0].num_updates
    assert [int(r["update"]) for r in _rows(vdir / f"seed{SEEDS[0]}.csv")] == list(range(1, total + 1))


def test_train_curve_table_pools_seeds_per_window_and_marks_unfinished_runs(tmp_path):
    from gpae_ref.learner.logbook import COLUMNS

    two = dataclasses.replace(TINY_EXP, name="curve", variants=(ex.Variant("done", ()), ex.Variant("half", ())))
    assert ex.train_curve_table(two, "tiny", tmp_path) is None  # nothing run yet
    per_update = 32  # TINY: 4 envs x 8 steps, 4 updates, 128 env steps
    rows = {("done", 0): [(0.0, 10), (0.5, 10), (0.25, 4), (1.0, 2)],
            ("done", 1): [(0.1, 10), (0.5, 30), (0.75, 4), (1.0, 2)],
            ("half", 0): [(0.2, 5), (0.4, 5)]}  # stopped after update 2; seed 1 not started
    for (name, seed), updates in rows.items():
        vdir = tmp_path / "curve-tiny" / name
        vdir.mkdir(parents=True, exist_ok=True)
        with open(vdir / f"seed{seed}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, restval="0")
            w.writeheader()
            for i, (win, episodes) in enumerate(updates, start=1):
                w.writerow({"update": i, "env_steps": per_update * i, "train_win_rate": win,
                            "train_episodes": episodes})
    table = ex.train_curve_table(two, "tiny", tmp_path, windows=2).splitlines()
    assert table[0] == "| env steps (window end) | done (2 seeds) | half (1 seed) |"
    # window 1 (steps 1-64): done pools (0 + 5 + 1 + 15) / 60 wins; half 3 / 10 and stops at update 2,
    # the window's last step: the window is whole, no mark
    assert table[2] == "| 0.064k | 35.00 | 30.00 |"
    assert table[3] == "| 0.128k | 66.67 |  |"  # (1 + 2 + 3 + 2) / 12
    table = ex.train_curve_table(two, "tiny", tmp_path, windows=1).splitlines()
    assert table[2] == f"| 0.128k | {100 * 29 / 72:.2f} | 30.00 (to 0.064k) |"


def test_ctrl_c_stops_the_experiment_not_only_its_running_variant(tmp_path, cache, monkeypatch):
    import os
    import signal

    two = dataclasses.replace(TINY_EXP, variants=(VARIANT, ex.Variant("second", (("advantage", "gae"),))))
    monkeypatch.setattr(runner, "get_experiment", lambda name: two)

    def log(message):  # Ctrl-C while the first chunk of the first variant is reported
        if message.startswith("  update"):
            os.kill(os.getpid(), signal.SIGINT)

    outcomes = ex.run_experiment("unit", "tiny", tmp_path, cache=cache, log=log)
    assert [(o.variant, o.status, o.interrupted) for o in outcomes] == [("gpae", "stopped", True)]
    assert 0 < outcomes[0].updates < outcomes[0].num_updates
    assert not (tmp_path / "unit-tiny" / "second").exists()  # the next variant never started
    # The command line says so with 130, as train does: `make` runs no next command after it.
    monkeypatch.setattr(ex.cli, "run_experiment", lambda *a, **k: outcomes)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main sets it; restored after
    assert ex.main(["unit", "--scale", "tiny", "--root", str(tmp_path)]) == 130


def test_list_cli(capsys):
    assert ex.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("pilot", "main", "ablation", "eta", "reuse", "hard"):
        assert name in out


@pytest.mark.parametrize("old_jaxlib", [False, True], ids=["jaxlib>=0.5", "jaxlib<0.5"])
def test_xla_flags_add_the_safe_cpu_flags_unless_asked(monkeypatch, old_jaxlib):
    """Every safe flag the installed jaxlib knows (0.4.38, the authors' venv, aborts on the newer two)."""
    monkeypatch.setattr(xla, "_old_jaxlib", lambda: old_jaxlib)
    known = [f for f in xla.SAFE_CPU_FLAGS if not (old_jaxlib and f.split("=")[0] in xla.NEWER_FLAGS)]
    assert known and len(known) == len(xla.SAFE_CPU_FLAGS) - (len(xla.NEWER_FLAGS) if old_jaxlib else 0)
    safe = " ".join(known)
    assert xla.xla_flags("", False) == safe
    assert xla.xla_flags("--foo=1", False) == f"--foo=1 {safe}"
    assert xla.xla_flags("--foo=1", True) == "--foo=1"
    mine = "--xla_cpu_enable_concurrency_optimized_scheduler=true"  # set by the user: kept, not doubled
    assert xla.xla_flags(mine, False) == " ".join([mine, *(f for f in known if not f.startswith(mine[:-5]))])


def test_authors_scale_needs_the_authors_smax_and_seeds_run_one_at_a_time(tmp_path, cache):
    from gpae_ref.learner.env import smax_version

    hard = ex.get_experiment("hard")
    scale = hard.scale("authors")
    assert scale.smax == ex.AUTHORS_SMAX == "0.0.7"
    if smax_version() != scale.smax:
        with pytest.raises(ValueError, match="^scale.*make env-authors"):
            ex.run_variant(hard, "authors", hard.variants[0], tmp_path, log=lambda m: None)
    with pytest.raises(ValueError, match="^seeds"):
        ex.select_seeds(scale, [7])
    # One seed of a two-seed scale: its own checkpoint, its CSV only; then the other seed.
    out = ex.run_variant(TINY_EXP, "tiny", VARIANT, tmp_path, seeds=[1], cache=cache, log=lambda m: None)
    vdir = tmp_path / "unit-tiny" / "gpae"
    assert out.status == "finished" and (vdir / "ckpt" / "state-s1.safetensors").exists()
    assert (vdir / "seed1.csv").exists() and not (vdir / "seed0.csv").exists()
    rec = __import__("json").loads((vdir / "run.json").read_text())
    assert rec["seeds"] == [0, 1] and rec["smax"] == smax_version()
    assert "--seed 1" in rec["train_commands"]["1"] and "--hidden-size 8" in rec["train_commands"]["1"]
    curve = ex.load_curve(vdir, SEEDS, 4)
    assert curve.win.shape[0] == 1  # the seed not run yet is left out of the report


def test_records_written_before_a_field_was_added_still_match(tmp_path):
    """A run.json from before a LearnerConfig field existed has no entry for it: same config."""
    cfg = ex.variant_config(TINY_EXP, "tiny", VARIANT)
    record = runner._run_record(TINY_EXP, "tiny", VARIANT, cfg, SEEDS)
    old = {**record, "config": {k: v for k, v in record["config"].items() if k != "reward_scale"}}
    path = tmp_path / "run.json"
    path.write_text(__import__("json").dumps(old))
    runner._check_same_definition(path, record)  # no error
    assert ex.same_config(old["config"], record["config"])
    assert not ex.same_config({**record["config"], "lr": 1.0}, record["config"])
