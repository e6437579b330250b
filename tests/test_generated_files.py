"""Generated damage to saved states: the loaders refuse it or return the state as saved, nothing else.

Hypothesis damages a full checkpoint and a compact resume state of a small tree
(bits flipped anywhere, cut short, bytes inserted, a header key renamed, all
garbage) and loads it against the tree's template. Allowed outcomes: a
``CheckpointError`` (a ValueError naming the file), or a state equal leaf for
leaf to the one saved (a flip in bytes nobody reads, e.g. JSON whitespace).
Never another exception, never a different state. The CI profile runs a bounded
number of examples; ``--hypothesis-profile=nightly`` runs 10,000 per loader.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

jax = pytest.importorskip("jax")
pytest.importorskip("safetensors")

from gpae_ref.learner.checkpoint import (CheckpointError, load_checkpoint, load_compact,  # noqa: E402
                                         save_checkpoint, save_compact)


def _tree():
    rng = np.random.default_rng(0)
    return {"net": {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(4, np.float32)},
            "buffer": {"obs": rng.normal(size=(2, 5, 3)).astype(np.float32),
                       "action": rng.integers(0, 5, size=(2, 5)).astype(np.int32)},
            "update": np.int32(7)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("states")
    tree = _tree()
    save_checkpoint(d / "full.safetensors", tree, {"update": 7, "seeds": None})
    save_compact(d / "compact.xz", tree, {"update": 7, "seeds": None}, data_prefix="['buffer']", keep=1, axis=0)
    template = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)
    return d, tree, template


damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                                        min_size=1, max_size=4)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("insert"), st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=16))),
    st.tuples(st.just("rename"), st.sampled_from([b"sha256", b"meta", b"format", b"dtype", b"shape"])),
    st.tuples(st.just("garbage"), st.binary(max_size=256)),
)


def _damaged(data: bytes, how) -> bytes:
    kind, arg = how
    if kind == "flip":
        b = bytearray(data)
        for where, bit in arg:
            b[int(where * len(b))] ^= 1 << bit
        return bytes(b)
    if kind == "cut":
        return data[: int(arg * len(data))]
    if kind == "insert":
        at = int(arg[0] * len(data))
        return data[:at] + arg[1] + data[at:]
    if kind == "rename":
        return data.replace(b'"' + arg + b'"', b'"' + arg[:-1] + b'X"', 1)
    return arg


def _check(load, path, template, tree):
    try:
        state, _ = load(path, template)
    except CheckpointError as e:
        assert str(path) in str(e)
        return
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(tree)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@given(how=damage)
def test_a_damaged_full_checkpoint_is_refused_or_unchanged(saved, tmp_path_factory, how):
    d, tree, template = saved
    path = d / "damaged-full.safetensors"
    path.write_bytes(_damaged((d / "full.safetensors").read_bytes(), how))
    _check(load_checkpoint, path, template, tree)


@given(how=damage)
def test_a_damaged_compact_state_is_refused_or_unchanged(saved, how):
    d, tree, template = saved
    path = d / "damaged-compact.xz"
    path.write_bytes(_damaged((d / "compact.xz").read_bytes(), how))

    def load(p, t):
        state, meta = load_compact(p, t)
        # the compact state keeps the newest buffer entry; the dropped one comes back as zeros
        state["buffer"] = jax.tree_util.tree_map(lambda x, y: np.concatenate([np.asarray(y)[:1], np.asarray(x)[1:]]),
                                                 state["buffer"], tree["buffer"])
        return state, meta

    _check(load, path, template, tree)
