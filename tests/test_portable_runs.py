"""Runs that travel: a run folder committed to git resumes from a fresh clone on another machine.

A run is stopped, its folder is committed to a throwaway git repository (the
full checkpoint in ``ckpt/`` ignores itself), cloned to a new path and resumed
there from the compact state: every update's row appears once, and the rows and
the final state equal an uninterrupted run's bit for bit (K = 1 and K = 2: the
compact state keeps exactly the rollouts the next update reads again).
Damaged, foreign and unverifiable states and damaged run records are refused with
one line naming the file, and nothing in the folder changes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, HealthCheck, given, settings
from hypothesis import strategies as st

jax = pytest.importorskip("jax")
pytest.importorskip("jaxmarl")

from gpae_ref.learner.checkpoint import CheckpointError, read_checkpoint, read_compact  # noqa: E402
from gpae_ref.learner.runfolder import RunFolder, RunFolderError, truncate_rows  # noqa: E402
from gpae_ref.train import main  # noqa: E402

pytestmark = pytest.mark.smax

# 4 envs x 8 steps, 4 updates, width 8, 1 layer, 1 epoch, no evaluation (one compile less).
TINY = ["--scenario", "3m", "--num-envs", "4", "--num-steps", "8", "--update-epochs", "1", "--total-steps", "128",
        "--hidden-size", "8", "--num-layers", "1", "--eval-envs", "2", "--no-progress", "--eval-every", "0",
        "--checkpoint-every", "1", "--chunk", "1"]


@pytest.fixture(scope="module")
def trainers(shared_trainers):
    return shared_trainers  # the same tiny config as test_train_faults.py: compiled once per session


def _rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]


def _files(run: Path) -> dict:
    return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def fresh_clone(run: Path, where: Path) -> Path:
    """``run`` as a fresh clone of a repository it was committed to holds it (git-ignored files left out)."""
    repo, clone = where / "repo", where / "clone"
    shutil.copytree(run, repo / "runs" / run.name)
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "run", cwd=repo)
    _git("clone", "-q", str(repo), str(clone), cwd=where)
    return clone / "runs" / run.name


@pytest.fixture(scope="module", params=[1, 2], ids=["K1", "K2"])
def straight_and_stopped(request, tmp_path_factory, trainers):
    """(uninterrupted run, the same run stopped after 2 of 4 updates) for reuse K."""
    root = tmp_path_factory.mktemp(f"K{request.param}")
    args = TINY + ["--advantage", "gpae", "--reuse", str(request.param), "--runs-dir", str(root)]
    assert main(args + ["--name", "straight"], trainers=trainers) == 0
    assert main(args + ["--name", "stopped", "--max-updates", "2"], trainers=trainers) == 0
    return root / "straight", root / "stopped"


def test_a_committed_run_folder_resumes_from_a_fresh_clone_bit_identical(straight_and_stopped, tmp_path,
                                                                          trainers):
    straight, stopped = straight_and_stopped
    clone = fresh_clone(stopped, tmp_path)
    assert not (clone / "ckpt" / "state.safetensors").exists()  # the full checkpoint stayed behind
    assert (clone / "resume.safetensors.xz").exists() and (clone / "ckpt" / ".gitignore").exists()
    assert main(["--resume", str(clone), "--no-progress"], trainers=trainers) == 0
    total = json.loads((clone / "run.json").read_text())["config"]["total_steps"] // 32  # 4 envs x 8 steps
    assert [int(r["update"]) for r in _rows(clone)] == list(range(1, len(_rows(straight)) + 1))
    assert len(_rows(straight)) >= total  # K = 2: 2 envs per rollout, twice the updates
    assert _rows(clone) == _rows(straight)
    a, _ = read_checkpoint(clone / "ckpt" / "state.safetensors")
    b, _ = read_checkpoint(straight / "ckpt" / "state.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    record = json.loads((clone / "run.json").read_text())
    assert record["resumes"][-1]["update"] == 2 and record["resumes"][-1]["kind"] == "compact"


def test_the_compact_state_keeps_only_what_the_next_update_reads(straight_and_stopped):
    _, stopped = straight_and_stopped
    full, _ = read_checkpoint(stopped / "ckpt" / "state.safetensors")
    compact, meta = read_compact(stopped / "resume.safetensors.xz")
    K = json.loads((stopped / "run.json").read_text())["config"]["reuse"]
    assert meta["compact"]["keep"] == K - 1 and meta["update"] == 2
    for name, x in full.items():
        if name.startswith(".buffer"):
            assert compact[name].shape[0] == K - 1 and np.array_equal(compact[name], x[1:]), name
        else:
            assert np.array_equal(compact[name], x), name


def _damage(path: Path, how: str, other: Path | None = None) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif how == "bitflip":
        import lzma

        raw = bytearray(lzma.decompress(data))
        raw[-3] ^= 0x10  # a tensor byte, under a valid lzma container
        path.write_bytes(lzma.compress(bytes(raw)))
    elif how == "foreign":
        shutil.copyfile(other, path)


@pytest.mark.parametrize("how", ["truncated", "garbage", "bitflip", "foreign"])
def test_a_damaged_or_foreign_compact_state_is_refused_and_nothing_changes(straight_and_stopped, tmp_path,
                                                                           trainers, how, capsys):
    straight, stopped = straight_and_stopped
    clone = fresh_clone(stopped, tmp_path)
    other = tmp_path / "other.xz"
    if how == "foreign":  # the same shapes, another run: the seed-1 twin
        args = TINY + ["--advantage", "gpae", "--runs-dir", str(tmp_path), "--name", "twin", "--seed", "1",
                       "--max-updates", "1"]
        cfg = json.loads((stopped / "run.json").read_text())["config"]
        args += ["--reuse", str(cfg["reuse"])]
        assert main(args, trainers=trainers) == 0
        other = tmp_path / "twin" / "resume.safetensors.xz"
    _damage(clone / "resume.safetensors.xz", how, other)
    before = _files(clone)
    capsys.readouterr()
    assert main(["--resume", str(clone), "--no-progress"], trainers=trainers) == 2
    err = capsys.readouterr().err
    assert "resume.safetensors.xz" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("another run" in err) if how == "foreign" else ("compact state" in err)
    assert _files(clone) == before


def test_a_checkpoint_without_checksum_is_refused_unless_asked(tmp_path):
    from safetensors.numpy import save_file

    from gpae_ref.learner.checkpoint import load_checkpoint

    path = tmp_path / "old.safetensors"
    save_file({"['w']": np.ones(3, np.float32)}, str(path), metadata={"meta": json.dumps({"update": 1})})
    template = {"w": jax.ShapeDtypeStruct((3,), np.float32)}
    with pytest.raises(CheckpointError, match="no checksum.*allow_unchecked"):
        load_checkpoint(path, template)
    state, meta = load_checkpoint(path, template, allow_unchecked=True)
    assert meta == {"update": 1} and float(state["w"][0]) == 1.0


@pytest.mark.parametrize("damage", ["unknown field", "a list", "lr -1", "no header", "update abc", "not json"])
def test_a_damaged_run_record_or_csv_gives_one_line_and_changes_nothing(straight_and_stopped, tmp_path,
                                                                        trainers, damage, capsys):
    _, stopped = straight_and_stopped
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    record = json.loads((run / "run.json").read_text())
    if damage == "unknown field":
        record["config"]["colour"] = "blue"
    elif damage == "lr -1":
        record["config"]["lr"] = -1
    if damage in ("unknown field", "lr -1"):
        (run / "run.json").write_text(json.dumps(record))
    elif damage == "a list":
        (run / "run.json").write_text("[1, 2]")
    elif damage == "not json":
        (run / "run.json").write_text("{")
    elif damage == "no header":
        lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
        (run / "metrics.csv").write_text("".join(lines[1:]))
    else:
        text = (run / "metrics.csv").read_text()
        (run / "metrics.csv").write_text(text + "abc" + ",0" * (text.splitlines()[0].count(",")) + "\n")
    before = _files(run)
    capsys.readouterr()
    rc = main(["--resume", str(run), "--no-progress"], trainers=trainers)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert ("run.json" in err) if damage not in ("no header", "update abc") else ("metrics.csv" in err)
    assert _files(run) == before


def test_truncating_rows_writes_a_new_file(tmp_path, monkeypatch):
    """An error while rows are rewritten leaves the old file whole (no header-only CSV)."""
    from gpae_ref.learner.logbook import COLUMNS

    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, restval="0")
        w.writeheader()
        w.writerows([{"update": 1}, {"update": 2}])
    whole = path.read_text()

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError):
        truncate_rows(path, 1)
    assert path.read_text() == whole
    monkeypatch.undo()
    assert truncate_rows(path, 1) == 1


def test_no_state_but_a_record_says_what_to_do(straight_and_stopped, tmp_path, trainers, capsys):
    _, stopped = straight_and_stopped
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    folder = RunFolder(run)
    folder.full_path.unlink()
    folder.compact_path.unlink()
    with pytest.raises(SystemExit) as e:
        main(["--resume", str(run), "--no-progress"], trainers=trainers)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "has run.json but no saved state" in err and "--overwrite" in err
    assert isinstance(RunFolderError("x"), ValueError)


class _Killed(BaseException):
    """Stands for SIGKILL at a chosen moment: nothing after it runs (a BaseException, so no
    ``except Exception`` in the library can swallow it)."""


@pytest.mark.parametrize("moment", ["rows written, no checkpoint yet", "checkpoint half written",
                                    "full checkpoint renamed, compact not yet", "compact half written",
                                    "both written"])
@pytest.mark.parametrize("at_update", [2])
def test_a_kill_at_any_moment_of_a_checkpoint_resumes_bit_identical(straight_and_stopped, tmp_path, trainers,
                                                                    monkeypatch, moment, at_update):
    """Kill a run at update ``at_update`` at one moment around its checkpoint write, then resume
    (full checkpoint where one is whole, else the compact state): the rows equal the straight run's."""
    import gpae_ref.learner.checkpoint as ck
    import gpae_ref.learner.runfolder as rf

    straight, _ = straight_and_stopped
    cfg = json.loads((straight / "run.json").read_text())["config"]
    args = TINY + ["--advantage", "gpae", "--reuse", str(cfg["reuse"]), "--runs-dir", str(tmp_path), "--name", "k"]
    real_save, real_replace = rf.save_state, ck.os.replace
    calls = {"replace": 0}

    def kill_in_save(folder, state, meta, data):
        if meta["update"] != at_update:
            return real_save(folder, state, meta, data)
        if moment == "rows written, no checkpoint yet":
            raise _Killed
        if moment == "both written":
            real_save(folder, state, meta, data)
            raise _Killed

        def replace(src, dst):  # the 1st rename lands the full checkpoint, the 2nd the compact state
            calls["replace"] += 1
            if (moment == "checkpoint half written" and calls["replace"] == 1) or \
                    (moment == "compact half written" and calls["replace"] == 2):
                raise _Killed  # the .tmp file is written, the rename never happens
            real_replace(src, dst)
            if moment == "full checkpoint renamed, compact not yet":
                raise _Killed

        monkeypatch.setattr(ck.os, "replace", replace)
        real_save(folder, state, meta, data)

    monkeypatch.setattr("gpae_ref.learner.runloop.save_state", kill_in_save)
    with pytest.raises(_Killed):
        main(args, trainers=trainers)
    monkeypatch.undo()
    run = tmp_path / "k"
    assert main(["--resume", str(run), "--no-progress"], trainers=trainers) == 0
    assert _rows(run) == _rows(straight)
    a, _ = read_checkpoint(run / "ckpt" / "state.safetensors")
    b, _ = read_checkpoint(straight / "ckpt" / "state.safetensors")
    assert all(np.array_equal(a[n], b[n]) for n in b)


