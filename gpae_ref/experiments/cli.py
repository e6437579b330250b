"""``python -m gpae_ref.experiments``: list, run (or resume, or skip) and report experiments."""

from __future__ import annotations

import argparse
import os
import sys

from gpae_ref._xla_flags import SAFE_CPU_FLAGS, xla_flags
from gpae_ref.experiments.definitions import SCALES, Experiment, experiments
from gpae_ref.experiments.report import report
from gpae_ref.experiments.runner import run_experiment
from gpae_ref.learner.runloop import add_time_limit_flag, deadline

DESCRIPTION = "Named, versioned SMAX experiments: S seeds as one vmapped program, resumable, one CSV per seed."

def describe(exp: Experiment) -> str:
    """One paragraph per experiment for ``--list``."""
    out = [f"{exp.name} (v{exp.version}): {exp.question}"]
    for sname, sc in exp.scales:
        out.append(f"  --scale {sname}: {sc.total_steps:,} steps, seeds {list(sc.seeds)}"
                   + (f", {dict(sc.base)}" if sc.base else ""))
    base = f" base {dict(exp.base)}" if exp.base else ""
    out.append(f"  variants{base}: " + "; ".join(f"{v.name} {dict(v.overrides)}" for v in exp.variants))
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpae_ref.experiments", description=DESCRIPTION)
    p.add_argument("name", nargs="?", help="experiment name, or 'report'")
    p.add_argument("--scale", default="local", help=f"one of {', '.join(SCALES)} (default local)")
    p.add_argument("--list", action="store_true", help="list experiments and exit")
    p.add_argument("--variants", help="comma-separated subset of the experiment's variants")
    p.add_argument("--root", default="results", help="results folder (default results)")
    p.add_argument("--doc", default="docs/results.md", help="report: the document to update")
    p.add_argument("--figures", default="docs/figures", help="report: figure folder")
    p.add_argument("--max-chunks", type=int, default=None, help="stop each variant after this many chunks")
    p.add_argument("--restart", action="store_true",
                   help="train from update 0 a variant whose CSV rows have no checkpoint here (replaces the rows)")
    p.add_argument("--seeds", help="comma-separated subset of the scale's seeds to train now (default: all)")
    p.add_argument("--devices", type=int, default=None,
                   help="split the seeds over this many devices (default: as many visible devices as divide "
                        "the seed count)")
    add_time_limit_flag(p)
    p.add_argument("--xla-defaults", action="store_true",
                   help="do not add " + " ".join(SAFE_CPU_FLAGS) + " to XLA_FLAGS (see docs/results.md)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stop_by = deadline(args.time_limit)  # counted from here: loading and compiling use the time too
    # Read by XLA when jax creates its CPU client (first use, after this line); CLI only, never at import.
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), args.xla_defaults)
    if args.max_chunks is not None and args.max_chunks < 1:
        parser.error(f"--max-chunks must be >= 1 (got {args.max_chunks}); leave it out to run to the end")
    if args.list or not args.name:
        print("\n\n".join(describe(e) for e in experiments().values()))
        return 0
    try:
        if args.scale not in SCALES:
            raise ValueError(f"scale: unknown {args.scale!r}; known: {', '.join(SCALES)}.")
        if args.name == "report":
            path = report(args.root, args.doc, args.figures, args.scale)
            print(f"updated {path}")
            return 0
        seeds = None if args.seeds is None else [int(x) for x in args.seeds.split(",") if x.strip()]
        outcomes = run_experiment(args.name, args.scale, args.root, variants=args.variants,
                                  max_chunks=args.max_chunks, seeds=seeds, restart=args.restart,
                                  devices=args.devices, deadline=stop_by,
                                  log=lambda m: print(m, flush=True))
    except ValueError as e:
        parser.error(str(e))
    for o in outcomes:
        print(f"{o.variant}: {o.status} ({o.updates}/{o.num_updates} updates, {o.wall_s:,.0f} s)")
    # 130 (128 + SIGINT), as train: a script or make that runs the next command on success must not
    # start it after a Ctrl-C.
    if any(o.interrupted for o in outcomes):
        print("Ctrl-C: stopped after a chunk, state saved; the same command resumes.", flush=True)
        return 130
    if any(o.out_of_time for o in outcomes):
        print(f"--time-limit {args.time_limit:g}: stopped after a chunk, state saved; the same command resumes.",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
