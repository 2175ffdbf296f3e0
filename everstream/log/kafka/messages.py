"""Kafka messages -> the log's record batches: decoded values plus the metadata columns.

Per-message fields are pulled out with ``map`` over the message objects (C-level iteration, no
Python frame per message); the batches come out per partition, in offset order, with the columns
of the embedded log: user fields, ``_topic`` (dictionary string), ``_partition`` (int32),
``_offset`` (int64), ``_timestamp`` (timestamp[ms, UTC]), ``_key`` (binary) and ``_headers``
(map<string, binary>, only in batches where some message had headers).
"""

from __future__ import annotations

import itertools
import operator

import numpy as np
import pyarrow as pa
from confluent_kafka import Message

from everstream.log.contract import (
    HEADERS_COL,
    HEADERS_TYPE,
    KEY_COL,
    OFFSET_COL,
    PARTITION_COL,
    TIMESTAMP_COL,
    TIMESTAMP_TYPE,
    TOPIC_COL,
)

_second = operator.itemgetter(1)  # Message.timestamp() is (type, ms)


def record_batches(
    table: pa.Table, topic: str, msgs: list[Message], parts: np.ndarray, offs: np.ndarray,
    keys: list[bytes | None],
) -> list[pa.RecordBatch]:
    """``table`` (decoded values, one row per message of ``msgs``) with the metadata columns,
    split into one run of batches per partition."""
    m = len(msgs)
    ts = np.array(list(map(_second, map(Message.timestamp, msgs))), dtype=np.int64)
    ts_arr = pa.array(ts, mask=ts < 0) if (ts < 0).any() else pa.array(ts)  # -1: no timestamp
    headers = list(map(Message.headers, msgs))
    topic_col = pa.DictionaryArray.from_arrays(pa.array(np.zeros(m, dtype=np.int32)), pa.array([topic], pa.string()))
    meta = [
        (pa.field(TOPIC_COL, topic_col.type), topic_col),
        (pa.field(PARTITION_COL, pa.int32()), pa.array(parts)),
        (pa.field(OFFSET_COL, pa.int64()), pa.array(offs)),
        (pa.field(TIMESTAMP_COL, TIMESTAMP_TYPE), ts_arr.cast(TIMESTAMP_TYPE)),
        (pa.field(KEY_COL, pa.binary()), pa.array(keys, pa.binary())),
    ]
    has_headers = any(headers)
    if has_headers:
        meta.append((pa.field(HEADERS_COL, HEADERS_TYPE), pa.array(headers, HEADERS_TYPE)))
    fields = [*table.schema, *(f for f, _ in meta)]
    cols = [*table.columns, *(c for _, c in meta)]
    full = pa.Table.from_arrays(cols, schema=pa.schema(fields))
    runs = partition_runs(parts)
    if runs is None:  # partitions interleaved: group them, keeping offset order within each
        order = np.argsort(parts, kind="stable")
        full = full.take(pa.array(order))
        runs = partition_runs(parts[order]) or []
    out: list[pa.RecordBatch] = []
    for a, b in runs:
        piece = full.slice(a, b - a)
        if has_headers and piece.column(HEADERS_COL).null_count == piece.num_rows:
            piece = piece.drop_columns([HEADERS_COL])
        out.extend(piece.to_batches())
    return out


def partition_runs(parts: np.ndarray) -> list[tuple[int, int]] | None:
    """Row ranges holding one partition each, or None when a partition appears in two places."""
    n = len(parts)
    if n == 0:
        return []
    change = np.flatnonzero(parts[1:] != parts[:-1]) + 1
    runs = list(itertools.pairwise([0, *change.tolist(), n]))
    return runs if len(runs) == len(np.unique(parts)) else None