# ----------------------------------------------------------------------------
# Generated damage to the run record and the metrics CSV (examples: the Hypothesis profile's)
# ----------------------------------------------------------------------------

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=3), max_leaves=6)


def _key_paths(obj, prefix=()):
    """Every key path of a JSON object, nested objects included."""
    for key, value in obj.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _key_paths(value, prefix + (key,))


def _damaged_json(draw, data: bytes) -> bytes:
    record = json.loads(data)
    path = draw(st.sampled_from(sorted(_key_paths(record), key=str)))
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(_JSON)
    return json.dumps(record).encode()


def _damaged_bytes(draw, data: bytes) -> bytes:
    how = draw(st.sampled_from(["cut", "flip", "insert", "nul", "nul padding", "drop line", "repeat line"]))
    i = draw(st.integers(0, len(data) - 1))
    if how == "cut":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:]
    if how in ("insert", "nul"):
        return data[:i] + (draw(st.binary(min_size=1, max_size=8)) if how == "insert" else b"\0") + data[i:]
    if how == "nul padding":  # what a power cut can leave at the end of a file
        return data + b"\0" * draw(st.integers(1, 4096))
    lines = data.splitlines(keepends=True)
    j = draw(st.integers(0, len(lines) - 1))
    return b"".join(lines[:j] + lines[j + (how == "drop line"):] if how == "drop line" else
                    lines[:j + 1] + lines[j:])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_damage_to_a_run_record_or_csv(straight_and_stopped, trainers, data):
    """``--resume`` on a run folder whose run.json or metrics.csv was damaged at random either
    refuses, without a traceback, naming a file of the folder and changing nothing, or resumes
    to the uninterrupted run's final state with its updates counting up once each (rows the
    damage lost said on stderr, naming metrics.csv)."""
    straight, stopped = straight_and_stopped
    target = data.draw(st.sampled_from(["run.json", "metrics.csv"]), label="file")
    whole = (stopped / target).read_bytes()
    damaged = (_damaged_json(data.draw, whole) if target == "run.json" and data.draw(st.booleans(), label="as JSON")
               else _damaged_bytes(data.draw, whole))
    run = Path(tempfile.mkdtemp()) / "run"
    try:
        shutil.copytree(stopped, run)
        (run / target).write_bytes(damaged)
        before = _files(run)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(["--resume", str(run), "--no-progress"], trainers=trainers)
            except SystemExit as e:  # argparse's error: usage, then one line
                rc = e.code
        lines = err.getvalue().strip().splitlines()
        if rc != 0:
            event(f"{target}: refused")
            assert lines and str(run) in lines[-1] and "Traceback" not in err.getvalue(), err.getvalue()
            assert _files(run) == before
            return
        updates = [int(r["update"]) for r in _rows(run)]
        assert updates == sorted(set(updates)) and updates[-1] == len(_rows(straight))
        event(f"{target}: resumed" + (", rows missing" if updates != list(range(1, updates[-1] + 1)) else ""))
        if updates != list(range(1, len(_rows(straight)) + 1)):
            assert any("metrics.csv" in line and "missing" in line for line in lines), err.getvalue()
        same_schedule = json.loads((run / "run.json").read_text())["schedule"] == \
            json.loads((stopped / "run.json").read_text())["schedule"]
        if same_schedule:  # a schedule changed to valid values is obeyed (chunk lengths change the bits)
            a, _ = read_checkpoint(run / "ckpt" / "state.safetensors")
            b, _ = read_checkpoint(straight / "ckpt" / "state.safetensors")
            assert all(np.array_equal(a[n], b[n]) for n in b)
    finally:
        shutil.rmtree(run.parent, ignore_errors=True)
