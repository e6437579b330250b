"""Saving a counterexample as ``.npz`` (no pickle) plus a Python snippet that reruns it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from gpae_ref.verify.sources import is_library

_SNIPPET = '''"""Rerun verify's counterexample: [{check} / {correction}] {title}

{description}
Run from any folder: python {stem}.py (with the path to this file)
"""
from pathlib import Path

import numpy as np

{import_line}

data = np.load(Path(__file__).resolve().parent / "{stem}.npz")  # arrays only, no pickle
NAMES = ("rewards", "values", "dones", "logp_target", "logp_behaviour")
CALLS = {calls!r}  # the options of each call
atol, rtol = {atol!r}, {rtol!r}
LAYOUT = {layout!r}  # the axis order of the estimator's arrays (the saved ones are in "TBN" order)


def to_layout(x):
    canon = "TBN"[: x.ndim]
    return np.transpose(x, [canon.index(c) for c in LAYOUT if c in canon])


def from_layout(y):
    order = "".join(c for c in LAYOUT if c in "TBN"[: y.ndim])
    return np.transpose(y, [order.index(c) for c in "TBN"[: y.ndim]])


def call(j):
    args = [to_layout(data[f"call{{j}}_{{name}}"]) for name in NAMES]
    kwargs = dict(CALLS[j])
    if f"call{{j}}_mask" in data.files:
        kwargs["mask"] = to_layout(data[f"call{{j}}_mask"])
    out = estimator(*args, **kwargs)
    if hasattr(out, "shape"):  # the advantages alone (value_targets='none')
        out = (out, out)
    return [from_layout(np.asarray(o, np.float64)){expand} for o in out]


what = {what}  # 0 = advantages, 1 = value_targets
outputs = [call(j) for j in range(len(CALLS))]
{relation_code}
err = np.abs(got - expected)
print("expected:", expected.ravel()[:12])
print("got:     ", got.ravel()[:12])
print("max |error|:", float(err.max()), "at", [int(i) for i in np.unravel_index(np.argmax(err), err.shape)])
print("passes" if np.allclose(got, expected, atol=atol, rtol=rtol) else "FAILS", "at atol", atol, "rtol", rtol)
'''

_RELATIONS = {
    "direct": "got, expected = outputs[0][what], data[\"expected\"]",
    "expectation": (
        "# E[. | s_0, a_0]: row 0 of each enumerated trajectory, weighted by its probability given its start\n"
        "S, A = int(data[\"n_states\"]), int(data[\"n_joint\"])\n"
        "col = outputs[0][what][0]\n"
        "got = np.zeros((S * A,) + col.shape[1:])\n"
        "np.add.at(got, data[\"start\"], data[\"weight\"].reshape((-1,) + (1,) * (col.ndim - 1)) * col)\n"
        "got = got.reshape((S, A) + col.shape[1:])\n"
        "expected = data[\"expected\"]"
    ),
    "permute": "got, expected = outputs[0][what], outputs[1][what][..., data[\"perm\"]]",
    "scale": "got, expected = outputs[0][what], float(data[\"scale\"]) * outputs[1][what]",
    "concat_columns": "got, expected = outputs[0][what], np.concatenate([o[what] for o in outputs[1:]], axis=1)",
    "concat_time": "got, expected = outputs[0][what], np.concatenate([o[what] for o in outputs[1:]], axis=0)",
}


def _import_root(module: str) -> str | None:
    """The sys.path folder ``module`` was imported from, unless it is an installed library's."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not os.path.isfile(spec.origin) or is_library(spec.origin):
        return None
    depth = module.count(".") + (2 if os.path.basename(spec.origin) == "__init__.py" else 1)
    return str(Path(spec.origin).resolve().parents[depth - 1])


def _import_line(label: str) -> str:
    module, _, name = label.partition(":")
    if module and name and "<" not in name and module not in ("?", "__main__"):
        head, _, rest = name.partition(".")
        line = (f"from {module} import {head}\nestimator = {head}.{rest}" if rest
                else f"from {module} import {head} as estimator")
        try:
            root = _import_root(module)
        except (ImportError, ValueError):  # a module that cannot be found again: import it as named
            root = None
        if root is not None:  # a module of the user's own folder: found from wherever this runs
            line = (f"import sys\n\nsys.path.insert(0, {root!r})  # where verify imported {module} from\n"
                    + line)
        return line
    return f"estimator = ...  # the estimator verify checked ({label}): import or define it here"


def save_counterexample(x: Any, folder: Path, stem: str, label: str, agents: int | None,
                        layout: str) -> list[Path]:
    """Write ``<stem>.npz`` and ``<stem>.py`` for ``x`` (a ``gpae_ref.verify.report.Counterexample``:
    that module imports this one, so the type is named here, not imported); return both paths."""
    arrays: dict[str, np.ndarray] = {}
    for j, (inputs, _opts) in enumerate(x.calls):
        for k, v in inputs.items():
            arrays[f"call{j}_{k}"] = np.asarray(v)
    if x.expected is not None and x.relation in ("direct", "expectation"):
        arrays["expected"] = np.asarray(x.expected, np.float64)
    if x.got is not None:
        arrays["got_in_verify"] = np.asarray(x.got, np.float64)
    for k in ("weight", "start", "n_states", "n_joint", "perm", "scale"):
        if k in x.extra:
            arrays[k] = np.asarray(x.extra[k])
    for k, v in x.extra.get("game", {}).items():
        arrays[f"game_{k}"] = np.asarray(v)
    npz = folder / f"{stem}.npz"
    np.savez(npz, **arrays)
    py = folder / f"{stem}.py"
    expand = "[..., None]" if agents == 1 else ""
    calls = [{k: (float(v) if isinstance(v, float) else v) for k, v in opts.items()} for _, opts in x.calls]
    py.write_text(_SNIPPET.format(
        check=x.check, correction=x.correction, title=x.title,
        description=x.description.replace('"""', "'''"), stem=stem, import_line=_import_line(label),
        calls=calls, atol=x.tolerance[0], rtol=x.tolerance[1], layout=layout, expand=expand, what=x.what, relation_code=_RELATIONS[x.relation],
    ))
    return [npz, py]
