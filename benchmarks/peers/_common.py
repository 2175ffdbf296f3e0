"""Shared command line of the peer runners: read Parquet, time the query, write the result."""

from __future__ import annotations

import argparse
import heapq
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: A runner takes the input Parquet path and returns the result table (or raises NotExpressible).
Runner = Callable[[Path], pa.Table]
#: Untimed preparation of a run, ``(suite, query, parquet) -> path handed to the runner``: input
#: conversion (Parquet -> CSV for PyFlink, Parquet -> Kafka topic for Quix Streams), JVM start, warm-up.
Prepare = Callable[[str, str, Path], Path]


class NotExpressible(Exception):
    """The peer cannot express this query (the message says why)."""


#: Inputs besides ``--input``, by table name (W4: ``quotes``), from ``--extra NAME=PATH``; set by ``main``.
_EXTRA: dict[str, Path] = {}


def extra(name: str) -> Path:
    """The Parquet file of the query's further input ``name`` (W4's ``quotes``), passed as ``--extra NAME=PATH``."""
    try:
        return _EXTRA[name]
    except KeyError:
        raise SystemExit(f"this query needs its {name!r} input: pass --extra {name}=PATH "
                         f"(benchmarks/compare.py does; got {sorted(_EXTRA) or 'none'})") from None


# ------------------------------------------------------------------------- W5 (card testing) in plain Python

#: W5's thresholds and window (everstream.finance.patterns.card_testing's defaults)
SMALL, LARGE, MIN_SMALLS, WITHIN_MS = 2.00, 500.00, 3, 600_000
#: the data's bounded disorder (event time): an event arrives at most this much after a later one
DISORDER_MS = 2_000

#: W5 output, everstream's match shape: the stages' events as list<struct<ts, amount>> (queries.py normalizes)
_EVENT = pa.struct([("ts", pa.int64()), ("amount", pa.float64())])
W5_SCHEMA = pa.schema([("card", pa.string()), ("match_start", pa.int64()), ("match_end", pa.int64()),
                       ("small", pa.list_(_EVENT)), ("large", pa.list_(_EVENT))])

#: one W5 alert: card, match_start, match_end, [(ts, amount) of the smalls], (ts, amount) of the large
Alert = tuple[str, int, int, list[tuple[int, float]], tuple[int, float]]


class CardMatcher:
    """One card's card-testing matcher, fed its candidate events (amount < 2.00 or > 500.00) in
    (ts, seq) order; the semantics of ``everstream.finance.patterns.card_testing`` (3+ smalls, then a
    large within 10 minutes, skip past the last event), as ``queries._w5_reference`` states them:
    each large ends at most one alert, whose smalls are those since the previous alert less than 10
    minutes before it, if at least 3 and the last of them came after the previous large.

    A peer's per-key state: smalls older than 10 minutes are dropped as time advances (they can never
    join a later large), so the state stays bounded."""

    __slots__ = ("card", "last_large", "pos", "smalls")

    def __init__(self, card: str) -> None:
        self.card = card
        self.smalls: list[tuple[int, int, float]] = []  # (position, ts, amount) since the last alert
        self.pos = 0
        self.last_large = -1

    def feed(self, ts: int, amount: float) -> Alert | None:
        """The next candidate event of this card in (ts, seq) order; the alert it completes, if any."""
        self.pos += 1
        if amount < SMALL:
            self.smalls.append((self.pos, ts, amount))
            return None
        if self.smalls and ts - self.smalls[0][1] >= WITHIN_MS:
            self.smalls = [s for s in self.smalls if ts - s[1] < WITHIN_MS]
        alert: Alert | None = None
        if len(self.smalls) >= MIN_SMALLS and self.smalls[-1][0] > self.last_large:
            alert = (self.card, self.smalls[0][1], ts, [(t, a) for _, t, a in self.smalls], (ts, amount))
            self.smalls = []
        self.last_large = self.pos
        return alert


class EventTimeBuffer:
    """Per-key reorder buffer for input out of order by at most ``DISORDER_MS`` of event time: ``push``
    returns the events now final in (ts, seq) order. The key's own highest time is a valid watermark:
    a later event of the key has ``ts >= (highest ts of all earlier events) - DISORDER_MS``, and the
    key's highest time is at most the stream's, so what lies at or below ``key max - DISORDER_MS``
    can no longer be preceded (equal times go by seq, and a later arrival has a larger seq)."""

    __slots__ = ("heap", "max_ts")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Any]] = []
        self.max_ts: int | None = None

    def push(self, ts: int, seq: int, item: Any) -> list[tuple[int, int, Any]]:
        heapq.heappush(self.heap, (ts, seq, item))
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        wm = self.max_ts - DISORDER_MS
        out = []
        while self.heap and self.heap[0][0] <= wm:
            out.append(heapq.heappop(self.heap))
        return out

    def drain(self) -> list[tuple[int, int, Any]]:
        """End of input: everything left, in order."""
        out = sorted(self.heap)
        self.heap = []
        return out


def w5_table(alerts: list[Alert]) -> pa.Table:
    """W5 alerts as everstream's match rows (the check normalizes them to n_small / large_amount)."""
    return pa.Table.from_pylist(
        [{"card": c, "match_start": s, "match_end": e, "small": [{"ts": t, "amount": a} for t, a in smalls],
          "large": [{"ts": large[0], "amount": large[1]}]} for c, s, e, smalls, large in alerts],
        schema=W5_SCHEMA)


def _descendants(root: int) -> list[int]:
    """Live descendant pids of ``root`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for e in entries:
        try:
            with open(f"/proc/{e}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(e))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of this process plus its live child processes.

    ``time.process_time()`` alone misses work done in children: PyFlink's JVM is a child of the
    Python process, so a per-core figure from ``process_time`` would be meaningless for it.
    For a peer without children this equals ``process_time()``."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return total


def main(engine: str, version: str, runners: dict[tuple[str, str], Runner], prepare: Prepare | None = None) -> None:
    """Parse the peer command line, run one query and print one JSON line.

    ``prepare`` (optional) runs before the clock starts; its seconds are reported as
    ``setup_seconds``. ``cpu_seconds`` covers this process and its children (see
    ``tree_cpu_seconds``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                    help="a further input table (W4: quotes=PATH); repeatable")
    a = ap.parse_args()
    for item in a.extra:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--extra {item!r}: expected NAME=PATH, for example quotes=/data/quotes.parquet")
        _EXTRA[name] = Path(value)
    out: dict[str, Any] = {"engine": engine, "version": version, "suite": a.suite, "query": a.query}
    runner = runners.get((a.suite, a.query))
    if runner is None:
        out.update(status="no runner", reason=f"no {engine} runner written for {a.suite} {a.query} yet")
    else:
        try:
            path = a.input
            if prepare is not None:
                s0 = time.perf_counter()
                path = prepare(a.suite, a.query, a.input)
                out.update(setup_seconds=round(time.perf_counter() - s0, 3))
            t0, c0 = time.perf_counter(), tree_cpu_seconds()
            table = runner(path)
            out.update(status="ok", seconds=time.perf_counter() - t0, cpu_seconds=tree_cpu_seconds() - c0,
                       output_rows=table.num_rows)
            pq.write_table(table, a.output)
        except NotExpressible as e:
            out.update(status="not expressible", reason=str(e))
    print(json.dumps(out))
