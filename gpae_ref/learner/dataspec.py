"""``DataSpec``: which part of a learner state is its data buffer (jax-free, below everything).

A Trainer carries one (``types.Trainer.data``); the run loop skips that part in its
finiteness check (observations are the world's), and the compact resume state keeps
only what the next update reads of it (``runfolder``, ``checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    """Which part of a learner state is the data buffer, and how much of it the next update reads.

    ``keep``: the newest entries along the buffer's leading axis that the next update reads again
    (None: all of it); the rest is dropped unread, so the compact state leaves it out.
    """

    field: str
    keep: int | None = None

    def prefix(self) -> str:
        return f".{self.field}"
