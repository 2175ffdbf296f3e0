"""Live latency: event produced -> early-fired window update visible to a reader, at a fixed rate.

Three processes on one embedded log (the default fsync durability unless ``--durability relaxed``):

- a **producer** sends simulated trades at ``--rate`` events/s in 1 ms ticks; each event carries
  ``sent_ns`` (wall clock when it was handed to the producer);
- the **engine** runs 1-minute OHLCV bars per symbol with ``early_fire`` (running values of open
  windows) and also aggregates ``max(sent_ns)``, so every update row names its newest event;
- a **reader** (this process) consumes the output topic; for each update row the latency is
  ``seen_ns - max(sent_ns)``: from the newest event's send to the update being readable.

Both log hops (producer -> engine, engine -> reader) and the engine's work are inside the figure.
Prints one JSON object (p50/p90/p99/max in ms, updates seen, events sent, achieved rate)::

    python benchmarks/latency_bench.py --rate 10000 --seconds 20
    python benchmarks/latency_bench.py --rate 10000 --seconds 20 --early-fire 5ms --durability relaxed
    python benchmarks/latency_bench.py --pipeline passthrough     # the floor: two log hops, no window
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

INPUT, OUTPUT = "trades", "bars_live"


def _producer(data: str, durability: str, rate: int, seconds: float, ready: Any, sent: Any) -> None:
    from everstream.finance.simulator import TradeSimulator
    from everstream.log import EmbeddedLog

    log = EmbeddedLog(data, durability=durability)  # type: ignore[arg-type]
    sim = TradeSimulator(seed=3, symbols=500, rate_per_s=rate)
    ready.wait()
    tick = 0.001
    per_tick = max(1, round(rate * tick))
    n = 0
    start = time.perf_counter()
    with log.producer(linger_ms=0.5) as producer:
        while (now := time.perf_counter() - start) < seconds:
            due = int(now / tick) * per_tick  # events that should have been sent by now
            if due > n:
                batch = sim.next_batch(due - n)
                ts = pa.array(np.full(batch.num_rows, time.time_ns() // 1_000_000), pa.timestamp("ms"))
                batch = batch.set_column(batch.schema.get_field_index("ts"), "ts", ts)
                batch = batch.append_column("sent_ns", pa.array(np.full(batch.num_rows, time.time_ns())))
                producer.send_batch(INPUT, batch, key="symbol", timestamp="ts")
                n += batch.num_rows
            time.sleep(max(0.0, tick - (time.perf_counter() - start - now)))
        producer.flush()
    sent.value = n
    log.close()


def _engine(data: str, durability: str, early_fire: str, seconds: float, ready: Any, pipeline: str) -> None:
    import polars as pl

    import everstream as es
    from everstream.log import EmbeddedLog

    log = EmbeddedLog(data, durability=durability)  # type: ignore[arg-type]
    app = es.App("latency")
    trades = app.stream(INPUT).with_watermark("ts", max_delay="200ms")
    if pipeline == "passthrough":  # the two log hops and the runtime, almost no operator work
        trades.filter(pl.col("qty") > 0).select("symbol", "price", "sent_ns").to(OUTPUT)
    else:
        (trades.window(es.tumbling("1m"), by="symbol", early_fire=early_fire)
         .agg(open=es.first("price"), high=es.max("price"), low=es.min("price"), close=es.last("price"),
              volume=es.sum("qty"), vwap=es.vwap("price", "qty"), sent_ns=es.max("sent_ns"))
         .to(OUTPUT))
    with app.runner(log, start="earliest", poll_timeout=0.001, max_batch_events=50_000) as runner:
        ready.set()
        runner.run(duration=seconds)
    log.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from everstream.log import EmbeddedLog, TopicSpec

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="everstream-latency-") as tmp:
        data = str(Path(tmp) / "log")
        log = EmbeddedLog(data, durability=args.durability)
        log.create_topic(TopicSpec(INPUT, args.partitions))
        log.create_topic(TopicSpec(OUTPUT, args.partitions))
        ctx = mp.get_context("spawn")
        ready, sent = ctx.Event(), ctx.Value("q", 0)
        engine = ctx.Process(target=_engine, args=(data, args.durability, args.early_fire, args.seconds + 3, ready,
                                                   args.pipeline))
        producer = ctx.Process(target=_producer, args=(data, args.durability, args.rate, args.seconds, ready, sent))
        engine.start()
        producer.start()
        lat: list[np.ndarray] = []
        warm_until = time.time_ns() + int(args.warmup * 1e9)
        with log.consumer(start="earliest") as reader:
            reader.assign([(OUTPUT, p) for p in range(args.partitions)])
            ready.wait(60)
            end = time.monotonic() + args.seconds + 2
            while time.monotonic() < end:
                for b in reader.poll(0.05):
                    seen = time.time_ns()
                    sent_ns = b.column(b.schema.get_field_index("sent_ns")).to_numpy(zero_copy_only=False)
                    keep = sent_ns[sent_ns >= warm_until]
                    if len(keep):
                        lat.append((seen - keep) / 1e6)
        producer.join(30)
        engine.join(30)
        log.close()
    ms = np.concatenate(lat) if lat else np.array([np.nan])
    return {
        "benchmark": "early_fire_latency", "rate_target": args.rate, "seconds": args.seconds,
        "events_sent": int(sent.value), "rate_achieved": round(sent.value / args.seconds),
        "pipeline": args.pipeline, "early_fire": args.early_fire, "durability": args.durability,
        "partitions": args.partitions,
        "updates_seen": int(np.isfinite(ms).sum()),
        "latency_ms": {q: round(float(np.nanpercentile(ms, v)), 2)
                       for q, v in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "target_p99_ms": 10.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=10_000, help="events per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of updates left out of the figures")
    ap.add_argument("--early-fire", default="5ms", help="early firing interval of the window")
    ap.add_argument("--pipeline", choices=["bars", "passthrough"], default="bars",
                    help="bars: early-fired 1-minute bars; passthrough: filter + project (the floor)")
    ap.add_argument("--durability", choices=["fsync", "relaxed"], default="fsync")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--tmp", default=None, help="directory for the temporary log")
    print(json.dumps(run(ap.parse_args())))


if __name__ == "__main__":
    main()
