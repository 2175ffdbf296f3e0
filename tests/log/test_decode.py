"""Decoding stored payloads: small ones message by message with a cached schema, big or unusual ones by Arrow's
stream reader. Both ways must give exactly what Arrow's stream reader gives (the reference), and a payload that
is not one record batch must be refused."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from everstream.log.batch import SMALL_BATCH_ROWS, decode, encode


def _reference(payload: bytes) -> pa.RecordBatch:
    batches = list(ipc.open_stream(pa.py_buffer(payload)))
    assert len(batches) == 1
    return batches[0]


def _batch(n: int, seed: int = 0) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    return pa.record_batch({
        "id": pa.array(np.arange(n), pa.int64()),
        "s": pa.array([f"card-{i % 7}" if i % 5 else None for i in range(n)], pa.string()),
        "x": pa.array(rng.random(n)),
        "tags": pa.array([[f"t{i}"] if i % 3 else [] for i in range(n)], pa.list_(pa.string())),
        "_timestamp": pa.array(np.arange(n) + 1_700_000_000_000, pa.timestamp("ms")),
    }, metadata={b"origin": b"test"})


@pytest.mark.parametrize("rows", [1, 3, SMALL_BATCH_ROWS - 1, SMALL_BATCH_ROWS, 20_000])
@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_decode_equals_arrows_stream_reader(rows: int, compression: str) -> None:
    payload = encode(_batch(rows), compression).payload
    got, want = decode(payload, compression), _reference(payload)
    assert got.equals(want) and got.schema.equals(want.schema, check_metadata=True)
    again = decode(payload, compression)  # the second time from the cached schema
    assert again.equals(want) and again.schema.equals(want.schema, check_metadata=True)


def test_decode_keeps_schemas_apart() -> None:
    """Two schemas that differ only in a field's type or in metadata are two cache entries."""
    a = pa.record_batch({"v": pa.array([1, 2], pa.int64()), "_timestamp": pa.array([1, 2], pa.timestamp("ms"))})
    b = pa.record_batch({"v": pa.array([1, 2], pa.int32()), "_timestamp": pa.array([1, 2], pa.timestamp("ms"))})
    c = a.replace_schema_metadata({b"k": b"v"})
    for batch in (a, b, c, a, b, c):
        got = decode(encode(batch).payload)
        assert got.equals(batch) and got.schema.equals(batch.schema, check_metadata=True)


def test_decode_of_dictionaries_takes_the_stream_reader() -> None:
    batch = pa.record_batch({"d": pa.array(["u", "v", "u", None]).dictionary_encode(),
                             "_timestamp": pa.array([1, 2, 3, 4], pa.timestamp("ms"))})
    payload = encode(batch).payload
    assert decode(payload).equals(_reference(payload))


def test_decode_refuses_a_payload_of_two_batches() -> None:
    batch = _batch(3)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
        writer.write_batch(batch)
    with pytest.raises(ValueError, match="2 record batches"):
        decode(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("cut", [3, 40, 200])
def test_decode_refuses_a_truncated_payload(cut: int) -> None:
    payload = encode(_batch(3)).payload
    with pytest.raises((pa.ArrowInvalid, ValueError, OSError)):
        decode(payload[:cut])
