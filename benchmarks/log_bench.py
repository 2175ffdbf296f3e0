"""Benchmark of the embedded log (issue 2, "Performance"): prints ONE JSON object on stdout.

    python benchmarks/log_bench.py [--quick] [--data-dir DIR] [--reps N] [--profile]

Trade-shaped events (ts, symbol, price, qty, account, side) from a seeded generator are
written and read back on the same disk, in the same run:

- ``file_fsync_events_per_s``: the physical reference: the same Arrow IPC bytes the log stores
  (one payload per 10,000-event batch, encoded beforehand) appended to a plain file with
  ``os.fdatasync`` after each batch. ``file_fsync_encode_events_per_s`` includes the encoding.
- ``append_batch_events_per_s``: ``producer.send_batch`` of 10,000-event Arrow batches,
  ``durability="fsync"`` (one fsync'd commit per batch), topic compression lz4 (the default);
  ``append_batch_none_events_per_s`` / ``append_batch_zstd_events_per_s`` for the other codecs.
  One log per codec for all repetitions, so later ones see WAL reuse and checkpoints.
- ``send_events_per_s``: ``producer.send(topic, dict)`` per event, then ``flush()`` (durable).
- ``consume_events_per_s``: one consumer polls the lz4 topic back to Arrow batches (also
  ``consume_none_...``/``consume_zstd_...``). An untimed first pass checks every event: offsets
  dense and in order, columns equal to what was written.
- ``latency_p50_ms`` / ``latency_p99_ms`` / ``latency_max_ms``: a consumer in another process;
  the producer offers 10,000 events/s with ``linger_ms=1`` and stamps every record with its
  wall-clock send time in ns (``sent_ns``); the consumer takes ``time.time_ns() - sent_ns`` when
  ``poll()`` hands the record over. Both sides are warmed up first (200 records).
- ``peak_rss_mb`` (this process), ``consumer_peak_rss_mb``, ratios to the file reference, and
  ``meets_*`` for the targets of issue 2.

Every figure is the median of several repetitions (the machine is shared and noisy); the
per-repetition values are in ``runs``. Progress goes to stderr. Data lives in a temporary
directory under /tmp (or ``--data-dir``), removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from everstream.log import EmbeddedLog, TopicSpec
from everstream.log import batch as batchcodec
from everstream.log.records import add_meta

BATCH = 10_000
SEED = 20240102
T0_MS = 1_704_205_800_000  # 2024-01-02 14:30:00 UTC, market open

TARGETS = {
    "append_batch_events_per_s": 5_000_000,
    "send_events_per_s": 300_000,
    "consume_events_per_s": 10_000_000,
    "latency_p99_ms": 5.0,
}


def log(msg: str) -> None:
    print(f"[log_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- events


def trades(n: int, seed: int = SEED, n_symbols: int = 100, n_accounts: int = 10_000) -> pa.Table:
    """``n`` trade events: Zipf-ish symbols and accounts, per-symbol random-walk prices with two
    decimals, round-lot quantities, B/S sides, monotone millisecond timestamps (~5 trades/ms)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    symbols: set[str] = set()
    while len(symbols) < n_symbols:
        symbols.add("".join(rng.choice(letters, int(rng.integers(2, 5)))))
    names = sorted(symbols)
    rng.shuffle(names)  # popularity unrelated to the name
    w = 1.0 / np.arange(1, n_symbols + 1) ** 1.1
    sym = np.searchsorted(np.cumsum(w / w.sum()), rng.random(n)).clip(0, n_symbols - 1)
    start = np.round(np.exp(rng.uniform(np.log(5.0), np.log(800.0), n_symbols)), 2)
    # random walk per symbol: cumulative sum of each symbol's own steps (5 bp per trade)
    steps = rng.normal(0.0, 1.0, n) * start[sym] * 0.0005
    order = np.argsort(sym, kind="stable")
    cs = np.cumsum(steps[order])
    first = np.searchsorted(sym[order], np.arange(n_symbols))
    before = np.concatenate([[0.0], cs])[first]
    walk = np.empty(n)
    walk[order] = cs - before[sym[order]]
    price = np.maximum(np.round(start[sym] + walk, 2), 0.01)
    lots = np.array([1, 1, 1, 1, 2, 2, 3, 5, 10, 20, 50, 100], dtype=np.int64)
    qty = lots[rng.integers(0, len(lots), n)] * 100
    wa = 1.0 / np.arange(1, n_accounts + 1) ** 0.8
    acc = np.searchsorted(np.cumsum(wa / wa.sum()), rng.random(n)).clip(0, n_accounts - 1)
    accounts = pa.array([f"ACC{i:05d}" for i in rng.permutation(n_accounts)])
    ts = T0_MS + np.floor(np.cumsum(rng.exponential(0.2, n))).astype(np.int64)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "symbol": pa.array(names).take(pa.array(sym)),
            "price": pa.array(price),
            "qty": pa.array(qty),
            "account": accounts.take(pa.array(acc)),
            "side": pa.array(["B", "S"]).take(pa.array((rng.random(n) < 0.5).astype(np.int8))),
        }
    )


