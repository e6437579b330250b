"""MAPPO-style learner on SMAX with GAE, GPAE or COMA advantages (spec section 8).

Needs the ``smax`` extra (jaxmarl, rich, matplotlib, safetensors). Never imported
by ``gpae_ref`` itself, so the core package stays importable without jax.
"""

from gpae_ref.learner.config import ADVANTAGES, CORRECTIONS, MARGINALISE, LearnerConfig, known_scenarios
from gpae_ref.learner.core import EvalMetrics, LearnerState, Trainer, UpdateMetrics, make_train

__all__ = [
    "ADVANTAGES", "CORRECTIONS", "MARGINALISE", "EvalMetrics", "LearnerConfig", "LearnerState",
    "Trainer", "UpdateMetrics", "known_scenarios", "make_train",
]
