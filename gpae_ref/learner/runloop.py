"""The one run loop of ``python -m gpae_ref.train`` and the experiment runner.

Chunks of jitted updates, greedy evaluations, CSV rows, checkpoints, resume,
Ctrl-C and the NaN stop, for one seed (``train``) or S seeds vmapped (the runner:
the state has a leading seed axis and each seed has its own CSV). The callers
only decide what to run; this module decides how.

Order per chunk, on which resume relies: run n updates; if any loss or any
float leaf of the new state is not finite, keep the previous (finite) state,
checkpoint it and stop; else evaluate (on an evaluation boundary or the last
update), append the rows, then checkpoint (on a checkpoint boundary or the last
update). A kill between rows and checkpoint leaves rows past the checkpoint:
``runfolder.keep_rows`` drops them, and any partial trailing line. What is on
disk and how a run continues is ``runfolder``'s.
"""

from __future__ import annotations

import argparse
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gpae_ref.learner.dataspec import DataSpec
from gpae_ref.learner.devices import host_state
from gpae_ref.learner.runfolder import FORMAT, RunFolder, save_state
from gpae_ref.learner.schedule import Schedule


@dataclass
class Program:
    """What the loop runs: ``run(state, n)`` -> (state, metrics stacked over n), ``evaluate(state)``.

    ``folder.seeds`` is None for an unbatched state (one seed), else the seeds along the
    state's leading axis (one CSV per seed); ``data`` is the state's data buffer.
    """

    run: Callable
    evaluate: Callable
    folder: RunFolder
    data: DataSpec
    steps_per_update: int
    meta: Callable[[Any, float], dict] = field(default=lambda state, wall: {})
    writer: bool = True
    """Whether this process writes rows and states (with several hosts only process 0 does)."""
    """Extra checkpoint metadata (config, schedule, record) given the state and the wall time."""


@dataclass(frozen=True)
class LoopOutcome:
    """How ``run_loop`` ended: ``finished`` (last update done), ``stopped`` (budget of this
    call, Ctrl-C when ``interrupted``, the deadline when ``out_of_time``), ``nan`` (non-finite
    loss or state; last finite state kept)."""

    state: Any
    update: int
    status: str
    wall_s: float
    chunks: int
    timed_steps: int
    timed_s: float
    last_eval: tuple | None
    interrupted: bool = False
    out_of_time: bool = False
    bad_update: int | None = None


class StopFlag:
    """First SIGINT: stop at the next chunk boundary; second: the default KeyboardInterrupt.

    ``deadline`` (a ``clock()`` value, e.g. a job's or a sitting's end): also stop at the first
    chunk boundary from which one more chunk, as long as the last one took, would end after
    it. Chunk lengths vary (an evaluation, a checkpoint), so leave a margin of a chunk.
    """

    def __init__(self, notice: str = "\nCtrl-C: stopping after this chunk (press again to abort without "
                                      "a checkpoint).", deadline: float | None = None,
                 clock: Callable[[], float] = time.time):
        self.requested = False
        self.notice = notice
        self.deadline = deadline
        self.clock = clock
        self.out_of_time = False
        self._old = None

    def time_is_up(self, next_chunk_s: float) -> bool:
        """Whether a chunk of ``next_chunk_s`` seconds started now would end after the deadline;
        with several processes, process 0's answer, so that every process stops at the same update."""
        if self.deadline is not None and not self.out_of_time:
            self.out_of_time = agreed(self.clock() + next_chunk_s > self.deadline)
        return self.out_of_time

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(self.notice, flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)
        return False


def _minutes(text: str) -> float:
    """argparse type of ``--time-limit``: a finite number of minutes above 0."""
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a number of minutes above 0, got {text!r}")
    return x


def add_time_limit_flag(parser: argparse.ArgumentParser) -> None:
    """``--time-limit MINUTES`` of ``train`` and the experiment runner (read with ``deadline``)."""
    parser.add_argument("--time-limit", type=_minutes, metavar="MINUTES",
                        help="stop, with a checkpoint, at the last chunk boundary before this many minutes "
                             "from the start (judged by the last chunk's length: leave a chunk of margin "
                             "before a job's or a machine's end); continue as after a Ctrl-C")


def deadline(minutes: float | None) -> float | None:
    """The ``time.time()`` at which ``minutes`` from now end (None: no limit)."""
    return None if minutes is None else time.time() + 60.0 * minutes


def agreed(flag: bool) -> bool:
    """Process 0's ``flag`` on every process (one process: ``flag``): a stop decided by a clock
    must not let one host run a chunk the others skip."""
    import jax

    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _seed_slice(tree, i):
    import jax

    return jax.tree_util.tree_map(lambda x: x[i], tree)


# Parts of the learner's state that are the world, not the learner: the environment may hold
# non-finite values by design (e.g. an "infinitely far" sentinel); only the learner's are checked.
# The data buffer (observations) is the world too: ``all_finite`` is told its field.
WORLD = ("env_state", "obs")


