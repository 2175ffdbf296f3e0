"""Stream engine benchmark: 1-minute OHLCV + VWAP bars per symbol, log -> engine -> log.

Trades come from the TradeSimulator (Zipf-like symbols), arrive out of order by up to
``--disorder`` ms, are written to an embedded log (not timed), then the engine reads them,
computes the bars with a watermark of ``max_delay = disorder`` and writes them back (timed).
A Polars batch group-by over the same in-memory data runs in the same process as the baseline,
and the two answers are compared. Prints one JSON object.

    python benchmarks/engine_bench.py --events 2000000 --symbols 500
    python benchmarks/engine_bench.py --workload filter      # stateless filter + projection
    python benchmarks/engine_bench.py --workload hopping     # 5-minute windows every minute per account
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

import everstream as es
from everstream.engine.testing import read_topic
from everstream.finance.simulator import TradeSimulator
from everstream.log import EmbeddedLog, TopicSpec


def make_trades(n: int, symbols: int, disorder_ms: int, seed: int, rate: float) -> pa.Table:
    sim = TradeSimulator(seed=seed, symbols=symbols, rate_per_s=rate)
    table = pa.Table.from_batches([sim.next_batch(min(500_000, n - i)) for i in range(0, n, 500_000)])
    if disorder_ms:
        ts = table.column("ts").cast(pa.int64()).to_numpy()
        arrival = ts + np.random.default_rng(seed).uniform(0, disorder_ms, size=len(ts))
        table = table.take(pa.array(np.argsort(arrival, kind="stable")))
    return table


def engine_app(workload: str, topic: str, out: str, disorder_ms: int) -> es.App:
    app = es.App(f"bench-{workload}")
    trades = app.stream(topic)
    if workload == "filter":
        trades.filter(pl.col("qty") >= 1000).select("ts", "symbol", "price", "qty").to(out)
        return app
    timed = trades.with_watermark("ts", max_delay=f"{disorder_ms}ms")
    if workload == "bars":
        timed.window(es.tumbling("1m"), by="symbol").agg(
            open=es.first("price"), high=es.max("price"), low=es.min("price"), close=es.last("price"),
            volume=es.sum("qty"), vwap=es.vwap("price", "qty"), trades=es.count(),
        ).to(out)
    else:
        timed.window(es.hopping("5m", every="1m"), by="account").agg(
            notional=es.sum("qty"), trades=es.count()).to(out)
    return app


def polars_baseline(workload: str, df: pl.DataFrame) -> pl.DataFrame:
    if workload == "filter":
        return df.filter(pl.col("qty") >= 1000).select("ts", "symbol", "price", "qty")
    ts = pl.col("ts").cast(pl.Int64)
    if workload == "bars":
        return (
            df.with_columns(window_start=ts - ts % 60_000)
            .group_by("symbol", "window_start")
            .agg(open=pl.col("price").sort_by("ts").first(), high=pl.col("price").max(),
                 low=pl.col("price").min(), close=pl.col("price").sort_by("ts").last(),
                 volume=pl.col("qty").sum(),
                 vwap=(pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum(), trades=pl.len())
        )
    k = 5
    return (
        df.with_columns(ws=pl.int_ranges(0, k).list.eval(pl.element() * 60_000))
        .explode("ws")
        .with_columns(window_start=ts - ts % 60_000 - pl.col("ws"))
        .group_by("account", "window_start")
        .agg(notional=pl.col("qty").sum(), trades=pl.len())
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    table = make_trades(args.events, args.symbols, args.disorder, args.seed, args.rate)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        log = EmbeddedLog(Path(tmp) / "data", durability="relaxed")
        log.create_topic(TopicSpec("trades", args.partitions))
        t0 = time.perf_counter()
        with log.producer(batch_events=args.batch) as producer:
            key = "symbol" if args.workload != "hopping" else "account"
            for b in table.to_batches(args.batch):
                producer.send_batch("trades", b, key=key, timestamp="ts")
            producer.flush()
        produce_s = time.perf_counter() - t0

        app = engine_app(args.workload, "trades", "out", args.disorder)
        t0 = time.perf_counter()
        result = app.run(log, until_idle=True, poll_timeout=0.001)
        engine_s = time.perf_counter() - t0
        out = read_topic(log, "out")
        log.close()

    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    t0 = time.perf_counter()
    ref = polars_baseline(args.workload, df)
    polars_s = time.perf_counter() - t0

    same = out.height == ref.height
    if same and args.workload == "bars":
        a = out.with_columns(pl.col("window_start").dt.epoch("ms")).sort("symbol", "window_start")
        b = ref.sort("symbol", "window_start")
        same = bool((a["volume"] == b["volume"]).all() and (a["close"] == b["close"]).all())
    n = args.events
    window = result.metrics.get("trades.window", {})
    return {
        "benchmark": "engine",
        "workload": args.workload,
        "events": n,
        "symbols": args.symbols,
        "partitions": args.partitions,
        "disorder_ms": args.disorder,
        "event_time_span_s": round(args.events / args.rate),
        "produce_events_per_s": round(n / produce_s),
        "engine": {
            "seconds": round(engine_s, 3),
            "events_per_s": round(n / engine_s),
            "output_rows": out.height,
            "late_events": result.late_events,
            "window_latency_p50_ms": window.get("latency", {}).get("p50_ms"),
            "window_latency_p99_ms": window.get("latency", {}).get("p99_ms"),
        },
        "polars_batch": {"seconds": round(polars_s, 3), "events_per_s": round(n / polars_s), "output_rows": ref.height},
        "engine_vs_polars_batch": round(polars_s / engine_s, 3),
        "same_result": same,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": sys.version.split()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["bars", "hopping", "filter"], default="bars")
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--disorder", type=int, default=2000, help="max out-of-orderness in ms")
    ap.add_argument("--batch", type=int, default=10_000, help="events per stored batch")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=5000.0, help="simulated trades per second of event time")
    ap.add_argument("--tmp", default=None, help="directory for the temporary log")
    print(json.dumps(run(ap.parse_args())))


if __name__ == "__main__":
    main()
