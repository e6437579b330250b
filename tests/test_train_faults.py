"""Faults a new user runs into with ``python -m gpae_ref.train``, each on a tiny budget.

NaN stop, resume of every setting, damaged checkpoints, unusable run folders, the
CLI without the smax extra, refused flag values, partial CSV lines, the docs'
defaults, and bit-identical resume after SIGINT and SIGKILL. CLI runs share
compiled functions through one ``trainers`` dict (module scope).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
try:  # imported here, not inside a test: its import swaps sys.stderr, which would defeat capsys
    import jaxmarl  # noqa: F401

    HAVE_SMAX = True
except ImportError:
    HAVE_SMAX = False


def needs_smax(test):
    """Marked ``smax`` (``-m smax`` selects it) and skipped without jaxmarl."""
    return pytest.mark.smax(pytest.mark.skipif(not HAVE_SMAX, reason="needs jaxmarl (the smax extra)")(test))

# 4 envs x 8 steps = 32 env steps per update; 4 updates; width 8, 1 layer, 1 epoch.
TINY = ["--scenario", "3m", "--num-envs", "4", "--num-steps", "8", "--update-epochs", "1", "--total-steps", "128",
        "--hidden-size", "8", "--num-layers", "1", "--eval-envs", "2", "--no-progress"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- no jax needed
def test_partial_trailing_csv_line_is_dropped(tmp_path):
    pytest.importorskip("jax")
    from gpae_ref.learner.logbook import COLUMNS, read_rows
    from gpae_ref.learner.runfolder import truncate_rows

    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, restval="0")
        w.writeheader()
        w.writerow({"update": 1})
        w.writerow({"update": 2})
    whole = path.read_text()
    for tail in ("3", "3,0,0", whole.splitlines()[-1][:-1]):  # a kill mid-row; a row cut in its last number
        path.write_text(whole + tail)
        assert [r["update"] for r in read_rows(path)] == ["1", "2"]
        assert truncate_rows(path, 2) == 2
        assert path.read_text() == whole


def _tiny_tree():
    import jax.numpy as jnp

    return {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4), "n": jnp.int32(7)}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "bitflip", "empty"])
def test_damaged_checkpoint_is_refused_with_a_clear_message(tmp_path, damage):
    pytest.importorskip("safetensors")
    import jax

    from gpae_ref.learner.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _tiny_tree(), {"update": 3})
    state, meta = load_checkpoint(path, jax.eval_shape(_tiny_tree))
    assert meta == {"update": 3} and int(state["n"]) == 7
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) - 10])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":  # a valid safetensors file that is not ours
        from safetensors.numpy import save_file

        save_file({"w": np.zeros((3, 4), np.float32)}, str(path))
    else:  # one bit in the tensor data (the last bytes of the file are tensor bytes)
        b = bytearray(data)
        b[-3] ^= 0x10
        path.write_bytes(bytes(b))
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="checkpoint .*(checksum|not a|readable)") as e:
        load_checkpoint(path, jax.eval_shape(_tiny_tree))
    assert "delete it" in str(e.value) or "not a gpae-ref" in str(e.value) or "checksum" in str(e.value)
    assert path.read_bytes() == before  # nothing overwritten


def test_help_without_the_smax_extra():
    """``train --help`` must work where jax and jaxmarl are not installed."""
    code = ("import sys\n"
            "for m in ('jax', 'jaxlib', 'jaxmarl', 'flax', 'optax'): sys.modules[m] = None\n"
            "from gpae_ref.train import main\n"
            "main(['--help'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--hidden-size" in out.stdout and "--settings" in out.stdout and "smax extra" in out.stdout


@needs_smax  # the message is checked by hiding jaxmarl after the rest imported
def test_training_without_the_smax_extra_says_what_to_install(monkeypatch, capsys):
    from gpae_ref.train import main

    monkeypatch.setitem(sys.modules, "jaxmarl", None)
    assert main(["--scenario", "3m"]) == 2
    err = capsys.readouterr().err
    assert "smax extra" in err and 'pip install -e ".[smax]"' in err


@pytest.mark.parametrize("argv,flag", [(["--lr", "inf"], "--lr"), (["--eta", "nan"], "--eta"),
                                       (["--max-updates", "0"], "--max-updates"), (["--chunk", "0"], "--chunk"),
                                       (["--checkpoint-every", "0"], "--checkpoint-every"),
                                       (["--eval-every", "-1"], "--eval-every")])
@needs_smax
def test_bad_values_are_refused_naming_the_flag(argv, flag, tmp_path, capsys):
    from gpae_ref.train import main

    with pytest.raises(SystemExit) as e:
        main(TINY + argv + ["--runs-dir", str(tmp_path)])
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_experiments_max_chunks_zero_is_refused(capsys):
    from gpae_ref.experiments import main

    with pytest.raises(SystemExit) as e:
        main(["hard", "--scale", "tiny", "--max-chunks", "0"])
    assert e.value.code == 2 and "--max-chunks" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "ten"])
@pytest.mark.parametrize("entry", ["train", "experiments"])
def test_a_time_limit_that_is_not_a_positive_number_of_minutes_is_refused(entry, value, capsys):
    if entry == "train":
        from gpae_ref.train import main
        argv = TINY
    else:
        from gpae_ref.experiments import main
        argv = ["hard", "--scale", "tiny"]
    with pytest.raises(SystemExit) as e:
        main(argv + ["--time-limit", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--time-limit" in err and "minutes above 0" in err


def test_the_deadline_judges_the_next_chunk_by_the_last_and_stays_up():
    from gpae_ref.learner.runloop import StopFlag, deadline

    now = [1000.0]
    stop = StopFlag(deadline=1100.0, clock=lambda: now[0])
    assert not stop.time_is_up(0.0) and not stop.time_is_up(100.0)  # ends exactly at the deadline: fits
    now[0] = 1050.0
    assert stop.time_is_up(60.0) and stop.out_of_time
    assert stop.time_is_up(0.0)  # once up, the loop does not start again
    assert not StopFlag().time_is_up(1e12)  # no deadline: never
    assert deadline(None) is None and 0 < deadline(1.5) - __import__("time").time() <= 90


def test_every_config_field_is_a_flag_with_its_doc_line():
    import dataclasses

    from gpae_ref.learner.config import LearnerConfig
    from gpae_ref.learner.settings import field_docs, train_argv
    from gpae_ref.train import build_parser

    parser = build_parser()
    helps = {a.dest: a.help for a in parser._actions}
    docs = field_docs()
    for f in dataclasses.fields(LearnerConfig):
        assert f.name in helps, f.name
        assert docs[f.name][:30] in helps[f.name], f.name
    # Any config is one train command: its flags parse back to the same config.
    from gpae_ref.learner.settings import config_fields

    cfg = LearnerConfig(scenario="5m_vs_6m", advantage="gae", reuse=2, hidden_size=64, anneal_lr=False, lr=3e-4,
                        layer_norm=False, seed=3)
    args = parser.parse_args(train_argv(cfg))
    assert LearnerConfig(**config_fields(args)) == cfg


def test_settings_have_one_meaning_in_train_and_the_runner():
    from gpae_ref.experiments import LOCAL_BASE, get_experiment, variant_config
    from gpae_ref.learner.config import LearnerConfig
    from gpae_ref.learner.settings import config_fields, settings_overrides
    from gpae_ref.train import build_parser

    assert dict(LOCAL_BASE) == settings_overrides("cpu")
    args = build_parser().parse_args(["--settings", "cpu", "--scenario", "5m_vs_6m", "--reuse", "2",
                                      "--total-steps", "10000000"])
    hard = get_experiment("hard")
    (gpae,) = [v for v in hard.variants if v.name == "gpae-K2"]
    assert LearnerConfig(**config_fields(args, "cpu")) == variant_config(hard, "local", gpae)
    assert variant_config(hard, "authors", gpae) == LearnerConfig(scenario="5m_vs_6m", reuse=2)


def test_docs_give_the_schedule_defaults_of_help():
    from gpae_ref.train import build_parser

    helps = {a.option_strings[0]: a.help for a in build_parser()._actions if a.option_strings}
    doc = (ROOT / "docs" / "learner.md").read_text()
    for opt in ("--eval-every", "--checkpoint-every", "--chunk"):
        want = re.search(r"default (\d+)", helps[opt]).group(1)
        lines = [ln for ln in doc.splitlines() if f"`{opt}" in ln and "default" in ln]
        assert lines, f"docs/learner.md does not give {opt}'s default"
        for ln in lines:
            assert re.search(r"default (\d+)", ln).group(1) == want, (opt, ln)


# ---------------------------------------------------------------- CLI runs (jaxmarl)
@pytest.fixture(scope="module")
def trainers(shared_trainers):
    if not HAVE_SMAX:
        pytest.skip("needs jaxmarl (the smax extra)")
    return shared_trainers


def _finite_checkpoint(path):
    from gpae_ref.learner.checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(path)
    floats = [k for k, x in tensors.items() if np.issubdtype(x.dtype, np.floating)]
    learner = [k for k in floats if not k.startswith((".env_state", ".obs", ".buffer"))]
    assert learner
    return all(np.all(np.isfinite(tensors[k])) for k in learner), meta


def _poisoned(trainer, from_update: int):
    """``trainer`` whose updates from ``from_update`` on report a NaN loss (a diverging run, injected:
    the flag ranges refuse the learning rates that used to make one)."""
    import numpy as np

    def run_updates(state, n):
        new_state, metrics = trainer.run_updates(state, n)
        upd = np.asarray(metrics.update)
        bad = np.where(upd >= from_update, np.nan, 0.0).astype(np.float32)
        return new_state, metrics._replace(actor_loss=np.asarray(metrics.actor_loss) + bad)

    return trainer._replace(run_updates=run_updates)


@needs_smax
def test_nan_stop_keeps_the_last_finite_state(tmp_path, trainers, capsys):
    from gpae_ref.train import main

    args = TINY + ["--eval-every", "0", "--chunk", "1", "--runs-dir", str(tmp_path)]
    assert main(args + ["--name", "warm", "--max-updates", "1"], trainers=trainers) == 0
    from gpae_ref.learner.config import LearnerConfig

    cfg = LearnerConfig.from_dict(json.loads((tmp_path / "warm" / "run.json").read_text())["config"])
    poisoned = {cfg: _poisoned(trainers[cfg], from_update=2)}
    assert main(args + ["--name", "nan"], trainers=poisoned) == 1
    assert "Last finite state" in capsys.readouterr().err
    ok, meta = _finite_checkpoint(tmp_path / "nan" / "ckpt" / "state.safetensors")
    assert ok and meta["update"] == 1
    rows = _rows(tmp_path / "nan" / "metrics.csv") if (tmp_path / "nan" / "metrics.csv").exists() else []
    assert len(rows) == meta["update"]  # the rows end where the kept state does
    # Resuming repeats the same updates and stops again, still with a finite checkpoint (no crash).
    assert main(["--resume", str(tmp_path / "nan"), "--no-progress"], trainers=poisoned) == 1
    assert _finite_checkpoint(tmp_path / "nan" / "ckpt" / "state.safetensors")[0]


@needs_smax
def test_train_time_limit_stops_after_a_chunk_and_resume_finishes(tmp_path, trainers, capsys, monkeypatch):
    import time

    import gpae_ref.train as train
    from gpae_ref.learner import logbook
    from gpae_ref.learner.runloop import StopFlag

    chunks = []  # train redraws the curve after each checkpointed chunk; then the clock jumps past the deadline
    monkeypatch.setattr(logbook, "plot_curve", lambda *a, **k: chunks.append(1))
    clock = lambda: time.time() + (7200 if chunks else 0)  # noqa: E731
    monkeypatch.setattr(train, "StopFlag", lambda deadline=None: StopFlag(deadline=deadline, clock=clock))
    args = TINY + ["--eval-every", "0", "--checkpoint-every", "1", "--chunk", "1", "--runs-dir", str(tmp_path),
                   "--name", "t", "--time-limit", "30"]
    assert train.main(args, trainers=trainers) == 0  # a planned stop, as --max-updates: not an error
    out = capsys.readouterr().out
    assert "stopped at update 1/4 (--time-limit); continue with: python -m gpae_ref.train --resume" in out
    assert [int(r["update"]) for r in _rows(tmp_path / "t" / "metrics.csv")] == [1]
    monkeypatch.setattr(train, "StopFlag", StopFlag)
    assert train.main(["--resume", str(tmp_path / "t"), "--no-progress", "--time-limit", "30"],
                      trainers=trainers) == 0
    assert [int(r["update"]) for r in _rows(tmp_path / "t" / "metrics.csv")] == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, trainers):
    """A run started with a non-default schedule, stopped after 2 of 4 updates."""
    from gpae_ref.train import main

    root = tmp_path_factory.mktemp("runs")
    args = TINY + ["--eval-every", "1", "--checkpoint-every", "1", "--chunk", "1", "--runs-dir", str(root),
                   "--name", "r", "--max-updates", "2"]
    assert main(args, trainers=trainers) == 0
    return root / "r"


@needs_smax
def test_damaged_checkpoint_on_resume_changes_nothing(stopped_run, tmp_path, trainers, capsys):
    import shutil

    from gpae_ref.train import main

    run = tmp_path / "copy"
    shutil.copytree(stopped_run, run)
    ck = run / "ckpt" / "state.safetensors"
    b = bytearray(ck.read_bytes())
    b[-5] ^= 0x01
    ck.write_bytes(bytes(b))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["--resume", str(run), "--no-progress"], trainers=trainers) == 2
    assert "checksum" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@needs_smax
def test_resume_restores_every_setting_and_drops_a_partial_line(stopped_run, trainers):
    from gpae_ref.train import main

    saved = json.loads((stopped_run / "run.json").read_text())
    assert saved["schedule"] == {"chunk": 1, "eval_every": 1, "checkpoint_every": 1}
    assert saved["smax"] and saved["config"]["hidden_size"] == 8
    assert "--hidden-size 8" in saved["command"] and "--eval-every 1" in saved["command"]
    with open(stopped_run / "metrics.csv", "a") as f:
        f.write("3")  # what a kill during a row write leaves
    assert main(["--resume", str(stopped_run), "--no-progress"], trainers=trainers) == 0
    rows = _rows(stopped_run / "metrics.csv")
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]
    assert all(r["eval_win_rate"] != "" for r in rows)  # --eval-every 1 survived the resume
    after = json.loads((stopped_run / "run.json").read_text())
    assert after["schedule"] == saved["schedule"]
    assert after["resumes"][-1]["update"] == 2 and after["resumes"][-1]["kind"] == "full"


@needs_smax
def test_unusable_runs_folder_gives_a_clear_message(tmp_path, monkeypatch, capsys):
    from gpae_ref.train import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    for runs in (afile, afile / "sub"):
        with pytest.raises(SystemExit) as e:
            main(TINY + ["--runs-dir", str(runs)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--runs-dir" in err and "Traceback" not in err
    # A folder this user cannot write to (simulated: the tests may run as root, who can write anywhere).
    real = Path.write_text

    def refuse(self, *a, **k):
        if self.name == ".write-test":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(SystemExit):
        main(TINY + ["--runs-dir", str(tmp_path / "ro")])
    err = capsys.readouterr().err
    assert "--runs-dir" in err and "Permission denied" in err


def _run_cli(args):
    # Every phase in its own process: each starts jax with the same XLA flags (the session's, see
    # conftest.py, plus the CLI's), which an in-process run cannot promise once this test process has
    # started jax.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpae_ref.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_rows(csv_path, n, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if csv_path.exists() and len([ln for ln in csv_path.read_text().splitlines()[1:] if ln]) >= n:
            return
        if proc.poll() is not None:
            return  # finished before the signal: the later phases still must match
        time.sleep(0.05)
    raise AssertionError("timed out waiting for rows")


@needs_smax
@pytest.mark.slow
def test_sigint_then_sigkill_resumes_bit_identical(tmp_path):
    """Ctrl-C after update 1 (checkpoint, exit 130), resume, SIGKILL after update 4 (possibly mid
    checkpoint write), resume to the end: the rows equal an uninterrupted run's, bit for bit."""
    # No evaluation: its compilation would double each of the four processes' start.
    sched = ["--eval-every", "0", "--checkpoint-every", "2", "--chunk", "1", "--total-steps", "192"]
    base = TINY + sched + ["--runs-dir", str(tmp_path)]
    straight = _run_cli(base + ["--name", "straight"])
    assert straight.wait(timeout=600) == 0, straight.stdout.read()
    run = tmp_path / "cut"
    p = _run_cli(base + ["--name", "cut"])
    _wait_rows(run / "metrics.csv", 1, p)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=600) in (0, 130), p.stdout.read()
    p = _run_cli(["--resume", str(run), "--no-progress"])
    _wait_rows(run / "metrics.csv", 4, p)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    p = _run_cli(["--resume", str(run), "--no-progress"])
    assert p.wait(timeout=600) == 0, p.stdout.read()
    cut, full = _rows(run / "metrics.csv"), _rows(tmp_path / "straight" / "metrics.csv")
    drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert [int(r["update"]) for r in cut] == list(range(1, 7))
    assert drop(cut) == drop(full)


