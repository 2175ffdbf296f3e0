"""Turning what users send (dicts, tables) into record batches, and bad records into dead letters.

Shared by every Log implementation: the embedded log stores these batches; the Kafka log
encodes their rows as messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from everstream.errors import ConfigError, SchemaError
from everstream.log.contract import (
    HEADERS_COL,
    HEADERS_TYPE,
    KEY_COL,
    META_COLUMNS,
    TIMESTAMP_COL,
    TIMESTAMP_TYPE,
)

#: Schema of every dead-letter topic ``<topic>.dlq``.
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source_topic", pa.string()),
        pa.field("source_partition", pa.int32()),
        pa.field("source_offset", pa.int64()),
        pa.field("source_line", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("raw", pa.binary()),
    ]
)


@dataclass
class DeadLetter:
    """A record that could not be stored or decoded, with why and where it came from."""

    source_topic: str
    error: str
    raw: bytes
    source_partition: int | None = None
    source_offset: int | None = None
    source_line: int | None = None
    key: bytes | None = None

    def row(self) -> dict[str, Any]:
        return {
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "source_line": self.source_line,
            "error": self.error,
            "raw": self.raw,
        }


def dead_letter_batch(letters: Sequence[DeadLetter], now_ms: int) -> pa.RecordBatch:
    """The dead letters as a stored batch of the dead-letter topic."""
    batch = pa.RecordBatch.from_pylist([d.row() for d in letters], schema=DEAD_LETTER_SCHEMA)
    return add_meta(batch, np.full(len(letters), now_ms, np.int64), [d.key for d in letters], None)


def timestamp_ms(ts: int | float | datetime | None, now_ms: int) -> int:
    """A record timestamp as epoch milliseconds (ints and floats are taken as milliseconds)."""
    if ts is None:
        return now_ms
    if isinstance(ts, datetime):
        return int(ts.timestamp() * 1000)
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return int(ts)
    raise ConfigError(f"timestamp {ts!r}: pass epoch milliseconds (int) or a datetime")


def raw_json(value: Any) -> bytes:
    try:
        return json.dumps(value, default=str).encode()
    except (TypeError, ValueError):
        return repr(value).encode()


_TIMESTAMP_FIELD = pa.field(TIMESTAMP_COL, TIMESTAMP_TYPE)
_KEY_FIELD = pa.field(KEY_COL, pa.binary())


def add_meta(
    batch: pa.RecordBatch,
    ts_ms: np.ndarray | pa.Array,
    keys: Sequence[bytes | None] | pa.Array,
    headers: Sequence[Mapping[str, bytes] | None] | None,
) -> pa.RecordBatch:
    """Append ``_timestamp``, ``_key`` (and ``_headers``) to a user batch, as stored."""
    clash = [n for n in batch.schema.names if n in META_COLUMNS]
    if clash:
        raise SchemaError(f"field names {clash} are reserved for record metadata; rename them")
    ts = ts_ms if isinstance(ts_ms, pa.Array) else pa.array(ts_ms, pa.int64())
    if ts.type != TIMESTAMP_TYPE:
        # int64 epoch ms and timestamp[ms, UTC] share their buffers: a view, not two casts (~10 us each)
        ts = (ts if ts.type == pa.int64() else ts.cast(pa.int64())).view(TIMESTAMP_TYPE)
    key_arr = keys if isinstance(keys, pa.Array) else pa.array(keys, pa.binary())
    if batch.schema.metadata:  # the stored schema never carried the sender's schema metadata (pandas, ...)
        batch = batch.replace_schema_metadata(None)
    # append_column keeps the batch's columns and schema as they are: rebuilding both (``batch.columns``,
    # ``pa.schema(fields)``, ``from_arrays``) cost ~190 us per send on a 37-column batch, this ~15 us
    out = batch.append_column(_TIMESTAMP_FIELD, ts).append_column(_KEY_FIELD, key_arr)
    if headers is not None and any(h for h in headers):
        hdr = pa.array(
            [None if not h else [(k, _hbytes(v)) for k, v in h.items()] for h in headers],
            HEADERS_TYPE,
        )
        out = out.append_column(pa.field(HEADERS_COL, HEADERS_TYPE), hdr)
    return out


def _hbytes(v: str | bytes) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)


def oversize_rows(batch: pa.RecordBatch, limit: int) -> np.ndarray:
    """Row indexes whose variable-width and nested cells add up to more than ``limit`` bytes."""
    if batch.get_total_buffer_size() <= limit:
        # the test below then passes too (a column's bytes are part of the buffers): one call for the common
        # small batch, where a type test per column cost ~90 us on a 37-column decision record
        return np.zeros(0, dtype=np.int64)
    sized = [c for c in batch.columns if _is_varwidth(c.type) or pa.types.is_nested(c.type)]
    if sum(c.nbytes for c in sized) <= limit:  # no row can hold more than the whole batch
        return np.zeros(0, dtype=np.int64)
    total = np.zeros(batch.num_rows, dtype=np.int64)
    for col in sized:
        total += _cell_bytes(col)
    return np.flatnonzero(total > limit)


def _cell_bytes(arr: pa.Array) -> np.ndarray:
    """Approximate bytes of each cell: string/binary lengths, list/map/struct contents summed."""
    t = arr.type
    if _is_varwidth(t):
        return np.asarray(pc.binary_length(arr).fill_null(0), dtype=np.int64)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        offsets = np.asarray(arr.offsets, dtype=np.int64)  # absolute positions in arr.values
        inner: np.ndarray = np.concatenate([[0], np.cumsum(_cell_bytes(arr.values))])
        sizes: np.ndarray = inner[offsets[1:]] - inner[offsets[:-1]]
        return sizes
    if pa.types.is_struct(t):
        out = np.zeros(len(arr), dtype=np.int64)
        for child in arr.flatten():
            out += _cell_bytes(child)
        return out
    try:
        return np.full(len(arr), max(t.bit_width // 8, 1), dtype=np.int64)
    except ValueError:  # not fixed-width (e.g. fixed-size lists, unions): not counted
        return np.zeros(len(arr), dtype=np.int64)


def _is_varwidth(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    )


Converted = tuple[pa.RecordBatch | None, list[int], list[tuple[int, str]], pa.Schema]


def rows_to_batch(rows: Sequence[Mapping[str, Any]], schema: pa.Schema | None, strict: bool) -> Converted:
    """Convert dict rows to a batch; isolate rows that do not fit ``schema`` (bisection).

    ``strict``: the schema is declared, so unknown fields are errors too. Returns the batch of
    good rows, their indexes, the bad rows with their error, and the schema used.
    """
    n = len(rows)
    if schema is None:
        schema = _infer_schema(rows)
    bad: list[tuple[int, str]] = []
    names = set(schema.names)
    fits = all(map(names.issuperset, rows))  # from_pylist(schema=...) silently drops other fields
    if strict and not fits:
        for i, r in enumerate(rows):
            extra = sorted(set(r) - names)
            if extra:
                bad.append((i, f"fields {extra} are not in the topic schema ({schema_text(schema)})"))
    try:
        if bad or not fits:  # undeclared topic with new fields: widen the schema below
            raise ValueError
        return pa.RecordBatch.from_pylist(list(rows), schema=schema), list(range(n)), [], schema
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError):
        pass
    if not strict:  # an inferred schema may just be too narrow: infer from every row
        try:  # every field any row has (from_pylist would keep only the first row's fields)
            every = list(dict.fromkeys(k for r in rows for k in r))
            batch = pa.RecordBatch.from_pydict({k: [r.get(k) for r in rows] for k in every})
            return batch, list(range(n)), [], batch.schema
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError):
            pass
    bad_idx = {i for i, _ in bad}
    good: list[int] = []
    _bisect(rows, [i for i in range(n) if i not in bad_idx], schema, good, bad)
    good.sort()
    bad.sort()
    batch = pa.RecordBatch.from_pylist([rows[i] for i in good], schema=schema) if good else None
    return batch, good, bad, schema


def _infer_schema(rows: Sequence[Mapping[str, Any]]) -> pa.Schema:
    """Types of an undeclared topic's batch, from a sample (or the first row if the sample disagrees)."""
    for sample in (rows[:256], rows[:1]):
        try:
            schema = pa.RecordBatch.from_pylist(list(sample)).schema
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError):
            continue
        return pa.schema([f.with_type(pa.float64()) if pa.types.is_null(f.type) else f for f in schema])
    return pa.schema([])


