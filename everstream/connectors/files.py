"""Read JSON Lines, CSV and Parquet files into record batches; bad lines become dead letters.

Each reader yields :class:`Chunk` objects: an Arrow table of the good records (in file order),
their source line numbers, and the dead letters (raw bytes, error, line number) of the rest.
A bad line never stops the file: every good line is kept.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from everstream.errors import ConfigError, SchemaError
from everstream.log.records import DeadLetter, conform, rows_to_batch, schema_text

FileFormat = Literal["jsonl", "csv", "parquet"]
CHUNK_LINES = 50_000


@dataclass
class Chunk:
    table: pa.Table
    lines: np.ndarray  # source line number (1-based) of each row of ``table``
    dead: list[DeadLetter] = field(default_factory=list)


def read_file(
    source: str | Path | IO[bytes],
    fmt: FileFormat,
    topic: str,
    schema: pa.Schema | None = None,
    max_record_bytes: int = 1 << 20,
    chunk_lines: int = CHUNK_LINES,
) -> Iterator[Chunk]:
    """Yield chunks of ``source`` (a path, '-' for stdin, or a binary file object)."""
    if fmt == "parquet":
        if not isinstance(source, (str, Path)) or str(source) == "-":
            raise ConfigError("parquet input must be a file path (it cannot be streamed from stdin)")
        yield from _parquet(Path(source), topic, schema)
        return
    if fmt not in ("jsonl", "csv"):
        raise ConfigError(f"unknown format {fmt!r}: use jsonl, csv or parquet")
    stream: IO[bytes]
    if isinstance(source, (str, Path)):
        if str(source) == "-":
            import sys

            stream = sys.stdin.buffer
        else:
            try:
                stream = open(source, "rb")  # noqa: SIM115 - closed below
            except OSError as e:
                raise ConfigError(f"cannot open input file {source}: {e.strerror}") from e
    else:
        stream = source
    try:
        if fmt == "jsonl":
            yield from _jsonl(stream, topic, schema, max_record_bytes, chunk_lines)
        else:
            yield from _csv(stream, topic, schema, max_record_bytes, chunk_lines)
    finally:
        if isinstance(source, (str, Path)) and str(source) != "-":
            stream.close()


def _line_chunks(stream: IO[bytes], chunk_lines: int, first_line: int = 1) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for n, raw in enumerate(stream, start=first_line):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        chunk.append((n, line))
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl(
    stream: IO[bytes], topic: str, schema: pa.Schema | None, limit: int, chunk_lines: int
) -> Iterator[Chunk]:
    current = schema
    for chunk in _line_chunks(stream, chunk_lines):
        dead: list[DeadLetter] = []
        rows: list[dict[str, object]] = []
        nums: list[int] = []
        for n, line in chunk:
            if len(line) > limit:
                dead.append(DeadLetter(topic, f"record of {len(line)} bytes is over the limit of {limit}",
                                       line[:4096], source_line=n))
                continue
            try:
                value = json.loads(line)
            except ValueError as e:
                dead.append(DeadLetter(topic, f"invalid JSON: {e}", line, source_line=n))
                continue
            if not isinstance(value, dict):
                dead.append(DeadLetter(topic, f"a record must be a JSON object, got {type(value).__name__}",
                                       line, source_line=n))
                continue
            rows.append(value)
            nums.append(n)
        if not rows:
            yield Chunk(pa.table({}), np.zeros(0, np.int64), dead)
            continue
        batch, good, bad, used = rows_to_batch(rows, current, strict=schema is not None)
        if schema is None:
            current = None  # undeclared topics: each chunk infers its own types
        del used
        line_of = dict(zip(range(len(rows)), nums, strict=True))
        for i, err in bad:
            raw = next(line for n, line in chunk if n == line_of[i])
            dead.append(DeadLetter(topic, err, raw, source_line=line_of[i]))
        table = pa.Table.from_batches([batch]) if batch is not None else pa.table({})
        yield Chunk(table, np.array([nums[i] for i in good], dtype=np.int64), dead)


def _csv(
    stream: IO[bytes], topic: str, schema: pa.Schema | None, limit: int, chunk_lines: int
) -> Iterator[Chunk]:
    header_raw = stream.readline()
    if not header_raw.strip():
        return
    header = next(csv.reader([header_raw.decode("utf-8", "replace")]))
    if schema is not None:
        missing = [f for f in header if f not in schema.names]
        if missing:
            raise SchemaError(
                f"topic {topic!r}: CSV columns {missing} are not in the topic schema ({schema_text(schema)})"
            )
    for chunk in _line_chunks(stream, chunk_lines, first_line=2):
        dead: list[DeadLetter] = []
        kept: list[tuple[int, bytes]] = []
        for n, line in chunk:
            if len(line) > limit:
                dead.append(DeadLetter(topic, f"record of {len(line)} bytes is over the limit of {limit}",
                                       line[:4096], source_line=n))
            else:
                kept.append((n, line))
        if not kept:
            yield Chunk(pa.table({}), np.zeros(0, np.int64), dead)
            continue
        invalid: set[int] = set()

        def on_invalid(
            row: pacsv.InvalidRow,
            kept: list[tuple[int, bytes]] = kept,
            invalid: set[int] = invalid,
            dead: list[DeadLetter] = dead,
        ) -> str:
            # row.number counts lines of the text we passed, the header being line 1
            if row.number is not None:
                idx = row.number - 2
            else:
                text_b = row.text.encode()
                idx = next((i for i, (_, raw) in enumerate(kept) if raw == text_b and i not in invalid), -1)
            n, raw = kept[idx] if idx >= 0 else (None, row.text.encode())
            invalid.add(idx)
            dead.append(DeadLetter(
                topic, f"CSV row has {row.actual_columns} fields, the header has {row.expected_columns}",
                raw, source_line=n,
            ))
            return "skip"

        text = header_raw.rstrip(b"\r\n") + b"\n" + b"\n".join(line for _, line in kept) + b"\n"
        types = {f.name: f.type for f in schema} if schema is not None else None
        try:
            table = pacsv.read_csv(
                io.BytesIO(text),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
                read_options=pacsv.ReadOptions(use_threads=False),
                convert_options=pacsv.ConvertOptions(column_types=types or {}, strings_can_be_null=False),
            )
            rows_idx = [i for i in range(len(kept)) if i not in invalid]
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            invalid.clear()
            dead[:] = [d for d in dead if d.error.startswith("record of")]
            table, rows_idx = _csv_slow(text, kept, header, schema, topic, dead, on_invalid, invalid)
        if schema is not None:
            table = conform(table, schema, topic)
        yield Chunk(table, np.array([kept[i][0] for i in rows_idx], dtype=np.int64), dead)


def _csv_slow(
    text: bytes, kept: list[tuple[int, bytes]], header: list[str], schema: pa.Schema | None, topic: str,
    dead: list[DeadLetter], on_invalid: object, invalid: set[int],
) -> tuple[pa.Table, list[int]]:
    """Read every column as text, then convert column by column, isolating bad values."""
    table = pacsv.read_csv(
        io.BytesIO(text),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),  # type: ignore[arg-type]
        read_options=pacsv.ReadOptions(use_threads=False),
        convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header}),
    )
    rows_idx = [i for i in range(len(kept)) if i not in invalid]
    bad = np.zeros(table.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    cols = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        target = schema.field(name).type if schema is not None and name in schema.names else None
        if target is None:
            cols[name] = col
            continue
        try:
            cols[name] = pc.cast(col, target)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        values = col.to_pylist()
        converted = []
        for i, v in enumerate(values):
            try:
                converted.append(pc.cast(pa.array([v], pa.string()), target)[0].as_py())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad[i] = True
                reasons.setdefault(i, f"column {name!r}: {v!r} is not a valid {target}")
                converted.append(None)
        cols[name] = pa.array(converted, target)
    for j in np.flatnonzero(bad):
        line_no, raw = kept[rows_idx[int(j)]]
        dead.append(DeadLetter(topic, reasons[int(j)], raw, source_line=line_no))
    out = pa.table(cols).filter(pa.array(~bad))
    return out, [r for i, r in enumerate(rows_idx) if not bad[i]]


def _parquet(path: Path, topic: str, schema: pa.Schema | None) -> Iterator[Chunk]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ConfigError(f"cannot read Parquet file {path}: {e}") from e
    line = 1
    for batch in pf.iter_batches(batch_size=CHUNK_LINES):
        table = pa.Table.from_batches([batch])
        if schema is not None:
            table = conform(table, schema, topic)
        yield Chunk(table, np.arange(line, line + batch.num_rows, dtype=np.int64))
        line += batch.num_rows


def timestamps_ms(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A time column as epoch ms (int64; null where unparseable): timestamps, ints (ms), ISO text."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_timestamp(t):
        return arr.cast(pa.timestamp("ms", tz=t.tz)).cast(pa.int64())
    if pa.types.is_integer(t):
        return arr.cast(pa.int64())
    if pa.types.is_floating(t):
        return pc.floor(arr).cast(pa.int64())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return arr.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out = []
            for v in arr.to_pylist():
                try:
                    out.append(pa.array([v]).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())[0].as_py())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    out.append(None)
            return pa.array(out, pa.int64())
    raise SchemaError(f"time column of type {t}: use a timestamp, epoch milliseconds or ISO-8601 text")


def to_json_lines(batch: pa.RecordBatch) -> bytes:
    """JSON Lines for a batch (binary columns as UTF-8 text, timestamps as ISO-8601)."""
    import polars as pl

    cols = []
    fields = []
    for f, c in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            c = pa.array([None if v is None else v.decode("utf-8", "replace") for v in c.to_pylist()],
                         pa.string())
            f = pa.field(f.name, pa.string())
        elif pa.types.is_dictionary(f.type):
            c = c.cast(f.type.value_type)
            f = pa.field(f.name, f.type.value_type)
        elif pa.types.is_map(f.type):
            c = pa.array([None if v is None else json.dumps({k: val.decode("utf-8", "replace") for k, val in v})
                          for v in c.to_pylist()], pa.string())
            f = pa.field(f.name, pa.string())
        cols.append(c)
        fields.append(f)
    frame = pl.from_arrow(pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields)))
    assert isinstance(frame, pl.DataFrame)
    out = frame.write_ndjson()
    return out.encode() if isinstance(out, str) else b""
