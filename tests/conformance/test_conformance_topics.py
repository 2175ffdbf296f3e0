"""Topic administration through the Log contract, on both logs."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest

from everstream.errors import ConfigError, TopicExistsError, UnknownTopicError
from everstream.log import Log, TopicSpec


def test_create_list_describe_delete(log: Log, names: Callable[[str], str]) -> None:
    trades, other = names("trades"), names("a.b_c-D9")
    info = log.create_topic(TopicSpec(trades, partitions=3))
    assert info.name == trades
    assert [(p.partition, p.start_offset, p.end_offset) for p in info.partitions] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    log.create_topic(TopicSpec(other, compact=True, retention_ms=100_000, compression="zstd"))
    listed = {t.name for t in log.list_topics()}
    assert {trades, other} <= listed
    assert not any(n.startswith("_") for n in listed) or log.kind == "embedded"
    assert log.has_topic(trades) and not log.has_topic(names("nope"))

    d = log.describe_topic(other)
    assert (d.spec.partitions, d.spec.compact, d.spec.retention_ms, d.spec.compression) == (1, True, 100_000, "zstd")
    js = d.to_json()
    assert js["name"] == other and js["records"] == 0 and len(js["partition_offsets"]) == 1

    with log.producer() as p:
        for i in range(10):
            p.send(trades, {"i": i}, key=str(i))
    d = log.describe_topic(trades)
    assert sum(pi.records for pi in d.partitions) == 10
    assert sum(pi.end_offset for pi in d.partitions) == 10

    log.delete_topic(trades)
    assert trades not in {t.name for t in log.list_topics()}
    with pytest.raises(UnknownTopicError, match=trades):
        log.describe_topic(trades)
    info = log.create_topic(TopicSpec(trades, partitions=2))  # a new, empty topic of the same name
    assert [p.end_offset for p in info.partitions] == [0, 0]


def test_retention_and_defaults_round_trip(log: Log, names: Callable[[str], str]) -> None:
    plain, sized = names("plain"), names("sized")
    log.create_topic(TopicSpec(plain))
    log.create_topic(TopicSpec(sized, partitions=2, retention_bytes=50_000_000, retention_ms=7 * 86_400_000))
    p = log.describe_topic(plain).spec
    assert (p.partitions, p.compact, p.retention_ms, p.retention_bytes, p.compression, p.schema) == (
        1, False, None, None, "lz4", None
    )
    s = log.describe_topic(sized).spec
    assert (s.retention_ms, s.retention_bytes) == (7 * 86_400_000, 50_000_000)


def test_declared_schema_round_trips(log: Log, names: Callable[[str], str]) -> None:
    t = names("typed")
    schema = pa.schema([
        ("ts", pa.timestamp("us", tz="UTC")), ("symbol", pa.string()), ("price", pa.float64()),
        ("qty", pa.int64()), ("flags", pa.list_(pa.string())), ("fee", pa.decimal128(38, 9)),
    ])
    log.create_topic(TopicSpec(t, partitions=2, schema=schema))
    got = log.describe_topic(t).spec.schema
    assert got is not None and got.equals(schema)
    js = log.describe_topic(t).to_json()
    assert js["schema"] == {f.name: str(f.type) for f in schema}


def test_duplicate_topic(log: Log, names: Callable[[str], str]) -> None:
    dup = names("dup")
    log.create_topic(TopicSpec(dup, partitions=2))
    with pytest.raises(TopicExistsError, match=dup):
        log.create_topic(TopicSpec(dup, partitions=5))
    info = log.create_topic(TopicSpec(dup, partitions=5), exist_ok=True)
    assert info.spec.partitions == 2  # the existing topic, unchanged


def test_unknown_topic_errors(log: Log, names: Callable[[str], str]) -> None:
    ghost, real = names("ghost"), names("real")
    with pytest.raises(UnknownTopicError, match=ghost):
        log.describe_topic(ghost)
    with pytest.raises(UnknownTopicError, match=ghost):
        log.delete_topic(ghost)
    with log.producer() as p, pytest.raises(UnknownTopicError, match=ghost):
        p.send(ghost, {"a": 1})
    with log.consumer() as c, pytest.raises(UnknownTopicError, match=ghost):
        c.assign([(ghost, 0)])
    log.create_topic(TopicSpec(real, partitions=2))
    with log.consumer() as c, pytest.raises(ConfigError, match="partition"):
        c.assign([(real, 2)])
    assert not log.has_topic(ghost), "looking a topic up must never create it"


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 250, ".."])
def test_invalid_topic_names(log: Log, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid topic name"):
        log.create_topic(TopicSpec(name))
