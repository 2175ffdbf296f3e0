"""Producing through the Log contract, read back, on both logs: keys and partitions, tables,
headers, timestamps, schemas and dead letters."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time
from collections.abc import Callable
from decimal import Decimal

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conformtools import by_partition, read_all, rows

from everstream.errors import ConfigError, SchemaError
from everstream.log import META_COLUMNS, Log, TopicSpec, dead_letter_topic
from everstream.log.partitioner import partition_for
from everstream.schema import arrow_schema


def _kb(key: str | bytes | int) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


def test_keys_land_on_the_kafka_partition_in_order(log: Log, names: Callable[[str], str]) -> None:
    topic = names("orders")
    log.create_topic(TopicSpec(topic, partitions=4))
    rng = random.Random(1)
    pool: list[str | bytes | int] = ["AAPL", "MSFT", "é", b"\x00\x01", 7, -3, 123456789, "GOOG", ""]
    keys = [rng.choice(pool) for _ in range(2000)]
    with log.producer(linger_ms=1, batch_events=128) as p:
        for i, k in enumerate(keys):
            p.send(topic, {"id": i, "sym": str(k)}, key=k)
            if i % 700 == 0:
                p.flush()
    t = read_all(log, topic)
    got = rows(t)
    assert sorted(r["id"] for r in got) == list(range(len(keys)))
    for r in got:
        k = keys[r["id"]]
        assert r["_key"] == _kb(k)
        assert r["_partition"] == partition_for(_kb(k), 4)
        assert r["_topic"] == topic
    for part, ids in by_partition(t, "id").items():
        expected = [i for i, k in enumerate(keys) if partition_for(_kb(k), 4) == part]
        assert ids == expected
        assert by_partition(t, "_offset")[part] == list(range(len(expected)))
    assert sum(pi.end_offset for pi in log.describe_topic(topic).partitions) == len(keys)


def test_keyless_records_spread_and_keep_order(log: Log, names: Callable[[str], str]) -> None:
    topic = names("free")
    log.create_topic(TopicSpec(topic, partitions=3))
    with log.producer() as p:
        for i in range(600):
            p.send(topic, {"id": i})
            if i % 50 == 49:
                p.flush()
    t = read_all(log, topic)
    parts = by_partition(t, "id")
    assert len(parts) > 1, "keyless records should not all stick to one partition"
    assert sorted(i for ids in parts.values() for i in ids) == list(range(600))
    for ids in parts.values():
        assert ids == sorted(ids)
    assert all(r["_key"] is None for r in rows(t))


def _frame(n: int, rng: random.Random) -> dict[str, list]:
    syms = ["AAPL", "MSFT", "IBM", "ORCL", "NVDA"]
    base = 1_700_000_000_000
    return {
        "id": list(range(n)),
        "sym": [rng.choice(syms) for _ in range(n)],
        "price": [round(rng.uniform(1, 500), 2) for _ in range(n)],
        "ts": [base + rng.randrange(0, 10**6) for _ in range(n)],
    }


@pytest.mark.parametrize("kind", ["pyarrow", "pyarrow-batch", "polars", "pandas"])
def test_send_batch_tables(log: Log, names: Callable[[str], str], kind: str) -> None:
    topic = names("tab")
    log.create_topic(TopicSpec(topic, partitions=3))
    d = _frame(3000, random.Random(2))
    ts_dt = [dt.datetime.fromtimestamp(ms / 1000, dt.UTC) for ms in d["ts"]]
    table: object
    if kind == "pyarrow":
        table = pa.table({**d, "ts": pa.array(d["ts"], pa.int64())})
    elif kind == "pyarrow-batch":
        table = pa.RecordBatch.from_pydict({**d, "ts": pa.array(ts_dt, pa.timestamp("ms", tz="UTC"))})
    elif kind == "polars":
        table = pl.DataFrame({**d, "ts": ts_dt})
    else:
        table = pd.DataFrame({**d, "ts": pd.to_datetime(d["ts"], unit="ms", utc=True)})
    with log.producer(batch_events=1000) as p:
        assert p.send_batch(topic, table, key="sym", timestamp="ts") == 3000
    t = read_all(log, topic)
    got = rows(t)
    assert len(got) == 3000
    for r in got:
        i = r["id"]
        assert r["sym"] == d["sym"][i] and r["price"] == d["price"][i]
        assert r["_partition"] == partition_for(d["sym"][i].encode(), 3)
        assert r["_key"] == d["sym"][i].encode()
        assert int(r["_timestamp"].timestamp() * 1000) == d["ts"][i]
    for part, ids in by_partition(t, "id").items():
        assert ids == [i for i in range(3000) if partition_for(d["sym"][i].encode(), 3) == part]


def test_send_batch_without_key_and_bad_columns(log: Log, names: Callable[[str], str]) -> None:
    topic = names("nk")
    log.create_topic(TopicSpec(topic, partitions=2))
    with log.producer() as p:
        assert p.send_batch(topic, pa.table({"x": [1, 2, 3]})) == 3
        assert p.send_batch(topic, pa.table({"x": pa.array([], pa.int64())})) == 0
        with pytest.raises(SchemaError, match="nokey"):
            p.send_batch(topic, pa.table({"x": [1]}), key="nokey")
        with pytest.raises(SchemaError, match="nots"):
            p.send_batch(topic, pa.table({"x": [1]}), timestamp="nots")
        with pytest.raises(SchemaError):
            p.send_batch(topic, [1, 2, 3])
        with pytest.raises(SchemaError, match="reserved"):
            p.send_batch(topic, pa.table({"_offset": [1]}))
    assert sorted(r["x"] for r in rows(read_all(log, topic))) == [1, 2, 3]


def test_send_and_send_batch_interleave_in_order(log: Log, names: Callable[[str], str]) -> None:
    topic = names("mix")
    log.create_topic(TopicSpec(topic, partitions=2))
    with log.producer(linger_ms=1000) as p:  # records stay buffered until the batch arrives
        for i in range(10):
            p.send(topic, {"id": i}, key="A")
        p.send_batch(topic, pa.table({"id": list(range(10, 20)), "k": ["A"] * 10}), key="k")
        for i in range(20, 30):
            p.send(topic, {"id": i}, key="A")
    assert by_partition(read_all(log, topic), "id") == {partition_for(b"A", 2): list(range(30))}


def test_headers_round_trip(log: Log, names: Callable[[str], str]) -> None:
    topic = names("hdr")
    log.create_topic(TopicSpec(topic, partitions=1))
    sent: dict[int, dict[str, str | bytes] | None] = {
        0: None, 1: {"trace": "abc", "bin": b"\x00\xff"}, 2: None, 3: {"empty": b""}, 4: {"u": "ü"},
    }
    with log.producer() as p:
        for i, h in sent.items():
            p.send(topic, {"id": i}, headers=h)
        p.flush()
        p.send(topic, {"id": 5})  # a batch with no headers at all
    got = {r["id"]: r.get("_headers") for r in rows(read_all(log, topic))}
    for i, h in sent.items():
        if h is None:
            assert got[i] is None
        else:
            assert dict(got[i]) == {k: v.encode() if isinstance(v, str) else v for k, v in h.items()}
    assert got[5] is None


def test_timestamps_and_metadata_columns(log: Log, names: Callable[[str], str]) -> None:
    topic = names("ts")
    log.create_topic(TopicSpec(topic, partitions=1))
    aware = dt.datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=dt.UTC)
    future = int(time.time() * 1000) + 30 * 86_400_000  # event times ahead of the clock are kept too
    before = time.time() * 1000
    with log.producer() as p:
        p.send(topic, {"id": 0}, timestamp=1_600_000_000_123)
        p.send(topic, {"id": 1}, timestamp=1_600_000_000_456.0)
        p.send(topic, {"id": 2}, timestamp=aware)
        p.send(topic, {"id": 3}, key="k")
        p.send(topic, {"id": 4}, timestamp=future)
        with pytest.raises(ConfigError):
            p.send(topic, {"id": 5}, timestamp="yesterday")  # type: ignore[arg-type]
    after = time.time() * 1000
    t = read_all(log, topic)
    schema = t.schema
    assert schema.names[:1] == ["id"]
    assert schema.names[1:6] == ["_topic", "_partition", "_offset", "_timestamp", "_key"]
    assert set(schema.names) - {"id"} <= set(META_COLUMNS)
    assert pa.types.is_dictionary(schema.field("_topic").type)
    assert schema.field("_topic").type.value_type == pa.string()
    assert schema.field("_partition").type == pa.int32()
    assert schema.field("_offset").type == pa.int64()
    assert schema.field("_timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("_key").type == pa.binary()
    ms = [int(r["_timestamp"].timestamp() * 1000) for r in rows(t)]
    assert ms[:3] == [1_600_000_000_123, 1_600_000_000_456, int(aware.timestamp() * 1000)]
    assert before - 1 <= ms[3] <= after + 1
    assert ms[4] == future
    assert [r["_offset"] for r in rows(t)] == [0, 1, 2, 3, 4]


def test_declared_types_round_trip(log: Log, names: Callable[[str], str]) -> None:
    topic = names("types")
    schema = pa.schema([
        ("ts", pa.timestamp("us", tz="UTC")), ("naive", pa.timestamp("ms")), ("day", pa.date32()),
        ("symbol", pa.string()), ("price", pa.float64()), ("qty", pa.int32()), ("ok", pa.bool_()),
        ("fee", pa.decimal128(18, 6)), ("blob", pa.binary()), ("flags", pa.list_(pa.string())),
        ("leg", pa.struct([("venue", pa.string()), ("px", pa.float64())])), ("age", pa.duration("ms")),
    ])
    log.create_topic(TopicSpec(topic, partitions=1, schema=schema))
    recs = [
        {"ts": dt.datetime(2024, 1, 2, 14, 30, 0, 123456, tzinfo=dt.UTC), "naive": dt.datetime(2024, 1, 2, 9, 30),
         "day": dt.date(2024, 1, 2), "symbol": "AAPL\n\"q\"", "price": 185.25, "qty": 100, "ok": True,
         "fee": Decimal("0.012345"), "blob": b"\x00\xff\n", "flags": ["a", "b"],
         "leg": {"venue": "XNAS", "px": 185.2}, "age": dt.timedelta(milliseconds=1500)},
        {"ts": None, "naive": None, "day": None, "symbol": None, "price": None, "qty": None, "ok": None,
         "fee": None, "blob": None, "flags": None, "leg": None, "age": None},
        {"symbol": "é中", "flags": [], "leg": {"venue": None, "px": None}},
    ]
    big = recs * 50  # large enough for the vectorized encoders (small batches take other paths)
    with log.producer() as p:
        for r in recs:
            p.send(topic, r)
        p.flush()
        p.send_batch(topic, pa.Table.from_pylist(recs, schema=schema))
        p.send_batch(topic, pa.Table.from_pylist(big, schema=schema))
        assert p.dead_letters == 0
    t = read_all(log, topic)
    user = t.select(schema.names)
    assert user.schema.equals(schema)
    want = pa.Table.from_pylist(recs, schema=schema).to_pylist()
    assert user.to_pylist() == want + want + want * 50


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York"])
def test_timestamp_fields_of_every_unit(log: Log, names: Callable[[str], str], unit: str, tz: str | None) -> None:
    topic = names("tsu")
    schema = pa.schema([("t", pa.timestamp(unit, tz)), ("i", pa.int64())])
    log.create_topic(TopicSpec(topic, schema=schema))
    base = 1_767_225_600_123_456_789  # 2026-01-01 00:00:00.123456789 UTC, in ns
    per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    values = [base // per + k for k in range(300)]
    table = pa.table({"t": pa.array(values, pa.timestamp(unit, tz)), "i": list(range(300))})
    with log.producer() as p:
        for r in table.slice(0, 3).to_pylist():  # single records: the small-batch encoder
            p.send(topic, r)
        p.flush()
        p.send_batch(topic, table)  # the vectorized encoder
        assert p.dead_letters == 0
    got = read_all(log, topic)
    assert got.column("t").type == pa.timestamp(unit, tz)
    assert got.column("t").cast(pa.int64()).to_pylist() == values[:3] + values


@dataclasses.dataclass
class Trade:
    symbol: str
    price: float
    qty: int


DLQ_FIELDS = [
    ("source_topic", pa.string()), ("source_partition", pa.int32()), ("source_offset", pa.int64()),
    ("source_line", pa.int64()), ("error", pa.string()), ("raw", pa.binary()),
]


def test_bad_records_go_to_the_dead_letter_topic(log: Log, names: Callable[[str], str]) -> None:
    topic = names("trades")
    log.create_topic(TopicSpec(topic, partitions=2, schema=arrow_schema(Trade)))
    good = [{"symbol": f"S{i}", "price": i + 0.5, "qty": i} for i in range(200)]
    bad = {
        17: ({"symbol": "X", "price": "not-a-number", "qty": 1}, "price"),
        50: ({"symbol": "Y", "price": 1.0, "qty": 1, "extra": 5}, "extra"),
        51: ({"symbol": "Z", "price": 1.0, "qty": "many"}, "qty"),
        120: ({"symbol": "W" * 5000, "price": 1.0, "qty": 1}, "size limit"),
    }
    stream: list[tuple[dict, bool]] = []
    for i, g in enumerate(good):
        if i in bad:
            stream.append((bad[i][0], False))
        stream.append((g, True))
    with log.producer(max_record_bytes=1000) as p:  # type: ignore[call-arg]
        for n, (rec, _) in enumerate(stream):
            p.send(topic, rec, key=str(n % 7))
            if n % 64 == 0:
                p.flush()
        p.flush()
        assert p.dead_letters == len(bad)
    stored = rows(read_all(log, topic))
    assert sorted((r["symbol"], r["price"], r["qty"]) for r in stored) == sorted(
        (g["symbol"], g["price"], g["qty"]) for g in good
    )
    t = read_all(log, dead_letter_topic(topic))
    assert [(f.name, f.type) for f in t.schema if not f.name.startswith("_")] == DLQ_FIELDS
    letters = rows(t)
    assert len(letters) == len(bad)
    assert {lt["source_topic"] for lt in letters} == {topic}
    for rec, word in bad.values():
        match = [lt for lt in letters if rec["symbol"][:20].encode() in lt["raw"]]
        assert len(match) == 1, (rec, letters)
        assert word in match[0]["error"]


def test_compacted_topic_needs_keys(log: Log, names: Callable[[str], str]) -> None:
    topic = names("latest")
    log.create_topic(TopicSpec(topic, partitions=2, compact=True))
    with log.producer() as p:
        with pytest.raises(ConfigError, match="key"):
            p.send(topic, {"a": 1})
        with pytest.raises(ConfigError, match="key"):
            p.send_batch(topic, pa.table({"a": [1]}))
        p.send(topic, {"a": 1}, key="k")
    assert [r["a"] for r in rows(read_all(log, topic))] == [1]


def test_undeclared_topic_keeps_fields_that_appear_later(log: Log, names: Callable[[str], str]) -> None:
    topic = names("loose")
    log.create_topic(TopicSpec(topic))
    with log.producer() as p:
        p.send(topic, {"a": 1})
        p.flush()
        p.send(topic, {"a": 2, "b": "new"})
        p.flush()
        p.send(topic, {"a": 3})
        p.send(topic, {"a": 4, "c": 4.5})
    got = [{k: r.get(k) for k in ("a", "b", "c")} for r in rows(read_all(log, topic))]
    assert got == [
        {"a": 1, "b": None, "c": None},
        {"a": 2, "b": "new", "c": None},
        {"a": 3, "b": None, "c": None},
        {"a": 4, "b": None, "c": 4.5},
    ]


def test_undeclared_topic_keeps_the_types_that_were_sent(log: Log, names: Callable[[str], str]) -> None:
    """Without a declared schema, timestamps, dates, decimals, binary and nested fields still come
    back with their Arrow types (on Kafka: recorded by the producer, not guessed from the JSON)."""
    topic = names("typed-loose")
    log.create_topic(TopicSpec(topic, partitions=2))
    t0 = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    table = pa.table({
        "window_start": pa.array([t0 + dt.timedelta(minutes=i) for i in range(200)], pa.timestamp("ms", tz="UTC")),
        "day": pa.array([dt.date(2024, 1, 2)] * 200, pa.date32()),
        "symbol": [f"S{i % 7}" for i in range(200)],
        "vwap": pa.array([Decimal(f"{i}.125") for i in range(200)], pa.decimal128(12, 3)),
        "n": pa.array(range(200), pa.int32()),
        "tag": pa.array([bytes([i % 256]) for i in range(200)], pa.binary()),
        "legs": pa.array([[i, i + 1] for i in range(200)], pa.list_(pa.int64())),
    })
    with log.producer() as p:
        p.send_batch(topic, table, key="symbol")
    got = read_all(log, topic)
    for f in table.schema:
        assert got.schema.field(f.name).type == f.type, (f.name, got.schema.field(f.name).type)
    want = table.to_pylist()
    assert sorted((r for r in rows(got.select(table.column_names))), key=lambda r: r["n"]) == want
    with log.producer() as p:  # single records, with a field that is new
        for r in want[:3]:
            p.send(topic, {**r, "late": dt.datetime(2024, 1, 3, tzinfo=dt.UTC)}, key=r["symbol"])
    got = read_all(log, topic)
    assert pa.types.is_timestamp(got.schema.field("late").type)
    assert pa.types.is_timestamp(got.schema.field("window_start").type)
    singles = [r for r in rows(got) if r["late"] is not None]
    assert sorted((r["n"], r["window_start"], r["vwap"], r["tag"], r["legs"]) for r in singles) == [
        (w["n"], w["window_start"], w["vwap"], w["tag"], w["legs"]) for w in want[:3]
    ]
