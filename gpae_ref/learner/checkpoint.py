"""Pickle-free, checksummed states of a ``LearnerState``: full checkpoints and compact resume states.

The state is a pytree of arrays; each leaf is stored under its ``keystr`` path
in a safetensors file. Loading needs a template of the same structure
(``jax.eval_shape(trainer.init_fn, key)``), so nothing but arrays and string
metadata is ever read from disk.

Two kinds of file, one format:

- **full** (``save_checkpoint``): every leaf, uncompressed; resuming from it is
  bit-identical to never stopping. Large (the rollout buffer), so it stays out of git.
- **compact** (``save_compact``): the same file with the data buffer cut to the
  rollouts the next update reads again (``keep`` newest entries of the buffer's
  leading axis; the others are dropped by the next update before it reads
  them, so a resume is still bit-identical), the whole file compressed with
  ``lzma``. Small enough to commit (docs/learner.md gives its size and time).

Integrity: the metadata holds ``sha256`` over every stored tensor's name, dtype,
size and bytes (in name order) and over the JSON ``meta``; loading recomputes it,
so a truncated, garbage, foreign or bit-flipped file is refused with a
``CheckpointError`` (a ValueError) naming the file. A file without a checksum is
refused unless the caller asks for it (``allow_unchecked=True``: files written
before checksums existed, whose bytes cannot be verified).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
from pathlib import Path

import jax
import numpy as np

FORMAT = "gpae-ref-checkpoint/1"
COMPACT_FORMAT = "gpae-ref-compact/1"
# lzma preset 1: a 128-env rollout of the authors' 5m_vs_6m setting compresses to 6.9 MB in 4 s; preset 6
# gives 6.4 MB in 28 s, zlib 9.9 MB (benchmarks/compact_state.py --codecs; docs/learner.md).
LZMA_PRESET = 1
FIX = "delete it (or restore a copy) and resume again"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: unreadable, foreign, corrupted or of another structure."""


def named_leaves(tree):
    """([(keystr path, leaf)], treedef) of ``tree``."""
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


def _host_tensors(state) -> dict:
    named, _ = named_leaves(state)
    return {name: np.ascontiguousarray(np.asarray(jax.device_get(x))) for name, x in named}


def _header(tensors: dict, meta: dict, kind: str) -> dict:
    meta_json = json.dumps(meta, sort_keys=True)
    return {"format": kind, "meta": meta_json, "sha256": _digest(tensors, meta_json)}


def _write_atomic(path: Path, data: bytes | None = None, writer=None) -> None:
    """Write ``path`` through a temp file, fsync and rename: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if writer is not None:
            writer(tmp)
        else:
            tmp.write_bytes(data)
        with open(tmp, "rb") as f:  # the rename must not land before the bytes do (power loss)
            os.fsync(f.fileno())
    except BaseException:  # a full disk or Ctrl-C mid-write: no half file left to fill the disk
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def save_checkpoint(path, state, meta: dict) -> None:
    """Write the full ``state`` and JSON-able ``meta`` to ``path`` atomically."""
    from safetensors.numpy import save_file

    tensors = _host_tensors(state)
    header = _header(tensors, meta, FORMAT)
    _write_atomic(Path(path), writer=lambda tmp: save_file(tensors, str(tmp), metadata=header))


# ------------------------------------------------------------------ compact
def compact_tensors(tensors: dict, data_prefix: str, keep: int | None, axis: int) -> dict:
    """The tensors with every leaf under ``data_prefix`` cut to its ``keep`` newest entries along
    ``axis`` (None: kept whole)."""
    if keep is None:
        return dict(tensors)
    return {name: (np.take(x, range(x.shape[axis] - keep, x.shape[axis]), axis=axis)
                   if name.startswith(data_prefix) else x) for name, x in tensors.items()}


def save_compact(path, state, meta: dict, *, data_prefix: str, keep: int | None, axis: int) -> int:
    """Write the compact resume state of ``state`` to ``path`` atomically -> bytes written.

    ``meta`` is stored as given plus ``compact`` (what was cut).
    """
    from safetensors.numpy import save

    tensors = compact_tensors(_host_tensors(state), data_prefix, keep, axis)
    meta = {**meta, "compact": {"data_prefix": data_prefix, "keep": keep, "axis": axis}}
    raw = save(tensors, metadata=_header(tensors, meta, COMPACT_FORMAT))
    data = lzma.compress(raw, preset=LZMA_PRESET)
    _write_atomic(Path(path), data)
    return len(data)


def _safetensors_metadata(raw: bytes) -> dict:
    """The ``__metadata__`` of a safetensors byte string (its 8-byte length, then a JSON header)."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n].decode()).get("__metadata__") or {}