def _bisect(
    rows: Sequence[Mapping[str, Any]], idx: list[int], schema: pa.Schema,
    good: list[int], bad: list[tuple[int, str]],
) -> None:
    if not idx:
        return
    try:
        pa.RecordBatch.from_pylist([rows[i] for i in idx], schema=schema)
        good.extend(idx)
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError) as e:
        if len(idx) == 1:
            bad.append((idx[0], f"does not match the topic schema ({schema_text(schema)}): {e}"))
            return
    mid = len(idx) // 2
    _bisect(rows, idx[:mid], schema, good, bad)
    _bisect(rows, idx[mid:], schema, good, bad)


def schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def to_arrow_table(table: Any) -> pa.Table:
    """Accept a pyarrow Table/RecordBatch, a Polars DataFrame or a pandas DataFrame."""
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    to_arrow = getattr(table, "to_arrow", None)  # polars
    if to_arrow is not None:
        out = to_arrow()
        return out if isinstance(out, pa.Table) else pa.Table.from_batches([out])
    if type(table).__module__.startswith("pandas"):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise SchemaError(
        f"send_batch takes a pyarrow Table/RecordBatch, a polars or pandas DataFrame, not {type(table).__name__}"
    )


def conform(table: pa.Table, schema: pa.Schema, topic: str) -> pa.Table:
    """Cast a table to the topic's declared schema, or raise a SchemaError naming the column."""
    if table.schema.equals(schema, check_metadata=True):  # the usual case: nothing to do (one call)
        return table
    have = table.column_names  # a property that builds a list: once, not per column
    want = set(schema.names)
    missing = set(schema.names).difference(have)
    extra = [n for n in have if n not in want]
    if extra:
        raise SchemaError(f"topic {topic!r}: columns {extra} are not in the topic schema ({schema_text(schema)})")
    cols = []
    for f in schema:
        if f.name in missing:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise SchemaError(
                    f"topic {topic!r}: column {f.name!r} of type {col.type} does not convert to {f.type}: {e}"
                ) from e
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def batch_timestamps(table: pa.Table, timestamp: str | pa.Array | pa.ChunkedArray | None, topic: str) -> pa.Array:
    """Epoch-ms int64 timestamps for ``send_batch``: a column name, an array, or now."""
    n = table.num_rows
    if timestamp is None:
        return pa.array(np.full(n, time.time_ns() // 1_000_000, dtype=np.int64))
    if isinstance(timestamp, str):
        if timestamp not in table.column_names:
            raise SchemaError(f"send_batch to {topic!r}: timestamp column {timestamp!r} not in {table.column_names}")
        col = _one_chunk(table.column(timestamp))
    else:
        col = _one_chunk(timestamp) if isinstance(timestamp, pa.ChunkedArray) else timestamp
        if len(col) != n:
            raise SchemaError(f"send_batch to {topic!r}: {len(col)} timestamps for {n} rows")
    t = col.type
    if pa.types.is_timestamp(t):
        if t.unit != "ms":
            col = col.cast(pa.timestamp("ms", tz=t.tz))
        return col.view(pa.int64())  # same buffers: no cast
    if t == pa.int64():
        return col
    if pa.types.is_integer(t):
        return col.cast(pa.int64())
    raise SchemaError(
        f"send_batch to {topic!r}: timestamp column of type {col.type}: use a timestamp column or epoch ms"
    )


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def batch_keys(
    table: pa.Table, key: str | pa.Array | pa.ChunkedArray | None, topic: str
) -> pa.Array | pa.ChunkedArray | None:
    """The key column for ``send_batch``: a column name, an array of keys, or None."""
    if key is None:
        return None
    if isinstance(key, str):
        if key not in table.column_names:
            raise SchemaError(f"send_batch to {topic!r}: key column {key!r} not in {table.column_names}")
        return table.column(key)
    if len(key) != table.num_rows:
        raise SchemaError(f"send_batch to {topic!r}: {len(key)} keys for {table.num_rows} rows")
    return key


@dataclass
class KeyedBatch:
    """A ``send_batch`` table made ready for either log: conformed to the topic's schema, with its
    keys (or None), event timestamps (epoch ms) and target partition per row."""

    table: pa.Table
    keys: pa.Array | None  # binary (see ``partitioner.keys_to_binary``)
    timestamps: pa.Array
    partitions: np.ndarray  # int32


def keyed_batch(
    table: pa.Table, topic: str, key: str | pa.Array | pa.ChunkedArray | None,
    timestamp: str | pa.Array | pa.ChunkedArray | None, *, schema: pa.Schema | None, compact: bool,
    partitions: int, sticky: int, key_cache: dict[bytes, int] | None = None,
) -> KeyedBatch:
    """Keys, timestamps, schema conformance and partitions of a ``send_batch`` (both logs).

    Rows without a key (no ``key`` at all, or a null key) go to the ``sticky`` partition, as Kafka's
    default partitioner does; a compacted topic refuses keyless batches (compaction keeps one
    record per key). ``key_cache``: the producer's key -> partition cache for this topic.
    """
    from everstream.log.partitioner import keys_to_binary, partitions_for_column

    keys = batch_keys(table, key, topic)
    ts = batch_timestamps(table, timestamp, topic)
    if schema is not None:
        table = conform(table, schema, topic)
    if keys is None and compact:
        raise ConfigError(f"topic {topic!r} is compacted: send_batch needs key=<column>")
    if keys is None:
        return KeyedBatch(table, None, ts, np.full(table.num_rows, sticky, dtype=np.int32))
    keys = keys_to_binary(_one_chunk(keys) if isinstance(keys, pa.ChunkedArray) else keys)  # once, for both uses
    parts = partitions_for_column(keys, partitions, key_cache)
    if keys.null_count:
        parts[parts < 0] = sticky
    return KeyedBatch(table, keys, ts, parts)


def check_consumer_options(start: object, session_timeout_ms: int, heartbeat_ms: int) -> None:
    """The consumer options both logs share: where to start, and a heartbeat well inside the session."""
    if (isinstance(start, str) and start not in ("earliest", "latest")) or isinstance(start, bool) \
            or not isinstance(start, (str, int, datetime)):
        raise ConfigError(f"start={start!r}: use 'earliest', 'latest', epoch ms or a datetime")
    if heartbeat_ms * 3 > session_timeout_ms:
        raise ConfigError(
            f"heartbeat_ms={heartbeat_ms} must be at most a third of session_timeout_ms={session_timeout_ms}"
        )
