"""Run one benchmark query through everstream (log -> engine -> log) and check it against DuckDB.

The data is generated once per ``(suite, events, seed)`` into Parquet (the peers read the same
file), copied into an embedded log (not timed), then the engine runs the query until idle (timed:
``seconds``, from the runner's start; library imports come first, as in the peers' runners), its
output topic is read back and compared with the DuckDB batch reference.
``peak_rss_mb`` is the process's peak resident memory sampled during the engine run;
``host_reference_ms`` how fast the host ran just before it (:mod:`everstream.bench.host`).
"""

from __future__ import annotations

import gc
import os
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
import pyarrow.parquet as pq

from everstream.bench import data
from everstream.bench.check import compare, epoch_ms, reference
from everstream.bench.host import host_reference
from everstream.bench.queries import Query, get
from everstream.errors import ConfigError

DEFAULT_DATA = Path(os.environ.get("EVERSTREAM_BENCH_DATA", "benchmarks/.data"))
INPUT_TOPIC = {"finance": "trades", "nexmark": "nexmark"}


def dataset(suite: str, events: int, seed: int, directory: Path, table: str = "") -> Path:
    """The Parquet file of ``suite``'s input (generated on first use); ``table="cards"``: W5's authorizations."""
    if table == "cards":
        return data.cached_parquet(directory, f"cards-{events}-{seed}", lambda: data.cards(events, seed=seed)[0])
    if suite == "finance":
        return data.cached_parquet(directory, f"trades-{events}-{seed}", lambda: data.trades(events, seed=seed))
    if suite == "nexmark":
        return data.cached_parquet(directory, f"nexmark-{events}-{seed}", lambda: data.nexmark(events, seed=seed))
    raise ConfigError(f"unknown benchmark suite {suite!r}: use finance or nexmark")


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (Linux /proc): one pass over every process's ``stat``."""
    pids = {root}
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    if ppid in pids:
                        pids.add(int(entry))
                except (OSError, ValueError, IndexError):
                    continue
    except OSError:
        pass
    return sorted(pids)


def _resident_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 1e6


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process and its children (Linux /proc), in MB."""
    return _resident_mb(_tree(pid or os.getpid()))


class RssSampler:
    """Peak RSS of a process tree, sampled every ``every`` seconds in a daemon thread.

    The tree is rescanned every ``rescan`` seconds only: a scan reads every process's ``stat`` (~2 ms
    of Python here), and the sampler shares the measured process's GIL when it samples itself.
    """

    def __init__(self, pid: int | None = None, every: float = 0.05, rescan: float = 1.0) -> None:
        self.pid, self.every, self.rescan, self.peak = pid or os.getpid(), every, rescan, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        pids, scanned = _tree(self.pid), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - scanned >= self.rescan:
                pids, scanned = _tree(self.pid), time.monotonic()
            self.peak = max(self.peak, _resident_mb(pids))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def side_inputs(q: Query, parquet: Path, events: int, seed: int, directory: Path) -> dict[str, Path]:
    """Parquet files of a query's inputs besides the suite's own (W4: ``quotes`` derived from the trades)."""
    out: dict[str, Path] = {}
    if "quotes" in q.tables:
        out["quotes"] = data.cached_parquet(directory, f"quotes-{events}-{seed}",
                                            lambda: data.quotes(pq.read_table(parquet), seed=seed))
    return out


def check_output(q: Query, got: pl.DataFrame, parquet: Path, others: dict[str, Path] | None = None) -> tuple[bool, str]:
    """Compare an engine's output for ``q`` with the DuckDB reference over ``parquet`` (and ``others``)."""
    if q.normalize is not None and got.height:
        got = q.normalize(got)
    if q.reference_fn is not None:  # plain-Python reference (W5: CEP)
        want = epoch_ms(q.reference_fn({q.tables[0]: parquet, **(others or {})}))
    else:
        want = reference(q.reference_sql, {q.tables[0]: parquet, **(others or {})})
    return compare(got, want, q.exact, q.approx)


def not_expressible(q: Query, events: int) -> dict[str, Any]:
    return {"suite": q.suite, "query": q.name, "title": q.title, "engine": "everstream", "events": events,
            "status": "not expressible", "reason": q.reason, "seconds": None, "events_per_s": None,
            "peak_rss_mb": None, "correct": None}


def run(suite: str, name: str, events: int, *, seed: int = 7, data_dir: Path | None = None,
        batch_events: int = 10_000, work_dir: Path | None = None) -> dict[str, Any]:
    """Run query ``name`` of ``suite`` over ``events`` generated events; a JSON-able result."""
    from everstream.engine import App
    from everstream.engine.testing import read_topic
    from everstream.log import EmbeddedLog, TopicSpec

    q = get(suite, name)
    if q.build is None:
        return not_expressible(q, events)
    parquet = dataset(suite, events, seed, data_dir or DEFAULT_DATA, q.tables[0])
    others = side_inputs(q, parquet, events, seed, data_dir or DEFAULT_DATA)
    topic = INPUT_TOPIC[suite]
    time_col = "ts" if suite == "finance" else "date_time"
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="everstream-bench-") as tmp:
        log = EmbeddedLog(Path(tmp) / "log", durability="relaxed")
        try:
            log.create_topic(TopicSpec(topic, 1))
            table = pq.read_table(parquet)
            rows = table.num_rows
            with log.producer(batch_events=batch_events) as producer:
                for b in table.to_batches(batch_events):
                    producer.send_batch(topic, b, timestamp=time_col)
                for name, path in others.items():  # further inputs (W4's quotes)
                    log.create_topic(TopicSpec(name, 1))
                    for b in pq.read_table(path).to_batches(batch_events):
                        producer.send_batch(name, b, timestamp=time_col)
                producer.flush()
            del table
            gc.collect()
            # let the copy settle as history would have: the last WAL checkpoint on close, then the ~2 x input
            # size of dirty pages written out. Otherwise the engine's first second shares the disk with that
            # write-back (measured: 0.1-0.35 s of a 1.3 s W5 run spent waiting, on one core)
            log.close()
            os.sync()
            log = EmbeddedLog(Path(tmp) / "log", durability="relaxed")

            app = App(f"bench-{suite}-{q.name}")
            q.build(app.stream(topic)).to("out")
            # pyarrow imports pandas on its first pa.array() (~0.3 s here; the runner pays it on start):
            # a one-time import, done before the timer as the peers import their libraries before theirs
            pa.array(np.zeros(1))
            host = host_reference()  # how fast the host runs now: compare runs of other days by it too
            with RssSampler() as rss:
                t0, c0 = time.perf_counter(), time.process_time()
                result = app.run(log, until_idle=True, poll_timeout=0.001)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            names = {t.name for t in log.list_topics()}
            out = read_topic(log, "out") if "out" in names else pl.DataFrame()
        finally:
            log.close()
    ok, detail = check_output(q, out, parquet, others)
    return {
        "suite": suite, "query": q.name, "title": q.title, "engine": "everstream", "status": "ok",
        "events": rows, "seconds": round(seconds, 4), "events_per_s": round(rows / seconds),
        "cpu_seconds": round(cpu, 4), "events_per_cpu_s": round(rows / cpu) if cpu > 0 else None,
        "peak_rss_mb": round(rss.peak, 1), "correct": ok, "check": detail, "output_rows": out.height,
        "late_events": result.late_events, "dead_letters": result.dead_letters, "notes": q.notes, "seed": seed,
        "python": sys.version.split()[0], "machine": platform.machine(), **host,
    }