def all_finite(tree, data_field: str | None = None) -> bool:
    """Every floating leaf of ``tree`` is finite (integer leaves cannot be NaN); for a
    ``LearnerState`` only the learner's parts (networks, optimisers, hidden states), not WORLD
    nor the data buffer ``data_field``."""
    import jax
    if hasattr(tree, "_fields"):
        tree = [getattr(tree, k) for k in tree._fields if k not in (*WORLD, data_field)]
    for x in jax.tree_util.tree_leaves(host_state(tree)):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            return False
    return True


def first_bad_update(metrics) -> int | None:
    """The first update whose actor or critic loss is not finite (None if all are)."""
    ok = np.isfinite(np.asarray(metrics.actor_loss)) & np.isfinite(np.asarray(metrics.value_loss))
    if ok.all():
        return None
    upd = np.asarray(metrics.update)
    return int(upd[~ok].min())


def state_update(state, seeds) -> int:
    u = np.asarray(state.update)
    return int(u.reshape(-1)[0]) if seeds is not None else int(u)


def save(program: Program, state, wall: float) -> None:
    """The full checkpoint and the compact state of ``state`` (runfolder.save_state), gathered from
    every device (and host: every process calls this; only the writer writes)."""
    state = host_state(state)
    if not program.writer:
        return
    seeds = program.folder.seeds
    steps = int(np.asarray(state.env_steps).reshape(-1)[0])
    meta = {"run_format": FORMAT, "update": state_update(state, seeds), "env_steps": steps, "wall_s": wall,
            "seeds": None if seeds is None else list(seeds)}
    meta.update(program.meta(state, wall))
    save_state(program.folder, state, meta, program.data)


def run_loop(program: Program, state, *, total: int, schedule: Schedule, wall0: float = 0.0,
             stop_at: int | None = None, max_chunks: int | None = None, stop: StopFlag | None = None,
             on_chunk: Callable[[dict], None] | None = None) -> LoopOutcome:
    """Run chunks from ``state`` until update ``stop_at`` (default ``total``), ``max_chunks`` chunks,
    a Ctrl-C (``stop.requested``), ``stop``'s deadline or a non-finite loss/state; see the module
    doc for the order.

    ``on_chunk`` gets a dict per chunk (update, env_steps, n, seconds, metrics, evaluation, wall).
    A stop before ``total`` writes a checkpoint at the stopping update.
    """
    import jax
    from gpae_ref.learner import logbook
    stop_at = total if stop_at is None else min(total, stop_at)
    seeds = program.folder.seeds
    u = state_update(state, seeds)
    t_start = time.perf_counter()
    timed_steps, timed_s, compiled, chunks = 0, 0.0, set(), 0
    last_eval, last_ckpt, chunk_s = None, None, 0.0
    wall = lambda: wall0 + time.perf_counter() - t_start  # noqa: E731 - local shorthand
    width = 1 if seeds is None else len(seeds)
    while u < stop_at and (max_chunks is None or chunks < max_chunks) and not (stop and stop.requested):
        if stop is not None and stop.time_is_up(chunk_s):
            break
        n = schedule.next_chunk(u, stop_at)
        t0 = time.perf_counter()
        new_state, metrics = jax.block_until_ready(program.run(state, n))
        metrics = host_state(metrics)
        dt = time.perf_counter() - t0
        bad = first_bad_update(metrics)
        if bad is not None or not all_finite(new_state, program.data.field):
            # The loss of update k is computed before update k changes the parameters, so finite
            # losses do not prove a finite state: keep `state`, which passed this check (or is init).
            save(program, state, wall())
            return LoopOutcome(state, u, "nan", wall(), chunks, timed_steps, timed_s, last_eval,
                               bad_update=bad if bad is not None else u + 1)
        new_u = u + n
        evaluation = None
        if schedule.eval_every and (new_u % schedule.eval_every == 0 or new_u == total):
            evaluation = host_state(program.evaluate(new_state))
            last_eval = (new_u, evaluation)
        state, u = new_state, new_u
        w = wall()
        for i, path in enumerate(program.folder.csv_paths if program.writer else []):
            m = metrics if seeds is None else _seed_slice(metrics, i)
            ev = evaluation if (evaluation is None or seeds is None) else _seed_slice(evaluation, i)
            logbook.append_rows(path, logbook.metric_rows(m, w, ev))
        # The checkpoint comes after the rows: a kill in between leaves extra rows, dropped on resume.
        if u % schedule.checkpoint_every == 0 or u == total:
            save(program, state, w)
            last_ckpt = u
        if n in compiled:  # a chunk length's first call includes its compilation: not in steps/s
            timed_steps += n * program.steps_per_update * width
            timed_s += dt
        compiled.add(n)
        chunks += 1
        chunk_s = time.perf_counter() - t0  # with its evaluation, rows and checkpoint
        if on_chunk is not None:
            on_chunk({"update": u, "env_steps": np.asarray(state.env_steps), "n": n, "seconds": dt,
                      "metrics": metrics, "evaluation": evaluation, "last_eval": last_eval, "wall": w,
                      "steps_per_s": timed_steps / timed_s if timed_s else float("nan")})
    if u < total and last_ckpt != u:
        save(program, state, wall())
    status = "finished" if u >= total else "stopped"
    return LoopOutcome(state, u, status, wall(), chunks, timed_steps, timed_s, last_eval,
                       interrupted=bool(stop and stop.requested), out_of_time=bool(stop and stop.out_of_time))

