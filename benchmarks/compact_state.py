"""Size and write time of the compact resume state against the full checkpoint (docs/learner.md).

    python benchmarks/compact_state.py --checkpoint results/hard-authors/mappo/ckpt/state-s0.safetensors
    python benchmarks/compact_state.py --build gpae:2 --scenario 5m_vs_6m --updates 1
    python benchmarks/compact_state.py --checkpoint PATH --codecs   # the buffer through zlib / lzma presets

``--checkpoint`` measures an existing full checkpoint of a run folder (its config in
the metadata says K); ``--build ADVANTAGE:K`` trains a fresh learner at the authors'
settings (LearnerConfig defaults) for ``--updates`` updates and measures its state.
Each row: the full checkpoint (raw bytes), the compact state as written (the newest
K-1 rollouts kept: exact), and the alternative that keeps no rollout (K=2 would refill
it with one extra rollout on resume: not exact), with write times on this machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def measure(tensors: dict, meta: dict, keep: int, axis: int) -> dict:
    import lzma

    from safetensors.numpy import save

    from gpae_ref.learner.checkpoint import LZMA_PRESET, compact_tensors

    out = {"full_mb": sum(x.nbytes for x in tensors.values()) / 1e6}
    for label, k in (("compact", keep), ("no_rollout", 0)):
        t0 = time.perf_counter()
        cut = compact_tensors(tensors, ".buffer", k, axis)
        data = lzma.compress(save(cut, metadata={"meta": json.dumps(meta)}), preset=LZMA_PRESET)
        out[f"{label}_mb"] = len(data) / 1e6
        out[f"{label}_s"] = time.perf_counter() - t0
    return out


def from_checkpoint(path: Path) -> tuple[dict, dict]:
    from gpae_ref.learner.checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(path)
    return tensors, meta


def build(advantage: str, reuse: int, scenario: str, updates: int) -> tuple[dict, dict]:
    import jax

    from gpae_ref.learner.checkpoint import save_checkpoint, read_checkpoint
    from gpae_ref.learner.config import LearnerConfig
    from gpae_ref.learner.core import make_train

    config = LearnerConfig(scenario=scenario, advantage=advantage, reuse=reuse)
    trainer = make_train(config)
    state, _ = trainer.run_updates(trainer.init(jax.random.PRNGKey(0)), updates)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "state.safetensors"
        save_checkpoint(path, jax.block_until_ready(state), {"config": config.to_dict(), "seeds": None})
        return read_checkpoint(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="a full checkpoint (ckpt/state*.safetensors) to measure")
    p.add_argument("--build", help="ADVANTAGE:K, e.g. gpae:2: train a fresh learner at the authors' settings")
    p.add_argument("--scenario", default="5m_vs_6m")
    p.add_argument("--updates", type=int, default=1)
    p.add_argument("--codecs", action="store_true",
                   help="also compress the buffer's raw bytes with zlib 6, lzma 1 and lzma 6 (size, time)")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.build is None):
        p.error("give one of --checkpoint PATH or --build ADVANTAGE:K")
    if args.checkpoint:
        tensors, meta = from_checkpoint(args.checkpoint)
    else:
        advantage, _, k = args.build.partition(":")
        tensors, meta = build(advantage, int(k or 1), args.scenario, args.updates)
    config = meta.get("config") or {}
    reuse = int(config.get("reuse", 1))
    axis = 0 if meta.get("seeds") is None else 1
    row = measure(tensors, meta, reuse - 1, axis)
    print(f"| {config.get('scenario')} | {config.get('advantage')} | {reuse} | {row['full_mb']:.1f} | "
          f"{row['compact_mb']:.2f} ({row['compact_s']:.1f} s) | {row['no_rollout_mb']:.2f} ({row['no_rollout_s']:.1f} s) |")
    if args.codecs:
        codecs_table(tensors)
    return 0


def codecs_table(tensors: dict) -> None:
    """The buffer's raw bytes through each codec: why the compact state uses lzma preset 1."""
    import lzma
    import zlib

    import numpy as np

    raw = b"".join(np.ascontiguousarray(x).tobytes() for k, x in sorted(tensors.items()) if k.startswith(".buffer"))
    for name, compress in (("zlib 6", lambda b: zlib.compress(b, 6)), ("lzma 1", lambda b: lzma.compress(b, preset=1)),
                           ("lzma 6", lambda b: lzma.compress(b, preset=6))):
        t0 = time.perf_counter()
        size = len(compress(raw))
        print(f"buffer {len(raw) / 1e6:.1f} MB, {name}: {size / 1e6:.2f} MB in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
