"""When a run returns to the host: chunk length, evaluation and checkpoint intervals (in updates).

Its own module because the run loop follows a schedule and the run folder records one
(``run.json``, ``schedule``), and neither imports the other's way back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Schedule:
    """When a run returns to the host, evaluates and checkpoints (in updates)."""

    chunk: int = 5
    """Updates per jitted call (one compile per distinct chunk length)."""
    eval_every: int = 10
    """Updates between greedy evaluations (0: never, not even at the end)."""
    checkpoint_every: int = 20
    """Updates between checkpoints (also written at the end and on a stop)."""

    def __post_init__(self):
        for name, low in (("chunk", 1), ("eval_every", 0), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}; got {value!r} "
                                 f"(--{name.replace('_', '-')}).")

    def to_dict(self) -> dict:
        return asdict(self)

    def next_chunk(self, u: int, stop_at: int) -> int:
        """Updates in the chunk starting after update ``u``: up to the next boundary or ``stop_at``."""
        until = lambda every: every - u % every  # noqa: E731 - local shorthand
        n = min(self.chunk, stop_at - u, until(self.checkpoint_every))
        return min(n, until(self.eval_every)) if self.eval_every else n


#: The schedule's field names: its flags (``--chunk``, ...) and its keys in ``run.json``.
SCHEDULE_FIELDS = tuple(f.name for f in fields(Schedule))
