"""Named learner settings and the command-line flags of ``LearnerConfig`` (jax-free).

One meaning for each named setting, used by ``python -m gpae_ref.train --settings``
and by the experiment runner's scales:

- ``authors``: the authors' SMAX yaml (kim-seongmin/GPAE ``config/rnn_smax.yaml``), which
  is ``LearnerConfig``'s defaults: GRU 128, 2 layers, 128 envs x 128 steps, 5 epochs, ...
- ``cpu``: the CPU-sized learner of this project's local experiments: the authors' network
  depth and epochs, 32 envs x 64 steps and width 64, so a 2-core machine gets many updates
  into ~1e6 env steps (8x the updates per env step of ``authors``).
- ``jaxmarl``: JaxMARL's own MAPPO on SMAX (FLAIROx/JaxMARL ``baselines/MAPPO/config/
  mappo_homogenous_rnn_smax.yaml``): GAE with a state-value critic, LR 0.002 annealed,
  128 envs x 128 steps, 4 epochs x 4 minibatches, grad norm 0.25, one dense layer before
  and one after the GRU (width 128), no LayerNorm. Differences that remain: its
  minibatches split the agents of one env apart (here an env's agents stay together),
  and it initialises orthogonally (here flax's defaults); docs/results.md (side by side).

Every ``LearnerConfig`` field is a flag ``--field-name`` whose help is the field's doc
line (read from the class source), so any run of an experiment is one ``train`` command
(``train_argv``). Importing this module imports neither jax nor jaxmarl.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import textwrap

from gpae_ref.learner.config import ADVANTAGES, CORRECTIONS, MARGINALISE, LearnerConfig, check_field, field_range

SETTINGS: dict[str, tuple[tuple[str, object], ...]] = {
    "authors": (),
    "cpu": (("num_envs", 32), ("num_steps", 64), ("hidden_size", 64), ("eval_envs", 64)),
    "jaxmarl": (("advantage", "gae"), ("lr", 0.002), ("update_epochs", 4), ("num_minibatches", 4),
                ("max_grad_norm", 0.25), ("num_layers", 1), ("head_layers", 1), ("layer_norm", False),
                ("norm_input", False)),
}
SETTINGS_HELP = {
    "authors": "the authors' SMAX yaml (LearnerConfig defaults: GRU 128, 128 envs x 128 steps, 5 epochs)",
    "cpu": "the CPU-sized learner (32 envs x 64 steps, width 64; the local experiments)",
    "jaxmarl": "JaxMARL's MAPPO SMAX yaml (GAE, V critic, LR 0.002, 4 epochs x 4 minibatches, grad norm 0.25, "
               "Dense-GRU-Dense, no LayerNorm)",
}
CHOICES = {"advantage": ADVANTAGES, "correction": CORRECTIONS, "marginalise": MARGINALISE}
ALIASES = {"update_epochs": ("--epochs",)}


def settings_overrides(name: str) -> dict:
    """``LearnerConfig`` overrides of the named setting; ValueError naming ``settings`` if unknown."""
    if name not in SETTINGS:
        raise ValueError(f"settings: unknown {name!r}; known: {', '.join(SETTINGS)}.")
    return dict(SETTINGS[name])


def field_docs(cls=LearnerConfig) -> dict[str, str]:
    """Each dataclass field's doc line: the string literal right after its annotation in the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                and isinstance(nxt.value.value, str):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def finite_float(text: str) -> float:
    """argparse type: a finite float (``inf`` and ``nan`` are refused, naming the flag)."""
    x = float(text)
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return x


def _type_of(f: dataclasses.Field):
    """The argparse type of a field annotated int, float, str or bool (``X | None``: X)."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    names = [p.strip() for p in t.split("|") if p.strip() != "None"]
    table = {"int": int, "float": finite_float, "str": str, "bool": bool}
    if len(names) != 1 or names[0] not in table:
        raise TypeError(f"LearnerConfig.{f.name}: annotation {t!r} has no command-line type; "
                        f"use int, float, str or bool (or add it to settings._type_of).")
    return table[names[0]]


def in_range(f: dataclasses.Field, typ):
    """argparse type: ``typ`` of the text, then the field's range (``LearnerConfig``'s metadata)."""
    def convert(text: str):
        value = typ(text)
        try:
            check_field(f.name, value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None
        return value

    convert.__name__ = typ.__name__  # argparse names the type in "invalid <type> value"
    return convert


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``LearnerConfig`` field (default None: unset keeps the settings' value);
    a numeric flag's help gives its range and a value outside it is refused, naming the flag."""
    docs = field_docs()
    group = parser.add_argument_group("learner settings (LearnerConfig fields; default: --settings, then "
                                      "the dataclass)")
    for f in dataclasses.fields(LearnerConfig):
        typ = _type_of(f)
        accepted = f"; range {field_range(f)}" if field_range(f) is not None else ""
        help_ = f"{docs.get(f.name, '')} (default {f.default!r}{accepted})".replace("%", "%%")
        if field_range(f) is not None:
            typ = in_range(f, typ)
        names = (flag(f.name),) + ALIASES.get(f.name, ())
        if typ is bool:
            group.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            group.add_argument(*names, dest=f.name, type=typ, default=None, choices=CHOICES.get(f.name),
                               metavar=None if f.name in CHOICES else f.name.upper(), help=help_)


def config_fields(args: argparse.Namespace, settings: str | None = None, preset: dict | None = None) -> dict:
    """Fields for ``LearnerConfig``: the named setting, then ``preset``, then every flag given."""
    fields = settings_overrides(settings) if settings else {}
    fields.update(preset or {})
    fields.update({f.name: getattr(args, f.name) for f in dataclasses.fields(LearnerConfig)
                   if getattr(args, f.name, None) is not None})
    return fields


def given_config_flags(args: argparse.Namespace) -> list[str]:
    """The ``LearnerConfig`` flags set on the command line."""
    return [flag(f.name) for f in dataclasses.fields(LearnerConfig) if getattr(args, f.name, None) is not None]


def train_argv(config: LearnerConfig) -> list[str]:
    """``train`` flags that rebuild ``config`` exactly: every field that differs from the default."""
    out = []
    for f in dataclasses.fields(LearnerConfig):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        if isinstance(value, bool):
            out.append(flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
        else:
            out += [flag(f.name), repr(value) if isinstance(value, float) else str(value)]
    return out
