"""Benchmark the GPAE backends side by side, in one process, on the same float32 data.

    python benchmarks/bench_estimators.py --write docs/performance.md

Rows per size (T=128, N=8, B in {1024, 8192}, correction dt, per-agent values,
random dones, no mask): the NumPy reference, the Numba kernel (with
preallocated outputs on all threads and on one, and through ``gpae_ref.gpae``
with validation and fresh outputs), the JAX scan (``gpae_jax``, jitted), rlax.vtrace (jit + vmap over the
B*N (env, agent) sequences, each a single-agent problem with its own ratio:
time-major [T, B*N]), the authors' formulation (a reverse lax.scan over a
[T, N, B] layout with the per-step ratio work inside the scan, written here from
the description of kim-seongmin/GPAE baselines/MAPPO/gpae_rnn_smax.py), numba.cuda
when a GPU is present, and np.copyto of an array with the same bytes as the
estimator reads plus writes (the memory-bandwidth ceiling of this machine).
Every time is a median over repeats after warm-up; GB/s counts bytes read plus
bytes written once each.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import gpae_ref
from gpae_ref.kernels.numba_cpu import gpae_numba

T, N = 128, 8
GAMMA, LAM, ETA = 0.99, 0.95, 1.02


def make_data(B: int, seed: int = 0) -> dict:
    """float32 time-major inputs [T, B, N]; log-probs in [-3, 0], about 2% dones."""
    rng = np.random.default_rng(seed)
    f = np.float32
    lt = -rng.uniform(0, 3, (T, B, N)).astype(f)
    return dict(
        rewards=rng.uniform(-1, 1, (T, B)).astype(f),
        values=rng.uniform(-1, 1, (T + 1, B, N)).astype(f),
        dones=(rng.random((T, B)) < 0.02).astype(f),
        logp_target=lt,
        logp_behaviour=np.minimum(0, lt - rng.uniform(-1, 1, (T, B, N))).astype(f),
    )


def io_bytes(data: dict) -> int:
    """Bytes an estimator reads (every input once) plus writes (two [T, B, N] outputs)."""
    return sum(x.nbytes for x in data.values()) + 2 * data["logp_target"].nbytes


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def authors_formulation():
    """A reverse lax.scan over [T, N, B] with the ratio work per step (the authors' layout).

    Per step: ratios in linear space, the others' ratio as exp(sum - own), the
    dt coefficient, and a carry (gae * c, next value), unroll=16, as described
    for kim-seongmin/GPAE (baselines/MAPPO/gpae_rnn_smax.py). Their per-step
    diagnostics (mean c, |c - prod rho|) are left out, which only favours it.
    """
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(rewards, values, last_value, dones, logp_target, logp_behaviour):
        def step(carry, x):
            gae_c, next_value = carry
            done, value, reward, pi, mu = x
            logratio = pi - mu
            ratio = jnp.exp(logratio)
            others = jnp.exp(jnp.sum(logratio, axis=0, keepdims=True) - logratio)
            c = jnp.clip(jnp.clip(others, 0, ETA) * ratio, 0, 1.0)
            delta = reward + GAMMA * next_value * (1 - done) - value
            gae = delta + GAMMA * LAM * (1 - done) * gae_c
            return (gae * c, value), (gae, gae * jnp.clip(ratio, 0, 1.0) + value)

        _, (adv, targets) = jax.lax.scan(
            step, (jnp.zeros_like(last_value), last_value),
            (dones, values, rewards, logp_target, logp_behaviour), reverse=True, unroll=16)
        return adv, targets

    return run


def rlax_vtrace():
    """rlax.vtrace, jit + vmap over the B*N sequences (time-major [T, B*N])."""
    import jax
    import rlax

    vtrace = jax.vmap(rlax.vtrace, in_axes=(1, 1, 1, 1, 1, None), out_axes=1)
    return jax.jit(lambda v_tm1, v_t, r, disc, rho: vtrace(v_tm1, v_t, r, disc, rho, LAM))


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def machine(start_load: str = "?") -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    load = load_average()
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = numba.config.THREADING_LAYER
    return (f"{model}, {os.cpu_count()} logical cores (Numba threads: {numba.get_num_threads()}, "
            f"threading layer {layer}), "
            f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}; "
            f"load average (1, 5, 15 min) at the start {start_load}, at the end {load} "
            f"(2 cores: above 2 other jobs competed for them)")


def gpu_present() -> bool:
    try:
        from numba import cuda

        return cuda.is_available() and not os.environ.get("NUMBA_ENABLE_CUDASIM")
    except Exception:
        return False


def bench_size(B: int, repeats: int, jax_against: str | None = None,
               numba_against: str | None = None) -> list[tuple[str, float | None, str]]:
    """(row name, median seconds or None, note) for one size; the copy row first."""
    import jax
    import jax.numpy as jnp

    from gpae_ref.jax_backend import gpae_jax

    data = make_data(B)
    nbytes = io_bytes(data)
    rows = []
    src = np.ones(nbytes // 2 // 4, np.float32)  # copy reads and writes src.nbytes each
    dst = np.empty_like(src)
    rows.append(("np.copyto, same bytes (ceiling)", median_time(lambda: np.copyto(dst, src), repeats), ""))
    kw = dict(gamma=GAMMA, lam=LAM, correction="dt", eta=ETA)
    slow = max(3, repeats // 4)
    rows.append(("numpy reference (float64 inside)",
                 median_time(lambda: gpae_ref.gpae(**data, **kw, backend="numpy"), slow, 1), ""))
    out = (np.empty_like(data["logp_target"]), np.empty_like(data["logp_target"]))
    rows.append(("numba kernel, preallocated outputs",
                 median_time(lambda: gpae_numba(**data, **kw, out=out), repeats), "gpae_numba(..., out=)"))
    if numba_against:
        from _at_revision import module_at

        before_numba = module_at(numba_against, "kernels/numba_cpu.py", "numba_cpu_at_rev").gpae_numba
        rows.append((f"numba kernel at {numba_against} (before), preallocated outputs",
                     median_time(lambda: before_numba(**data, **kw, out=out), repeats), "same data, same process"))
        rows.append(("numba kernel, preallocated outputs (again, after the before row)",
                     median_time(lambda: gpae_numba(**data, **kw, out=out), repeats), "drift check"))
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # per-core speed, free of waiting on a thread another job slowed
    try:
        rows.append(("numba kernel, 1 thread, preallocated outputs",
                     median_time(lambda: gpae_numba(**data, **kw, out=out), repeats), ""))
    finally:
        numba.set_num_threads(threads)
    rows.append(("numba via gpae(), out= (checks in the kernel's pass)",
                 median_time(lambda: gpae_ref.gpae(**data, **kw, backend="numba", out=out), repeats),
                 "target >= 65% of copy (B=8192)"))
    rows.append(("numba via gpae(): checks + new outputs",
                 median_time(lambda: gpae_ref.gpae(**data, **kw, backend="numba"), repeats),
                 "target >= 50% of copy, >= 20x numpy (B=8192); >= 25% (B=1024)"))
    jd = {k: jnp.asarray(v) for k, v in data.items()}
    rows.append(("jax gpae_jax (one fused reverse scan, [T,B,N])",
                 median_time(lambda: gpae_jax(**jd, **kw).advantages.block_until_ready(), repeats),
                 "jit; target: >= rlax's GB/s"))
    if jax_against:
        from _at_revision import module_at

        before = module_at(jax_against, "gpae_ref/jax_backend.py", "jax_backend_at_rev").gpae_jax
        rows.append((f"jax gpae_jax at {jax_against} (before)",
                     median_time(lambda: before(**jd, **kw).advantages.block_until_ready(), repeats),
                     "same data, same process"))
    authors = authors_formulation()
    tnb = {k: jnp.asarray(np.ascontiguousarray(np.moveaxis(v, 2, 1))) for k, v in data.items()
           if k in ("logp_target", "logp_behaviour")}
    vals = jnp.asarray(np.ascontiguousarray(np.moveaxis(data["values"], 2, 1)))
    per_agent = lambda x: jnp.asarray(np.repeat(x[:, None, :], N, axis=1))  # noqa: E731
    aargs = (per_agent(data["rewards"]), vals[:-1], vals[-1], per_agent(data["dones"]),
             tnb["logp_target"], tnb["logp_behaviour"])
    rows.append(("authors' formulation (scan over [T,N,B])",
                 median_time(lambda: authors(*aargs)[0].block_until_ready(), repeats),
                 "inputs already in [T,N,B]"))
    vt = rlax_vtrace()
    flat = lambda x: jnp.asarray(x.reshape(x.shape[0], B * N))  # noqa: E731
    full = lambda x: np.repeat(x[:, :, None], N, axis=2)  # noqa: E731
    vargs = (flat(data["values"][:-1]), flat(data["values"][1:]), flat(full(data["rewards"])),
             flat(GAMMA * (1 - full(data["dones"]))),
             flat(np.exp(data["logp_target"] - data["logp_behaviour"])))
    rows.append(("rlax.vtrace (jit+vmap, B*N single-agent seqs)",
                 median_time(lambda: vt(*vargs).block_until_ready(), repeats),
                 "ratios precomputed (exp outside); one output"))
    if gpu_present():
        from numba import cuda

        from gpae_ref.kernels.cuda import gpae_cuda

        dd = {k: cuda.to_device(v) for k, v in data.items()}

        def run_cuda():
            gpae_cuda(**dd, **kw)
            cuda.synchronize()

        dsrc = cuda.to_device(src)
        ddst = cuda.device_array_like(dsrc)

        def run_copy():
            ddst.copy_to_device(dsrc)
            cuda.synchronize()

        t_copy = median_time(run_copy, repeats)
        t_cuda = median_time(run_cuda, repeats)
        rows.append(("device copy, same bytes (GPU ceiling)", t_copy, ""))
        rows.append(("cuda kernel (device arrays)", t_cuda,
                     f"{t_copy / t_cuda:.0%} of device copy (target >= 60%)"))
    else:
        rows.append(("cuda kernel", None, "not measured: no GPU"))
    return [(name, t, note, nbytes) for name, t, note in rows]


def table(results: dict) -> str:
    lines = ["| B | backend | median ms | GB/s | vs copy | speed-up vs numpy | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for B, rows in results.items():
        copy_t = rows[0][1]
        numpy_t = next(t for name, t, _, _ in rows if name.startswith("numpy"))
        for name, t, note, nbytes in rows:
            if t is None:
                lines.append(f"| {B} | {name} | - | - | - | - | {note} |")
                continue
            lines.append(f"| {B} | {name} | {t * 1e3:.2f} | {nbytes / t / 1e9:.1f} | "
                         f"{copy_t / t:.0%} | {numpy_t / t:.1f}x | {note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192], help="values of B")
    ap.add_argument("--repeats", type=int, default=21, help="timed repeats per row (median)")
    ap.add_argument("--write", metavar="MD", help="write the markdown report to this file")
    ap.add_argument("--jax-against", metavar="REV", help="also time gpae_ref/jax_backend.py at this git revision")
    ap.add_argument("--numba-against", metavar="REV", help="also time kernels/numba_cpu.py at this git revision")
    ap.add_argument("--threading-layer", default="workqueue",
                    choices=["workqueue", "omp", "tbb", "default"],
                    help="Numba threading layer for the parallel kernel (default workqueue: "
                         "OpenMP's spinning threads collapse when other jobs share the cores)")
    args = ap.parse_args(argv)
    if args.threading_layer != "default":
        import numba

        numba.config.THREADING_LAYER = args.threading_layer  # before the first parallel call
    start_load = load_average()
    results = {B: bench_size(B, args.repeats, args.jax_against, args.numba_against) for B in args.sizes}
    report = table(results)
    print(machine(start_load))
    print(report)
    if args.write:
        write_report(args.write, report, args, start_load)
    return 0


def write_report(path: str, report: str, args, start_load: str = "?") -> None:
    cmd = "python benchmarks/bench_estimators.py --write docs/performance.md"
    if args.sizes != [1024, 8192] or args.repeats != 21:
        cmd += f" --sizes {' '.join(map(str, args.sizes))} --repeats {args.repeats}"
    if args.threading_layer != "workqueue":
        cmd += f" --threading-layer {args.threading_layer}"
    if args.jax_against:
        cmd += f" --jax-against {args.jax_against}"
    if args.numba_against:
        cmd += f" --numba-against {args.numba_against}"
    with open(path) as f:
        text = f.read()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    block = (f"{begin}\nMachine: {machine(start_load)}.\n\nCommand: `{cmd}` (float32, T={T}, N={N}, "
             f"correction dt, gamma={GAMMA}, lam={LAM}, eta={ETA}; medians of {args.repeats} "
             f"repeats after warm-up).\n\n{report}\n{end}")
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
