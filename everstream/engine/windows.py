"""Window definitions and vectorized window assignment.

A window is ``[start, end)`` in event time (epoch ms). Tumbling windows tile time; hopping
windows of ``size`` start every ``every``, so an event belongs to ``ceil(size / every)`` of them;
session windows per key grow while events arrive less than ``gap`` apart, and merge when an
event bridges two sessions. Cumulative windows all start at the start of a ``size`` period and end
every ``step`` (day-to-date in 1-hour steps); count windows hold every ``n`` events of a key in
event-time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from everstream.engine.time import Duration, duration_ms
from everstream.errors import ConfigError

#: Internal columns of window state: start and end of the window (epoch ms).
WS = "_ws"
WE = "_we"
#: An end no event time reaches (count windows never close on time).
MAX_END = 1 << 61


@dataclass(frozen=True)
class Tumbling:
    """Fixed, non-overlapping windows of ``size_ms``, aligned to epoch + ``offset_ms``."""

    size_ms: int
    offset_ms: int = 0

    def describe(self) -> str:
        return f"tumbling({self.size_ms} ms)"


@dataclass(frozen=True)
class Hopping:
    """Windows of ``size_ms`` starting every ``every_ms`` (overlapping when every < size)."""

    size_ms: int
    every_ms: int
    offset_ms: int = 0

    def describe(self) -> str:
        return f"hopping({self.size_ms} ms every {self.every_ms} ms)"


@dataclass(frozen=True)
class Session:
    """Per-key sessions that close after ``gap_ms`` without events."""

    gap_ms: int

    def describe(self) -> str:
        return f"session(gap {self.gap_ms} ms)"


@dataclass(frozen=True)
class Cumulative:
    """Windows ``[period_start, period_start + k * step_ms)`` for k = 1 .. size/step (period-to-date)."""

    size_ms: int
    step_ms: int
    offset_ms: int = 0

    def describe(self) -> str:
        return f"cumulative({self.size_ms} ms in {self.step_ms} ms steps)"


@dataclass(frozen=True)
class Count:
    """Every ``n`` events of a key, in event-time order (ties: arrival order)."""

    n: int

    def describe(self) -> str:
        return f"count({self.n} events)"


WindowSpec = Tumbling | Hopping | Session | Cumulative | Count


def tumbling(size: Duration, offset: Duration = 0) -> Tumbling:
    """Tumbling windows: ``es.tumbling("1m")``."""
    s = duration_ms(size, "size")
    if s <= 0:
        raise ConfigError(f"tumbling window size must be positive, got {size!r}")
    return Tumbling(s, duration_ms(offset, "offset") % s)


def hopping(size: Duration, every: Duration, offset: Duration = 0) -> Hopping:
    """Hopping (sliding) windows: ``es.hopping("5m", every="1m")``."""
    s, e = duration_ms(size, "size"), duration_ms(every, "every")
    if s <= 0 or e <= 0:
        raise ConfigError(f"hopping window size and every must be positive, got size={size!r} every={every!r}")
    if e > s:
        raise ConfigError(
            f"hopping window every={every!r} is longer than size={size!r}: events between windows "
            "would belong to none; use tumbling() or a smaller every"
        )
    return Hopping(s, e, duration_ms(offset, "offset") % e)


def session(gap: Duration) -> Session:
    """Session windows: ``es.session("30s")``."""
    g = duration_ms(gap, "gap")
    if g <= 0:
        raise ConfigError(f"session gap must be positive, got {gap!r}")
    return Session(g)


def cumulative(size: Duration, step: Duration, offset: Duration = 0) -> Cumulative:
    """Cumulative windows: ``es.cumulative("1d", step="1h")`` fires day-to-date results every hour."""
    s, e = duration_ms(size, "size"), duration_ms(step, "step")
    if s <= 0 or e <= 0:
        raise ConfigError(f"cumulative window size and step must be positive, got size={size!r} step={step!r}")
    if s % e:
        raise ConfigError(f"cumulative window size={size!r} is not a multiple of step={step!r}; e.g. size='1d', "
                          "step='1h'")
    return Cumulative(s, e, duration_ms(offset, "offset") % s)


def count_window(n: int) -> Count:
    """Count windows: ``es.count_window(100)`` aggregates every 100 events of a key (event-time order)."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"count_window(n={n!r}): n must be a positive integer number of events")
    return Count(n)


