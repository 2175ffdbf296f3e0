"""Play a simulated event frame against the wall clock: history at once, the rest as time passes.

The payments and market simulators generate a whole frame in arrival order with event times
from a fixed base. :class:`LiveReplay` shifts those times so that the first ``history`` of the
frame lies in the past (written at once: pipelines replay it) and the rest is released as the
wall clock reaches it, with the simulator's own disorder kept (a row is due when every row
before it in arrival order is due: the running maximum of event time).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import polars as pl

from everstream.engine.time import Duration, duration_ms


class LiveReplay:
    """Rows of ``events`` (arrival order, a ``ts`` column) released by wall-clock time."""

    def __init__(self, events: pl.DataFrame, history: Duration, *, time_col: str = "ts",
                 clock: Callable[[], float] = time.time) -> None:
        ts = events.get_column(time_col)
        ms = (ts.dt.epoch("ms") if ts.dtype.is_temporal() else ts).cast(pl.Int64).to_numpy()
        self._clock = clock
        self.shift_ms = int(clock() * 1000) - duration_ms(history) - int(ms.min())
        shifted = ms + self.shift_ms
        self.events = events.with_columns(pl.Series(time_col, shifted).cast(pl.Datetime("ms", "UTC")))
        self._due = np.maximum.accumulate(shifted)  # arrival clock: a row waits for those before it
        self._sent = 0

    @property
    def done(self) -> bool:
        return bool(self._sent >= self.events.height)

    @property
    def sent(self) -> int:
        return self._sent

    def due(self) -> pl.DataFrame:
        """The rows whose time has come since the last call (the first call returns the history)."""
        now_ms = int(self._clock() * 1000)
        end = int(np.searchsorted(self._due, now_ms, side="right"))
        out = self.events.slice(self._sent, max(0, end - self._sent))
        self._sent = max(self._sent, end)
        return out

    def shifted(self, epoch_ms: int) -> int:
        """A time of the original frame (epoch ms) on the replay's clock."""
        return epoch_ms + self.shift_ms

    def last_sent_ms(self) -> int | None:
        """Event-time high-water mark of what has been released."""
        return int(self._due[self._sent - 1]) if self._sent else None
