"""``make_train(config)``: the learner of a configuration, built by its family.

The learner is pure functions built from scans (purejaxrl style): ``make_train``
returns a ``Trainer`` whose functions take and return a state that is a pytree
of arrays only, so a whole run vmaps over seeds and runs in resumable chunks::

    trainer = make_train(config)
    state = trainer.init(jax.random.PRNGKey(0))            # jitted
    state, metrics = trainer.run_updates(state, 10)        # jitted lax.scan over 10 updates
    ev = trainer.evaluate(state)                           # greedy win rate, separate envs

Families (arrows point down, no family imports another)::

    core      make_train: dispatch on ``advantage``
    mappo     gae, gpae, coma: MAPPO-style PPO on the buffer of the last K rollouts
    dop       dop: decomposed critic, replay buffer, TB(lambda) / TD(lambda) targets
    parts     rollout, greedy evaluation, log-probs, optimiser, clipped surrogate, minibatches, Trainer tail
    types     NetState, UpdateMetrics, EvalMetrics, Trainer
"""

from __future__ import annotations

from gpae_ref.learner.config import LearnerConfig, check_scenario
from gpae_ref.learner.dop import make_dop_train
from gpae_ref.learner.mappo import make_mappo_train
from gpae_ref.learner.types import Trainer


def make_train(config: LearnerConfig) -> Trainer:
    """The Trainer of ``config``: DOP's (its own state: replay buffer, mixer, target critic) for
    ``advantage="dop"``, the MAPPO-style learner's otherwise."""
    check_scenario(config)
    if config.advantage == "dop":
        return make_dop_train(config)
    return make_mappo_train(config)
