"""Kafka transactions through the Kafka log: atomic outputs + input offsets; aborts are invisible."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from everstream.errors import ProducerError
from everstream.log import TopicSpec
from everstream.log.kafka import KafkaLog, KafkaTransactionalProducer

pytestmark = pytest.mark.kafka


def _ids(kafka: KafkaLog, topic: str, timeout: float = 5.0, expected: int | None = None) -> list[int]:
    """Every id a read_committed consumer sees in ``topic`` (waits for the partition's end)."""
    out: list[int] = []
    ends = {p.partition: p.end_offset for p in kafka.describe_topic(topic).partitions}
    with kafka.consumer() as c:
        c.assign([(topic, p) for p in ends])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for b in c.poll(0.2):
                out += b.column("id").to_pylist()
            if all(c.position(topic, p) >= e for p, e in ends.items()) and (expected is None or len(out) >= expected):
                break
    return out


def test_aborted_records_are_invisible(kafka: KafkaLog, names: Callable[[str], str]) -> None:
    topic = names("tx")
    kafka.create_topic(TopicSpec(topic, partitions=2))
    with kafka.transactional_producer(names("txid")) as tx:
        assert isinstance(tx, KafkaTransactionalProducer)
        with pytest.raises(ProducerError, match="begin"):
            tx.send(topic, {"id": -1})
        tx.begin()
        for i in range(10):
            tx.send(topic, {"id": i}, key=str(i))
        tx.commit()
        tx.begin()
        for i in range(100, 110):
            tx.send(topic, {"id": i}, key=str(i))
        tx.send_batch(topic, pa.table({"id": [200, 201]}))
        tx.flush()  # written to the broker, but never committed
        tx.abort()
        with tx.transaction():
            tx.send(topic, {"id": 10}, key="10")
        with pytest.raises(RuntimeError), tx.transaction():
            tx.send(topic, {"id": 300}, key="300")
            raise RuntimeError("the step failed")
    assert sorted(_ids(kafka, topic, expected=11)) == list(range(11))
    # a plain read_uncommitted client does see the aborted records: they really were written
    plain = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": names("ru"),
                      "isolation.level": "read_uncommitted", "auto.offset.reset": "earliest"})
    plain.assign([TopicPartition(topic, p, 0) for p in range(2)])
    raw: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(raw) < 23 and time.monotonic() < deadline:
        raw += [m.value() for m in plain.consume(100, 0.2) if m.error() is None]
    plain.close()
    seen = {json.loads(v)["id"] for v in raw}
    assert set(range(11)) | set(range(100, 110)) | {200, 201} <= seen


def test_read_process_write_commits_offsets_atomically(kafka: KafkaLog, names: Callable[[str], str]) -> None:
    src, dst, group = names("src"), names("dst"), names("rpw")
    kafka.create_topic(TopicSpec(src, partitions=1))
    kafka.create_topic(TopicSpec(dst, partitions=1))
    with kafka.producer() as p:
        for i in range(30):
            p.send(src, {"id": i})
    tx = kafka.transactional_producer(names("step"))
    with kafka.consumer(group) as c:
        c.assign([(src, 0)])
        got: list[int] = []
        deadline = time.monotonic() + 10
        while len(got) < 10 and time.monotonic() < deadline:
            got += [r["id"] for b in c.poll(0.3, max_records=10 - len(got)) for r in b.to_pylist()]
        assert got == list(range(10))
        with tx.transaction():  # outputs and input offsets together
            tx.send_batch(dst, pa.table({"id": [i * 10 for i in got]}))
            tx.send_offsets(c)
        assert c.committed(src, 0) == 10
        more: list[int] = []
        deadline = time.monotonic() + 10
        while len(more) < 10 and time.monotonic() < deadline:
            more += [r["id"] for b in c.poll(0.3, max_records=10 - len(more)) for r in b.to_pylist()]
        assert more == list(range(10, 20))
        tx.begin()
        tx.send_batch(dst, pa.table({"id": [i * 10 for i in more]}))
        tx.send_offsets(c, {(src, 0): 20})
        tx.abort()  # the step "crashed": neither outputs nor offsets count
        assert c.committed(src, 0) == 10
    tx.close()
    assert sorted(_ids(kafka, dst, expected=10)) == [i * 10 for i in range(10)]


def test_a_second_producer_with_the_same_id_fences_the_first(kafka: KafkaLog, names: Callable[[str], str]) -> None:
    topic, txid = names("fence"), names("fence")
    kafka.create_topic(TopicSpec(topic))
    old = kafka.producer(transactional_id=txid)
    assert isinstance(old, KafkaTransactionalProducer)
    old.begin()
    old.send(topic, {"id": 1})
    old.flush()
    new = kafka.transactional_producer(txid)  # aborts the old one's open transaction
    with pytest.raises(ProducerError, match=r"fenced|transactional"):
        old.send(topic, {"id": 2})
        old.commit()
    with new.transaction():
        new.send(topic, {"id": 3})
    new.close()
    try:
        old.close()
    except ProducerError:
        pass
    assert _ids(kafka, topic, expected=1) == [3]
