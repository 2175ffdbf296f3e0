"""String views: ``as_views`` casts string/binary columns to Arrow view types with the same values; the
embedded log stores the user's string columns as views (batches of ``SMALL_BATCH_ROWS`` rows or more; smaller
ones as they come) and reads them back as produced."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.batch import PRODUCED_AS, SMALL_BATCH_ROWS, as_views, decode


def _batch() -> pa.RecordBatch:
    return pa.record_batch({
        "s": pa.array(["a", None, "a much longer string than twelve bytes", ""], pa.string()),
        "ls": pa.array(["x", "y", None, "zz"], pa.large_string()),
        "b": pa.array([b"\x00", None, b"", b"abc"], pa.binary()),
        "lb": pa.array([None, b"q", b"r", b"s"], pa.large_binary()),
        "n": pa.array([1, 2, None, 4], pa.int64()),
        "tags": pa.array([["a"], None, [], ["b", None]], pa.list_(pa.string())),  # nested: left as is
        "d": pa.array(["u", "v", "u", None]).dictionary_encode(),
    }, metadata={b"origin": b"test"})


@pytest.mark.parametrize("as_table", [False, True])
def test_views_keep_values_and_cast_only_top_level_strings(as_table: bool) -> None:
    data = pa.Table.from_batches([_batch(), _batch().slice(1, 2)]) if as_table else _batch()
    got = as_views(data)
    assert [f.type for f in got.schema] == [
        pa.string_view(), pa.string_view(), pa.binary_view(), pa.binary_view(), pa.int64(),
        pa.list_(pa.string()), pa.dictionary(pa.int32(), pa.string()),
    ]
    assert got.schema.names == data.schema.names and got.schema.metadata == data.schema.metadata
    assert got.num_rows == data.num_rows
    for name in data.schema.names:  # plain Python values: the reference
        assert got.column(name).to_pylist() == data.column(name).to_pylist(), name


def test_views_without_strings_is_the_same_object() -> None:
    b = pa.record_batch({"n": [1, 2]})
    assert as_views(b) is b


# ---------------------------------------------------------------- stored as views, read as produced



def _produced() -> pa.Table:
    return pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "s": pa.array(["short", None, "a string longer than twelve bytes"], pa.string()),
        "ls": pa.array(["x", "yy", None], pa.large_string()),
        "b": pa.array([b"\x00\x01", None, b""], pa.binary()),
        "sv": pa.array(["v", None, "w"], pa.string_view()),  # produced as a view: read back as a view
        "tags": pa.array([["a"], [], None], pa.list_(pa.string())),
    })


def _payloads(data_dir: Path) -> list[bytes]:
    con = sqlite3.connect(data_dir / "log.db")
    try:
        return [r[0] for r in con.execute("SELECT payload FROM batches ORDER BY base_offset")]
    finally:
        con.close()


def _user(batch: pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([batch]).select(["id", "s", "ls", "b", "sv", "tags"])


def _many(table: pa.Table, rows: int) -> pa.Table:
    """``table``'s rows repeated to ``rows`` rows or more, with distinct ids."""
    t = pa.concat_tables([table] * (rows // table.num_rows + 1))
    return t.set_column(0, "id", pa.array(range(t.num_rows), pa.int64()))


def test_strings_are_stored_as_views_and_read_back_as_produced(tmp_path: Path) -> None:
    produced = _many(_produced(), SMALL_BATCH_ROWS)
    with EmbeddedLog(tmp_path) as lg:
        lg.create_topic(TopicSpec("t", partitions=1))
        with lg.producer() as p:
            p.send_batch("t", produced)
        stored = decode(_payloads(tmp_path)[0])
        types = {f.name: f.type for f in stored.schema}
        assert types["s"] == types["ls"] == pa.string_view() and types["b"] == pa.binary_view()
        assert stored.schema.field("s").metadata == {PRODUCED_AS: b"string"}
        assert types["_key"] == pa.binary() and types["tags"] == pa.list_(pa.string())
        with lg.consumer() as c:
            c.assign([("t", 0)])
            got = _user(pa.concat_batches(c.poll(1.0)))
        with lg.consumer(string_views=True) as c:
            c.assign([("t", 0)])
            views = _user(pa.concat_batches(c.poll(1.0)))
    assert [f.type for f in got.schema] == [f.type for f in produced.schema]
    assert all(not f.metadata for f in got.schema)
    assert got.to_pylist() == produced.to_pylist()
    assert views.schema.field("s").type == views.schema.field("ls").type == pa.string_view()
    assert views.to_pylist() == produced.to_pylist()


@pytest.mark.parametrize("views", [False, True])
def test_small_batches_are_stored_as_produced_and_read_with_the_large_ones_schema(tmp_path: Path,
                                                                                   views: bool) -> None:
    """A small batch is stored as it comes (no view casts, no compression); read in one poll with large ones,
    every batch has one schema (the runtime makes one table of a poll) and the values are those produced."""
    small, large = _produced(), _many(_produced(), SMALL_BATCH_ROWS)
    with EmbeddedLog(tmp_path) as lg:
        lg.create_topic(TopicSpec("t", partitions=1))
        with lg.producer(linger_ms=0.0) as p:
            for part in (small, large, small):
                p.send_batch("t", part)
                p.flush()
        stored = [decode(payload) for payload in _payloads(tmp_path)]
        assert [b.schema.field("s").type for b in stored] == [pa.string(), pa.string_view(), pa.string()]
        with lg.consumer(string_views=views) as c:
            c.assign([("t", 0)])
            got = c.poll(1.0)
    assert len({b.schema for b in got}) == 1
    table = _user(pa.concat_batches(got))
    assert table.schema.field("s").type == (pa.string_view() if views else pa.string())
    assert table.schema.field("ls").type == (pa.string_view() if views else pa.large_string())
    assert table.to_pylist() == pa.concat_tables([small, large, small]).to_pylist()


def _store_plain(data_dir: Path, table: pa.Table) -> None:
    """Rewrite every stored payload the way payloads were written before views (plain string types)."""
    con = sqlite3.connect(data_dir / "log.db")
    try:
        for rid, payload in con.execute("SELECT id, payload FROM batches").fetchall():
            batch = decode(payload)
            plain = pa.RecordBatch.from_arrays(
                [batch.column(i).cast(table.schema.field(f.name).type) if f.name in table.schema.names
                 else batch.column(i) for i, f in enumerate(batch.schema)],
                names=batch.schema.names)
            sink = pa.BufferOutputStream()
            with ipc.new_stream(sink, plain.schema) as w:
                w.write_batch(plain)
            data = sink.getvalue().to_pybytes()
            con.execute("UPDATE batches SET payload = ?, crc = ? WHERE id = ?", (data, zlib.crc32(data), rid))
        con.commit()
    finally:
        con.close()


@pytest.mark.parametrize("views", [False, True])
def test_payloads_from_before_views_read_and_compact_with_new_ones(tmp_path: Path, views: bool) -> None:
    produced = _produced()
    with EmbeddedLog(tmp_path) as lg:
        lg.create_topic(TopicSpec("t", partitions=1, compact=True))
        with lg.producer() as p:
            p.send_batch("t", produced, key="id")
    _store_plain(tmp_path, produced)  # the first payload: the old format
    assert decode(_payloads(tmp_path)[0]).schema.field("s").type == pa.string()
    newer = produced.set_column(1, "s", pa.array(["new", "newer", None], pa.string()))
    with EmbeddedLog(tmp_path) as lg:
        with lg.producer() as p:
            p.send_batch("t", newer, key="id")  # the same keys: compaction keeps these
        with lg.consumer(string_views=views) as c:
            c.assign([("t", 0)])
            before = pa.Table.from_batches([b.select(["id", "s"]) for b in c.poll(1.0)])
        assert before.column("s").to_pylist() == ["short", None, "a string longer than twelve bytes",
                                                  "new", "newer", None]
        assert lg.maintain(["t"])["t"] > 0
        with lg.consumer(string_views=views) as c:
            c.assign([("t", 0)])
            after = _user(pa.concat_batches(c.poll(1.0)))
    assert after.to_pylist() == newer.to_pylist()
    assert after.schema.field("s").type == (pa.string_view() if views else pa.string())
