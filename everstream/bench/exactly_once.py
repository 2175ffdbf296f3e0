"""``everstream bench exactly-once``: what exactly-once costs, on the bars workload (embedded log).

Three measurements, one JSON object:

- ``alo_events_per_s`` / ``eo_events_per_s``: 1-minute OHLCV+VWAP bars per symbol over seeded
  trades (out of order by up to 2 s), the same app run until idle with
  ``guarantee="at_least_once"`` and ``"exactly_once"`` (default 100 ms commit interval), on a
  fresh fsync'd embedded log each; both outputs are compared (they must be identical);
  ``eo_vs_alo`` is their ratio (target >= 0.7); the best of ``repeat`` runs each, alternated;
- ``eo_latency_p50_ms`` / ``eo_latency_p99_ms``: input-to-visible-output latency with a 10 ms
  commit interval: a producer thread sends small batches stamped with the wall clock, the app
  (exactly-once) passes them through, a read-committed consumer sees them once committed;
- ``restore_seconds_1m_keys``: restore time of window state with ``restore_keys`` open
  windows (distinct keys), i.e. building a new runner that reads the changelog back.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import threading
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


def _bars_app(name: str, out: str) -> es.App:
    app = es.App(name)
    app.stream("trades").with_watermark("ts", max_delay="2s").window(es.tumbling("1m"), by="symbol").agg(
        open=es.first("price"), high=es.max("price"), low=es.min("price"), close=es.last("price"),
        volume=es.sum("qty"), vwap=es.vwap("price", "qty"), trades=es.count(),
    ).to(out)
    return app


def _trades(events: int, symbols: int, seed: int) -> pa.Table:
    sim = TradeSimulator(seed=seed, symbols=symbols, rate_per_s=5000.0)
    table = pa.Table.from_batches([sim.next_batch(min(500_000, events - i)) for i in range(0, events, 500_000)])
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    arrival = ts + np.random.default_rng(seed).uniform(0, 2000, size=len(ts))
    return table.take(pa.array(np.argsort(arrival, kind="stable")))


def _throughput(table: pa.Table, guarantee: str, tmp: Path, commit_interval: float) -> tuple[float, pl.DataFrame]:
    with EmbeddedLog(tmp / f"{guarantee}-{time.monotonic_ns()}") as log:
        log.create_topic(TopicSpec("trades", 4))
        with log.producer() as producer:
            for b in table.to_batches(10_000):
                producer.send_batch("trades", b, key="symbol", timestamp="ts")
        app = _bars_app(f"bench-{guarantee}", "bars")
        t0 = time.perf_counter()
        app.run(log, until_idle=True, guarantee=guarantee, commit_interval=commit_interval, poll_timeout=0.001)
        seconds = time.perf_counter() - t0
        out = read_topic(log, "bars").sort("symbol", "window_start")
    return table.num_rows / seconds, out


def _latency(tmp: Path, seconds: float, rate: int) -> tuple[float, float, int]:
    """p50/p99 ms from send to visible (committed) output, 10 ms commit interval, exactly-once."""
    with EmbeddedLog(tmp / "latency", durability="fsync") as log:
        log.create_topic(TopicSpec("ticks", 1))
        log.create_topic(TopicSpec("seen", 1))
        app = es.App("bench-latency")
        app.stream("ticks").select("seq", "sent_ns").to("seen")
        runner = app.runner(log, guarantee="exactly_once", commit_interval=0.01, poll_timeout=0.001)
        stop = threading.Event()
        errors: list[BaseException] = []

        def engine() -> None:
            try:
                while not stop.is_set():
                    runner.cycle()
                runner.commit()
            except BaseException as e:
                errors.append(e)

        def source() -> None:
            try:
                with log.producer(linger_ms=0.5) as p:
                    seq, per = 0, max(1, rate // 200)  # a batch every 5 ms
                    while not stop.is_set():
                        now = time.time_ns()
                        p.send_batch("ticks", pa.table({"seq": np.arange(seq, seq + per), "sent_ns": [now] * per}))
                        p.flush()
                        seq += per
                        time.sleep(0.005)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=engine, daemon=True), threading.Thread(target=source, daemon=True)]
        for t in threads:
            t.start()
        lat: list[np.ndarray] = []
        warm = time.time_ns() + 1_000_000_000  # the first second warms up (first queries compile)
        end = time.monotonic() + seconds + 1.0
        with log.consumer() as c:
            c.assign([("seen", 0)])
            while time.monotonic() < end:
                for b in c.poll(0.05):
                    sent = b.column("sent_ns").to_numpy()
                    lat.append((time.time_ns() - sent[sent >= warm]) / 1e6)
        stop.set()
        for t in threads:
            t.join(30)
        runner.close()
        if errors:
            raise errors[0]
    values = np.concatenate(lat) if lat else np.array([np.nan])
    return float(np.percentile(values, 50)), float(np.percentile(values, 99)), len(values)


def _restore(tmp: Path, keys: int) -> tuple[float, int]:
    """Seconds for a new runner to restore window state of ``keys`` open windows."""
    with EmbeddedLog(tmp / "restore", durability="relaxed") as log:
        log.create_topic(TopicSpec("events", 1))
        with log.producer() as p:
            for start in range(0, keys, 200_000):
                n = min(200_000, keys - start)
                p.send_batch("events", pa.table({"k": np.arange(start, start + n), "v": np.ones(n),
                                                 "ts": np.full(n, 1_767_225_600_000)}), timestamp="ts")
        app = es.App("bench-restore")
        app.stream("events").with_watermark("ts", max_delay="1s").window(es.tumbling("1h"), by="k").agg(
            total=es.sum("v")).to("totals")
        with app.runner(log, guarantee="exactly_once", commit_interval=3600.0) as r:
            r.catch_up(timeout=600)
            r.commit()  # every window still open: `keys` rows of state
        t0 = time.perf_counter()
        with app.runner(log, guarantee="exactly_once") as r:
            seconds = time.perf_counter() - t0
            op = next(o for o in r.ops.values() if hasattr(o, "pending"))  # the window operator
            state = getattr(op, "state", None)
            rows = (0 if state is None else state.height) + sum(f.height for f in getattr(op, "pending", []))
    return seconds, rows


def run(events: int = 1_000_000, *, symbols: int = 500, seed: int = 7, repeat: int = 2,
        restore_keys: int = 1_000_000, latency_seconds: float = 5.0, latency_rate: int = 5000,
        commit_interval: float = 0.1, tmp: str | None = None) -> dict[str, Any]:
    """Run the three measurements; see the module docstring."""
    table = _trades(events, symbols, seed)
    alo: list[float] = []
    eo: list[float] = []
    same = True
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        base = Path(d)
        for _ in range(repeat):
            a, out_a = _throughput(table, "at_least_once", base, commit_interval)
            e, out_e = _throughput(table, "exactly_once", base, commit_interval)
            alo.append(a)
            eo.append(e)
            same = same and out_a.equals(out_e)
        p50, p99, samples = _latency(base, latency_seconds, latency_rate)
        restore_s, rows = _restore(base, restore_keys) if restore_keys else (float("nan"), 0)
    return {
        "benchmark": "exactly-once",
        "workload": "bars",
        "events": events,
        "symbols": symbols,
        "commit_interval_ms": round(commit_interval * 1000, 3),
        "alo_events_per_s": round(max(alo)),
        "eo_events_per_s": round(max(eo)),
        "eo_vs_alo": round(max(eo) / max(alo), 3),
        "same_result": same,
        "eo_latency_commit_interval_ms": 10,
        "eo_latency_p50_ms": round(p50, 2),
        "eo_latency_p99_ms": round(p99, 2),
        "latency_samples": samples,
        "restore_keys": rows,
        "restore_seconds_1m_keys": round(restore_s, 3),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


__all__ = ["run"]
