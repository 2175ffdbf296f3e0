"""Pipelined reads and writes of the embedded log: consumer read-ahead, encoding off the caller's thread,
and the producer's non-blocking durability marker (mark / is_durable).

The reference is plain Python: the ids written, in order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from everstream.errors import ProducerError
from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.embedded import consumer as consumer_mod
from everstream.log.embedded import producer as producer_mod

BIG = 5_000  # >= the read-ahead minimum and the async-encode threshold


def _table(start: int, n: int, ts: int | None = None) -> pa.Table:
    ids = np.arange(start, start + n, dtype=np.int64)
    stamps = np.full(n, ts if ts is not None else int(time.time() * 1000), dtype=np.int64)
    return pa.table({"id": ids, "ts": stamps, "pad": pa.array([f"r{i}" for i in ids])})


def _ids(batches: list[pa.RecordBatch]) -> list[int]:
    return [i for b in batches for i in b.column("id").to_pylist()]


def test_thresholds_make_these_tests_exercise_the_pipelined_paths() -> None:
    assert BIG >= consumer_mod._READ_AHEAD_MIN
    assert BIG >= producer_mod.ASYNC_ENCODE_ROWS


def test_read_ahead_serves_every_record_once_in_order_while_a_producer_appends(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("t", 2))
    total = 24 * BIG

    def produce() -> None:
        with log.producer(batch_events=BIG) as p:
            for k in range(0, total, 2 * BIG):
                p.send_batch("t", _table(k, 2 * BIG), key="id")
                time.sleep(0.01)

    writer = threading.Thread(target=produce)
    writer.start()
    got: dict[int, list[int]] = {0: [], 1: []}
    with log.consumer("g") as c:
        c.assign([("t", 0), ("t", 1)])
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < total and time.monotonic() < deadline:
            for b in c.poll(0.05, max_records=BIG):
                assert b.num_rows <= BIG
                got[b.column("_partition")[0].as_py()] += b.column("id").to_pylist()
    writer.join()
    reference: dict[int, list[int]] = {0: [], 1: []}
    with log.consumer() as c:  # the stored order per partition, read without read-ahead
        for p in (0, 1):
            c.assign([("t", p)])
            while True:
                bs = c.poll(0.05, max_records=100)  # under the read-ahead minimum
                if not bs:
                    break
                reference[p] += _ids(bs)
    assert sorted(reference[0] + reference[1]) == list(range(total))
    assert got == reference


def test_positions_and_commits_only_cover_records_handed_out(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("t", 1))
    with log.producer(batch_events=BIG) as p:
        p.send_batch("t", _table(0, 6 * BIG))
    with log.consumer("g") as c:
        c.assign([("t", 0)])
        first = c.poll(1.0, max_records=BIG)
        assert _ids(first) == list(range(BIG))
        assert c._ahead is not None  # the next poll's records are being read
        time.sleep(0.2)  # let the read-ahead finish: it must not move anything
        assert c.position("t", 0) == BIG
        c.commit()
        assert c.committed("t", 0) == BIG
        # a seek discards what was read ahead
        c.seek("t", 0, 7)
        assert _ids(c.poll(1.0, max_records=BIG)) == list(range(7, 7 + BIG))
        # a smaller max_records than the read-ahead used: it is discarded, never over-served
        assert _ids(c.poll(1.0, max_records=10)) == list(range(7 + BIG, 17 + BIG))


def test_read_ahead_never_serves_what_retention_removed(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("aged", 1, retention_ms=60_000))
    old = int(time.time() * 1000) - 3_600_000
    with log.producer(batch_events=BIG) as p:
        for k in range(3):  # three expired batches, then a fresh one
            p.send_batch("aged", _table(k * BIG, BIG, ts=old), timestamp="ts")
            p.flush()
        p.send_batch("aged", _table(3 * BIG, BIG), timestamp="ts")
    with log.consumer() as c:
        c.assign([("aged", 0)])
        assert _ids(c.poll(1.0, max_records=BIG)) == list(range(BIG))
        time.sleep(0.2)  # the read-ahead has read the second (expired) batch
        assert log.maintain() == {"aged": 3}
        assert _ids(c.poll(1.0, max_records=BIG)) == list(range(3 * BIG, 4 * BIG))


def test_mark_becomes_durable_without_a_flush_and_in_order(data_dir: Path) -> None:
    log = EmbeddedLog(data_dir)
    try:
        log.create_topic(TopicSpec("t", 1))
        p = log.producer(batch_events=BIG)
        markers = []
        for k in range(4):
            p.send_batch("t", _table(k * BIG, BIG))
            markers.append(p.mark())
        assert markers == sorted(markers)
        deadline = time.monotonic() + 30
        while not p.is_durable(markers[-1]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(p.is_durable(m) for m in markers)  # in order: the last durable implies all before
        # durable means readable by another connection, without flush()
        with log.consumer() as c:
            c.assign([("t", 0)])
            got: list[int] = []
            while len(got) < 4 * BIG:
                got += _ids(c.poll(1.0))
        assert got == list(range(4 * BIG))
        p.close()
        with pytest.raises(Exception, match="closed"):
            p.mark()
    finally:
        log.close()


def test_an_encoding_failure_on_the_encoder_thread_surfaces_and_loses_nothing_else(
    log: EmbeddedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.create_topic(TopicSpec("t", 1))
    real = producer_mod.batchcodec.encode
    calls = {"n": 0}

    def flaky(batch: pa.RecordBatch, compression: str = "lz4") -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated codec failure")
        return real(batch, compression)

    p = log.producer(batch_events=BIG)
    p.send_batch("t", _table(0, BIG))
    p.flush()
    monkeypatch.setattr(producer_mod.batchcodec, "encode", flaky)
    calls["n"] = 1
    p.send_batch("t", _table(BIG, BIG))  # encoded on the encoder thread: fails there
    with pytest.raises(ProducerError, match="simulated codec failure"):
        p.flush()
    with pytest.raises(ProducerError):
        p.close()
    with log.consumer() as c:  # what was acknowledged before is all there
        c.assign([("t", 0)])
        assert _ids(c.poll(1.0)) == list(range(BIG))


def test_a_transaction_with_a_failed_encode_is_discarded_whole(
    log: EmbeddedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.create_topic(TopicSpec("t", 1))
    real = producer_mod.batchcodec.encode
    state = {"fail": False}

    def flaky(batch: pa.RecordBatch, compression: str = "lz4") -> object:
        if state["fail"] and batch.num_rows == BIG:
            raise OSError("simulated codec failure")
        return real(batch, compression)

    monkeypatch.setattr(producer_mod.batchcodec, "encode", flaky)
    tx = log.transactional_producer("txn-a", batch_events=BIG)
    try:
        with tx.transaction():
            tx.send_batch("t", _table(0, BIG))
        state["fail"] = True
        tx.begin()
        tx.send_batch("t", _table(BIG, 10))  # small: inline, fine
        tx.send_batch("t", _table(BIG + 10, BIG))  # big: encoder thread, fails
        with pytest.raises(ProducerError, match="discarded"):
            tx.commit()
        with pytest.raises(ProducerError, match="commit"):
            tx.mark()
    finally:
        tx.close()
    with log.consumer() as c:
        c.assign([("t", 0)])
        assert _ids(c.poll(1.0)) == list(range(BIG))
