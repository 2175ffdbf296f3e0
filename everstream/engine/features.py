"""Rolling per-key features, computed for every event over its key's recent past.

The fraud "velocity" features: how many payments this card made in the last 10 minutes, their
sum, mean and largest amount, an exponentially weighted moving average, the time since the
card's previous payment. Each is vectorized over a batch of events sorted by (key, event time)
with per-key state carried between batches:

- windowed features (``rolling_count/sum/mean/min/max``) see the events of the key with event
  time in ``(t - over, t]``, the event itself and every event at the same time included (SQL
  ``RANGE BETWEEN over PRECEDING AND CURRENT ROW``); the operator keeps the events of the last
  ``over`` per key as context;
- ``ewma`` is a time-decayed average: each earlier value's weight halves every ``half_life``,
  ``sum(x_j * 2**(-(t - t_j) / half_life)) / sum(2**(-(t - t_j) / half_life))`` over the key's
  events up to and including this one (nulls skipped); its state is two decayed sums per key;
- ``time_since_last`` is the milliseconds since the key's previous event (null for its first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from everstream.engine.time import Duration, duration_ms
from everstream.errors import ConfigError

RollingKind = Literal["count", "sum", "mean", "min", "max"]

#: Rows are rebased so that no exponent exceeds this (exp(300) ~ 1e130 keeps float64 safe).
_MAX_EXPONENT = 300.0


class Feature:
    """Base of the rolling features (see the module doc)."""

    columns: tuple[str, ...] = ()

    def describe(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class RollingAgg(Feature):
    """count / sum / mean / min / max over ``(t - over_ms, t]`` of the key."""

    kind: RollingKind
    column: str | None
    over_ms: int

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return () if self.column is None else (self.column,)

    def describe(self) -> str:
        return f"rolling_{self.kind}({self.column or ''}, {self.over_ms} ms)"

    def expr(self, ts: str, one: str) -> pl.Expr:
        size = f"{self.over_ms}i"
        if self.kind == "count":
            c = pl.col(one) if self.column is None else pl.col(self.column).is_not_null().cast(pl.Int64)
            return c.rolling_sum_by(ts, size, closed="right").cast(pl.Int64)
        assert self.column is not None
        c = pl.col(self.column)
        if self.kind == "sum":
            return c.rolling_sum_by(ts, size, closed="right")
        if self.kind == "mean":
            return c.cast(pl.Float64).rolling_mean_by(ts, size, closed="right")
        if self.kind == "min":
            return c.rolling_min_by(ts, size, closed="right")
        return c.rolling_max_by(ts, size, closed="right")


@dataclass(frozen=True)
class Ewma(Feature):
    """Time-decayed moving average of ``column`` with the given half-life."""

    column: str
    half_life_ms: int

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def describe(self) -> str:
        return f"ewma({self.column}, half_life {self.half_life_ms} ms)"


@dataclass(frozen=True)
class SinceLast(Feature):
    """Milliseconds since the key's previous event (0 for events at the same time, null for the first)."""

    def describe(self) -> str:
        return "time_since_last()"


# ---------------------------------------------------------------------- constructors


def _over(over: Duration) -> int:
    ms = duration_ms(over, "over")
    if ms <= 0:
        raise ConfigError(f"rolling feature over={over!r} must be positive, e.g. '10m'")
    return ms


def _col(column: str) -> str:
    if not isinstance(column, str) or not column:
        raise ConfigError(f"rolling feature column must be a column name (str), got {column!r}")
    return column


def rolling_count(over: Duration, column: str | None = None) -> RollingAgg:
    """Number of the key's events (or non-null ``column`` values) in the last ``over``, this one included."""
    return RollingAgg("count", None if column is None else _col(column), _over(over))


def rolling_sum(column: str, over: Duration) -> RollingAgg:
    """Sum of ``column`` over the key's events in the last ``over``."""
    return RollingAgg("sum", _col(column), _over(over))


def rolling_mean(column: str, over: Duration) -> RollingAgg:
    """Mean of ``column`` over the key's events in the last ``over``."""
    return RollingAgg("mean", _col(column), _over(over))