def dict_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The events as the dicts an application would send (``ts`` as epoch ms)."""
    t = table.set_column(0, "ts", table.column("ts").cast(pa.int64()))
    rows: list[dict[str, Any]] = t.to_pylist()
    return rows


# ---------------------------------------------------------------------------------- helpers


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would carry the parent's over fork+exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


class Profiler:
    """Optional cProfile of a phase (``--profile``): top functions go to stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if not self.enabled:
            return fn()
        prof = cProfile.Profile()
        out = prof.runcall(fn)
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        print(f"\n===== profile: {name} (sorted by own time)\n{s.getvalue()}", file=sys.stderr)
        return out


def stored_batches(table: pa.Table) -> list[pa.RecordBatch]:
    """The 10,000-event batches exactly as ``send_batch(..., timestamp="ts")`` stores them."""
    out = []
    for b in table.to_batches(max_chunksize=BATCH):
        ts = b.column(0).cast(pa.int64())
        out.append(add_meta(b, ts, pa.nulls(b.num_rows, pa.binary()), None))
    return out


# ---------------------------------------------------------------------------------- phases


def bench_file_fsync(root: Path, batches: list[pa.RecordBatch], reps: int) -> dict[str, Any]:
    n = sum(b.num_rows for b in batches)
    payloads = [batchcodec.encode(b, "lz4").payload for b in batches]
    pure: list[float] = []
    with_encode: list[float] = []
    for r in range(reps):
        for encode_too in (False, True):
            path = root / f"segment-{r}-{int(encode_too)}.arrows"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                t = time.perf_counter()
                for i, b in enumerate(batches):
                    data = batchcodec.encode(b, "lz4").payload if encode_too else payloads[i]
                    os.write(fd, data)
                    os.fdatasync(fd)
                el = time.perf_counter() - t
            finally:
                os.close(fd)
                path.unlink()
            (with_encode if encode_too else pure).append(n / el)
    return {
        "file_fsync_events_per_s": median(pure),
        "file_fsync_encode_events_per_s": median(with_encode),
        "payload_bytes_per_event_lz4": sum(map(len, payloads)) / n,
        "runs_file_fsync": pure,
        "runs_file_fsync_encode": with_encode,
    }