def last_end(spec: WindowSpec, ts: pl.Expr) -> pl.Expr:
    """The end of the last window an event at ``ts`` belongs to (it is late once that has fired)."""
    if isinstance(spec, Tumbling):
        return _align(ts, spec.size_ms, spec.offset_ms) + spec.size_ms
    if isinstance(spec, Hopping):
        return _align(ts, spec.every_ms, spec.offset_ms) + spec.size_ms
    if isinstance(spec, Cumulative):
        return _align(ts, spec.size_ms, spec.offset_ms) + spec.size_ms
    if isinstance(spec, Count):  # fires on its n-th event, which can come at any time
        return pl.lit(MAX_END, dtype=pl.Int64)
    return ts + spec.gap_ms


def _align(ts: pl.Expr, step: int, offset: int) -> pl.Expr:
    return ts - (ts - offset) % step


def single(spec: WindowSpec, ts: str) -> list[pl.Expr] | None:
    """``_ws``/``_we`` expressions when every event belongs to exactly one window (else None)."""
    col = pl.col(ts)
    if isinstance(spec, Tumbling):
        start = _align(col, spec.size_ms, spec.offset_ms)
    elif isinstance(spec, Hopping) and spec.every_ms >= spec.size_ms:
        start = _align(col, spec.every_ms, spec.offset_ms)
    elif isinstance(spec, Session):
        return [col.alias(WS), (col + spec.gap_ms).alias(WE)]
    else:
        return None
    return [start.alias(WS), (start + spec.size_ms).alias(WE)]


def assign(spec: WindowSpec, df: pl.DataFrame, ts: str) -> pl.DataFrame:
    """Add ``_ws``/``_we`` to every row (hopping: one row per window the event belongs to)."""
    col = pl.col(ts)
    if isinstance(spec, Tumbling):
        start = _align(col, spec.size_ms, spec.offset_ms)
        return df.with_columns(start.alias(WS), (start + spec.size_ms).alias(WE))
    if isinstance(spec, Session):
        return df.with_columns(col.alias(WS), (col + spec.gap_ms).alias(WE))
    if isinstance(spec, Cumulative):  # one row per step end after the event, up to the period's end
        k = spec.size_ms // spec.step_ms
        start = _align(col, spec.size_ms, spec.offset_ms)
        first = (col - start) // spec.step_ms + 1  # the first step end after the event
        out = df.with_columns(start.alias(WS), (first + pl.int_ranges(0, k + 1 - first)).alias(WE)).explode(WE)
        return out.with_columns((pl.col(WS) + pl.col(WE) * spec.step_ms).alias(WE))
    if isinstance(spec, Count):
        raise ConfigError("count windows are assigned in event-time order by the count-window operator")
    k = -(-spec.size_ms // spec.every_ms)
    n = df.height
    if k == 1:
        start = _align(col, spec.every_ms, spec.offset_ms)
        return df.with_columns(start.alias(WS), (start + spec.size_ms).alias(WE))
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    back = np.tile(np.arange(k, dtype=np.int64) * spec.every_ms, n)
    out = df[rows].with_columns((_align(col, spec.every_ms, spec.offset_ms) - pl.Series(back)).alias(WS))
    out = out.with_columns((pl.col(WS) + spec.size_ms).alias(WE))
    return out.filter(pl.col(WE) > col)


def merge_sessions(state: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Give overlapping session rows of a key the bounds of their merged session.

    Rows are ``[_ws, _we)`` intervals; intervals of one key that overlap or touch chain into
    one session, whose start is the minimum and end the maximum of the chain.
    """
    if state.is_empty():
        return state
    keys = [*by, WS]
    s = state.sort(keys)
    prev_end = pl.col(WE).cum_max().shift(1)
    if by:
        prev_end = prev_end.over(by)
    s = s.with_columns((prev_end.is_null() | (pl.col(WS) > prev_end)).cum_sum().alias("_sid"))
    group = [*by, "_sid"]
    return s.with_columns(
        pl.col(WS).min().over(group).alias(WS), pl.col(WE).max().over(group).alias(WE)
    ).drop("_sid")
