"""Env steps per second of full learner updates: gae vs gpae (K=1, K=4) vs coma, one process.

    python benchmarks/bench_learner.py                       # 3m and 2s3z, defaults (128 envs x 128 steps)
    python benchmarks/bench_learner.py --scenarios 3m --updates 2 --repeats 3

For each variant: build, init, one warm-up call of ``run_updates(state, n)``
(compilation), then ``repeats`` timed calls; the median time gives env steps/s
(new env steps per update = T * num_envs / K; with K = 4 an update also trains on
3 older rollouts, so its batch is as large as K = 1's). Variants are interleaved
round-robin so that load from other processes hits all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

VARIANTS = {
    "gae": dict(advantage="gae"),
    "gpae K=1": dict(advantage="gpae", reuse=1),
    "gpae K=4": dict(advantage="gpae", reuse=4),
    "coma": dict(advantage="coma"),
    "dop": dict(advantage="dop"),
}


@contextlib.contextmanager
def estimator_swapped(gpae_jax):
    """The learner's ``gpae_jax`` replaced by another version while a variant is built (None: as is)."""
    from gpae_ref.learner import mappo as core  # the module that calls gpae_jax

    kept = core.gpae_jax
    core.gpae_jax = gpae_jax or kept
    try:
        yield
    finally:
        core.gpae_jax = kept


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", nargs="+", default=["3m", "2s3z"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--updates", type=int, default=2, help="updates per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant (median)")
    p.add_argument("--num-envs", type=int, default=128)
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--jax-against", metavar="REV",
                   help="also time 'gpae K=1' with gpae_ref/jax_backend.py's gpae_jax at this git revision")
    args = p.parse_args(argv)

    import jax

    from gpae_ref.learner import LearnerConfig, make_train

    print(f"device {jax.devices()[0]}; {args.num_envs} envs x {args.num_steps} steps, 5 epochs, "
          f"{args.updates} updates per call, median of {args.repeats}")
    variants = {name: (VARIANTS[name], None) for name in args.variants}
    if args.jax_against:
        from _at_revision import module_at

        before = module_at(args.jax_against, "gpae_ref/jax_backend.py", "jax_backend_at_rev").gpae_jax
        variants[f"gpae K=1 at {args.jax_against}"] = (VARIANTS["gpae K=1"], before)
    for scenario in args.scenarios:
        runs = {}
        for name, (overrides, estimator) in variants.items():
            cfg = LearnerConfig(scenario=scenario, num_envs=args.num_envs, num_steps=args.num_steps,
                                total_steps=10_000_000, **overrides)
            with estimator_swapped(estimator):  # the update is traced in its first call
                tr = make_train(cfg)
                state = tr.init(jax.random.PRNGKey(0))
                t0 = time.perf_counter()
                state, _ = tr.run_updates(state, args.updates)
                jax.block_until_ready(state)
            runs[name] = [tr, state, cfg, [], time.perf_counter() - t0]
        for _ in range(args.repeats):
            for name, run in runs.items():
                tr, state, cfg, times, _ = run
                t0 = time.perf_counter()
                state, _ = tr.run_updates(state, args.updates)
                jax.block_until_ready(state)
                times.append(time.perf_counter() - t0)
                run[1] = state
        # wall time per update relative to gae's (same training batch for every variant)
        base = statistics.median(runs["gae"][3]) / args.updates if "gae" in runs else None
        print(f"\n{scenario}: {'variant':22s} {'env steps/s':>12s} {'s/update':>9s} {'s/update vs gae':>16s} "
              f"{'first call (compile) s':>23s}")
        for name, (tr, state, cfg, times, first) in runs.items():
            med = statistics.median(times) / args.updates
            sps = cfg.steps_per_update / med
            rel = f"{med / base - 1:+.1%}" if base else ""
            print(f"{scenario}: {name:22s} {sps:12,.0f} {med:9.2f} {rel:>16s} {first:23.1f}")


if __name__ == "__main__":
    main()