def read_compact(path, *, allow_unchecked: bool = False) -> tuple[dict, dict]:
    """Read and verify a compact state -> (tensors by leaf name, as cut; meta); ``CheckpointError``."""
    from safetensors.numpy import load

    path = Path(path)
    try:
        raw = lzma.decompress(path.read_bytes())
        tensors, header = load(raw), _safetensors_metadata(raw)
    except FileNotFoundError:
        raise CheckpointError(f"compact state {path}: no such file.") from None
    except Exception as e:  # noqa: BLE001 - lzma and safetensors raise their own types for bad bytes
        raise CheckpointError(f"compact state {path}: not a readable compact state (truncated, damaged or "
                              f"another kind of file: {type(e).__name__}: {e}); {FIX}.") from None
    if header.get("format") != COMPACT_FORMAT:
        raise CheckpointError(f"compact state {path}: not a gpae-ref compact state (format "
                              f"{header.get('format')!r}); {FIX}.")
    meta = _verified_meta(path, tensors, header, allow_unchecked, "compact state")
    if not isinstance(meta.get("compact"), dict):
        raise CheckpointError(f"compact state {path}: its metadata does not say what was cut; {FIX}.")
    return tensors, meta


def expand_tensors(tensors: dict, template_named: list, compact: dict) -> dict:
    """Undo ``compact_tensors``: pad each cut leaf with zeros in front (entries the next update drops
    unread) to its template shape."""
    keep, axis, prefix = compact.get("keep"), compact.get("axis", 0), compact.get("data_prefix", "")
    if keep is None:
        return tensors
    out = dict(tensors)
    for name, ref in template_named:
        x = tensors.get(name)
        if x is None or not name.startswith(prefix) or x.shape == tuple(ref.shape):
            continue
        pad = list(x.shape)
        pad[axis] = ref.shape[axis] - x.shape[axis]
        if pad[axis] < 0:
            continue  # the shape check in _fill names it
        out[name] = np.concatenate([np.zeros(pad, x.dtype), x], axis=axis)
    return out


# ------------------------------------------------------------------ reading
def _verified_meta(path: Path, tensors: dict, header: dict, allow_unchecked: bool, what: str) -> dict:
    meta_json = header.get("meta")
    if meta_json is None:
        raise CheckpointError(f"{what} {path}: not a gpae-ref {what} (no 'meta' in its header); {FIX}.")
    want = header.get("sha256")
    if want is None and not allow_unchecked:
        raise CheckpointError(f"{what} {path}: has no checksum, so damage cannot be detected; if it is a "
                              f"trusted file from before checksums existed, load it with allow_unchecked=True "
                              f"(train: --allow-unchecked-checkpoint), else {FIX}.")
    if want is not None and _digest(tensors, meta_json) != want:
        raise CheckpointError(f"{what} {path}: checksum mismatch (the file was changed or damaged "
                              f"after it was written); {FIX}.")
    try:
        meta = json.loads(meta_json)
    except ValueError:
        raise CheckpointError(f"{what} {path}: its metadata is not JSON; {FIX}.") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{what} {path}: its metadata is not a JSON object; {FIX}.")
    return meta


def read_checkpoint(path, *, allow_unchecked: bool = False) -> tuple[dict, dict]:
    """Read and verify a full checkpoint -> (tensors by leaf name, meta); ``CheckpointError`` if bad."""
    from safetensors import safe_open

    path = Path(path)
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
                              f"safetensors file: {type(e).__name__}: {e}); {FIX}.") from None
    return tensors, _verified_meta(path, tensors, header, allow_unchecked, "checkpoint")


def _fill(path, tensors: dict, named: list, treedef):
    """The tree of ``treedef`` from ``tensors``, each leaf checked against the template's."""
    how = ("it was written by another learner configuration or version: resume it with the settings "
           "it was written with (its run.json), or start a new run")
    leaves = []
    for name, ref in named:
        if name not in tensors:
            raise CheckpointError(f"checkpoint {path}: missing leaf {name}; {how}.")
        x = tensors[name]
        if tuple(ref.shape) == () and tuple(x.shape) == (1,):
            x = x.reshape(())  # safetensors stores a 0-d array as shape [1]
        if tuple(x.shape) != tuple(ref.shape) or x.dtype != np.dtype(ref.dtype):
            raise CheckpointError(f"checkpoint {path}: leaf {name} is {x.dtype}{list(x.shape)}, "
                                  f"expected {np.dtype(ref.dtype)}{list(ref.shape)}; {how}.")
        leaves.append(jax.numpy.asarray(x))
    extra = sorted(set(tensors) - {n for n, _ in named})
    if extra:
        raise CheckpointError(f"checkpoint {path}: unexpected leaves {extra[:3]}; {how}.")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def load_checkpoint(path, template, *, allow_unchecked: bool = False):
    """Read a full checkpoint into the structure of ``template`` -> (state, meta).

    Raises ``CheckpointError`` (a ValueError) if the file is unreadable, has no or a wrong
    checksum, or a leaf's name, shape or dtype does not match the template.
    """
    tensors, meta = read_checkpoint(path, allow_unchecked=allow_unchecked)
    named, treedef = named_leaves(template)
    return _fill(path, tensors, named, treedef), meta


def load_compact(path, template, *, allow_unchecked: bool = False):
    """Read a compact resume state into the structure of ``template`` -> (state, meta)."""
    tensors, meta = read_compact(path, allow_unchecked=allow_unchecked)
    named, treedef = named_leaves(template)
    return _fill(path, expand_tensors(tensors, named, meta.get("compact", {})), named, treedef), meta
