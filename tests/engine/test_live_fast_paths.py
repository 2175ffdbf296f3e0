"""Fast paths of the live cycle (few events per batch) against plain-Python references and the general paths:
the sink's cached export casts, the stored record's metadata columns and the size check of the send path, and
the one-partition watermark shortcuts, the import of polls into Polars, plain-column selects and the
on-arrival feature outputs built as one Arrow batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import everstream as es
from everstream.engine import runtime as rt
from everstream.engine.online import _series, frame_of
from everstream.engine.testing import read_topic
from everstream.engine.time import MAX_TIME, MIN_TIME, PartitionWatermarks
from everstream.errors import StepError
from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.contract import KEY_COL, TIMESTAMP_COL, TIMESTAMP_TYPE
from everstream.log.records import _cell_bytes, add_meta, oversize_rows


def _reference_stored(table: pa.Table) -> pa.Table:
    """The export casts worked out per call (no cache): what to_arrow gave before the cache."""
    for i, f in enumerate(table.schema):
        t = rt._stored_type(f.type)
        if t != f.type:
            table = table.set_column(i, f.with_type(t), table.column(i).cast(t))
    return table


def test_to_arrow_cached_casts_equal_the_casts_worked_out_per_call() -> None:
    frames = [
        pl.DataFrame({"a": ["x", None, "z"], "n": [1, 2, None], "l": [["p"], [], None]}),
        pl.DataFrame({"a": [1, 2, 3], "n": ["u", "v", None], "l": [["p"], [], None]}),  # same names, other types
        pl.DataFrame({"a": ["x"], "b": [b"\x00"], "s": [{"k": "v"}]}),
        pl.DataFrame({"a": ["x", "y"], "n": [1, 2], "l": [["p"], []]}).head(0),  # empty
        pl.DataFrame({"c": pl.Series(["p", "q"], dtype=pl.Categorical)}),  # Polars' own export
    ]
    for _ in range(3):  # the second and third round reuse the cache, interleaving schemas
        for df in frames:
            got = rt.to_arrow(df)
            want = _reference_stored(pa.table(df)) if not isinstance(df.dtypes[0], pl.Categorical) else \
                _reference_stored(df.to_arrow())
            assert got.equals(want) and got.schema.equals(want.schema, check_metadata=True)
            assert not any(pa.types.is_string_view(t) or pa.types.is_large_string(t) for t in got.schema.types)
    # field metadata is part of the match: the cast fields keep each schema's own metadata
    t1 = pa.table({"a": pa.array(["x"], pa.string_view())})
    t2 = t1.replace_schema_metadata(None).cast(pa.schema([pa.field("a", pa.string_view(), metadata={b"m": b"1"})]))
    for t in (t1, t2, t1, t2):
        assert rt._as_stored(t).schema.equals(_reference_stored(t).schema, check_metadata=True)


def _reference_add_meta(batch: pa.RecordBatch, ts: np.ndarray, keys: list[bytes | None]) -> pa.RecordBatch:
    fields = [*batch.schema, pa.field(TIMESTAMP_COL, TIMESTAMP_TYPE), pa.field(KEY_COL, pa.binary())]
    cols = [*batch.columns, pa.array(ts, pa.int64()).view(TIMESTAMP_TYPE), pa.array(keys, pa.binary())]
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


def test_add_meta_equals_rebuilding_the_batch() -> None:
    batch = pa.RecordBatch.from_pydict({"a": ["x", None, "z"], "n": [1, None, 3]})
    batch = batch.replace_schema_metadata({b"pandas": b"{}"})  # dropped from the stored schema, as before
    ts = np.array([5, 6, 7], np.int64)
    keys: list[bytes | None] = [b"k", None, b"m"]
    got = add_meta(batch, ts, keys, None)
    want = _reference_add_meta(batch.replace_schema_metadata(None), ts, keys)
    assert got.equals(want) and got.schema.equals(want.schema, check_metadata=True)
    assert got.schema.metadata is None
    with_headers = add_meta(batch, ts, keys, [{"h": b"1"}, None, None])
    assert with_headers.schema.names[-1] == "_headers" and with_headers.column(4).to_pylist()[0] == [("h", b"1")]
    empty = add_meta(batch.slice(0, 0), ts[:0], [], None)
    assert empty.num_rows == 0 and empty.schema.names == [*batch.schema.names, TIMESTAMP_COL, KEY_COL]


def _reference_oversize(batch: pa.RecordBatch, limit: int) -> list[int]:
    """The general path: per row, the counted bytes of its string/binary and nested cells, unless the
    string/binary/nested columns together are within the limit."""
    sized = [c for c in batch.columns if pa.types.is_string(c.type) or pa.types.is_binary(c.type)
             or pa.types.is_nested(c.type)]
    if sum(c.nbytes for c in sized) <= limit:
        return []
    total = np.zeros(batch.num_rows, np.int64)
    for c in sized:
        total += _cell_bytes(c)
    return [int(i) for i in np.flatnonzero(total > limit)]


@pytest.mark.parametrize("limit", [1, 100, 4_000, 10_000, 40_000, 1 << 20])
def test_oversize_rows_equal_the_per_row_sizes(limit: int) -> None:
    flags = [[True] * 20_000, [False], None, [True] * 3]  # booleans inside lists (a byte each is counted)
    batch = pa.RecordBatch.from_pydict({
        "s": ["x" * 50, "y" * 5_000, None, ""], "flags": flags, "n": [1, 2, 3, 4]})
    assert oversize_rows(batch, limit).tolist() == _reference_oversize(batch, limit)
    flat = pa.RecordBatch.from_pydict({"s": ["x" * 50, "y" * 5_000], "n": [1, 2]})
    assert oversize_rows(flat, limit).tolist() == _reference_oversize(flat, limit)
    sliced = batch.slice(1, 2)  # a slice's buffers are its parent's: still a bound
    assert oversize_rows(sliced, limit).tolist() == _reference_oversize(sliced, limit)


def _reference_row_watermarks(top: int, ts: list[int], delay: int, current: int) -> list[int]:
    """One partition: before each row, the highest event time seen so far minus the delay (MIN before any),
    never below the source's watermark."""
    out = []
    for t in ts:
        out.append(max(current, MIN_TIME if top == MIN_TIME else top - delay))
        top = max(top, t)
    return out