def bench_append(
    root: Path, table: pa.Table, reps: int, prof: Profiler
) -> tuple[dict[str, Any], dict[str, Path]]:
    """One continuous log per codec; each repetition appends the table again (so later
    repetitions see what a long-running producer sees: WAL reuse and checkpoints)."""
    batches = table.to_batches(max_chunksize=BATCH)
    n = table.num_rows
    res: dict[str, Any] = {}
    dirs: dict[str, Path] = {}
    for comp in ("lz4", "none", "zstd"):
        d = dirs[comp] = root / f"append-{comp}"
        lg = EmbeddedLog(d)
        lg.create_topic(TopicSpec("trades", 1, compression=comp))  # type: ignore[arg-type]
        p = lg.producer()
        rates = []

        def go(p: Any = p) -> float:
            t = time.perf_counter()
            for b in batches:
                p.send_batch("trades", b, timestamp="ts")
            p.flush()
            return time.perf_counter() - t

        for r in range(reps):
            el = prof.run(f"append_batch {comp}", go) if r == 0 and comp == "lz4" else go()
            rates.append(n / el)
            log(f"append_batch {comp} rep {r}: {n / el / 1e6:.2f} M events/s")
        p.close()
        got = lg.describe_topic("trades").partitions[0].records
        lg.close()
        size = sum(f.stat().st_size for f in d.iterdir())
        if got != n * reps:
            raise SystemExit(f"append {comp}: stored {got} events, sent {n * reps}")
        key = "append_batch_events_per_s" if comp == "lz4" else f"append_batch_{comp}_events_per_s"
        res[key] = median(rates)
        res[f"disk_bytes_per_event_{comp}"] = size / got
        res[f"runs_append_batch_{comp}"] = rates
    return res, dirs


def bench_consume(dirs: dict[str, Path], table: pa.Table, reps: int, prof: Profiler) -> dict[str, Any]:
    """Read each codec's topic back to Arrow batches; lz4 is the headline. A first, untimed
    pass checks every event (offsets dense and in order, columns equal to what was written)
    and warms the process up (the first pass pays page faults for fresh memory)."""
    res: dict[str, Any] = {}
    for comp, d in dirs.items():
        lg = EmbeddedLog(d)
        total = lg.describe_topic("trades").partitions[0].records
        _verify(lg, table, total)
        res[f"consume_verified_events_{comp}"] = total
        rates = []
        for r in range(reps):
            c = lg.consumer()
            c.assign([("trades", 0)])

            def go(c: Any = c, total: int = total) -> tuple[float, int]:
                got = 0
                t = time.perf_counter()
                while got < total:
                    bs = c.poll(timeout=1.0)
                    if not bs:
                        break
                    for b in bs:
                        got += b.num_rows
                return time.perf_counter() - t, got

            el, got = prof.run("consume lz4", go) if r == 0 and comp == "lz4" else go()
            c.close()
            if got != total:
                raise SystemExit(f"consume {comp}: read {got} events, expected {total}")
            rates.append(total / el)
            log(f"consume {comp} rep {r}: {total / el / 1e6:.2f} M events/s")
        lg.close()
        key = "consume_events_per_s" if comp == "lz4" else f"consume_{comp}_events_per_s"
        res[key] = median(rates)
        res[f"runs_consume_{comp}"] = rates
    return res


def _verify(lg: EmbeddedLog, table: pa.Table, total: int) -> None:
    """Not timed: every stored event comes back once, in order, equal to what was sent."""
    c = lg.consumer()
    c.assign([("trades", 0)])
    seen = 0
    n = table.num_rows
    while seen < total:
        bs = c.poll(timeout=1.0)
        if not bs:
            break
        for b in bs:
            offs = np.asarray(b.column("_offset"))
            if not (offs == np.arange(seen, seen + b.num_rows)).all():
                raise SystemExit(f"consume: offsets out of order near {seen}")
            start = seen % n
            k = min(b.num_rows, n - start)  # a batch never spans two copies (n % 10,000 == 0)
            want = table.slice(start, k)
            got = pa.Table.from_batches([b.slice(0, k)]).select(table.column_names)
            if k != b.num_rows or not got.equals(want):
                raise SystemExit(f"consume: events at offsets {seen}..{seen + b.num_rows} differ")
            seen += b.num_rows
    c.close()
    if seen != total:
        raise SystemExit(f"consume: verified {seen} events, expected {total}")


def bench_send(root: Path, rows: list[dict[str, Any]], reps: int, prof: Profiler) -> dict[str, Any]:
    n = len(rows)
    rates = []
    for r in range(reps):
        d = root / f"send-{r}"
        lg = EmbeddedLog(d)
        lg.create_topic(TopicSpec("trades", 1))
        p = lg.producer()

        def go(p: Any = p) -> float:
            send = p.send
            t = time.perf_counter()
            for row in rows:
                send("trades", row)
            p.flush()
            return time.perf_counter() - t

        el = prof.run("send", go) if r == 0 else go()
        p.close()
        got = lg.describe_topic("trades").partitions[0].records
        lg.close()
        shutil.rmtree(d)
        if got != n:
            raise SystemExit(f"send: stored {got} events, sent {n}")
        rates.append(n / el)
        log(f"send rep {r}: {n / el / 1e3:.0f} k events/s")
    return {"send_events_per_s": median(rates), "runs_send": rates}


