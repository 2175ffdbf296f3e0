"""Helpers of the conformance tests: read a topic back, poll until a count, group by partition."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from everstream.log import Consumer, Log


def read_all(log: Log, topic: str, timeout: float = 20.0) -> pa.Table:
    """Every record of ``topic`` (all partitions, from the start) as one table, ordered by (partition, offset)."""
    info = log.describe_topic(topic)
    ends = {p.partition: p.end_offset for p in info.partitions}
    batches: list[pa.RecordBatch] = []
    with log.consumer() as c:
        c.assign([(topic, p) for p in ends])
        deadline = time.monotonic() + timeout
        while any(c.position(topic, p) < e for p, e in ends.items()):
            assert time.monotonic() < deadline, (
                f"timed out reading {topic} back: positions "
                f"{ {p: c.position(topic, p) for p in ends} }, ends {ends}"
            )
            batches.extend(c.poll(0.2))
    return to_table(batches)


def to_table(batches: list[pa.RecordBatch]) -> pa.Table:
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return pa.table({})
    last: dict[int, int] = {}
    for b in batches:  # each partition arrives in offset order, each batch holds one partition
        parts = set(b.column("_partition").to_pylist())
        assert len(parts) == 1, f"a polled batch mixes partitions {parts}"
        for p, o in zip(b.column("_partition").to_pylist(), b.column("_offset").to_pylist(), strict=True):
            assert o > last.get(p, -1), f"partition {p}: offset {o} delivered after {last.get(p)}"
            last[p] = o
    out = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")
    return out.sort_by([("_partition", "ascending"), ("_offset", "ascending")])


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist() if table.num_columns else []


def by_partition(table: pa.Table, column: str) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for r in rows(table):
        out.setdefault(r["_partition"], []).append(r[column])
    return out


def consume(c: Consumer, expected: int, timeout: float = 15.0, settle: float = 0.3) -> list[dict[str, Any]]:
    """Poll until ``expected`` records arrived (or timeout), then a little longer for extras."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for b in c.poll(0.2):
            out.extend(b.to_pylist())
    end = time.monotonic() + settle
    while time.monotonic() < end:  # nothing beyond what we expect
        for b in c.poll(0.05):
            out.extend(b.to_pylist())
    return out
