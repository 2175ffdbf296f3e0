"""``as_views``: string and binary columns become Arrow view types with the same values; nothing else changes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from everstream.log.batch import as_views


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