def test_one_partition_watermarks_equal_plain_python() -> None:
    tracker = PartitionWatermarks(1, 1_000, None, lambda: 0.0)
    top, current = MIN_TIME, MIN_TIME
    batches = [[5_000, 5_200, 4_000, 6_000], [], [100], [7_000, 7_000, 6_900], [20_000]]  # late rows included
    for ts in batches:
        arr = np.array(ts, np.int64)
        assert tracker.row_watermarks(0, arr).tolist() == _reference_row_watermarks(top, ts, 1_000, current)
        tracker.observe(0, max(ts) if ts else None)
        top = max([top, *ts])
        current = max(current, MIN_TIME if top == MIN_TIME else top - 1_000)
        assert tracker.current() == current
    tracker.finish()
    assert tracker.current() == MAX_TIME and tracker.row_watermarks(0, np.array([1], np.int64)).tolist() == [MAX_TIME]
    # with an idle timeout the general path runs: same watermark while the partition is live
    clock = [0.0]
    idle = PartitionWatermarks(1, 1_000, 10_000, lambda: clock[0])
    idle.observe(0, 9_000)
    assert idle.current() == 8_000 and idle.row_watermarks(0, np.array([9_500], np.int64)).tolist() == [8_000]


def test_imported_polls_equal_from_arrow() -> None:
    """The C stream import gives the frame ``pl.from_arrow`` gives: types (views, dictionaries, nested, time),
    nulls, values and one chunk per batch."""
    batch = pa.record_batch({
        "s": pa.array(["a", None, "a string longer than twelve bytes"], pa.string_view()),
        "b": pa.array([b"\x00", None, b"x"], pa.binary_view()),
        "d": pa.array(["u", "v", None]).dictionary_encode(),
        "l": pa.array([["p"], None, []], pa.list_(pa.string())),
        "st": pa.array([{"k": 1}, None, {"k": 3}]),
        "t": pa.array([1, None, 3], pa.timestamp("ms")),
        "f": pa.array([1.5, None, float("nan")]),
    })
    for table in (pa.Table.from_batches([batch]), pa.Table.from_batches([batch, batch.slice(1)]),
                  pa.Table.from_batches([], batch.schema)):
        got, want = rt._imported(table), pl.from_arrow(table, rechunk=False)
        assert isinstance(want, pl.DataFrame)
        assert got.schema == want.schema and got.equals(want) and got.n_chunks() == want.n_chunks()


def test_frame_of_equals_a_polars_series_per_column() -> None:
    cols = {
        "f": np.array([1.5, np.nan, -0.0]), "f32": np.array([np.nan, 2.0, 3.0], np.float32),
        "i": np.array([1, -2, 3]), "u": np.array([1, 2, 3], np.uint32), "b": np.array([True, False, True]),
    }
    got = frame_of(cols)
    want = pl.DataFrame([_series(k, v) for k, v in cols.items()])
    assert got.schema == want.schema and got.equals(want)
    assert got.get_column("f").null_count() == 1 and got.get_column("f32").dtype == pl.Float64
    objects = {"o": np.array(["x", None], dtype=object), "i": np.array([1, 2])}  # other kinds: as Polars infers
    assert frame_of(objects).equals(pl.DataFrame([_series(k, v) for k, v in objects.items()]))
    assert frame_of({}).width == 0


def test_plain_column_select_keeps_metadata_and_names_a_missing_column(tmp_path: Path) -> None:
    """``select("a", "b")`` (no expressions) takes the plain path; the output equals the input's columns, the
    records keep their offsets, and a column the events lack fails with the step's error."""
    log = EmbeddedLog(tmp_path / "data")
    log.create_topic(TopicSpec("in", 1))
    rows = pl.DataFrame({"id": list(range(20)), "x": [float(i) / 3 for i in range(20)], "s": ["p", "q"] * 10})
    with log.producer() as producer:
        for part in rows.iter_slices(7):
            producer.send_batch("in", part.to_arrow())
    app = es.App("plain-select")
    app.stream("in").select("s", "id").to("out")
    app.run(log, until_idle=True)
    got = read_topic(log, "out")
    assert [c for c in got.columns if not c.startswith("_")] == ["s", "id"]  # the select's order, nothing else
    assert got.select("s", "id").equals(rows.select("s", "id"))
    bad = es.App("plain-select-missing")
    bad.stream("in").select("id", "nope").to("out2")
    with pytest.raises(StepError, match="nope"):
        bad.run(log, until_idle=True)
    log.close()
