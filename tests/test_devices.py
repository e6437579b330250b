"""Several devices through JAX's sharding, on forced CPU devices (a correctness run, not speed).

One subprocess starts jax with ``--xla_force_host_platform_device_count=4`` and runs
every case (``_CASES``), printing one JSON line; the tests read it. Seeds over 4
devices against 1, one run's envs over 2 devices against 1, a state written on 4
devices resumed on 1 and the reverse, and refused device counts.

Tolerance: the sharded runs equal the one-device runs up to float rounding, not bit
for bit: each device's share is compiled as a program of another batch size, which
rounds differently (on one device, seed 0 alone and seed 0 beside three others
already differ in their last bits). ``RTOL``/``ATOL`` below are stated for a few
updates of the tiny learner; the first update's numbers agree far closer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("jaxmarl")

pytestmark = pytest.mark.smax
ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-3, 1e-5

_CASES = textwrap.dedent('''
    import contextlib, csv, dataclasses, io, json, sys
    from pathlib import Path

    import jax
    import numpy as np

    from gpae_ref import experiments as ex
    from gpae_ref.train import main

    root = Path(sys.argv[1])
    out = {"devices": len(jax.devices())}
    TINY = ["--scenario", "3m", "--num-envs", "4", "--num-steps", "8", "--update-epochs", "1",
            "--total-steps", "96", "--hidden-size", "8", "--num-layers", "1", "--eval-envs", "2",
            "--no-progress", "--eval-every", "0", "--checkpoint-every", "1", "--chunk", "1",
            "--runs-dir", str(root)]

    def rows(path):
        with open(path, newline="") as f:
            return [{k: v for k, v in r.items() if k not in ("wall_s",) and not k.startswith("eval")}
                    for r in csv.DictReader(f)]

    def call(argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argv, trainers=trainers)
        return rc, err.getvalue()

    trainers = {}
    out["envs_1"] = call(TINY + ["--name", "one"])[0]
    out["envs_2"] = call(TINY + ["--name", "two", "--devices", "2"])[0]
    out["envs_rows"] = [rows(root / "one" / "metrics.csv"), rows(root / "two" / "metrics.csv")]
    out["refused"] = {n: call(TINY + ["--name", f"bad{n}", "--devices", str(n)]) for n in ("0", "5", "3")}

    exp = ex.Experiment(name="dev", version=1, question="devices", base=(("scenario", "3m"),),
                        variants=(ex.Variant("gpae", (("advantage", "gpae"),)),),
                        scales=(("tiny", dataclasses.replace(ex.TINY, seeds=(0, 1, 2, 3))),))
    v, cache, quiet = exp.variants[0], {}, (lambda m: None)
    seed_rows = lambda r: [rows(r / "dev-tiny" / "gpae" / f"seed{s}.csv") for s in range(4)]
    ex.run_variant(exp, "tiny", v, root / "s1", cache=cache, devices=1, log=quiet)
    ex.run_variant(exp, "tiny", v, root / "s4", cache=cache, devices=4, log=quiet)
    ex.run_variant(exp, "tiny", v, root / "a", cache=cache, devices=4, max_chunks=1, log=quiet)
    ex.run_variant(exp, "tiny", v, root / "a", cache=cache, devices=1, log=quiet)
    ex.run_variant(exp, "tiny", v, root / "b", cache=cache, devices=1, max_chunks=1, log=quiet)
    ex.run_variant(exp, "tiny", v, root / "b", cache=cache, devices=4, log=quiet)
    out["seeds"] = {k: seed_rows(root / k) for k in ("s1", "s4", "a", "b")}
    try:
        ex.run_variant(exp, "tiny", v, root / "c", cache=cache, devices=3, log=quiet)
        out["seeds_refused"] = ""
    except ValueError as e:
        out["seeds_refused"] = str(e)
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")}
    proc = subprocess.run([sys.executable, "-c", _CASES, str(root)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[-1][len("RESULT "):])


def _close(a: list[dict], b: list[dict]) -> None:
    assert [r["update"] for r in a] == [r["update"] for r in b] and a
    for ra, rb in zip(a, b):
        for k in ra:
            x, y = float(ra[k]), float(rb[k])
            if x != x and y != y:
                continue  # nan in both: no episode ended
            assert abs(x - y) <= ATOL + RTOL * abs(y), (ra["update"], k, x, y)


def test_forced_devices_are_visible(result):
    assert result["devices"] == 4


def test_one_runs_envs_on_two_devices_match_one_device(result):
    assert result["envs_1"] == 0 and result["envs_2"] == 0
    one, two = result["envs_rows"]
    _close(two, one)


def test_bad_device_counts_are_refused_naming_the_flag(result):
    for n, (rc, err) in result["refused"].items():
        assert rc == 2 and "--devices" in err, (n, err)
    assert "at most 4" in result["refused"]["5"][1]
    assert "do not split evenly" in result["refused"]["3"][1] and "[1, 2, 4]" in result["refused"]["3"][1]
    assert "do not split evenly" in result["seeds_refused"] and "--devices" in result["seeds_refused"]


def test_four_seeds_on_four_devices_match_one_device(result):
    for s1, s4 in zip(result["seeds"]["s1"], result["seeds"]["s4"]):
        _close(s4, s1)


def test_a_state_saved_on_four_devices_resumes_on_one_and_the_reverse(result):
    for key in ("a", "b"):
        for resumed, straight in zip(result["seeds"][key], result["seeds"]["s1"]):
            assert [int(r["update"]) for r in resumed] == list(range(1, len(straight) + 1))
            _close(resumed, straight)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_gloo_match_one_device(result, tmp_path):
    """Several hosts, played by two processes of this machine (JAX's CPU collectives over gloo):
    each owns one device, process 0 alone writes the run folder, the rows equal one device's.
    A time limit is process 0's: process 1's own (already over) is overruled, or the two would
    part ways at the first chunk and hang in the next collective."""
    import csv

    tiny = ["--scenario", "3m", "--num-envs", "4", "--num-steps", "8", "--update-epochs", "1",
            "--total-steps", "96", "--hidden-size", "8", "--num-layers", "1", "--eval-envs", "2",
            "--no-progress", "--eval-every", "0", "--checkpoint-every", "1", "--chunk", "1",
            "--runs-dir", str(tmp_path), "--name", "hosts", "--coordinator", f"127.0.0.1:{_free_port()}",
            "--num-processes", "2"]
    limits = {0: "600", 1: "0.0001"}
    procs = [subprocess.Popen([sys.executable, "-m", "gpae_ref.train", *tiny, "--process-id", str(i),
                               "--time-limit", limits[i]], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "envs over 2 devices" in outs[0] and "envs over 2 devices" in outs[1]
    with open(tmp_path / "hosts" / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k != "wall_s" and not k.startswith("eval")} for r in csv.DictReader(f)]
    _close(rows, result["envs_rows"][0])
    assert sorted(p.name for p in (tmp_path / "hosts").iterdir()) == ["ckpt", "curve.png", "metrics.csv",
                                                                       "resume.safetensors.xz", "run.json"]


def test_make_mesh_on_a_jax_without_axis_type(monkeypatch):
    """JAX before 0.5 (the authors' SMAX venv: 0.4.38) has no ``jax.sharding.AxisType``;
    the runner's mesh must still build there (it once raised AttributeError at start)."""
    import jax

    from gpae_ref.learner.devices import AXIS, make_mesh

    monkeypatch.delattr(jax.sharding, "AxisType", raising=False)
    mesh = make_mesh(jax.devices()[:1])
    assert mesh.axis_names == (AXIS,) and mesh.devices.size == 1
