"""The JSON wire format of the Kafka log: Arrow batches <-> one JSON object per Kafka message.

Encoding is vectorized: a batch becomes newline-delimited JSON in one Polars call and is split
into one value per message. Decoding is vectorized too: the values of a poll are joined with
newlines and parsed by ``pyarrow.json.read_json`` (with the topic's declared schema as
``explicit_schema`` when there is one). Only messages that fail are looked at one by one, found
by bisection, and handed back as dead letters.

JSON has no binary, duration or time-of-day type, so some Arrow types travel in another form:

===========================  ===============================================================
Arrow type                   JSON value
===========================  ===============================================================
int*, uint*, float*, bool    number / boolean (NaN and infinities become ``null``)
string, large_string         string (dictionary-encoded strings too)
timestamp[unit, tz]          ISO-8601 string (``2024-01-02T14:30:00.123+00:00``)
date32 / date64              ``"YYYY-MM-DD"``
decimal128 / decimal256      string (exact)
binary, large_binary         base64 string
duration, time32, time64     integer in the type's unit
list, struct                 array, object
===========================  ===============================================================

On a topic without a declared schema the consumer infers types from the JSON itself
(numbers, strings, booleans, nested arrays/objects); declare a schema to get exact types back.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from everstream.errors import SchemaError
from everstream.log.records import schema_text

#: Parse blocks of this size on several threads (pyarrow's JSON reader parallelizes per block).
_BLOCK_BYTES = 256 << 10


def _is_binary(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t))


def _as_int(t: pa.DataType) -> bool:
    return bool(pa.types.is_duration(t) or pa.types.is_time(t))


def _is_date(t: pa.DataType) -> bool:
    return bool(pa.types.is_date32(t) or pa.types.is_date64(t))


def wire_type(t: pa.DataType) -> pa.DataType:
    """The type ``pyarrow.json`` parses a column of declared type ``t`` as (before conversion)."""
    if _is_binary(t) or _is_date(t):
        return pa.string()
    if _as_int(t):
        return pa.int64()
    if pa.types.is_dictionary(t):
        return wire_type(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(t.value_field.with_type(wire_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(wire_type(t.field(i).type)) for i in range(t.num_fields)])
    return t


def check_encodable(schema: pa.Schema, topic: str) -> None:
    """Raise SchemaError for declared types the JSON wire format cannot carry."""
    for f in schema:
        _check_type(f.type, f"{topic!r} field {f.name!r}")


def _check_type(t: pa.DataType, where: str) -> None:
    if pa.types.is_map(t) or pa.types.is_union(t) or pa.types.is_float16(t) or pa.types.is_interval(t):
        raise SchemaError(
            f"topic {where}: type {t} has no JSON form on Kafka; use a list of structs, a float32 or a "
            "struct instead"
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        _check_type(t.value_type, where)
    elif pa.types.is_struct(t):
        for i in range(t.num_fields):
            _check_type(t.field(i).type, where)
    elif pa.types.is_dictionary(t):
        _check_type(t.value_type, where)


# ---------------------------------------------------------------------- encoding


def _to_wire(col: pa.Array, t: pa.DataType) -> pa.Array:
    """A column in the form its JSON text is written from (see the module table)."""
    if pa.types.is_dictionary(t):
        return _to_wire(col.cast(t.value_type), t.value_type)
    if _is_binary(t):
        return pa.array(
            [None if v is None else base64.b64encode(v).decode("ascii") for v in col.to_pylist()], pa.string()
        )
    if _as_int(t):
        return col.cast(pa.int64())
    if pa.types.is_date64(t):
        return col.cast(pa.date32())
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _needs_wire(t.value_type):
        return _rebuild_list(col, _to_wire(col.values, t.value_type))
    if pa.types.is_struct(t) and _needs_wire(t):
        children = [_to_wire(col.field(i), t.field(i).type) for i in range(t.num_fields)]
        names = [t.field(i).name for i in range(t.num_fields)]
        mask = col.is_null() if col.null_count else None
        return pa.StructArray.from_arrays(children, names=names, mask=mask)
    return col


def _rebuild_list(col: pa.Array, values: pa.Array) -> pa.Array:
    """``col`` (a list array) with its child values replaced (same offsets and nulls)."""
    mask = col.is_null() if col.null_count else None
    cls = pa.LargeListArray if pa.types.is_large_list(col.type) else pa.ListArray
    return cls.from_arrays(col.offsets, values, mask=mask)


def _needs_wire(t: pa.DataType) -> bool:
    if _is_binary(t) or _as_int(t) or pa.types.is_dictionary(t) or pa.types.is_date64(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _needs_wire(t.value_type)
    if pa.types.is_struct(t):
        return any(_needs_wire(t.field(i).type) for i in range(t.num_fields))
    return False


#: Below this many rows, Python's json module beats Polars' per-call overhead (~0.5 ms).
_SMALL = 128


def encode(batch: pa.RecordBatch | pa.Table) -> list[bytes]:
    """One JSON object (bytes, no newline) per row of ``batch`` (user columns only)."""
    n = batch.num_rows
    if n == 0:
        return []
    if batch.num_columns == 0:
        return [b"{}"] * n
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks()
        cols = [c.chunk(0) if c.num_chunks == 1 else pa.concat_arrays(c.chunks) for c in batch.columns]
    else:
        cols = list(batch.columns)
    fields = list(batch.schema)
    if any(_needs_wire(f.type) for f in fields):
        cols = [_to_wire(c, f.type) if _needs_wire(f.type) else c for c, f in zip(cols, fields, strict=True)]
    wire = pa.RecordBatch.from_arrays(cols, names=[f.name for f in fields])
    if n < _SMALL and _flat(wire.schema) and not _has_nan(wire):
        # timestamps as text made by Arrow: exact for every unit and time zone
        cols = [c.cast(pa.string()) if _as_text(c.type) else c for c in wire.columns]
        flat = pa.RecordBatch.from_arrays(cols, names=wire.schema.names)
        dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False).encode
        return [dumps(r).encode() for r in flat.to_pylist()]
    frame = pl.from_arrow(wire)
    assert isinstance(frame, pl.DataFrame)
    text = frame.write_ndjson()
    assert isinstance(text, str)
    lines = text.encode().split(b"\n")
    if len(lines) != n + 1:  # a trailing newline gives one empty tail; anything else is a bug
        raise SchemaError(f"JSON encoding produced {len(lines) - 1} lines for {n} rows")
    lines.pop()
    return lines


def _as_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t) or pa.types.is_date(t))


def _flat(schema: pa.Schema) -> bool:
    """Only scalar columns (the small-batch encoder's domain; nested ones go through Polars)."""
    return all(not pa.types.is_nested(f.type) for f in schema)


def _json_default(v: Any) -> Any:
    """Values Python's json module does not know (after the Arrow casts above: none expected)."""
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def _has_nan(batch: pa.RecordBatch) -> bool:
    """Any NaN or infinity in a float column, nested ones included (Python's json cannot write them)."""
    return any(_float_nan(col) for col in batch.columns)


def _float_nan(col: pa.Array) -> bool:
    t = col.type
    if pa.types.is_floating(t):
        return bool(col.null_count < len(col) and not pc.all(pc.is_finite(col.drop_null())).as_py())
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _float_nan(col.values)
    if pa.types.is_struct(t):
        return any(_float_nan(col.field(i)) for i in range(t.num_fields))
    return False


@functools.cache
def warm_up() -> None:
    """Pay the one-time costs of the encode/decode path now, not on the first record.

    pyarrow imports pandas lazily on its first ``pa.array`` call and the JSON reader and Polars
    initialize on first use: together about a second on a small machine, which would otherwise
    be the latency of the first record a new producer or consumer handles.
    """
    batch = pa.RecordBatch.from_pylist([{"a": 1, "b": "x"}])
    encode(batch)
    JsonCodec("warm-up", batch.schema).decode(encode(pa.concat_batches([batch] * _SMALL)))


# ---------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """The rows that decoded (``table``; ``rows``: their indexes in the input) and those that did not."""

    table: pa.Table | None
    rows: np.ndarray
    bad: list[tuple[int, str]] = field(default_factory=list)


class JsonCodec:
    """Decodes the message values of one topic into Arrow tables."""

    def __init__(self, topic: str, schema: pa.Schema | None, observed: pa.Schema | None = None) -> None:
        """``schema``: the declared schema (strict), else ``observed``: the types producers recorded
        for a topic without one (applied to those fields; others are inferred; records that do
        not fit are decoded by inference rather than dead-lettered)."""
        self.topic = topic
        self.schema = schema
        self.observed = observed if schema is None else None
        self._wire: pa.Schema | None = None
        self._inferred: pa.Schema | None = None
        self._convert = False
        typed = schema if schema is not None else self.observed
        if typed is not None:
            self._wire = pa.schema([f.with_type(wire_type(f.type)) for f in typed])
            self._convert = self._wire != typed
        self._parse = pajson.ParseOptions(
            explicit_schema=self._wire,
            unexpected_field_behavior="error" if schema is not None else "infer",
            newlines_in_values=False,
        )

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode message values; a ``None`` value (a tombstone) is a row of nulls.

        Fast path: one vectorized check (every value starts with ``{``; this also keeps values
        such as ``null`` away from the JSON reader, which cannot take them), one join, one parse.
        Only when the parse fails are the values bisected to find the bad ones.
        """
        n = len(values)
        if n == 0:
            return Decoded(None, np.zeros(0, np.int64))
        lines: list[bytes] = [b"{}" if v is None else v for v in values] if None in values else values  # type: ignore[assignment]
        idx = np.arange(n, dtype=np.int64)
        bad: list[tuple[int, str]] = []
        arr: pa.Array | None = pa.array(lines, pa.binary())
        objects = pc.starts_with(arr, pattern="{")
        if not pc.all(objects).as_py():
            lines, keep, bad = _normalize(lines, np.asarray(objects, dtype=bool))
            idx = idx[keep]
            arr = None
        if not lines:
            return Decoded(None, idx, bad)
        data = b"\n".join(lines)
        if data.count(b"\n") != len(lines) - 1 or b"\r" in data:
            # raw line breaks inside values: they are JSON whitespace, and the reader must never see a
            # line that does not start with "{" (it crashes on a block starting with `null`)
            lines = [v.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in v or b"\r" in v else v for v in lines]
            data = b"\n".join(lines)
        try:
            return Decoded(self._read(lines, arr, data), idx, bad)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as e:
            first_error = str(e)
        if self.observed is not None:  # types drifted from what was recorded: infer, never dead-letter for it
            loose = JsonCodec(self.topic, None).decode(lines)
            loose.rows = idx[loose.rows]
            loose.bad = sorted(bad + [(int(idx[i]), err) for i, err in loose.bad])
            return loose
        lines = list(lines)  # the bisection may normalize lines in place
        good: list[int] = []
        self._bisect(lines, list(range(len(lines))), good, bad, idx, first_error)
        good.sort()
        if not good:
            return Decoded(None, np.zeros(0, np.int64), sorted(bad))
        try:
            table = self._read([lines[i] for i in good])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError):
            if self.schema is not None:
                raise
            # no declared schema and the records disagree on a field's type: the types of the
            # earliest records win, later records that contradict them are dead letters
            table, good = self._first_types_win(lines, good, idx, bad)
        return Decoded(table, idx[np.asarray(good, dtype=np.int64)], sorted(bad))

    def _first_types_win(
        self, lines: list[bytes], good: list[int], idx: np.ndarray, bad: list[tuple[int, str]]
    ) -> tuple[pa.Table, list[int]]:
        lo, hi = 1, len(good)  # the longest prefix of good lines that parses together
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                self._read([lines[i] for i in good[:mid]])
                lo = mid
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError):
                hi = mid - 1
        raw = pajson.read_json(io.BytesIO(b"\n".join(lines[i] for i in good[:lo])), parse_options=self._parse)
        typed = pa.schema([f for f in raw.schema if not pa.types.is_null(f.type)])
        strict = JsonCodec(self.topic, None)
        strict._parse = pajson.ParseOptions(explicit_schema=typed, unexpected_field_behavior="infer",
                                            newlines_in_values=False)
        strict._inferred = typed
        keep: list[int] = []
        strict._bisect(lines, list(good), keep, bad, idx, None)
        keep.sort()
        return strict._read([lines[i] for i in keep]), keep

    def _read(self, lines: Sequence[bytes], arr: pa.Array | None = None, data: bytes | None = None) -> pa.Table:
        if data is None:
            data = b"\n".join(lines)
        if len(lines) < 64:
            longest = max(map(len, lines))
        else:
            lengths = pc.binary_length(arr if arr is not None else pa.array(lines, pa.binary()))
            longest = int(pc.max(lengths).as_py())
        block = max(_BLOCK_BYTES, 2 * longest + 2)
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(use_threads=len(data) > block, block_size=block),
            parse_options=self._parse,
        )
        if table.num_rows != len(lines):
            raise ValueError(f"{len(lines)} messages decoded into {table.num_rows} rows (one JSON object each)")
        if self.schema is not None and self._convert:
            table = _from_wire(table, self.schema)
        elif self.schema is None:
            if self.observed is not None and self._convert:
                table = _from_wire(table, self.observed, partial=True)
            table = _tidy_inferred(table)
        return table

    def unknown_fields(self, table: pa.Table) -> list[str]:
        """Fields of a decoded table that this codec had no recorded type for (inferred ones)."""
        if self.schema is not None:
            return []
        known = set(self.observed.names) if self.observed is not None else set()
        return [n for n in table.column_names if n not in known]

    def _bisect(
        self, lines: list[bytes], sel: list[int], good: list[int], bad: list[tuple[int, str]],
        idx: np.ndarray, error: str | None,
    ) -> None:
        if not sel:
            return
        if error is None:
            try:
                self._read([lines[i] for i in sel])
                good.extend(sel)
                return
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as e:
                error = str(e)
        if len(sel) == 1:
            line = lines[sel[0]]
            if b"\n" in line or b"\r" in line:  # raw newlines are JSON whitespace: one line again
                flat = line.replace(b"\r", b" ").replace(b"\n", b" ")
                try:
                    self._read([flat])
                    lines[sel[0]] = flat
                    good.append(sel[0])
                    return
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as e:
                    error = str(e)
            bad.append((int(idx[sel[0]]), self._explain(error)))
            return
        if len(sel) <= 8:  # small failing groups: each line on its own (skips the inner levels)
            for i in sel:
                self._bisect(lines, [i], good, bad, idx, None)
            return
        mid = len(sel) // 2
        self._bisect(lines, sel[:mid], good, bad, idx, None)
        self._bisect(lines, sel[mid:], good, bad, idx, None)

    def _explain(self, error: str) -> str:
        error = error.replace(" in row 0", "")
        if "decoded into" in error:
            return "holds more than one JSON value (one object per message is expected)"
        if self._inferred is not None:
            return f"does not match the types of earlier records ({schema_text(self._inferred)}): {error}"
        if self.schema is None:
            return f"not a valid JSON object: {error}"
        if "unexpected field" in error:
            return f"has fields that are not in the topic schema ({schema_text(self.schema)}): {error}"
        return f"does not match the topic schema ({schema_text(self.schema)}): {error}"


def _normalize(values: Sequence[bytes], objects: np.ndarray) -> tuple[list[bytes], np.ndarray, list[tuple[int, str]]]:
    """The slow path for the few values that do not start with ``{``."""
    lines: list[bytes] = []
    keep: list[int] = []
    bad: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        if not objects[i]:
            v = v.strip()
            if not v.startswith(b"{"):
                what = "an empty value" if not v else f"JSON that is not an object: {v[:40]!r}"
                bad.append((i, f"not a JSON object (one object per message is expected), got {what}"))
                continue
        lines.append(v)
        keep.append(i)
    return lines, np.asarray(keep, dtype=np.int64), bad


def _from_wire(table: pa.Table, schema: pa.Schema, partial: bool = False) -> pa.Table:
    """Wire types -> ``schema``'s types; with ``partial``, other (inferred) columns follow as they are."""
    cols = []
    for f in schema:
        col = table.column(f.name)
        cols.append(_convert(col.combine_chunks() if col.num_chunks != 1 else col.chunk(0), f.type))
    if not partial:
        return pa.Table.from_arrays(cols, schema=schema)
    rest = [n for n in table.column_names if n not in set(schema.names)]
    fields = [*schema, *(table.schema.field(n) for n in rest)]
    return pa.Table.from_arrays([*cols, *(table.column(n) for n in rest)], schema=pa.schema(fields))


def _convert(col: pa.Array, t: pa.DataType) -> pa.Array:
    if col.type == t:
        return col
    if _is_binary(t):
        try:
            out = pa.array([None if v is None else base64.b64decode(v, validate=True) for v in col.to_pylist()], t)
        except (ValueError, pa.ArrowInvalid) as e:
            raise ValueError(f"a {t} field holds text that is not base64: {e}") from e
        return out
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _rebuild_list(col, _convert(col.values, t.value_type)).cast(t)
    if pa.types.is_struct(t):
        children = [_convert(col.field(i), t.field(i).type) for i in range(t.num_fields)]
        mask = col.is_null() if col.null_count else None
        return pa.StructArray.from_arrays(children, fields=list(t), mask=mask)
    try:
        return col.cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"cannot convert {col.type} to {t}: {e}") from e


def _tidy_inferred(table: pa.Table) -> pa.Table:
    """Inferred all-null columns (type null) become float64, as the embedded log infers them."""
    if not any(pa.types.is_null(f.type) for f in table.schema):
        return table
    cols = [c.cast(pa.float64()) if pa.types.is_null(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(cols, names=table.column_names)