# ---------------------------------------------------------------------------------- latency


def latency_consumer(data_dir: str, topic: str, expected: int, deadline_s: float) -> None:
    """Child process: read the warm-up records, say ``ready``, then read ``expected`` records
    and print their latencies (JSON) on stdout."""
    lg = EmbeddedLog(data_dir)
    c = lg.consumer()
    c.assign([(topic, 0)])
    warm = 0
    while warm < WARMUP_EVENTS:
        warm += sum(b.num_rows for b in c.poll(timeout=1.0))
    print("ready", flush=True)
    lat: list[np.ndarray] = []
    ts_lat: list[np.ndarray] = []
    got = 0
    end = time.monotonic() + deadline_s
    while got < expected and time.monotonic() < end:
        for b in c.poll(timeout=0.5):
            now_ns = time.time_ns()
            lat.append((now_ns - np.asarray(b.column("sent_ns"))) / 1e6)
            ts_lat.append(now_ns / 1e6 - np.asarray(b.column("_timestamp").cast(pa.int64())))
            got += b.num_rows
    c.close()
    lg.close()
    out = {
        "got": got,
        "lat_ms": np.concatenate(lat).round(4).tolist() if lat else [],
        "ts_lat_ms": np.concatenate(ts_lat).round(1).tolist() if ts_lat else [],
        "rss_mb": peak_rss_mb(),
    }
    print(json.dumps(out), flush=True)


WARMUP_EVENTS = 200


def bench_latency(
    root: Path, rows: list[dict[str, Any]], reps: int, seconds: float, rate: int = 10_000
) -> dict[str, Any]:
    """Producer here, consumer in a child process; ``rate`` events/s offered for ``seconds``.

    Both sides are warmed up first (a fresh process's first Arrow conversion imports pandas,
    ~0.5-0.8 s): the producer writes WARMUP_EVENTS records, the child reads them, then the
    paced run starts. Every paced event counts."""
    n = int(rate * seconds)
    p50s, p99s, p999s, maxes, ts_p99s, achieved, rss = [], [], [], [], [], [], []
    for r in range(reps):
        d = root / f"latency-{r}"
        lg = EmbeddedLog(d)
        lg.create_topic(TopicSpec("lat", 1))
        p = lg.producer(linger_ms=1.0)
        send = p.send
        for i in range(WARMUP_EVENTS):
            row = dict(rows[i % len(rows)])
            row["sent_ns"] = time.time_ns()
            send("lat", row)
        p.flush()
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--latency-consumer", str(d), "lat", str(n),
             str(seconds + 30)],
            stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("latency consumer did not start")
        i = 0
        t0 = time.perf_counter()
        while i < n:
            due = min(n, int((time.perf_counter() - t0) * rate) + 1)
            while i < due:
                row = dict(rows[i % len(rows)])
                row["sent_ns"] = time.time_ns()
                send("lat", row)
                i += 1
            time.sleep(0.0002)
        el = time.perf_counter() - t0
        p.flush()
        out, _ = child.communicate(timeout=seconds + 60)
        p.close()
        lg.close()
        shutil.rmtree(d)
        res = json.loads(out.strip().splitlines()[-1])
        if res["got"] != n:
            raise SystemExit(f"latency: the consumer got {res['got']} of {n} events")
        lat = np.asarray(res["lat_ms"])
        ts_lat = np.asarray(res["ts_lat_ms"])
        p50s.append(float(np.percentile(lat, 50)))
        p99s.append(float(np.percentile(lat, 99)))
        p999s.append(float(np.percentile(lat, 99.9)))
        maxes.append(float(lat.max()))
        ts_p99s.append(float(np.percentile(ts_lat, 99)))
        achieved.append(n / el)
        rss.append(res["rss_mb"])
        log(f"latency rep {r}: p50 {p50s[-1]:.2f} ms, p99 {p99s[-1]:.2f} ms, max {maxes[-1]:.2f} ms, "
            f"offered {n / el:.0f} ev/s")
    return {
        "latency_p50_ms": median(p50s),
        "latency_p99_ms": median(p99s),
        "latency_p999_ms": median(p999s),
        "latency_max_ms": max(maxes),
        "latency_timestamp_p99_ms": median(ts_p99s),
        "latency_offered_events_per_s": median(achieved),
        "latency_seconds": seconds,
        "latency_linger_ms": 1.0,
        "consumer_peak_rss_mb": max(rss),
        "runs_latency_p50_ms": p50s,
        "runs_latency_p99_ms": p99s,
        "runs_latency_max_ms": maxes,
    }


