"""Helpers for testing pipelines: read a whole topic as a Polars DataFrame."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from everstream.log.contract import META_COLUMNS, Log


def read_topic(log: Log, topic: str, *, meta: bool = False, timeout: float = 0.2) -> pl.DataFrame:
    """Every record of ``topic`` now (all partitions, from the start), user columns only unless ``meta``."""
    info = log.describe_topic(topic)
    ends = {p.partition: p.end_offset for p in info.partitions}
    batches: list[pa.RecordBatch] = []
    with log.consumer(start="earliest") as consumer:
        consumer.assign([(topic, p) for p in ends])
        while any(consumer.position(topic, p) < end for p, end in ends.items()):
            got = consumer.poll(timeout)
            if not got and all(consumer.position(topic, p) >= end for p, end in ends.items()):
                break
            batches.extend(got)
    if not batches:
        return pl.DataFrame()
    frames = [pl.from_arrow(b) for b in batches]
    df = pl.concat([f for f in frames if isinstance(f, pl.DataFrame)], how="diagonal_relaxed")
    return df if meta else df.select([c for c in df.columns if c not in META_COLUMNS])
