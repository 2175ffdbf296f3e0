"""The embedded log's small-batch fast paths: inline ("leader") commits, the per-partition split of a keyed
``send_batch``, the key -> partition cache, and the metadata columns added on poll.

References are independent: plain Python (Kafka's murmur2 rule per key, row order), a plain pyarrow IPC stream,
and the general code paths the fast paths must equal.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from everstream.errors import ProducerError
from everstream.log import EmbeddedLog, TopicSpec
from everstream.log import batch as batchcodec
from everstream.log.embedded import producer as producer_mod
from everstream.log.partitioner import murmur2, partitions_for_column
from tests.log.logtools import by_partition, read_all


def test_keyed_small_batches_land_on_kafkas_partition_in_row_order(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("t", 5))
    keys = [f"card{i % 23}" for i in range(300)]
    with log.producer(linger_ms=0.0) as p:
        for start in range(0, 300, 7):  # small frames, several partitions each
            p.send_batch("t", pa.table({"id": list(range(start, min(start + 7, 300))),
                                        "k": keys[start:start + 7]}), key="k")
    expected: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        expected.setdefault((murmur2(k.encode()) & 0x7FFFFFFF) % 5, []).append(i)
    assert by_partition(read_all(log, "t"), "id") == expected


def test_the_key_cache_gives_the_hash_rule_with_nulls_and_past_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from everstream.log import partitioner

    monkeypatch.setattr(partitioner, "KEY_CACHE_MAX", 5)
    keys = pa.array([b"a", None, b"bb", b"a", b"ccc", b"dddd", b"e", b"ff", b"g", None, b"bb"] * 60)
    ref = [-1 if k is None else (murmur2(k) & 0x7FFFFFFF) % 7 for k in keys.to_pylist()]
    cache: dict[bytes, int] = {}
    small = partitions_for_column(keys.slice(0, 11), 7, cache)  # the per-key path
    assert small.tolist() == ref[:11]
    assert len(cache) == 5  # stopped growing at the cap
    assert partitions_for_column(keys, 7, cache).tolist() == ref  # the dictionary path, with the cache
    assert partitions_for_column(keys, 7).tolist() == ref  # no cache
    assert cache == {k: (murmur2(k) & 0x7FFFFFFF) % 7 for k in cache}


def test_stored_payloads_are_a_plain_arrow_ipc_stream_old_readers_take(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("t", 1, compression="lz4"))
    with log.producer(linger_ms=0.0) as p:
        p.send_batch("t", pa.table({"x": [1, 2, 3], "s": ["a", None, "c"], "ts": [5, 3, 9]}), timestamp="ts")
    row = sqlite3.connect(log.data_dir / "log.db").execute(
        "SELECT payload, min_ts, max_ts, count FROM batches").fetchone()
    batch = ipc.open_stream(pa.py_buffer(row[0])).read_next_batch()  # plain pyarrow, no everstream code
    assert batch.schema.names == ["x", "s", "ts", "_timestamp", "_key"]
    assert batch.schema.field("_timestamp").type == pa.timestamp("ms", tz="UTC")
    assert batch.column("_timestamp").cast(pa.int64()).to_pylist() == [5, 3, 9]
    assert batch.column("s").to_pylist() == ["a", None, "c"]
    assert row[1:] == (3, 9, 3)


def _stored(names: list[str], metadata: dict[bytes, bytes] | None = None) -> pa.RecordBatch:
    n = 3
    cols = {"_timestamp": pa.array([1, 2, 3], pa.int64()).view(pa.timestamp("ms", tz="UTC")),
            "_key": pa.array([b"a", None, b"c"]), "_offset": pa.array([4, 8, 9], pa.int64())}
    arrays = [cols.get(name, pa.array(np.arange(n))) for name in names]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([pa.field(nm, a.type) for nm, a in
                                                                zip(names, arrays, strict=True)], metadata))


@pytest.mark.parametrize("names, metadata", [
    (["a", "b", "_timestamp", "_key"], None),  # the fast path
    (["a", "b", "_timestamp", "_key"], {b"pandas": b"{}"}),
    (["_u", "a", "_timestamp", "_key"], None),
    (["a", "_timestamp", "_key", "_offset"], None),
])
def test_metadata_columns_come_in_the_documented_order(names: list[str], metadata: dict[bytes, bytes] | None) -> None:
    stored = _stored(names, metadata)
    out = batchcodec.with_metadata(stored, "t", 2, 100)
    user = [nm for nm in names if not nm.startswith("_")]
    extra = [nm for nm in names if nm.startswith("_") and nm not in ("_timestamp", "_key", "_offset")]
    assert out.schema.names == [*user, "_topic", "_partition", "_offset", "_timestamp", "_key", *extra]
    assert out.schema.metadata is None
    offsets = [4, 8, 9] if "_offset" in names else [100, 101, 102]
    assert out.column("_offset").to_pylist() == offsets
    assert out.column("_topic").to_pylist() == ["t"] * 3
    assert out.column("_partition").to_pylist() == [2] * 3
    for nm in names:
        assert out.column(nm).equals(stored.column(nm))


def test_an_inline_commit_keeps_per_partition_order_with_concurrent_big_submits(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert 3 < producer_mod.INLINE_COMMIT_ROWS <= 5_000 and producer_mod.ASYNC_ENCODE_ROWS <= 5_000
    log = EmbeddedLog(data_dir, durability="relaxed")
    log.create_topic(TopicSpec("t", 2))
    p = log.producer(linger_ms=0.0)
    inline = [0]
    commit_inline = p._commit_inline

    def counted(*works: Future[producer_mod._Work | None] | None) -> None:
        inline[0] += sum(w is not None for w in works)
        commit_inline(*works)

    monkeypatch.setattr(p, "_commit_inline", counted)
    big_base = 1_000_000

    def sender(first: int, size: int, count: int) -> None:
        for k in range(count):  # one key: every record to the same partition
            start = first + k * size
            p.send_batch("t", pa.table({"id": list(range(start, start + size)), "k": ["x"] * size}), key="k")

    small = threading.Thread(target=sender, args=(0, 3, 300))
    big = threading.Thread(target=sender, args=(big_base, 5_000, 8))
    small.start()
    big.start()
    small.join()
    big.join()
    p.flush()
    assert p.is_durable(p.mark())
    p.close()
    (ids,) = by_partition(read_all(log, "t"), "id").values()
    smalls = [i for i in ids if i < big_base]
    bigs = [i for i in ids if i >= big_base]
    assert smalls == list(range(900))  # each sender's records in the order it sent them
    assert bigs == list(range(big_base, big_base + 40_000))
    assert inline[0] > 0  # the inline path ran (and the big submits went through the writer)
    log.close()


def test_a_failed_inline_commit_surfaces_like_a_writer_failure(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = EmbeddedLog(data_dir, durability="relaxed")
    log.create_topic(TopicSpec("t", 1))
    p = log.producer(linger_ms=0.0)
    p.send_batch("t", pa.table({"x": [1]}))
    p.flush()
    calls: list[str] = []

    def broken(works: object) -> None:
        calls.append(threading.current_thread().name)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(p, "_write", broken)
    assert p.send_batch("t", pa.table({"x": [2]})) == 1  # returns like a queued submit would
    assert calls == [threading.current_thread().name]  # it was written inline, on this thread
    with pytest.raises(ProducerError, match=r"damaged|disk I/O"):
        p.is_durable(p._submitted)
    with pytest.raises(ProducerError):
        p.send_batch("t", pa.table({"x": [3]}))
    with pytest.raises(ProducerError):
        p.flush(timeout=5)
    with pytest.raises(ProducerError):
        p.close()
    assert read_all(log, "t").column("x").to_pylist() == [1]
    log.close()


def test_the_writer_waits_for_an_inline_commit_in_flight(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big submit queued while a small one is being committed inline is written after it (one partition)."""
    log = EmbeddedLog(data_dir, durability="relaxed")
    log.create_topic(TopicSpec("t", 1))
    p = log.producer(linger_ms=0.0)
    caller = threading.current_thread()
    entered, release, writer_writes = threading.Event(), threading.Event(), threading.Event()
    write = p._write

    def slow_inline(works: list[producer_mod._Work]) -> None:
        if threading.current_thread() is caller:  # the inline commit: hold it until the big submit is queued
            entered.set()
            assert release.wait(10)
        else:
            writer_writes.set()
        write(works)

    monkeypatch.setattr(p, "_write", slow_inline)

    def big() -> None:
        assert entered.wait(10)
        p.send_batch("t", pa.table({"id": list(range(3, 6_003))}))  # queued: a write is in flight
        writer_writes.wait(1.0)  # give a writer that does not wait time to write it first
        release.set()

    other = threading.Thread(target=big)
    other.start()
    p.send_batch("t", pa.table({"id": [0, 1, 2]}))  # inline, blocked until the big one is queued
    other.join()
    p.flush()
    p.close()
    assert read_all(log, "t").column("id").to_pylist() == list(range(6_003))
    log.close()
