"""Event time: durations, event-time columns and watermarks per source partition.

A watermark ``W`` says "no more events with event time < W are expected". Each partition's
watermark is its highest event time seen minus ``max_delay`` (bounded out-of-orderness); a
source's watermark is the minimum over its partitions, leaving out partitions idle for longer
than ``idle_timeout`` (processing time), and never goes backwards. The end of a bounded input is
the final watermark :data:`MAX_TIME`, which closes every window.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import polars as pl

from everstream.errors import ConfigError

#: Sentinels for "before every event" and "after every event" (epoch ms, fit in int64 with room).
MIN_TIME = -(1 << 62)
MAX_TIME = 1 << 62

Duration = str | timedelta | int | float

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def duration_ms(value: Duration, what: str = "duration") -> int:
    """``"250ms"``, ``"2s"``, ``"1m"``, ``"1h"``, ``"1d"``, a timedelta, or seconds -> milliseconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}={value!r}: use e.g. '2s', '1m' or a timedelta")
    if isinstance(value, timedelta):
        ms = value / timedelta(milliseconds=1)
    elif isinstance(value, (int, float)):
        ms = float(value) * 1000.0
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ConfigError(f"{what}={value!r}: use a number with ms, s, m, h, d or w, e.g. '2s' or '1m'")
        ms = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ConfigError(f"{what}={value!r}: use e.g. '2s', '1m' or a timedelta")
    if ms < 0:
        raise ConfigError(f"{what}={value!r} is negative")
    return round(ms)


def event_time_ms(column: pl.Series) -> pl.Series:
    """Epoch milliseconds (Int64) of an event-time column; null where missing or unparsable.

    Datetime columns are converted (naive ones are taken as UTC), integers are epoch ms, floats
    epoch ms, strings are parsed as ISO 8601.
    """
    dt = column.dtype
    if isinstance(dt, pl.Datetime):
        return column.dt.epoch("ms").cast(pl.Int64)
    if isinstance(dt, pl.Date):
        return column.cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.Int64)
    if dt == pl.Int64:  # already epoch ms (the usual case): a no-op cast still costs a Polars call
        return column
    if dt.is_integer():
        return column.cast(pl.Int64, strict=False)
    if dt.is_float():
        return column.fill_nan(None).cast(pl.Int64, strict=False)
    if dt == pl.String:
        parsed = column.str.to_datetime(strict=False, time_unit="ms", time_zone="UTC")
        return parsed.dt.epoch("ms").cast(pl.Int64)
    return pl.Series(column.name, [None] * len(column), dtype=pl.Int64)


class PartitionWatermarks:
    """Watermarks of one event-time source over its partitions.

    ``clock`` returns processing time in seconds (``time.monotonic`` by default); it decides
    idleness only, so tests can drive it.
    """

    def __init__(
        self, partitions: int, max_delay_ms: int, idle_timeout_ms: int | None, clock: Callable[[], float]
    ) -> None:
        self.max_delay_ms = max_delay_ms
        self.idle_timeout_ms = idle_timeout_ms
        self._clock = clock
        now = clock()
        self._max = np.full(partitions, MIN_TIME, dtype=np.int64)  # highest event time per partition
        self._active = np.full(partitions, now, dtype=np.float64)  # last time data arrived
        self._current = MIN_TIME
        self._final = False

    @property
    def partitions(self) -> int:
        return len(self._max)

    def _partition_wm(self) -> np.ndarray:
        wm = self._max - self.max_delay_ms
        wm[self._max == MIN_TIME] = MIN_TIME
        return wm

    def _live(self, now: float) -> np.ndarray:
        if self.idle_timeout_ms is None:
            return np.ones(len(self._max), dtype=bool)
        return (now - self._active) * 1000.0 < self.idle_timeout_ms

    def row_watermarks(self, partition: int, ts: np.ndarray) -> np.ndarray:
        """The watermark in force before each row of a batch of ``partition`` (arrival order)."""
        n = len(ts)
        if self._final:
            return np.full(n, MAX_TIME, dtype=np.int64)
        if len(self._max) == 1:  # one partition (the live source): no other partition can hold it back
            others = MAX_TIME
        else:
            live = self._live(self._clock())
            live[partition] = True  # it has data right now
            wms = self._partition_wm()
            live[partition] = False
            others = int(wms[live].min()) if live.any() else MAX_TIME
        before = np.empty(n, dtype=np.int64)
        if n:
            before[0] = self._max[partition]
            if n > 1:
                np.maximum.accumulate(ts[:-1], out=before[1:])
                np.maximum(before[1:], self._max[partition], out=before[1:])
        # in place (no np.where and temporaries: ~12 ms -> ~1 ms on a 250 k-row poll, measured). Rows before
        # any event time was seen stay MIN_TIME without a mask: MIN_TIME - delay is still a valid int64
        # (MIN_TIME is -2**62) and the floor at the current watermark (>= MIN_TIME) lifts it back.
        np.subtract(before, self.max_delay_ms, out=before)
        np.minimum(before, others, out=before)
        np.maximum(before, self._current, out=before)
        return before

    def observe(self, partition: int, max_ts: int | None) -> None:
        """Data arrived on ``partition``; ``max_ts`` is its highest valid event time (or None)."""
        self._active[partition] = self._clock()
        if max_ts is not None and max_ts > self._max[partition]:
            self._max[partition] = max_ts

    def current(self) -> int:
        """The source's watermark now (monotonic): min over live partitions."""
        if self._final:
            return MAX_TIME
        if len(self._max) == 1 and self.idle_timeout_ms is None:  # every cycle of a live source: no array work
            top = int(self._max[0])
            if top != MIN_TIME and top - self.max_delay_ms > self._current:
                self._current = top - self.max_delay_ms
            return self._current
        live = self._live(self._clock())
        if live.any():
            wm = int(self._partition_wm()[live].min())
            if wm > self._current:
                self._current = wm
        return self._current

    def idle_partitions(self) -> list[int]:
        return [int(p) for p in np.flatnonzero(~self._live(self._clock()))]

    def finish(self) -> None:
        """The input is bounded and fully read: the final watermark closes every window."""
        self._final = True
        self._current = MAX_TIME
