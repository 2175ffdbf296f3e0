"""Benchmark of the Kafka log (issue 3, "Performance"): prints ONE JSON object on stdout.

    bash scripts/kafka-broker.sh start
    python benchmarks/kafka_bench.py [--bootstrap 127.0.0.1:9092] [--events N] [--reps R] [--quick]

Trade-shaped events (ts, symbol, price, qty, account, side; ~90 bytes of JSON each) against the
local broker, one Python process, everstream and a plain confluent-kafka loop in the same run:

- ``produce.everstream_send_batch_events_per_s``: ``producer.send_batch`` of 10,000-event Arrow
  tables (JSON encoding, murmur2 partitioning, one message per event), then ``flush()``; idempotent,
  acks=all, lz4, linger 5 ms. ``everstream_send_events_per_s``: ``producer.send(dict)`` per event.
- ``produce.plain_events_per_s``: the baseline: ``confluent_kafka.Producer.produce`` in a loop
  over values, keys, partitions and timestamps prepared beforehand (same settings), then ``flush()``.
- ``consume.everstream_arrow_events_per_s``: ``consumer.poll()`` to Arrow record batches with the
  metadata columns (count and sum(qty) verified). ``consume.plain_events_per_s``: the baseline,
  ``Consumer.consume`` in a loop touching each value; ``plain_json_to_arrow_events_per_s``: what a
  plain client must add to get the same Arrow table (``json.loads`` per message +
  ``pa.Table.from_pylist``).
- ``latency``: produce -> consume at 10,000 events/s offered for a few seconds (after one second
  of uncounted warm-up traffic): the producer
  stamps each record with its send time (ns), a consumer in another process takes
  ``time.time_ns() - sent_ns`` when its poll hands the record over (everstream: ``send()`` with
  the default ``linger_ms=5``; plain: ``produce()`` + ``poll(0)`` with ``linger.ms=5``). A 1 ms
  linger means ~1,000 produce requests/s, more than the local broker on a small shared machine
  answers promptly: acknowledgements then queue for hundreds of ms, for the plain client too.

Throughputs are medians of ``--reps`` repetitions (``runs`` has them all): the machine is shared
and the broker runs on it too, so compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from everstream.log import TopicSpec
from everstream.log.kafka import KafkaLog
from everstream.log.partitioner import partition_for

BATCH = 10_000
PARTITIONS = 4
T0_MS = 1_704_205_800_000
TARGETS = {"produce_events_per_s": 300_000, "consume_events_per_s": 500_000}
SCHEMA = pa.schema([
    ("ts", pa.int64()), ("symbol", pa.string()), ("price", pa.float64()), ("qty", pa.int64()),
    ("account", pa.string()), ("side", pa.string()),
])
PLAIN_PRODUCER = {
    "enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.codec": "lz4",
    "batch.num.messages": 100_000, "batch.size": 4_000_000, "queue.buffering.max.messages": 4_000_000,
    "queue.buffering.max.kbytes": 2_097_151, "delivery.report.only.error": True,
}
PLAIN_CONSUMER = {
    "enable.auto.commit": False, "isolation.level": "read_committed", "fetch.max.bytes": 64 << 20,
    "max.partition.fetch.bytes": 8 << 20, "queued.max.messages.kbytes": 256 << 10, "fetch.wait.max.ms": 100,
}


def log(msg: str) -> None:
    print(f"[kafka_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def trades(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    syms = np.array([f"S{i:03d}" for i in range(200)])
    w = 1.0 / np.arange(1, 201) ** 1.1
    sym = np.searchsorted(np.cumsum(w / w.sum()), rng.random(n)).clip(0, 199)
    return pa.table({
        "ts": pa.array(T0_MS + np.arange(n, dtype=np.int64) // 5),
        "symbol": pa.array(syms[sym]),
        "price": pa.array(np.round(rng.uniform(5, 800, n), 2)),
        "qty": pa.array(rng.integers(1, 100, n, dtype=np.int64) * 100),
        "account": pa.array([f"ACC{i:05d}" for i in rng.integers(0, 10_000, n)]),
        "side": pa.array(np.where(rng.random(n) < 0.5, "B", "S")),
    }, schema=SCHEMA)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------- produce


def plain_produce(bootstrap: str, topic: str, table: pa.Table) -> float:
    rows = table.to_pylist()
    values = [json.dumps(r, separators=(",", ":")).encode() for r in rows]
    keys = [r["symbol"].encode() for r in rows]
    cache: dict[bytes, int] = {}
    parts = [cache.setdefault(k, partition_for(k, PARTITIONS)) for k in keys]
    ts = [r["ts"] for r in rows]
    p = Producer({"bootstrap.servers": bootstrap, **PLAIN_PRODUCER})
    produce = p.produce
    t0 = time.perf_counter()
    for v, k, q, t in zip(values, keys, parts, ts, strict=True):
        while True:
            try:
                produce(topic, v, k, q, None, None, t)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(120)
    dt = time.perf_counter() - t0
    assert left == 0, f"plain producer: {left} messages unacknowledged"
    return len(values) / dt


def es_send_batch(kafka: KafkaLog, topic: str, table: pa.Table) -> float:
    chunks = [table.slice(i, BATCH) for i in range(0, table.num_rows, BATCH)]
    with kafka.producer() as p:
        t0 = time.perf_counter()
        for c in chunks:
            p.send_batch(topic, c, key="symbol", timestamp="ts")
        p.flush()
        dt = time.perf_counter() - t0
    return table.num_rows / dt


def es_send(kafka: KafkaLog, topic: str, rows: list[dict[str, Any]]) -> float:
    with kafka.producer() as p:
        send = p.send
        t0 = time.perf_counter()
        for r in rows:
            send(topic, r, key=r["symbol"], timestamp=r["ts"])
        p.flush()
        dt = time.perf_counter() - t0
    return len(rows) / dt


# ---------------------------------------------------------------------------------- consume


def plain_consume(bootstrap: str, topic: str, n: int, decode: bool) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}", **PLAIN_CONSUMER})
    c.assign([TopicPartition(topic, q, 0) for q in range(PARTITIONS)])
    got = 0
    qty = 0
    t0 = time.perf_counter()
    while got < n:
        msgs = c.consume(100_000, 0.5)
        values = list(map(Message.value, msgs))
        if decode:
            t = pa.Table.from_pylist([json.loads(v) for v in values], schema=SCHEMA)
            qty += int(t.column("qty").to_numpy().sum())
        got += len(values)
    dt = time.perf_counter() - t0
    c.close()
    assert got == n, got
    return n / dt


def es_consume(kafka: KafkaLog, topic: str, n: int, qty_sum: int) -> float:
    with kafka.consumer() as c:
        c.assign([(topic, q) for q in range(PARTITIONS)])
        got = 0
        qty = 0
        t0 = time.perf_counter()
        while got < n:
            for b in c.poll(0.5):
                got += b.num_rows
                qty += int(np.asarray(b.column("qty")).sum())
        dt = time.perf_counter() - t0
    assert got == n and qty == qty_sum, (got, n, qty, qty_sum)
    return n / dt


# ---------------------------------------------------------------------------------- latency


def latency_consumer(kind: str, bootstrap: str, topic: str, n: int, warm: int) -> None:
    """Subprocess: read ``warm + n`` records from the end of ``topic``; print the latency
    percentiles of the last ``n`` (JSON). The first ``warm`` records (one second of traffic) let
    both clients settle (connections, first fetches, producer ids) and are not counted."""
    lat: list[np.ndarray] = []
    got = 0
    n += warm
    deadline = time.monotonic() + 120
    if kind == "everstream":
        with KafkaLog(bootstrap) as kafka, kafka.consumer(start="latest") as c:
            c.assign([(topic, q) for q in range(PARTITIONS)])
            print("ready", flush=True)
            while got < n and time.monotonic() < deadline:
                for b in c.poll(0.2):
                    now = time.time_ns()
                    keep = np.asarray(b.column("id")) >= warm
                    lat.append((now - np.asarray(b.column("sent_ns")))[keep])
                    got += b.num_rows
    else:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex[:8]}", **PLAIN_CONSUMER})
        ends = [c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1] for q in range(PARTITIONS)]
        c.assign([TopicPartition(topic, q, ends[q]) for q in range(PARTITIONS)])
        print("ready", flush=True)
        while got < n and time.monotonic() < deadline:
            msgs = c.consume(10_000, 0)  # what is already fetched; else wait for the next message
            if not msgs:
                m = c.poll(0.2)
                msgs = [m] if m is not None and m.error() is None else []
            now = time.time_ns()
            if msgs:
                recs = [json.loads(m.value()) for m in msgs]
                sent = np.fromiter((r["sent_ns"] for r in recs if r["id"] >= warm), np.int64)
                lat.append(now - sent)
                got += len(msgs)
        c.close()
    ms = np.concatenate(lat) / 1e6 if lat else np.zeros(1)
    got = len(ms)
    print(json.dumps({
        "events": int(got), "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3),
    }), flush=True)


def run_latency(kind: str, bootstrap: str, kafka: KafkaLog, topic: str, rate: int, seconds: float) -> dict[str, Any]:
    warm = rate  # one second
    n = int(rate * seconds)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--latency-consumer", kind, bootstrap, topic, str(n), str(warm)],
        stdout=subprocess.PIPE, text=True,
    )
    n += warm
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # let the consumer's first fetch settle
    burst = max(1, rate // 1000)  # a burst every millisecond
    if kind == "everstream":
        p = kafka.producer(linger_ms=5)
        t0 = time.perf_counter()
        for i in range(0, n, burst):
            target = t0 + i / rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(target - now, 0.0005))
            for j in range(i, min(i + burst, n)):
                p.send(topic, {"id": j, "sent_ns": time.time_ns()}, key=str(j % 64))
        p.flush()
        p.close()
    else:
        pp = Producer({"bootstrap.servers": bootstrap, **PLAIN_PRODUCER, "linger.ms": 5})
        t0 = time.perf_counter()
        for i in range(0, n, burst):
            target = t0 + i / rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(target - now, 0.0005))
            for j in range(i, min(i + burst, n)):
                k = str(j % 64).encode()
                pp.produce(topic, json.dumps({"id": j, "sent_ns": time.time_ns()}).encode(), k,
                           partition_for(k, PARTITIONS))
            pp.poll(0)
        pp.flush(30)
    out, _ = proc.communicate(timeout=120)
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    res["offered_events_per_s"] = rate
    return res


# ---------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=os.environ.get("EVERSTREAM_TEST_KAFKA")
                    or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="100k events, 1 repetition, 2 s of latency")
    ap.add_argument("--latency-consumer", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.latency_consumer:
        kind, bootstrap, topic, n, warm = args.latency_consumer
        latency_consumer(kind, bootstrap, topic, int(n), int(warm))
        return
    if args.quick:
        args.events, args.reps, args.latency_seconds = 100_000, 1, 2.0
    n = args.events
    kafka = KafkaLog(args.bootstrap)
    tag = uuid.uuid4().hex[:8]
    topics: list[str] = []

    def topic(name: str, schema: pa.Schema | None = None) -> str:
        t = f"bench-{name}-{tag}"
        kafka.create_topic(TopicSpec(t, partitions=PARTITIONS, schema=schema))
        topics.append(t)
        return t

    table = trades(n)
    rows = table.to_pylist()
    qty_sum = int(np.asarray(table.column("qty")).sum())
    runs: dict[str, list[float]] = {k: [] for k in (
        "plain_produce", "es_send_batch", "es_send", "plain_consume", "plain_json_to_arrow", "es_consume")}
    try:
        for rep in range(args.reps):
            tp, tb, ts_ = topic(f"plain{rep}"), topic(f"batch{rep}", SCHEMA), topic(f"send{rep}", SCHEMA)
            log(f"rep {rep + 1}/{args.reps}: produce {n:,} events three ways")
            runs["plain_produce"].append(plain_produce(args.bootstrap, tp, table))
            runs["es_send_batch"].append(es_send_batch(kafka, tb, table))
            runs["es_send"].append(es_send(kafka, ts_, rows))
            log(f"rep {rep + 1}/{args.reps}: consume")
            runs["plain_consume"].append(plain_consume(args.bootstrap, tp, n, decode=False))
            runs["plain_json_to_arrow"].append(plain_consume(args.bootstrap, tp, n, decode=True))
            runs["es_consume"].append(es_consume(kafka, tb, n, qty_sum))
            log("  " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()))
        log(f"latency at 10,000 events/s for {args.latency_seconds:g} s")
        lat_es = run_latency("everstream", args.bootstrap, kafka, topic("lat-es"), 10_000, args.latency_seconds)
        lat_plain = run_latency("plain", args.bootstrap, kafka, topic("lat-plain"), 10_000, args.latency_seconds)
    finally:
        for t in topics:
            try:
                kafka.delete_topic(t)
            except Exception:
                pass
        kafka.close()
    m = {k: median(v) for k, v in runs.items()}
    out = {
        "bench": "kafka",
        "broker": args.bootstrap,
        "events": n,
        "reps": args.reps,
        "partitions": PARTITIONS,
        "produce": {
            "everstream_send_batch_events_per_s": round(m["es_send_batch"]),
            "everstream_send_events_per_s": round(m["es_send"]),
            "plain_events_per_s": round(m["plain_produce"]),
            "ratio_send_batch_vs_plain": round(m["es_send_batch"] / m["plain_produce"], 3),
            "ratio_send_vs_plain": round(m["es_send"] / m["plain_produce"], 3),
            "settings": "idempotent, acks=all, lz4, linger 5 ms, one message per event",
        },
        "consume": {
            "everstream_arrow_events_per_s": round(m["es_consume"]),
            "plain_events_per_s": round(m["plain_consume"]),
            "plain_json_to_arrow_events_per_s": round(m["plain_json_to_arrow"]),
            "ratio_vs_plain": round(m["es_consume"] / m["plain_consume"], 3),
            "ratio_vs_plain_json_to_arrow": round(m["es_consume"] / m["plain_json_to_arrow"], 3),
        },
        "latency": {"everstream": lat_es, "plain": lat_plain},
        "targets": TARGETS,
        "meets_targets": {
            "produce": m["es_send_batch"] >= TARGETS["produce_events_per_s"],
            "consume": m["es_consume"] >= TARGETS["consume_events_per_s"],
        },
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs": {k: [round(x) for x in v] for k, v in runs.items()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
