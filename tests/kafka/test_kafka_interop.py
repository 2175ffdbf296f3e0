"""Interoperability with every other Kafka client: plain confluent-kafka on the other side."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from everstream.log import TopicSpec, dead_letter_topic
from everstream.log.kafka import KafkaLog
from everstream.log.partitioner import partition_for

pytestmark = pytest.mark.kafka


def _read(kafka: KafkaLog, topic: str, expected: int, timeout: float = 15.0) -> list[dict]:
    out: list[dict] = []
    with kafka.consumer() as c:
        c.assign([(topic, p) for p in range(kafka.describe_topic(topic).spec.partitions)])
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for b in c.poll(0.2):
                out.extend(b.to_pylist())
    return out


def test_plain_producer_writes_json_everstream_consumes(
    kafka: KafkaLog, bootstrap: str, names: Callable[[str], str]
) -> None:
    topic = names("ext")
    schema = pa.schema([("symbol", pa.string()), ("price", pa.float64()), ("qty", pa.int64())])
    kafka.create_topic(TopicSpec(topic, partitions=3, schema=schema))
    # librdkafka's murmur2_random partitioner is the Java client's default: keys must land where
    # everstream would put them
    plain = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "enable.idempotence": True})
    good = []
    for i in range(300):
        rec = {"symbol": f"S{i % 17}", "price": i + 0.25, "qty": i}
        good.append(rec)
        plain.produce(topic, json.dumps(rec).encode(), key=rec["symbol"].encode(), timestamp=1_700_000_000_000 + i,
                      headers=[("src", b"plain")] if i % 2 else None)
    # bad input, each followed by good records so that consumption must go on
    bad = {
        b"not json at all": "JSON",
        b'{"symbol": "X", "price": "dear", "qty": 1}': "price",
        b'{"symbol": "Y", "price": 1.0, "qty": 1, "venue": "XNAS"}': "not in the topic schema",
        b"[1, 2, 3]": "not a JSON object",
        b"null": "not a JSON object",
        b"": "empty",
        b'{"symbol": "Z", "price": 1.0, "qty": 2.5}': "qty",
        b'{"symbol": "trunc", "price": ': "JSON",
    }
    for raw in bad:
        plain.produce(topic, raw, key=b"bad", timestamp=1_700_000_001_000)
    pretty = json.dumps({"symbol": "P", "price": 2.0, "qty": 7}, indent=2).encode()  # newlines inside: valid
    plain.produce(topic, pretty, key=b"P", timestamp=1_700_000_002_000)
    good.append({"symbol": "P", "price": 2.0, "qty": 7})
    assert plain.flush(10) == 0

    got = _read(kafka, topic, len(good))
    assert sorted((r["symbol"], r["price"], r["qty"]) for r in got) == sorted(
        (g["symbol"], g["price"], g["qty"]) for g in good
    )
    for r in got:
        assert r["_partition"] == partition_for(r["_key"], 3)
        if r["symbol"] != "P":
            i = r["qty"]
            assert int(r["_timestamp"].timestamp() * 1000) == 1_700_000_000_000 + i
            assert (dict(r["_headers"]) if r.get("_headers") else None) == ({"src": b"plain"} if i % 2 else None)
    letters = _read(kafka, dead_letter_topic(topic), len(bad))
    assert len(letters) == len(bad)
    bad_part = partition_for(b"bad", 3)
    for lt in letters:
        assert lt["source_topic"] == topic and lt["source_partition"] == bad_part
        assert lt["raw"] in bad, lt
        assert bad[lt["raw"]].lower() in lt["error"].lower(), lt
    assert len({lt["source_offset"] for lt in letters}) == len(bad)  # each with its own source offset


def test_undeclared_topic_infers_types(kafka: KafkaLog, bootstrap: str, names: Callable[[str], str]) -> None:
    topic = names("loose")
    kafka.create_topic(TopicSpec(topic))
    plain = Producer({"bootstrap.servers": bootstrap})
    for i in range(50):
        plain.produce(topic, json.dumps({"id": i, "name": f"n{i}", "tags": ["a"], "px": i / 2}).encode())
    plain.produce(topic, b"{oops")
    assert plain.flush(10) == 0
    got = _read(kafka, topic, 50)
    assert [r["id"] for r in got] == list(range(50))
    assert {k: got[3][k] for k in ("id", "name", "tags", "px")} == {"id": 3, "name": "n3", "tags": ["a"], "px": 1.5}
    assert len(_read(kafka, dead_letter_topic(topic), 1)) == 1


def test_everstream_produces_plain_consumer_reads(
    kafka: KafkaLog, bootstrap: str, names: Callable[[str], str]
) -> None:
    topic = names("out")
    kafka.create_topic(TopicSpec(topic, partitions=4, schema=pa.schema([("id", pa.int64()), ("sym", pa.string())])))
    with kafka.producer() as p:
        for i in range(200):
            p.send(topic, {"id": i, "sym": f"s{i % 9}"}, key=f"s{i % 9}", timestamp=1_700_000_000_000 + i,
                   headers={"trace": f"t{i}", "bin": b"\x00\x01"} if i % 3 == 0 else None)
        p.send_batch(topic, pa.table({"id": list(range(200, 260)), "sym": ["batch"] * 60}), key="sym",
                     timestamp=pa.array(list(range(1_700_000_001_000, 1_700_000_001_060))))
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": names("plain"), "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, p, 0) for p in range(4)])
    msgs = []
    deadline = time.monotonic() + 15
    while len(msgs) < 260 and time.monotonic() < deadline:
        msgs += [m for m in c.consume(500, 0.2) if m.error() is None]
    c.close()
    assert len(msgs) == 260
    for m in msgs:
        v = json.loads(m.value())
        i = v["id"]
        assert set(v) == {"id", "sym"}
        assert m.key() == v["sym"].encode()
        assert m.partition() == partition_for(m.key(), 4)
        if i < 200:
            assert m.timestamp() == (1, 1_700_000_000_000 + i)  # (CreateTime, ms)
            hdrs = dict(m.headers() or [])
            assert hdrs == ({"trace": f"t{i}".encode(), "bin": b"\x00\x01"} if i % 3 == 0 else {})
        else:
            assert m.timestamp()[1] == 1_700_000_001_000 + i - 200
    assert sorted(json.loads(m.value())["id"] for m in msgs) == list(range(260))


def test_schema_topic_is_hidden_and_tied_to_the_topic_id(kafka: KafkaLog, names: Callable[[str], str]) -> None:
    from confluent_kafka.admin import NewTopic

    topic = names("reborn")
    kafka.create_topic(TopicSpec(topic, schema=pa.schema([("a", pa.int64())])))
    assert kafka.describe_topic(topic).spec.schema is not None
    assert not any(t.name.startswith("_") for t in kafka.list_topics())
    # another tool deletes and re-creates the topic: the old declared schema must not apply
    admin = kafka.admin.client
    admin.delete_topics([topic])[topic].result()
    deadline = time.monotonic() + 15
    while True:
        try:
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    while True:
        try:
            assert kafka.describe_topic(topic).spec.schema is None
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_mostly_bad_input_is_dead_lettered_in_short_polls(
    kafka: KafkaLog, bootstrap: str, names: Callable[[str], str]
) -> None:
    topic = names("junk")
    kafka.create_topic(TopicSpec(topic, schema=pa.schema([("n", pa.int64())])))
    plain = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(3000):
        plain.produce(topic, b'{"n": "not a number %d"}' % i if i < 2500 else b'{"n": %d}' % i)
    assert plain.flush(10) == 0
    good: list[int] = []
    longest = 0.0
    with kafka.consumer() as c:
        c.assign([(topic, 0)])
        deadline = time.monotonic() + 60
        while len(good) < 500 and time.monotonic() < deadline:
            t0 = time.monotonic()
            good += [n for b in c.poll(0.5) for n in b.column("n").to_pylist()]
            longest = max(longest, time.monotonic() - t0)
        assert c.dead_letters == 2500
    assert good == list(range(2500, 3000))
    assert longest < 15, f"a poll took {longest:.1f}s"
    assert len(_read(kafka, dead_letter_topic(topic), 2500)) == 2500
