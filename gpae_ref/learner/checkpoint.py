"""Pickle-free checkpoints of a ``LearnerState`` (safetensors).

The state is a pytree of arrays; each leaf is stored under its ``keystr`` path.
Loading needs a template of the same structure (``jax.eval_shape(trainer.init_fn, key)``),
so nothing but arrays and string metadata is ever read from disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from safetensors.numpy import load_file, save_file


def _named_leaves(tree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), x) for p, x in leaves], treedef


def save_checkpoint(path, state, meta: dict) -> None:
    """Write ``state`` and JSON-able ``meta`` to ``path`` atomically (temp file + rename)."""
    named, _ = _named_leaves(state)
    tensors = {name: np.ascontiguousarray(np.asarray(jax.device_get(x))) for name, x in named}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path, template):
    """Read a checkpoint into the structure of ``template`` -> (state, meta).

    Raises ValueError naming the leaf if a name, shape or dtype does not match.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    tensors = load_file(str(path))
    named, treedef = _named_leaves(template)
    leaves = []
    for name, ref in named:
        if name not in tensors:
            raise ValueError(f"checkpoint {path}: missing leaf {name}.")
        x = tensors[name]
        if tuple(ref.shape) == () and tuple(x.shape) == (1,):
            x = x.reshape(())  # safetensors stores a 0-d array as shape [1]
        if tuple(x.shape) != tuple(ref.shape) or x.dtype != np.dtype(ref.dtype):
            raise ValueError(f"checkpoint {path}: leaf {name} is {x.dtype}{list(x.shape)}, "
                             f"expected {np.dtype(ref.dtype)}{list(ref.shape)}.")
        leaves.append(jax.numpy.asarray(x))
    extra = sorted(set(tensors) - {n for n, _ in named})
    if extra:
        raise ValueError(f"checkpoint {path}: unexpected leaves {extra[:3]}.")
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