def rolling_min(column: str, over: Duration) -> RollingAgg:
    """Smallest ``column`` value of the key's events in the last ``over``."""
    return RollingAgg("min", _col(column), _over(over))


def rolling_max(column: str, over: Duration) -> RollingAgg:
    """Largest ``column`` value of the key's events in the last ``over``."""
    return RollingAgg("max", _col(column), _over(over))


def ewma(column: str, half_life: Duration) -> Ewma:
    """Exponentially weighted moving average of ``column``; weights halve every ``half_life`` of event time."""
    ms = duration_ms(half_life, "half_life")
    if ms <= 0:
        raise ConfigError(f"ewma half_life={half_life!r} must be positive, e.g. '10m'")
    return Ewma(_col(column), ms)


def time_since_last() -> SinceLast:
    """Milliseconds since the key's previous event (null for its first event)."""
    return SinceLast()


# ---------------------------------------------------------------------- vectorized carried state


def decayed_sums(
    kid: np.ndarray, ts: np.ndarray, x: np.ndarray, valid: np.ndarray, lam: float,
    s0: np.ndarray, w0: np.ndarray, t0: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: ``S = sum x_j e^(-lam (t - t_j))`` and ``W = sum valid_j e^(-lam (t - t_j))`` over the
    key's rows so far plus its carried ``(s0, w0)`` taken at ``t0`` (per key id; ``t0`` ignored where
    ``w0 == 0``).

    Rows are sorted by (key id, time); ``kid`` are dense key ids 0..K-1. Vectorized: within a
    stretch where exponents stay below ``_MAX_EXPONENT`` it is two cumulative sums per key; longer
    stretches are cut into pieces carried one to the next (a loop over pieces, not rows).
    """
    n = len(ts)
    s_out = np.empty(n)
    w_out = np.empty(n)
    if not n:
        return s_out, w_out
    starts = np.flatnonzero(np.r_[True, kid[1:] != kid[:-1]])
    first_t = np.repeat(ts[starts], np.diff(np.r_[starts, n]))
    piece = np.floor(lam * (ts - first_t).astype(np.float64) / _MAX_EXPONENT).astype(np.int64)
    cs, cw, ct = s0.astype(np.float64).copy(), w0.astype(np.float64).copy(), t0.astype(np.int64).copy()
    xv = np.where(valid, x, 0.0)
    wv = valid.astype(np.float64)
    for p in range(int(piece.max()) + 1):
        rows = np.flatnonzero(piece == p) if p or piece.max() else np.arange(n)
        if not len(rows):
            continue
        k, t = kid[rows], ts[rows]
        seg = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        lens = np.diff(np.r_[seg, len(rows)])
        base_t = np.repeat(t[seg], lens)
        keys = k[seg]
        # carried sums, decayed to each key's first row of this piece (exponent <= 0)
        has = cw[keys] > 0
        decay = np.where(has, np.exp(-lam * np.maximum(t[seg] - ct[keys], 0).astype(np.float64)), 0.0)
        carry_s, carry_w = np.where(has, cs[keys] * decay, 0.0), np.where(has, cw[keys] * decay, 0.0)
        a = lam * (t - base_t).astype(np.float64)
        e = np.exp(a)
        s = _segment_cumsum(xv[rows] * e, seg, lens) + np.repeat(carry_s, lens)
        w = _segment_cumsum(wv[rows] * e, seg, lens) + np.repeat(carry_w, lens)
        inv = np.exp(-a)
        s_out[rows], w_out[rows] = s * inv, w * inv
        last = np.r_[seg[1:], len(rows)] - 1
        cs[keys], cw[keys], ct[keys] = s_out[rows][last], w_out[rows][last], t[last]
    return s_out, w_out


def _segment_cumsum(v: np.ndarray, seg: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each segment start (per segment: no cancellation across keys)."""
    if len(seg) == 1:
        return np.cumsum(v)
    ids = np.repeat(np.arange(len(seg)), lens)
    frame = pl.DataFrame({"k": ids, "v": v})
    return np.asarray(frame.select(pl.col("v").cum_sum().over("k")).to_series().to_numpy())


def ln2_over(half_life_ms: int) -> float:
    return math.log(2.0) / half_life_ms
