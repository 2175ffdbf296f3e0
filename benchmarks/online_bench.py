"""Per-batch cost of the on-arrival feature step against the size of its state, before/after the LSM layout.

The fraud feature step (``everstream.ml.features.ONLINE_PARTS``: five families) runs isolated (no log,
no runtime, like ``everstream bench ml``'s ``_step_costs``) on ``--batch``-event batches after its state
holds ``--sizes`` retained rows per family. ``after`` is today's ``everstream.engine.online`` (tiered
L0 + sorted runs); ``before`` swaps in the earlier single-sorted-part state kept verbatim in
``tests/ml/online_legacy.py``. Both get the same state (restored from one snapshot; ``after`` restores
it as runs of ``_RUN_MAX`` rows by arrival, as streaming leaves it), then ``size/8``
more events (at most 500 k) in 5,000-event batches so the layout is in its steady state (the earlier
delta a typical eighth full, the runs at their levels), then ``--batches`` timed batches.

Synthetic payments: 1 M cards, 100 k merchants, a device per card; the state's rows spread over the
last 20 hours (inside every family's retention), then 5,000 events a second.

    python benchmarks/online_bench.py                      # 35k, 1M and 5M rows, before and after
    python benchmarks/online_bench.py --sizes 35000 --impl after --batches 500

Prints one JSON object: per size and implementation, per-batch p50/p99/max/mean in ms (and the
state rows and runs at the end). The machine is shared: compare before/after of one run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from everstream.engine import online
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import Ctx
from everstream.engine.state import Snapshot
from everstream.ml.features import FEATURES, ONLINE_PARTS, PAYMENT_COLUMNS

HOUR = 3_600_000
_LEGACY = Path(__file__).resolve().parent.parent / "tests" / "ml" / "online_legacy.py"


def _legacy_state() -> type:
    spec = importlib.util.spec_from_file_location("online_legacy", _LEGACY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LegacyFamilyState  # type: ignore[no-any-return]


def payments(n: int, start: int, step_ms: float, seed: int, first_id: int = 0) -> pl.DataFrame:
    """``n`` synthetic payments from ``start`` (ms), ``step_ms`` apart, in arrival = event-time order."""
    rng = np.random.default_rng(seed)
    card = rng.integers(0, 1_000_000, n)
    device = np.where(rng.random(n) < 0.05, rng.integers(0, 1_000_000, n), card)
    frame = pl.DataFrame({
        "txn_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "ts": (start + np.arange(n) * step_ms).astype(np.int64),
        "card": card, "merchant": rng.integers(0, 100_000, n), "device": device,
        "amount": np.round(rng.lognormal(3.0, 1.0, n), 2),
    })
    frame = frame.with_columns(pl.format("C{}", "card").alias("card"), pl.format("M{}", "merchant").alias("merchant"),
                               pl.format("D{}", "device").alias("device"))
    return frame.with_columns(pl.col("ts").alias(EVENT_TIME))


def _op(state_class: type | None) -> online.OnlineFeaturesOp:
    outs = tuple(c for c in FEATURES if c != "amount")
    spec = online.OnlineSpec(ONLINE_PARTS, outs, HOUR, frozenset(PAYMENT_COLUMNS))
    step = online.OnlineStep(step_id="features.online", inputs=(), pattern=spec, by=(), timeouts=False)

    class _Bench:
        app_name = "online-bench"

    return online.OnlineFeaturesOp(step, _Bench(), spec, state_class)  # type: ignore[arg-type]


def _layout(op: online.OnlineFeaturesOp) -> dict[str, Any]:
    fam = [f for f in op.families if f is not None]
    rows = [f.rows if hasattr(f, "runs") else len(getattr(f, "kid")) + f.delta_rows for f in fam]  # noqa: B009
    runs = [len(f.runs) if hasattr(f, "runs") else 1 for f in fam]
    return {"state_rows_max_family": max(rows), "runs_max_family": max(runs)}


def measure(size: int, impls: list[str], batch: int, batches: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    span = 20 * HOUR
    hist = payments(size, now - span, span / size, seed=1)
    builder = _op(None)
    builder.process(hist, Ctx("pay", 0))
    snap: Snapshot = builder.snapshot_state()
    del builder, hist
    gc.collect()
    settle = min(size // 8, 500_000)
    live = payments(settle + batch * batches, now, 0.2, seed=2, first_id=size)  # 5,000 events a second
    out: dict[str, Any] = {}
    for impl in impls:
        op = _op(_legacy_state() if impl == "before" else None)
        op.restore_state(snap)
        ctx = Ctx("pay", 0)
        for a in range(0, settle, 5_000):
            op.process(live.slice(a, min(5_000, settle - a)), ctx)
        cost = np.zeros(batches)
        for b in range(batches):
            part = live.slice(settle + b * batch, batch)
            t0 = time.perf_counter()
            op.process(part, ctx)
            cost[b] = time.perf_counter() - t0
        ms = cost * 1000
        out[impl] = {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
                     "max_ms": round(float(ms.max()), 3), "mean_ms": round(float(ms.mean()), 3), **_layout(op)}
        del op
        gc.collect()
    if "before" in out and "after" in out:
        out["p50_ratio_before_over_after"] = round(out["before"]["p50_ms"] / out["after"]["p50_ms"], 2)
        out["p99_ratio_before_over_after"] = round(out["before"]["p99_ms"] / out["after"]["p99_ms"], 2)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="35000,1000000,5000000", help="retained rows per family, comma-separated")
    ap.add_argument("--impl", default="before,after", help="before (single sorted part), after (LSM), or both")
    ap.add_argument("--batch", type=int, default=25, help="events per timed batch")
    ap.add_argument("--batches", type=int, default=2000, help="timed batches per size and implementation")
    args = ap.parse_args(argv)
    impls = [x for x in args.impl.split(",") if x]
    bad = [x for x in impls if x not in ("before", "after")]
    if bad:
        ap.error(f"--impl {bad}: use before, after or before,after")
    result: dict[str, Any] = {"bench": "online_features_step", "batch_events": args.batch, "batches": args.batches,
                              "families": sum(isinstance(p, online.Family) for p in ONLINE_PARTS),
                              "l0_rows": online._L0_ROWS, "run_max": online._RUN_MAX, "sizes": {}}
    for size in (int(s) for s in args.sizes.split(",") if s):
        result["sizes"][str(size)] = measure(size, impls, args.batch, args.batches)
        print(json.dumps({"size": size, **result["sizes"][str(size)]}), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
