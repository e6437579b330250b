"""Command line: ``python -m gpae_ref verify package.module:function`` and ``python -m gpae_ref demo``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence


def load_estimator(spec: str) -> Callable:
    """Import ``package.module:function`` (attribute paths like ``mod:obj.method`` work too).

    Raises ValueError with a readable message for a malformed spec, a module
    that cannot be imported, a missing attribute or a non-callable object.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"estimator must be given as package.module:function; got {spec!r}.")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} (from {spec!r}): {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r}).") from None
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable (it is a {type(obj).__name__}).")
    return obj


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpae_ref", description="GPAE reference: verify an estimator, or run the oracle demo.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check an estimator against the spec's properties (exit 1 on failure)")
    v.add_argument("estimator", help="package.module:function with the signature of gpae_ref.gpae")
    v.add_argument("--seed", type=int, default=0, help="seed of every game, policy and input (default 0)")
    v.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (default 1e-9; 1e-4 for float32)")
    v.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance (default 1e-9; 1e-4 for float32)")
    d = sub.add_parser("demo", help="exact bias and contraction of every trace correction on a random game")
    d.add_argument("--seed", type=int, default=0, help="seed of the game and policies (default 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gpae_ref`` and the ``gpae-ref`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "verify":
        try:
            estimator = load_estimator(args.estimator)
        except ValueError as exc:
            parser.error(str(exc))  # exits with status 2 and a usage line
        from gpae_ref.verify import verify

        report = verify(estimator, seed=args.seed, atol=args.atol, rtol=args.rtol)
        print(report)
        return 0 if report.ok else 1
    from gpae_ref.demo import run_demo

    print(run_demo(seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