# ---------------------------------------------------------------------------------- main


def machine(data_dir: Path) -> dict[str, Any]:
    fs = "?"
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if str(data_dir.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} on {dev} ({mnt})"
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "filesystem": fs,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller, fewer repetitions (< 40 s)")
    ap.add_argument("--data-dir", help="where to write (default: a temporary directory under /tmp)")
    ap.add_argument("--reps", type=int, help="repetitions per measurement (default 5, quick 3)")
    ap.add_argument("--profile", action="store_true", help="cProfile each path; top functions to stderr")
    ap.add_argument("--latency-consumer", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.latency_consumer:
        d, topic, n, deadline = a.latency_consumer
        latency_consumer(d, topic, int(n), float(deadline))
        return

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    reps = a.reps or (3 if a.quick else 5)
    n_batch_events = 500_000 if a.quick else 2_000_000
    n_send = 100_000 if a.quick else 300_000
    lat_seconds, lat_reps = (2.0, 1) if a.quick else (5.0, 3)
    parent = Path(a.data_dir) if a.data_dir else Path("/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="everstream-bench-", dir=parent))
    prof = Profiler(a.profile)
    log(f"data in {root}; {reps} repetitions; {n_batch_events:,} events per batch run")
    try:
        table = trades(n_batch_events)
        rows = dict_rows(table.slice(0, max(n_send, int(10_000 * lat_seconds))))
        log("events generated")
        res: dict[str, Any] = {}
        res.update(bench_file_fsync(root, stored_batches(table), reps))
        log(f"file+fdatasync: {res['file_fsync_events_per_s'] / 1e6:.2f} M events/s")
        app, dirs = bench_append(root, table, reps, prof)
        res.update(app)
        res.update(bench_consume(dirs, table, reps, prof))
        for d in dirs.values():
            shutil.rmtree(d)
        res.update(bench_send(root, rows[:n_send], max(reps - 2, 3) if not a.quick else reps, prof))
        res.update(bench_latency(root, rows, lat_reps, lat_seconds))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    res["peak_rss_mb"] = peak_rss_mb()
    res["append_vs_file_fsync"] = res["append_batch_events_per_s"] / res["file_fsync_events_per_s"]
    res["append_vs_file_fsync_encode"] = (
        res["append_batch_events_per_s"] / res["file_fsync_encode_events_per_s"]
    )
    for field, target in TARGETS.items():
        name = field.removesuffix("_events_per_s").removesuffix("_ms")
        ok = res[field] <= target if field.endswith("_ms") else res[field] >= target
        res[f"meets_{name}"] = bool(ok)
    res["targets"] = TARGETS
    summary = {k: v for k, v in res.items() if not k.startswith("runs_")}
    out = {
        "benchmark": "everstream embedded log",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": a.quick,
        "repetitions": reps,
        "events_per_batch": BATCH,
        "events_batch_runs": n_batch_events,
        "events_send_runs": n_send,
        "durability": "fsync",
        **summary,
        "machine": {**machine(parent), "load_average_1m_at_start": round(load_start, 2)},
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": {k.removeprefix("runs_"): v for k, v in res.items() if k.startswith("runs_")},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
