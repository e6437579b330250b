"""MAPPO-style learner on SMAX with GAE, GPAE or COMA advantages (spec section 8).

Needs the ``smax`` extra (jaxmarl, rich, matplotlib, safetensors). Never imported
by ``gpae_ref`` itself, so the core package stays importable without jax. The
names below load on first use (PEP 562), so ``gpae_ref.learner.config`` and
``gpae_ref.learner.settings`` (the CLI's flags, ``train --help``) import without jax.
"""

from importlib import import_module

_EXPORTS = {
    "ADVANTAGES": "config", "CORRECTIONS": "config", "MARGINALISE": "config", "LearnerConfig": "config",
    "known_scenarios": "config", "EvalMetrics": "types", "LearnerState": "mappo", "Trainer": "types",
    "UpdateMetrics": "types", "make_train": "core",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"gpae_ref.learner.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'gpae_ref.learner' has no attribute {name!r}")
