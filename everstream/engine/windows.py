"""Window definitions and vectorized window assignment.

A window is ``[start, end)`` in event time (epoch ms). Tumbling windows tile time; hopping
windows of ``size`` start every ``every``, so an event belongs to ``ceil(size / every)`` of them;
session windows per key grow while events arrive less than ``gap`` apart, and merge when an
event bridges two sessions.
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


WindowSpec = Tumbling | Hopping | Session


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


def last_end(spec: WindowSpec, ts: pl.Expr) -> pl.Expr:
    """The end of the last window an event at ``ts`` belongs to (it is late once that has fired)."""
    if isinstance(spec, Tumbling):
        return _align(ts, spec.size_ms, spec.offset_ms) + spec.size_ms
    if isinstance(spec, Hopping):
        return _align(ts, spec.every_ms, spec.offset_ms) + spec.size_ms
    return ts + spec.gap_ms


def _align(ts: pl.Expr, step: int, offset: int) -> pl.Expr:
    return ts - (ts - offset) % step


def assign(spec: WindowSpec, df: pl.DataFrame, ts: str) -> pl.DataFrame:
    """Add ``_ws``/``_we`` to every row (hopping: one row per window the event belongs to)."""
    col = pl.col(ts)
    if isinstance(spec, Tumbling):
        start = _align(col, spec.size_ms, spec.offset_ms)
        return df.with_columns(start.alias(WS), (start + spec.size_ms).alias(WE))
    if isinstance(spec, Session):
        return df.with_columns(col.alias(WS), (col + spec.gap_ms).alias(WE))
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
