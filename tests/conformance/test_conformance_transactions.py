"""Transactions in the Log contract, on both logs: atomic records + group offsets, aborts, fencing."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest
from conformtools import consume, read_all, rows

from everstream.errors import ConfigError, ProducerError, ProducerFencedError
from everstream.log import Log, TopicSpec
from everstream.log.contract import TransactionalProducer


def _ids(log: Log, topic: str) -> list[int]:
    return sorted(r["id"] for r in rows(read_all(log, topic)))


def test_commit_makes_records_visible_abort_discards_them(log: Log, names: Callable[[str], str]) -> None:
    a, b = names("txa"), names("txb")
    log.create_topic(TopicSpec(a, partitions=2))
    log.create_topic(TopicSpec(b, partitions=1))
    with log.transactional_producer(names("tx")) as tx:
        assert isinstance(tx, TransactionalProducer)
        with pytest.raises(ProducerError, match="begin"):
            tx.send(a, {"id": -1})
        tx.begin()
        with pytest.raises(ProducerError, match="already open"):
            tx.begin()
        for i in range(10):
            tx.send(a, {"id": i}, key=str(i))
        tx.send_batch(b, pa.table({"id": [100, 101]}))
        tx.commit()
        assert not tx.in_transaction
        tx.begin()
        tx.send(a, {"id": 50}, key="50")
        tx.send_batch(b, pa.table({"id": [150]}))
        tx.flush()  # flushed, not committed
        tx.abort()
        with pytest.raises(RuntimeError), tx.transaction():
            tx.send(a, {"id": 60}, key="60")
            raise RuntimeError("the step failed")
        with tx.transaction():
            tx.send(a, {"id": 10}, key="10")
    assert _ids(log, a) == list(range(11))
    assert _ids(log, b) == [100, 101]


def test_uncommitted_records_are_not_read(log: Log, names: Callable[[str], str]) -> None:
    topic = names("open")
    log.create_topic(TopicSpec(topic))
    tx = log.transactional_producer(names("tx"))
    try:
        tx.begin()
        tx.send_batch(topic, pa.table({"id": list(range(5))}))
        tx.flush()
        with log.consumer() as c:
            c.assign([(topic, 0)])
            assert consume(c, 0, timeout=0.5, settle=0.5) == []
        tx.commit()
        with log.consumer() as c:
            c.assign([(topic, 0)])
            assert sorted(r["id"] for r in consume(c, 5)) == list(range(5))
    finally:
        tx.close()


def test_read_process_write_commits_offsets_with_outputs(log: Log, names: Callable[[str], str]) -> None:
    src, dst, group = names("src"), names("dst"), names("rpw")
    log.create_topic(TopicSpec(src))
    log.create_topic(TopicSpec(dst))
    with log.producer() as p:
        p.send_batch(src, pa.table({"id": list(range(30))}))
    tx = log.transactional_producer(names("step"))
    try:
        with log.consumer(group) as c:
            c.assign([(src, 0)])
            got = [r["id"] for r in consume(c, 30, settle=0.0)]
            assert got == list(range(30))
            with tx.transaction():
                tx.send_batch(dst, pa.table({"id": [i * 10 for i in got[:10]]}))
                tx.send_offsets(c, {(src, 0): 10})
            assert c.committed(src, 0) == 10
            tx.begin()  # the step "crashes" after producing: neither outputs nor offsets count
            tx.send_batch(dst, pa.table({"id": [-1]}))
            tx.send_offsets(c, {(src, 0): 20})
            tx.abort()
            assert c.committed(src, 0) == 10
            with tx.transaction():  # by group name
                tx.send_offsets(group, {(src, 0): 12})
            assert c.committed(src, 0) == 12
            tx.begin()
            with pytest.raises(ConfigError, match="offsets"):
                tx.send_offsets(group)
            tx.abort()
    finally:
        tx.close()
    assert _ids(log, dst) == [i * 10 for i in range(10)]
    with log.consumer(group) as c2:  # a new member resumes at the committed offset
        c2.assign([(src, 0)])
        assert c2.position(src, 0) == 12


def test_a_newer_instance_fences_the_older_one(log: Log, names: Callable[[str], str]) -> None:
    topic, txid, group, src = names("fence"), names("fence"), names("g"), names("fsrc")
    log.create_topic(TopicSpec(topic))
    log.create_topic(TopicSpec(src))
    old = log.transactional_producer(txid)
    old.begin()
    old.send_batch(topic, pa.table({"id": [1]}))
    old.send_offsets(group, {(src, 0): 0})
    new = log.transactional_producer(txid)  # bumps the epoch: `old` is a zombie now
    try:
        with pytest.raises(ProducerFencedError):
            old.send_batch(topic, pa.table({"id": [2]}))
            old.commit()
        with pytest.raises(ProducerError):  # and stays unusable
            old.begin()
            old.send(topic, {"id": 4})
            old.commit()
        with new.transaction():
            new.send_batch(topic, pa.table({"id": [3]}))
    finally:
        new.close()
        try:
            old.close()
        except ProducerError:
            pass
    assert _ids(log, topic) == [3]


def test_bad_transactional_ids_and_misuse(log: Log, names: Callable[[str], str]) -> None:
    with pytest.raises(ConfigError, match="transactional_id"):
        log.transactional_producer("")
    topic = names("misuse")
    log.create_topic(TopicSpec(topic))
    with log.transactional_producer(names("tx")) as tx:
        with pytest.raises(ProducerError, match="begin"):
            tx.send_offsets(names("g"), {(topic, 0): 1})
        with pytest.raises(ProducerError, match="begin"):
            tx.commit()
        tx.abort()  # nothing open: a no-op
        tx.begin()
        tx.send(topic, {"id": 1})
    # closing with an open transaction discards it
    assert read_all(log, topic).num_rows == 0
