"""The latency histogram: each observation lands in the first bucket whose upper bound is >= it."""

from __future__ import annotations

import math
import random

from everstream.engine.metrics import LATENCY_BUCKETS_MS, LatencyHistogram


def _bucket(ms: float) -> int:  # plain-Python reference: bounds strictly below the value
    return len(LATENCY_BUCKETS_MS) if math.isnan(ms) else sum(1 for b in LATENCY_BUCKETS_MS if b < ms)


def test_observations_land_in_the_reference_bucket() -> None:
    rng = random.Random(5)
    values = [*LATENCY_BUCKETS_MS, 0.0, -1.0, math.inf, math.nan, 1e9]
    values += [rng.uniform(0, 3000) for _ in range(2000)] + [rng.expovariate(1.0) for _ in range(2000)]
    h = LatencyHistogram()
    want = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for v in values:
        h.observe(v)
        want[_bucket(v)] += 1
    assert h.counts.tolist() == want
    assert h.count == len(values)
