"""Per-step metrics: events in and out, batches, a processing-latency histogram, watermark lag."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Upper bounds (ms) of the latency histogram buckets; the last bucket is open.
LATENCY_BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)


@dataclass
class LatencyHistogram:
    """Counts of observations per bucket (fixed bounds, so histograms add up across tasks)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS_MS) + 1, dtype=np.int64))
    total_ms: float = 0.0
    max_ms: float = 0.0

    def observe(self, ms: float) -> None:
        # bisect on the tuple: ~0.15 us a call vs ~4.5 us for np.searchsorted (several calls per live cycle);
        # the same bucket, NaN (never expected) in the open one as before
        self.counts[bisect_left(LATENCY_BUCKETS_MS, ms) if ms == ms else len(LATENCY_BUCKETS_MS)] += 1
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (the max for the open bucket)."""
        n = self.count
        if not n:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.counts), q * n))
        return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else self.max_ms

    def to_dict(self) -> dict[str, Any]:
        n = self.count
        return {
            "count": n,
            "mean_ms": self.total_ms / n if n else 0.0,
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
            "max_ms": self.max_ms,
            "buckets_ms": {
                **{str(b): int(c) for b, c in zip(LATENCY_BUCKETS_MS, self.counts[:-1], strict=True)},
                "+inf": int(self.counts[-1]),
            },
        }


@dataclass
class StepMetrics:
    """What one step did: counters, latency per batch, and step-specific gauges."""

    step_id: str
    kind: str
    events_in: int = 0
    events_out: int = 0
    batches: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    late_events: int = 0
    dead_letters: int = 0
    windows_fired: int = 0
    early_results: int = 0
    state_rows: int = 0
    watermark: int | None = None
    watermark_lag_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "events_in": self.events_in,
            "events_out": self.events_out,
            "batches": self.batches,
            "latency": self.latency.to_dict(),
        }
        if self.kind in ("window", "watermark"):
            d["watermark"] = self.watermark
            d["watermark_lag_ms"] = self.watermark_lag_ms
        if self.kind == "window":
            d.update(late_events=self.late_events, windows_fired=self.windows_fired, state_rows=self.state_rows)
            if self.early_results:
                d["early_results"] = self.early_results
        if self.kind in ("rolling", "process"):
            d.update(watermark=self.watermark, late_events=self.late_events, state_rows=self.state_rows)
        if self.dead_letters or self.kind in ("watermark", "map", "flat_map", "map_batches"):
            d["dead_letters"] = self.dead_letters
        return d
