"""Helpers shared by the log tests: a fresh log per test, and reading a whole topic back."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from everstream.log import EmbeddedLog

HERE = Path(__file__).resolve().parent


def read_all(log: EmbeddedLog, topic: str, timeout: float = 10.0) -> pa.Table:
    """Every stored record of ``topic`` (all partitions, from the start), as one table."""
    info = log.describe_topic(topic)
    ends = {p.partition: p.end_offset for p in info.partitions}
    batches: list[pa.RecordBatch] = []
    with log.consumer() as c:
        c.assign([(topic, p) for p in ends])
        deadline = time.monotonic() + timeout
        while any(c.position(topic, p) < e for p, e in ends.items()):
            assert time.monotonic() < deadline, "timed out reading the topic back"
            batches.extend(c.poll(0.2))
    if not batches:
        return pa.table({})
    last: dict[int, int] = {}
    for b in batches:  # the consumer delivers each partition in offset order
        for p, o in zip(b.column("_partition").to_pylist(), b.column("_offset").to_pylist(), strict=True):
            assert o > last.get(p, -1), f"partition {p}: offset {o} delivered after {last.get(p)}"
            last[p] = o
    tables = [pa.Table.from_batches([b]) for b in batches]
    out = pa.concat_tables(tables, promote_options="permissive")
    return out.sort_by([("_partition", "ascending"), ("_offset", "ascending")])


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist() if table.num_columns else []


def by_partition(table: pa.Table, column: str) -> dict[int, list]:
    """partition -> values of ``column`` in offset order."""
    out: dict[int, list] = {}
    for r in rows(table):
        out.setdefault(r["_partition"], []).append(r[column])
    return out
