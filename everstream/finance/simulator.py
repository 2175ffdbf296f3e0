"""A seeded trade simulator: realistic trade-shaped Arrow batches, fast (vectorized).

Trades carry ``ts`` (event time, ms), ``trade_id``, ``symbol``, ``price``, ``qty``, ``account``
and ``side``. Symbols are drawn Zipf-like (a few names dominate, as on a real venue), each
symbol's price follows a random walk in cents, quantities are round lots, and event time
advances with the simulated rate, so windows close during a run rather than only at its end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

TRADE_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms")),
        pa.field("trade_id", pa.int64()),
        pa.field("symbol", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("qty", pa.int64()),
        pa.field("account", pa.string()),
        pa.field("side", pa.string()),
    ]
)

_BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class TradeSimulator:
    """Generates trades; ``next_batch(n)`` continues the same seeded stream."""

    seed: int = 7
    symbols: int = 100
    accounts: int = 10_000
    rate_per_s: float = 100_000.0  # event-time spacing: n trades span n / rate seconds
    start_ms: int = _BASE_TS

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._names = pa.array([f"SYM{i:03d}" for i in range(self.symbols)], pa.string())
        self._accounts = pa.array([f"ACC{i:05d}" for i in range(self.accounts)], pa.string())
        self._sides = pa.array(["B", "S"], pa.string())
        weights = 1.0 / np.arange(1, self.symbols + 1) ** 1.1
        self._p = weights / weights.sum()
        self._cents = self._rng.integers(1_000, 50_000, self.symbols).astype(np.int64)
        self._now = float(self.start_ms)
        self._next_id = 0

    def resume(self, now_ms: int, rate_per_s: float) -> None:
        """Go on from event time ``now_ms`` at a new rate, continuing every symbol's price walk.

        A replay of history followed by live trading (``everstream demo``) uses one simulator,
        so prices do not jump where history ends.
        """
        self._now = float(max(now_ms, self._now))
        self.rate_per_s = rate_per_s

    def next_batch(self, n: int) -> pa.RecordBatch:
        rng = self._rng
        sym = rng.choice(self.symbols, size=n, p=self._p)
        steps = rng.integers(-2, 3, size=n)
        # per-symbol random walk: add each trade's step to its symbol's running price
        order = np.argsort(sym, kind="stable")
        walk = np.empty(n, dtype=np.int64)
        s_sorted = sym[order]
        cum = np.cumsum(steps[order])
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        offsets = np.repeat(cum[starts] - steps[order][starts], np.diff(np.r_[starts, n]))
        walk[order] = cum - offsets
        cents = np.maximum(self._cents[sym] + walk, 1)
        last_idx = order[np.r_[starts[1:] - 1, n - 1]]
        self._cents[sym[last_idx]] = cents[last_idx]
        gaps = rng.exponential(1000.0 / self.rate_per_s, size=n)
        ts = (self._now + np.cumsum(gaps)).astype(np.int64)
        self._now += float(gaps.sum())
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        qty = rng.integers(1, 50, size=n) * 100
        side = (rng.random(n) < 0.5).astype(np.int32)
        cols = [
            pa.array(ts, pa.timestamp("ms")),
            pa.array(ids),
            _decode(sym, self._names),
            pa.array(cents / 100.0),
            pa.array(qty),
            _decode(rng.integers(0, self.accounts, size=n), self._accounts),
            _decode(side, self._sides),
        ]
        return pa.RecordBatch.from_arrays(cols, schema=TRADE_SCHEMA)


def _decode(codes: np.ndarray, names: pa.Array) -> pa.Array:
    """Strings for integer codes, without a Python object per row."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), names).cast(pa.string())
