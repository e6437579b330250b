"""Pickle-free, checksummed checkpoints of a ``LearnerState`` (safetensors).

The state is a pytree of arrays; each leaf is stored under its ``keystr`` path.
Loading needs a template of the same structure (``jax.eval_shape(trainer.init_fn, key)``),
so nothing but arrays and string metadata is ever read from disk.

Integrity: the metadata holds ``sha256`` over every leaf's name, dtype, size and
bytes (in name order) and over the JSON ``meta``; ``load_checkpoint`` recomputes
it, so a truncated, garbage, foreign or bit-flipped file is refused with a
``CheckpointError`` (a ValueError) instead of a raw parser error or silent
corruption. Files written before the checksum existed (no ``sha256`` key) still
load: their structure is checked, their bytes cannot be.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np

FORMAT = "gpae-ref-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: unreadable, foreign, corrupted or of another structure."""


def _named_leaves(tree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), x) for p, x in leaves], treedef


def _digest(tensors: dict, meta_json: str) -> str:
    """sha256 over (name, dtype, bytes) of each tensor in name order, then the meta JSON.

    Shapes are left out on purpose: safetensors may hand a 0-d array back as shape [1]
    (same bytes); the template check in ``load_checkpoint`` catches real shape changes.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        x = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{x.dtype.str}|{x.size}|".encode())
        h.update(x.tobytes())
    h.update(meta_json.encode())
    return h.hexdigest()


def save_checkpoint(path, state, meta: dict) -> None:
    """Write ``state`` and JSON-able ``meta`` to ``path`` atomically (temp file + fsync + rename)."""
    from safetensors.numpy import save_file

    named, _ = _named_leaves(state)
    tensors = {name: np.ascontiguousarray(np.asarray(jax.device_get(x))) for name, x in named}
    meta_json = json.dumps(meta, sort_keys=True)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "meta": meta_json,
                                           "sha256": _digest(tensors, meta_json)})
    with open(tmp, "rb") as f:  # the rename must not land before the bytes do (power loss)
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path) -> tuple[dict, dict]:
    """Read and verify a checkpoint file -> (tensors by leaf name, meta); ``CheckpointError`` if bad."""
    from safetensors import safe_open

    path = Path(path)
    fix = "delete it (or restore a copy) and start the run again"
    try:
        tensors, header = {}, None
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: no such file.") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad files
        raise CheckpointError(f"checkpoint {path}: not a readable checkpoint (truncated or not a "
                              f"safetensors file: {type(e).__name__}: {e}); {fix}.") from None
    meta_json = header.get("meta")
    if meta_json is None:
        raise CheckpointError(f"checkpoint {path}: not a gpae-ref checkpoint (no 'meta' in its header); {fix}.")
    want = header.get("sha256")
    if want is not None and _digest(tensors, meta_json) != want:
        raise CheckpointError(f"checkpoint {path}: checksum mismatch (the file was changed or damaged "
                              f"after it was written); {fix}.")
    try:
        meta = json.loads(meta_json)
    except ValueError:
        raise CheckpointError(f"checkpoint {path}: its metadata is not JSON; {fix}.") from None
    return tensors, meta


def load_checkpoint(path, template):
    """Read a checkpoint into the structure of ``template`` -> (state, meta).

    Raises ``CheckpointError`` (a ValueError) if the file is unreadable, fails its
    checksum, or a leaf's name, shape or dtype does not match the template.
    """
    tensors, meta = read_checkpoint(path)
    named, treedef = _named_leaves(template)
    leaves = []
    for name, ref in named:
        if name not in tensors:
            raise CheckpointError(f"checkpoint {path}: missing leaf {name} (written by another learner "
                                  f"configuration or version?).")
        x = tensors[name]
        if tuple(ref.shape) == () and tuple(x.shape) == (1,):
            x = x.reshape(())  # safetensors stores a 0-d array as shape [1]
        if tuple(x.shape) != tuple(ref.shape) or x.dtype != np.dtype(ref.dtype):
            raise CheckpointError(f"checkpoint {path}: leaf {name} is {x.dtype}{list(x.shape)}, "
                                  f"expected {np.dtype(ref.dtype)}{list(ref.shape)}.")
        leaves.append(jax.numpy.asarray(x))
    extra = sorted(set(tensors) - {n for n, _ in named})
    if extra:
        raise CheckpointError(f"checkpoint {path}: unexpected leaves {extra[:3]}.")
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
