"""Topics: create, list, describe, delete; clear errors; declared schemas."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pydantic
import pytest

from everstream.errors import ConfigError, TopicExistsError, UnknownTopicError
from everstream.log import EmbeddedLog, TopicSpec
from everstream.schema import arrow_schema


def test_create_list_describe_delete(log: EmbeddedLog) -> None:
    assert log.list_topics() == []
    info = log.create_topic(TopicSpec("trades", partitions=3))
    assert info.name == "trades"
    assert [(p.partition, p.start_offset, p.end_offset) for p in info.partitions] == [
        (0, 0, 0), (1, 0, 0), (2, 0, 0)
    ]
    log.create_topic(TopicSpec("a.b_c-D9", compact=True, retention_ms=1000, compression="zstd"))
    assert sorted(t.name for t in log.list_topics()) == ["a.b_c-D9", "trades"]
    assert log.has_topic("trades") and not log.has_topic("nope")

    d = log.describe_topic("a.b_c-D9")
    assert (d.spec.partitions, d.spec.compact, d.spec.retention_ms, d.spec.compression) == (1, True, 1000, "zstd")
    js = d.to_json()
    assert js["name"] == "a.b_c-D9" and js["records"] == 0 and len(js["partition_offsets"]) == 1

    with log.producer() as p:
        for i in range(10):
            p.send("trades", {"i": i}, key=str(i))
    d = log.describe_topic("trades")
    assert sum(pi.records for pi in d.partitions) == 10
    assert sum(pi.end_offset for pi in d.partitions) == 10

    log.delete_topic("trades")
    assert [t.name for t in log.list_topics()] == ["a.b_c-D9"]
    with pytest.raises(UnknownTopicError, match="trades"):
        log.describe_topic("trades")
    # re-created under the same name: a new, empty topic
    info = log.create_topic(TopicSpec("trades", partitions=2))
    assert [p.end_offset for p in info.partitions] == [0, 0]


def test_topics_survive_reopen(data_dir: Path) -> None:
    with EmbeddedLog(data_dir) as lg:
        lg.create_topic(TopicSpec("t1", partitions=4, retention_bytes=10_000))
    with EmbeddedLog(data_dir) as lg:
        d = lg.describe_topic("t1")
        assert d.spec.partitions == 4 and d.spec.retention_bytes == 10_000


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 250, ".", "..", "ümlaut", "tab\t", None, 5])
def test_invalid_topic_names(log: EmbeddedLog, name: object) -> None:
    with pytest.raises(ConfigError, match="invalid topic name"):
        log.create_topic(TopicSpec(name))  # type: ignore[arg-type]
    assert log.list_topics() == []


def test_longest_legal_name(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("x" * 249))
    assert log.has_topic("x" * 249)


@pytest.mark.parametrize("parts", [0, -1, True, 1.5, 10_001])
def test_invalid_partition_counts(log: EmbeddedLog, parts: object) -> None:
    with pytest.raises(ConfigError, match="partition"):
        TopicSpec("t", partitions=parts)  # type: ignore[arg-type]


def test_other_invalid_specs() -> None:
    with pytest.raises(ConfigError):
        TopicSpec("t", retention_ms=0)
    with pytest.raises(ConfigError):
        TopicSpec("t", retention_bytes=-1)
    with pytest.raises(ConfigError):
        TopicSpec("t", compression="gzip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reserved"):
        TopicSpec("t", schema=pa.schema([("_key", pa.string())]))


def test_duplicate_topic(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("dup", partitions=2))
    with pytest.raises(TopicExistsError, match="dup"):
        log.create_topic(TopicSpec("dup", partitions=5))
    info = log.create_topic(TopicSpec("dup", partitions=5), exist_ok=True)
    assert info.spec.partitions == 2  # the existing topic is returned, unchanged


def test_unknown_topic_errors(log: EmbeddedLog) -> None:
    with pytest.raises(UnknownTopicError, match="ghost"):
        log.describe_topic("ghost")
    with pytest.raises(UnknownTopicError, match="ghost"):
        log.delete_topic("ghost")
    with log.producer() as p, pytest.raises(UnknownTopicError, match="ghost"):
        p.send("ghost", {"a": 1})
    with log.consumer() as c, pytest.raises(UnknownTopicError, match="ghost"):
        c.assign([("ghost", 0)])
    log.create_topic(TopicSpec("real", partitions=2))
    with log.consumer() as c, pytest.raises(ConfigError, match="partition"):
        c.assign([("real", 2)])


@dataclasses.dataclass
class TradeDC:
    ts: datetime
    symbol: str
    price: float
    qty: int
    side: Literal["B", "S"]
    venue: str | None = None
    flags: list[str] = dataclasses.field(default_factory=list)
    fee: Decimal = Decimal(0)
    ok: bool = True
    raw: bytes = b""


class TradeModel(pydantic.BaseModel):
    ts: datetime
    symbol: str
    price: float
    qty: int
    side: Literal["B", "S"]
    venue: str | None = None
    flags: list[str] = []
    fee: Decimal = Decimal(0)
    ok: bool = True
    raw: bytes = b""


EXPECTED_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us")),
        ("symbol", pa.string()),
        ("price", pa.float64()),
        ("qty", pa.int64()),
        ("side", pa.string()),
        ("venue", pa.string()),
        ("flags", pa.list_(pa.string())),
        ("fee", pa.decimal128(38, 9)),
        ("ok", pa.bool_()),
        ("raw", pa.binary()),
    ]
)


@pytest.mark.parametrize("model", [TradeDC, TradeModel])
def test_declared_schema_from_dataclass_and_pydantic(data_dir: Path, model: type) -> None:
    schema = arrow_schema(model)
    assert schema.equals(EXPECTED_SCHEMA), schema
    with EmbeddedLog(data_dir) as lg:
        lg.create_topic(TopicSpec("typed", partitions=2, schema=schema))
        assert lg.describe_topic("typed").spec.schema.equals(EXPECTED_SCHEMA)
        assert lg.describe_topic("typed").to_json()["schema"]["qty"] == "int64"
    with EmbeddedLog(data_dir) as lg:  # persisted
        assert lg.describe_topic("typed").spec.schema.equals(EXPECTED_SCHEMA)


def test_schema_rejects_unsupported_annotations() -> None:
    @dataclasses.dataclass
    class Bad:
        x: int | str

    with pytest.raises(TypeError, match="union"):
        arrow_schema(Bad)


def test_data_version_moves_on_other_connections_commits(data_dir: Path) -> None:
    """``data_version`` stays put while nothing is committed and moves when another connection commits."""
    watcher = EmbeddedLog(data_dir, durability="relaxed")
    writer = EmbeddedLog(data_dir, durability="relaxed")
    try:
        writer.create_topic(TopicSpec("t", 1))
        v0 = watcher.data_version()
        assert watcher.data_version() == v0
        with writer.producer(linger_ms=0.0) as producer:
            producer.send_batch("t", pa.table({"x": [1, 2]}))
            producer.flush()
        v1 = watcher.data_version()
        assert v1 != v0
        assert watcher.data_version() == v1
        assert watcher.describe_topic("t").partitions[0].end_offset == 2
    finally:
        writer.close()
        watcher.close()
