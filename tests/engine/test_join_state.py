"""Join state stays bounded: 10 M events through the as-of and the interval join operators.

The operators are driven directly in-process (no log) with big vectorized batches, both sides out
of order within the watermark's bound, and the state size is recorded after every cycle: it must
stay flat (it depends on the disorder and the number of keys, not on how many events went by).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.join_interval import IntervalJoinOp
from everstream.engine.joins import AsofJoinOp, AsofSpec, IntervalSpec
from everstream.engine.operators import WATERMARK, Ctx
from everstream.engine.testing import FakeServices


def _services() -> FakeServices:
    """An in-process runtime for driving the operator: late rows and dead letters collected, not raised."""
    return FakeServices("state-test", late="keep", dead="keep")

EVENTS = 10_000_000
BATCH = 500_000  # events per cycle, both sides together
DELAY = 2_000


def _batch(rng: np.random.Generator, start: int, n: int, keys: int, key_col: str, value: str) -> pl.DataFrame:
    """``n`` events over the next ``n`` ms after ``start``, out of order within DELAY."""
    ts = start + np.sort(rng.integers(0, n, n))
    arrival = np.argsort(ts + rng.uniform(0, DELAY, n), kind="stable")
    ts = ts[arrival]
    return pl.DataFrame({
        key_col: rng.integers(0, keys, n), value: rng.random(n), "ts": ts, EVENT_TIME: ts,
        WATERMARK: np.zeros(n, dtype=np.int64),
    })


def _drive(op: Any, make: Any) -> list[int]:
    """Feed EVENTS events (half per side) in cycles; returns the state size after each cycle."""
    rng = np.random.default_rng(42)
    wm = [-(1 << 62), -(1 << 62)]
    op.side_watermarks = lambda: (wm[0], wm[1])
    sizes, out_rows, t = [], 0, 0
    half = BATCH // 2
    for _ in range(EVENTS // BATCH):
        for side, parent in enumerate(("left", "right")):
            df = make(rng, side, t, half)
            op.process(df, Ctx("in", 0, parent))
            wm[side] = int(df[EVENT_TIME].max()) - DELAY  # type: ignore[arg-type]
        t += half
        got = op.advance(min(wm))
        out_rows += 0 if got is None else got.height
        sizes.append(op.metrics.state_rows)
    assert op.services.late_rows == 0 and not op.services.letters  # type: ignore[attr-defined]
    assert out_rows > 0
    return sizes


def _flat(sizes: list[int], bound: int) -> None:
    later = sizes[len(sizes) // 4:]
    assert max(later) <= bound, f"state grew to {max(later)} rows (bound {bound}): {sizes}"
    first, last = np.mean(later[: len(later) // 2]), np.mean(later[len(later) // 2:])
    assert last <= 1.25 * first + 1_000, f"state keeps growing: {sizes}"


def test_asof_state_is_bounded_over_10m_events() -> None:
    """Trades x quotes as-of, 500 symbols: waiting trades + quotes kept stay within a few seconds of data."""
    spec = AsofSpec(("symbol",), "ts", "ts", "backward", True, None)
    op = AsofJoinOp(p.Join("asof", ("left", "right"), spec=spec), _services(), lambda: (0, 0))

    def make(rng: np.random.Generator, side: int, t: int, n: int) -> pl.DataFrame:
        return _batch(rng, t, n, 500, "symbol", ("price", "bid")[side])

    sizes = _drive(op, make)
    # trades waiting for the quote watermark (~DELAY ms at 1 event/ms), quotes newer than the trade
    # horizon (~DELAY ms), the last quote of each of 500 symbols, and the pruning slack: ~5 k rows,
    # whatever the number of events (without pruning: millions)
    _flat(sizes, bound=8 * DELAY)


def test_interval_state_is_bounded_over_10m_events() -> None:
    """Orders x executions within [t, t + 5 s]: state holds about 5 s + the disorder of each side."""
    spec = IntervalSpec(("order_id",), "ts", "ts", 0, 5_000, "full")
    op = IntervalJoinOp(p.Join("interval", ("left", "right"), spec=spec), _services(), lambda: (0, 0))

    def make(rng: np.random.Generator, side: int, t: int, n: int) -> pl.DataFrame:
        df = _batch(rng, t, n, 1, "order_id", ("qty", "px")[side])
        return df.with_columns((pl.col("ts") // 10).alias("order_id"))  # one order per 10 ms, ~10 execs each

    sizes = _drive(op, make)
    # each side keeps ~(5 s + DELAY) of rows at 1 event/ms: ~9 k rows, whatever the number of events
    _flat(sizes, bound=3 * (5_000 + DELAY))
