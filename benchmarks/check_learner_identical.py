"""Byte-identical check of the SMAX learner across a refactor.

A fixed tiny training (3m, seed 0, 4 updates in two chunks of 2, 4 envs x 8 steps,
hidden 8, 1 layer, 2 epochs x 2 minibatches, a greedy evaluation at the end) for
each of gae, gpae with reuse 2, coma and dop, through the public Trainer API.
For each variant it keeps

* ``<variant>.csv``: the metrics rows (``logbook.metric_rows``, every column but
  ``wall_s``; the evaluation on the last row), floats written as their repr, so
  equal text means equal bits;
* ``<variant>.json``: every leaf of the final state (path, dtype, shape, sha256 of
  its bytes) and the Trainer's ``data`` spec.

    python benchmarks/check_learner_identical.py --record /tmp/learner_ref   # before the change
    python benchmarks/check_learner_identical.py --check /tmp/learner_ref    # after: exit 1 on the first difference

Keep the reference outside the repository: it belongs to the code it was recorded on.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
from pathlib import Path

from gpae_ref._xla_flags import xla_flags

TINY = dict(scenario="3m", seed=0, num_envs=4, num_steps=8, hidden_size=8, num_layers=1, update_epochs=2,
            num_minibatches=2, eval_envs=4, ent_coef=0.01, total_steps=4 * 4 * 8,
            dop_buffer_rollouts=2, dop_off_batch=3, dop_tb_steps=3)
VARIANTS = {
    "gae": dict(advantage="gae"),
    "gpae_k2": dict(advantage="gpae", reuse=2, total_steps=4 * 4 * 8),
    "coma": dict(advantage="coma"),
    "dop": dict(advantage="dop"),
}
CHUNKS = (2, 2)  # two run_updates calls: the second reuses the first's compiled program


def run_variant(overrides: dict) -> tuple[str, dict]:
    """(CSV text without wall_s, state fingerprint) of one tiny training."""
    import jax
    import numpy as np

    from gpae_ref.learner import LearnerConfig, make_train
    from gpae_ref.learner.logbook import COLUMNS, metric_rows

    config = LearnerConfig(**{**TINY, **overrides})
    trainer = make_train(config)
    state = trainer.init(jax.random.PRNGKey(config.seed))
    rows = []
    for i, n in enumerate(CHUNKS):
        state, metrics = trainer.run_updates(state, n)
        evaluation = trainer.evaluate(state) if i == len(CHUNKS) - 1 else None
        rows += metric_rows(metrics, 0.0, evaluation)
    columns = [c for c in COLUMNS if c != "wall_s"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    leaves = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        a = np.asarray(leaf)
        leaves[jax.tree_util.keystr(path)] = dict(dtype=str(a.dtype), shape=list(a.shape),
                                                  sha256=hashlib.sha256(a.tobytes()).hexdigest())
    return text.getvalue(), {"data": [trainer.data.field, trainer.data.keep], "leaves": leaves}


def first_difference(name: str, ref_csv: str, got_csv: str, ref_state: dict, got_state: dict) -> str | None:
    ref_lines, got_lines = ref_csv.splitlines(), got_csv.splitlines()
    header = ref_lines[0].split(",")
    for i, (a, b) in enumerate(zip(ref_lines, got_lines)):
        if a != b:
            for col, x, y in zip(header, a.split(","), b.split(",")):
                if x != y:
                    return f"{name}: CSV line {i + 1} column {col}: reference {x}, now {y}"
            return f"{name}: CSV line {i + 1} differs: {a!r} vs {b!r}"
    if len(ref_lines) != len(got_lines):
        return f"{name}: CSV has {len(got_lines)} lines, reference {len(ref_lines)}"
    if ref_state["data"] != got_state["data"]:
        return f"{name}: Trainer.data {got_state['data']}, reference {ref_state['data']}"
    ref_leaves, got_leaves = ref_state["leaves"], got_state["leaves"]
    if list(ref_leaves) != list(got_leaves):
        return f"{name}: state leaves differ: {sorted(set(ref_leaves) ^ set(got_leaves))[:5]}"
    for path, ref in ref_leaves.items():
        if got_leaves[path] != ref:
            return f"{name}: state leaf {path}: reference {ref}, now {got_leaves[path]}"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path, metavar="DIR", help="write the reference into DIR")
    mode.add_argument("--check", type=Path, metavar="DIR", help="compare with the reference in DIR")
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="variants to run (default: all)")
    args = parser.parse_args(argv)
    # The CLIs' XLA CPU flags (single-threaded Eigen among them): the programs these runs compare.
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), keep_defaults=False)
    names = args.only or list(VARIANTS)
    if args.record:
        args.record.mkdir(parents=True, exist_ok=True)
    for name in names:
        got_csv, got_state = run_variant(VARIANTS[name])
        if args.record:
            (args.record / f"{name}.csv").write_text(got_csv)
            (args.record / f"{name}.json").write_text(json.dumps(got_state, indent=1))
            print(f"{name}: recorded {len(got_state['leaves'])} state leaves, {got_csv.count(chr(10)) - 1} rows",
                  flush=True)
            continue
        ref_csv = (args.check / f"{name}.csv").read_text()
        ref_state = json.loads((args.check / f"{name}.json").read_text())
        diff = first_difference(name, ref_csv, got_csv, ref_state, got_state)
        if diff:
            print(f"DIFFERENT {diff}", flush=True)
            return 1
        print(f"{name}: identical ({len(got_state['leaves'])} state leaves, {got_csv.count(chr(10)) - 1} rows)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
