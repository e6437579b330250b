"""Command line: ``python -m gpae_ref verify package.module:function`` and ``python -m gpae_ref demo``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable, Sequence


def load_estimator(spec: str) -> Callable:
    """Import ``package.module:function`` (attribute paths like ``mod:obj.method`` work too), or
    ``path/to/file.py:function`` (the file's folder goes first on ``sys.path``, as running it would).

    Raises ValueError with a one-line message for a malformed spec, a module
    that fails to import (for any reason: the message names the exception), a
    missing attribute or a non-callable object.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"estimator must be given as package.module:function (or path/to/file.py:function); "
                         f"got {spec!r}.")
    if module_name.endswith(".py"):  # a file: imported as `python path/to/file.py` would see it
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"no file {module_name!r} (from {spec!r}): give an existing .py file, or "
                             f"package.module:function for an importable module.")
        sys.path.insert(0, str(path.resolve().parent))
        module_name = path.stem
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # SyntaxError, NameError, ... at import time: still a one-line message
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"cannot import module {module_name!r} (from {spec!r}): {type(exc).__name__}: {first}") from None
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
    v = sub.add_parser("verify", help="check an estimator against the spec's properties (exit 1 on failure)",
                       description="Exit status: 0 all checked cells passed, 1 some failed, 2 bad usage or the "
                                   "estimator could not be loaded.")
    v.add_argument("estimator", help="package.module:function (or path/to/file.py:function) with the signature "
                                     "of gpae_ref.gpae")
    from gpae_ref.verify.options import add_arguments  # one flag per field of VerifyOptions

    add_arguments(v.add_argument)
    v.add_argument("--save", metavar="DIR", help="write report.json and each counterexample (.npz + rerun .py) to DIR")
    v.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    v.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    d = sub.add_parser("demo", help="exact bias and contraction of every trace correction on a random game")
    d.add_argument("--seed", type=int, default=0, help="seed of the game and policies (default 0)")
    return p


def _verify_command(parser: argparse.ArgumentParser, args) -> int:
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # as `python -m` does, so that modules in the current folder can be named
    try:
        estimator = load_estimator(args.estimator)
    except ValueError as exc:
        print(f"gpae_ref verify: {exc}", file=sys.stderr)
        return 2
    from gpae_ref.verify import verify
    from gpae_ref.verify.options import from_namespace

    try:
        report = verify(estimator, **from_namespace(lambda dest: getattr(args, dest)), progress=not args.quiet)
    except ValueError as exc:  # a bad option
        parser.error(str(exc))
    print(report.to_json() if args.json else report)
    if args.save:
        try:
            paths = report.save(args.save)
        except (OSError, ValueError) as exc:
            print(f"gpae_ref verify: cannot save to {args.save!r}: {exc}", file=sys.stderr)
            return 2
        print(f"saved {len(paths)} files to {args.save}", file=sys.stderr)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gpae_ref`` and the ``gpae-ref`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _verify_command(parser, args)
    from gpae_ref.demo import run_demo

    print(run_demo(seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
