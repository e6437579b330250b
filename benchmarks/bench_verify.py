"""How long a full verify takes, per estimator, side by side in one process; and 20 verifies in a row.

    python benchmarks/bench_verify.py [--repeats 3] [--in-a-row 20] [--against REV] [--write docs/performance.md]

Estimators: the NumPy reference, the Numba backend (float64), and a jitted
float64 JAX estimator (``jax.jit`` of the project's scan, ``correction``
static; the first verify of a fresh jit compiles its programs, a repeat reuses
them). Then ``--in-a-row`` verifies of a *fresh* jitted function each (the
worst case: nothing is reused), recording RSS and the number of memory maps,
once without and once with ``jax.clear_caches()`` between them. Medians of
``--repeats`` runs. With ``--write`` the table replaces the block between the
``verify-bench`` markers in the given markdown file. ``--against REV`` also
times the single-file ``gpae_ref/verify.py`` of git revision REV (the verify
before stacking, e.g. ``ee52ca2``) on the NumPy and Numba estimators, side by
side in the same loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

import gpae_ref
from gpae_ref.reference import gpae as reference_gpae
from gpae_ref.verify import verify

START, END = "<!-- verify-bench start -->", "<!-- verify-bench end -->"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def n_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def fresh_jax_estimator():
    """A new jitted function each call: what a user gets from ``jax.jit`` inside a loop or a fixture."""
    import jax

    from gpae_ref.jax_backend import gpae_jax

    def estimator(rewards, values, dones, logp_target, logp_behaviour, *, gamma, lam, correction, eta, mask=None):
        return gpae_jax(rewards, values, dones, logp_target, logp_behaviour, gamma=gamma, lam=lam,
                        correction=correction, eta=eta, mask=mask)

    return jax.jit(estimator, static_argnames=("correction",))


def verify_at(rev: str):
    """``verify`` of an older single-file ``gpae_ref/verify.py`` at git revision ``rev``."""
    from _at_revision import module_at

    return module_at(rev, "gpae_ref/verify.py", "verify_at_rev").verify


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--in-a-row", type=int, default=20)
    p.add_argument("--write", type=Path, default=None)
    p.add_argument("--against", default=None, metavar="REV", help="also time gpae_ref/verify.py at this git revision")
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)  # float64: verify's default tolerance
    numba = partial(gpae_ref.gpae, backend="numba")
    numba(np.zeros((2, 1)), np.zeros((3, 1, 1)), np.zeros((2, 1)), np.zeros((2, 1, 1)), np.zeros((2, 1, 1)),
          gamma=0.9, lam=0.9)  # compile the kernel outside the timings

    rows = []
    times = {"numpy": [], "numba": [], "jax first": [], "jax repeat": []}
    calls = {}
    old = verify_at(args.against) if args.against else None
    if old is not None:
        times.update({f"numpy, verify at {args.against}": [], f"numba, verify at {args.against}": []})
    for _ in range(args.repeats):
        if old is not None:
            for name, est in (("numpy", reference_gpae), ("numba", numba)):
                counter = []

                def counting(*a, est=est, **k):
                    counter.append(1)
                    return est(*a, **k)

                t, r = timed(lambda: old(counting))
                assert r.ok
                times[f"{name}, verify at {args.against}"].append(t)
                calls[f"{name}, verify at {args.against}"] = (len(counter), "-")
        for name, est in (("numpy", reference_gpae), ("numba", numba)):
            t, r = timed(lambda: verify(est))
            assert r.ok, str(r)
            times[name].append(t)
            calls[name] = (r.calls, r.signatures)
        est = fresh_jax_estimator()
        t, r = timed(lambda: verify(est))
        assert r.ok, str(r)
        times["jax first"].append(t)
        calls["jax first"] = (r.calls, r.signatures)
        t, r = timed(lambda: verify(est))
        times["jax repeat"].append(t)
        calls["jax repeat"] = (r.calls, r.signatures)
    if old is not None:  # once: the older verify compiles one program per case signature
        counter = []
        jitted = fresh_jax_estimator()

        def counting(*a, **k):
            counter.append(1)
            return jitted(*a, **k)

        t, r = timed(lambda: old(counting))
        assert r.ok
        times[f"jax first, verify at {args.against}"] = [t]
        calls[f"jax first, verify at {args.against}"] = (len(counter), "-")
    one_correction, r = timed(lambda: verify(fresh_jax_estimator(), corrections=("dt",)))
    base = statistics.median(times["numpy"])
    for name, ts in times.items():
        m = statistics.median(ts)
        rows.append(f"| {name} | {m:.2f} | {m / base:.1f}x | {calls[name][0]} | {calls[name][1]} |")
    rows.append(f"| jax first, `corrections=(\"dt\",)` | {one_correction:.2f} | {one_correction / base:.1f}x | "
                f"{r.calls} | {r.signatures} |")

    streak = []
    for clear in (False, True):
        jax.clear_caches()
        start_rss, start_maps = rss_mib(), n_maps()
        t0 = time.perf_counter()
        for _ in range(args.in_a_row):
            r = verify(fresh_jax_estimator())
            assert r.ok
            if clear:
                jax.clear_caches()
        streak.append(f"| {args.in_a_row} fresh jitted estimators, {'with' if clear else 'without'} "
                      f"`jax.clear_caches()` | {time.perf_counter() - t0:.0f} | {start_rss:.0f} -> {rss_mib():.0f} | "
                      f"{start_maps} -> {n_maps()} |")

    load = os.getloadavg()
    text = "\n".join([
        START,
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} ({os.cpu_count()} cores), "
        f"load average {load[0]:.2f} at the end, jax {jax.__version__}, numpy {np.__version__}; "
        f"median of {args.repeats}. Regenerate: `python benchmarks/bench_verify.py --write docs/performance.md`.",
        "",
        "| estimator (float64) | full verify, s | vs numpy | calls | distinct signatures |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| in one process | wall, s | RSS, MiB | memory maps |",
        "|---|---|---|---|",
        *streak,
        END,
    ])
    print(text)
    if args.write:
        doc = args.write.read_text()
        if START in doc and END in doc:
            doc = doc[: doc.index(START)] + text + doc[doc.index(END) + len(END):]
        else:
            doc = doc.rstrip("\n") + "\n\n## verify\n\n" + text + "\n"
        args.write.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
