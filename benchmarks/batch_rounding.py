"""How much a vmapped batch's size alone changes the learner's numbers (docs/learner.md, "Several devices").

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/batch_rounding.py

Tiny learner (3m, 4 envs x 8 steps, hidden 8, 1 layer, 1 epoch), 2 updates: seed 0 trained
alone against seed 0 trained beside seeds 1-3 in one vmapped program (one device), and
the 4 seeds on 4 devices against 1 device. Prints the leaves that differ and the largest
relative difference.
"""

from __future__ import annotations

import jax
import numpy as np

from gpae_ref.experiments import make_vmapped, seed_keys
from gpae_ref.learner.config import LearnerConfig
from gpae_ref.learner.core import make_train
from gpae_ref.learner.devices import leading_axis_shardings, make_mesh, place


def compare(a, b, pick=lambda x: x) -> tuple[int, int, float]:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    differ, worst = 0, 0.0
    for x, y in zip(la, lb):
        x, y = pick(np.asarray(x)), pick(np.asarray(y))
        if not np.array_equal(x, y):
            differ += 1
            if np.issubdtype(x.dtype, np.floating) and x.size:
                worst = max(worst, float(np.nanmax(np.abs(x - y) / (np.abs(y) + 1e-6))))
    return differ, len(la), worst


def main() -> None:
    cfg = LearnerConfig(scenario="3m", num_envs=4, num_steps=8, update_epochs=1, total_steps=128, hidden_size=8,
                        num_layers=1, eval_envs=2)
    init, run, _ = make_vmapped(make_train(cfg))
    four = jax.block_until_ready(init(seed_keys([0, 1, 2, 3])))
    one_dev, _ = run(four, 2)
    alone, _ = run(jax.block_until_ready(init(seed_keys([0]))), 2)
    d, n, w = compare(alone, one_dev, lambda x: x[0])
    print(f"seed 0 alone vs beside 3 others (one device): {d} of {n} leaves differ, largest relative {w:.2g}")
    if len(jax.devices()) >= 4:
        sharded = place(four, leading_axis_shardings(make_mesh(jax.devices()[:4]), four))
        four_dev, _ = run(sharded, 2)
        d, n, w = compare(four_dev, one_dev)
        print(f"4 seeds on 4 devices vs 1 device: {d} of {n} leaves differ, largest relative {w:.2g}")


if __name__ == "__main__":
    main()