# ---------------------------------------------------------------- faults a stranger met (each fixed)
@needs_smax
def test_a_refused_device_count_with_overwrite_deletes_nothing(stopped_run, tmp_path, trainers, capsys):
    """--overwrite emptied the run folder before --devices was refused: the run was lost."""
    import shutil

    from gpae_ref.train import main

    shutil.copytree(stopped_run, tmp_path / "r")
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    args = TINY + ["--eval-every", "1", "--checkpoint-every", "1", "--chunk", "1", "--runs-dir", str(tmp_path),
                   "--name", "r", "--overwrite", "--devices", "3"]
    assert main(args, trainers=trainers) == 2
    assert "--devices" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == before
    assert main(TINY + ["--runs-dir", str(tmp_path), "--name", "new", "--devices", "3"], trainers=trainers) == 2
    assert not (tmp_path / "new").exists()  # no empty folder left behind either


@needs_smax
@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".."])
def test_a_name_that_is_not_one_folder_name_is_refused(name, tmp_path, trainers, capsys):
    from gpae_ref.train import main

    with pytest.raises(SystemExit):
        main(TINY + ["--runs-dir", str(tmp_path / "runs"), "--name", name], trainers=trainers)
    assert "--name" in capsys.readouterr().err and not (tmp_path / "escape").exists()


