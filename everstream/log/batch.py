"""Stored record batches: Arrow IPC payloads with a CRC-32, and the metadata columns of a poll.

A stored payload holds the user's columns plus ``_timestamp`` and ``_key`` (and ``_headers`` when
any record had headers, ``_offset`` when compaction left gaps). Offsets are otherwise implicit:
``base_offset + row``. Consumers get batches with every column of ``META_COLUMNS`` added.

The user's top-level string and binary columns are stored as Arrow view types (``string_view``,
``binary_view``), their field tagged with the type they were produced as. Views are what Polars
holds, so the engine reads them without a conversion, and they make smaller payloads (short strings
sit inside the view: W5's authorizations take 23 % fewer bytes). Consumers that did not ask for
views get the produced types back (:func:`as_plain`); payloads written before views were stored
read as they are.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from everstream.log.contract import (
    KEY_COL,
    OFFSET_COL,
    PARTITION_COL,
    TIMESTAMP_COL,
    TOPIC_COL,
)

_Data = TypeVar("_Data", pa.RecordBatch, pa.Table)

_WRITE_OPTIONS = {
    "none": ipc.IpcWriteOptions(compression=None),
    # use_threads=False: same bytes, ~15% faster for 10,000-event batches (thread hand-off costs
    # more than it saves on 2 cores)
    "lz4": ipc.IpcWriteOptions(compression="lz4", use_threads=False),
    "zstd": ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1), use_threads=False),
}


@dataclass(frozen=True)
class EncodedBatch:
    """A batch ready to be stored: payload bytes plus what the index needs."""

    payload: bytes
    crc: int
    count: int
    min_ts: int
    max_ts: int


def checksum(payload: bytes | memoryview) -> int:
    return zlib.crc32(payload) & 0xFFFFFFFF


#: Batches of fewer rows are stored as they come: not compressed and strings not made views. Both cost a
#: fixed ~17-20 us per column and buffer in Arrow's compute and codec calls, whatever the size: a 3-row payments
#: batch took 117 us to encode with LZ4 (and came out bigger) against 17 us without, and 83 us to cast its string
#: columns to views. Readers get the same types either way (``as_views`` / ``as_plain`` on read). Live traffic
#: writes such batches: every payment, decision and alert of a low-latency pipeline.
SMALL_BATCH_ROWS = 256


def encode(batch: pa.RecordBatch, compression: str = "lz4") -> EncodedBatch:
    """Serialize a batch (which must hold ``_timestamp``) as one Arrow IPC stream (see :data:`SMALL_BATCH_ROWS`)."""
    if batch.num_rows < SMALL_BATCH_ROWS:
        compression = "none"
    else:
        batch = _STORED_VIEWS.apply(batch)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, batch.schema, options=_WRITE_OPTIONS[compression]) as writer:
        writer.write_batch(batch)
    payload = sink.getvalue().to_pybytes()
    lo, hi = _time_range(batch.column(TIMESTAMP_COL))
    return EncodedBatch(payload, checksum(payload), batch.num_rows, lo, hi)


def _time_range(ts: pa.Array) -> tuple[int, int]:
    """Min and max epoch ms of a ``_timestamp`` column (nulls count as 0; an empty column gives 0, 0)."""
    if not len(ts):
        return 0, 0
    if ts.null_count == 0 and (pa.types.is_timestamp(ts.type) or ts.type == pa.int64()):
        # timestamp[ms] (or int64): read the values buffer as int64 in place, no cast (~15 us per batch saved)
        ints = np.frombuffer(ts.buffers()[1], dtype=np.int64, count=len(ts), offset=ts.offset * 8)
    else:
        cast = ts.cast(pa.int64())
        ints = np.asarray(cast.fill_null(0) if cast.null_count else cast)
    return int(ints.min()), int(ints.max())


# Reading, LZ4 decompresses faster on one thread (~25% for a 10,000-event batch); ZSTD gains from
# Arrow's thread pool. The result is the same either way.
_READ_OPTIONS = {
    True: ipc.IpcReadOptions(use_threads=True),
    False: ipc.IpcReadOptions(use_threads=False),
}


def decode(payload: bytes, compression: str | None = None) -> pa.RecordBatch:
    """Deserialize a stored payload (checksum already verified by the caller).

    ``compression``: the topic's codec, if known (only picks the faster way to decompress).
    """
    buf = pa.py_buffer(payload)
    if len(payload) <= _SMALL_PAYLOAD:
        source = pa.BufferReader(buf)
        head = ipc.read_message(source)
        body = ipc.read_message(source) if head.type == "schema" else None
        # a record batch right after the schema (no dictionaries), then the end marker: the fast way
        if body is not None and body.type == "record batch" and source.tell() + _EOS_BYTES == source.size():
            return ipc.read_record_batch(body, _SCHEMAS.of(head))
    reader = ipc.open_stream(buf, options=_READ_OPTIONS[compression != "lz4"])
    batches = list(reader)
    if len(batches) != 1:
        raise ValueError(f"payload holds {len(batches)} record batches, expected 1")
    return batches[0]


#: Payloads up to this size (a batch of a few hundred rows) are decoded message by message with a cached
#: schema; bigger ones by Arrow's stream reader (its thread option matters for them, see _READ_OPTIONS).
_SMALL_PAYLOAD = 1 << 16


#: An IPC stream's end marker (continuation token and zero length) after the record batch.
_EOS_BYTES = 8


class _Schemas:
    """Decoded schemas by their IPC message bytes: a topic's payloads repeat one schema, and parsing it again
    is most of the work for a small batch (decoding a 3-row payments batch: 16.6 -> 5.7 us, measured)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._known: dict[bytes, pa.Schema] = {}

    def of(self, message: ipc.Message) -> pa.Schema:
        key = message.metadata.to_pybytes()
        schema = self._known.get(key)
        if schema is None:
            schema = ipc.read_schema(message)
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[key] = schema
        return schema