@needs_smax
def test_a_deleted_metrics_csv_is_said_on_the_first_resume(stopped_run, tmp_path, trainers, capsys):
    import shutil

    from gpae_ref.train import main

    run = tmp_path / "r"
    shutil.copytree(stopped_run, run)
    (run / "metrics.csv").unlink()
    assert main(["--resume", str(run), "--no-progress", "--max-updates", "1"], trainers=trainers) == 0
    assert re.search(r"metrics.csv is missing: the rows for updates 1-\d are lost", capsys.readouterr().err)


@needs_smax
def test_resuming_a_finished_run_changes_nothing(stopped_run, tmp_path, trainers, capsys):
    """Each such resume recompiled and added an identical entry to the record's resumes."""
    import shutil

    from gpae_ref.train import main

    run = tmp_path / "r"
    shutil.copytree(stopped_run, run)
    assert main(["--resume", str(run), "--no-progress"], trainers=trainers) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["--resume", str(run), "--no-progress", "--name", "x", "--overwrite"], trainers=trainers) == 0
    out = capsys.readouterr().out
    assert "ignoring --name, --overwrite" in out and "the run is complete (4/4 updates); nothing to do" in out
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@needs_smax
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_state(tmp_path, trainers, capsys, monkeypatch):
    """A full disk at a checkpoint gave safetensors' traceback; now one line naming the folder and --resume."""
    import errno

    from gpae_ref.learner import checkpoint
    from gpae_ref.train import main

    args = TINY + ["--eval-every", "0", "--checkpoint-every", "1", "--chunk", "1", "--runs-dir", str(tmp_path),
                   "--name", "f"]
    assert main(args + ["--max-updates", "1"], trainers=trainers) == 0
    run = tmp_path / "f"
    state_before = (run / "ckpt" / "state.safetensors").read_bytes()

    def full_disk(path, data=None, writer=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_atomic", full_disk)
    capsys.readouterr()
    assert main(["--resume", str(run), "--no-progress"], trainers=trainers) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write its state (No space left on device)" in err
    assert f"--resume {run}" in err
    assert (run / "ckpt" / "state.safetensors").read_bytes() == state_before
    assert not list(run.rglob("*.tmp"))


def test_a_write_that_fails_midway_leaves_no_temp_file(tmp_path):
    pytest.importorskip("jax")
    from gpae_ref.learner.checkpoint import _write_atomic

    def half_then_full_disk(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        _write_atomic(tmp_path / "state.safetensors", writer=half_then_full_disk)
    assert list(tmp_path.iterdir()) == []