_SCHEMAS = _Schemas()


class _Constants:
    """Constant ``_topic``/``_partition`` columns per (topic, partition), sliced zero-copy."""

    def __init__(self) -> None:
        self._cols: dict[tuple[str, int], tuple[pa.Array, pa.Array]] = {}

    def get(self, topic: str, partition: int, n: int) -> tuple[pa.Array, pa.Array]:
        cols = self._cols.get((topic, partition))
        if cols is None or len(cols[0]) < n:
            size = max(n, 16_384)
            topic_col = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(size, dtype=np.int32)), pa.array([topic], pa.string())
            )
            cols = (topic_col, pa.array(np.full(size, partition, dtype=np.int32)))
            if len(self._cols) > 4096:
                self._cols.clear()
            self._cols[(topic, partition)] = cols
        return cols[0].slice(0, n), cols[1].slice(0, n)


_CONSTANTS = _Constants()
_TOPIC_TYPE = pa.dictionary(pa.int32(), pa.string())
_INTERNAL = (OFFSET_COL, TIMESTAMP_COL, KEY_COL)
_TAIL = [TIMESTAMP_COL, KEY_COL]
_TOPIC_FIELD = pa.field(TOPIC_COL, _TOPIC_TYPE)
_PARTITION_FIELD = pa.field(PARTITION_COL, pa.int32())
_OFFSET_FIELD = pa.field(OFFSET_COL, pa.int64())


def with_metadata(
    stored: pa.RecordBatch, topic: str, partition: int, base_offset: int, offsets: np.ndarray | None = None
) -> pa.RecordBatch:
    """Add ``_topic``, ``_partition`` and ``_offset`` to a stored batch (order: user, meta).

    ``offsets``: the records' offsets when known (several stored batches read as one), else they
    come from the stored ``_offset`` column or count up from ``base_offset``.
    """
    n = stored.num_rows
    schema = stored.schema
    names = schema.names
    if offsets is not None:
        offsets = pa.array(offsets, pa.int64())
    elif OFFSET_COL in names:
        offsets = stored.column(OFFSET_COL)
    else:
        offsets = pa.array(np.arange(base_offset, base_offset + n, dtype=np.int64))
    if names[-2:] == _TAIL and schema.metadata is None and not any(name[:1] == "_" for name in names[:-2]):
        # the usual layout (user columns, _timestamp, _key; no schema metadata, which the general path drops):
        # insert the three metadata columns in place.
        # Three calls; taking every column and field out and building a new schema costs ~1.5 us per column.
        at = len(names) - 2
        topic_col, partition_col = _CONSTANTS.get(topic, partition, n)
        return (
            stored.add_column(at, _OFFSET_FIELD, offsets)
            .add_column(at, _PARTITION_FIELD, partition_col)
            .add_column(at, _TOPIC_FIELD, topic_col)
        )
    user = [i for i, name in enumerate(names) if not name.startswith("_")]
    extra = [i for i, name in enumerate(names) if name.startswith("_") and name not in _INTERNAL]
    topic_col, partition_col = _CONSTANTS.get(topic, partition, n)
    cols = [stored.column(i) for i in user]
    fields = [schema.field(i) for i in user]
    cols += [topic_col, partition_col, offsets, stored.column(TIMESTAMP_COL), stored.column(KEY_COL)]
    fields += [
        pa.field(TOPIC_COL, _TOPIC_TYPE),
        pa.field(PARTITION_COL, pa.int32()),
        pa.field(OFFSET_COL, pa.int64()),
        schema.field(TIMESTAMP_COL),
        schema.field(KEY_COL),
    ]
    for i in extra:  # _headers: after the metadata columns
        cols.append(stored.column(i))
        fields.append(schema.field(i))
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


_VIEW_OF = {pa.string(): pa.string_view(), pa.large_string(): pa.string_view(),
            pa.binary(): pa.binary_view(), pa.large_binary(): pa.binary_view()}

#: Field metadata of a stored view column: the type it was produced as (restored by :func:`as_plain`).
PRODUCED_AS = b"everstream.produced_as"
_TYPE_NAMES = {pa.string(): b"string", pa.large_string(): b"large_string", pa.binary(): b"binary",
               pa.large_binary(): b"large_binary"}
_NAMED_TYPES = {name: t for t, name in _TYPE_NAMES.items()}


class CastPlans:
    """Column casts per schema (column index, target field), worked out by ``plan`` once per schema.

    A producer or sink writes batches of few schemas: comparing schemas is one C++ call, working the
    casts out again is a Python step per field (~45 us on a 37-column decision record). Keeps the
    ``size`` most recent schemas; shared by the threads of a process (a list's appends and deletes are
    atomic, and a lost entry only costs working it out again).
    """

    def __init__(self, plan: Callable[[pa.Schema], list[tuple[int, pa.Field]]], size: int = 32) -> None:
        self._plan = plan
        self._size = size
        self._known: list[tuple[pa.Schema, list[tuple[int, pa.Field]]]] = []

    def of(self, schema: pa.Schema) -> list[tuple[int, pa.Field]]:
        for known, casts in reversed(self._known):
            if known.equals(schema, check_metadata=True):
                found: list[tuple[int, pa.Field]] = casts
                return found
        casts = self._plan(schema)
        if len(self._known) >= self._size:
            del self._known[0]
        self._known.append((schema, casts))
        return casts

    def apply(self, data: _Data) -> _Data:
        """``data`` with its columns cast as the plan for its schema says."""
        for i, f in self.of(data.schema):
            data = data.set_column(i, f, data.column(i).cast(f.type))
        return data


def _view_fields(schema: pa.Schema) -> list[tuple[int, pa.Field]]:
    """The user's top-level string/binary columns as views, each tagged with its produced type (``_key``
    stays binary: compaction groups by it; nested strings stay as they are)."""
    fields = []
    for i, f in enumerate(schema):
        name = _TYPE_NAMES.get(f.type)
        if name is not None and f.name[:1] != "_":
            tag = {**(f.metadata or {}), PRODUCED_AS: name}
            fields.append((i, pa.field(f.name, _VIEW_OF[f.type], f.nullable, tag)))
    return fields


_STORED_VIEWS = CastPlans(_view_fields)


def _plain_fields(schema: pa.Schema) -> list[tuple[int, pa.Field]]:
    """Columns stored as views, back to the types they were produced as (the tag dropped)."""
    fields = []
    for i, f in enumerate(schema):
        md = f.metadata
        if md and PRODUCED_AS in md:
            rest = {k: v for k, v in md.items() if k != PRODUCED_AS} or None
            fields.append((i, pa.field(f.name, _NAMED_TYPES[md[PRODUCED_AS]], f.nullable, rest)))
    return fields


def _view_casts(schema: pa.Schema) -> list[tuple[int, pa.Field]]:
    return [(i, f.with_type(_VIEW_OF[f.type])) for i, f in enumerate(schema) if f.type in _VIEW_OF]


_PLAIN = CastPlans(_plain_fields)
_VIEWS = CastPlans(_view_casts)


def as_plain(data: _Data) -> _Data:
    """Columns stored as views back to the types they were produced as (for consumers that did not ask
    for views); a batch without stored views is returned as it is."""
    return _PLAIN.apply(data)


def as_views(data: _Data) -> _Data:
    """String and binary columns as Arrow view types (same values), which Polars takes without copying.

    Polars stores strings as views; from offsets-based Arrow strings it builds them row by row (~16 ms
    per 250,000 rows of two string columns), while this cast plus the hand-over takes ~3.5 ms — and a
    consumer with ``string_views=True`` casts on its read-ahead thread. Only those columns are cast
    (one call each), as worked out once per schema.
    """
    return _VIEWS.apply(data)


def offsets_of(stored: pa.RecordBatch, base_offset: int) -> np.ndarray:
    if OFFSET_COL in stored.schema.names:
        return np.asarray(stored.column(OFFSET_COL))
    return np.arange(base_offset, base_offset + stored.num_rows, dtype=np.int64)
