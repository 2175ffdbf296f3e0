"""Producer -> consumer round trips, checked against plain-Python references."""

from __future__ import annotations

import dataclasses
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pydantic
import pytest
from logtools import by_partition, read_all, rows

from everstream.errors import ConfigError, ConsumerError, OffsetOutOfRangeError, SchemaError
from everstream.log import META_COLUMNS, EmbeddedLog, TopicSpec
from everstream.log.partitioner import partition_for
from everstream.schema import arrow_schema


def _kb(key: str | bytes | int) -> bytes:
    """Reference key normalization (str -> UTF-8, int -> decimal text)."""
    if isinstance(key, bytes):
        return key
    return str(key).encode()


def test_send_with_keys_lands_on_kafka_partition_in_order(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("orders", partitions=4))
    rng = random.Random(1)
    pool: list[str | bytes | int] = ["AAPL", "MSFT", "é", b"\x00\x01", 7, -3, 123456789, "GOOG", ""]
    keys = [rng.choice(pool) for _ in range(3000)]
    with log.producer(linger_ms=1, batch_events=128) as p:
        for i, k in enumerate(keys):
            p.send("orders", {"id": i, "sym": str(k)}, key=k)
            if i % 700 == 0:
                p.flush()
    t = read_all(log, "orders")
    assert t.num_rows == len(keys)
    got = rows(t)
    assert sorted(r["id"] for r in got) == list(range(len(keys)))
    for r in got:
        k = keys[r["id"]]
        assert r["_key"] == _kb(k)
        assert r["_partition"] == partition_for(_kb(k), 4)
        assert r["_topic"] == "orders"
    # per partition: dense offsets from 0, ids in send order
    for part, ids in by_partition(t, "id").items():
        expected = [i for i, k in enumerate(keys) if partition_for(_kb(k), 4) == part]
        assert ids == expected
        assert by_partition(t, "_offset")[part] == list(range(len(expected)))
    info = log.describe_topic("orders")
    assert sum(pi.end_offset for pi in info.partitions) == len(keys)


def test_keyless_records_spread_and_keep_order(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("free", partitions=3))
    with log.producer() as p:
        for i in range(600):
            p.send("free", {"id": i})
            if i % 50 == 49:
                p.flush()
    t = read_all(log, "free")
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
def test_send_batch_tables(log: EmbeddedLog, kind: str) -> None:
    log.create_topic(TopicSpec("tab", partitions=3))
    d = _frame(5000, random.Random(2))
    ts_dt = [datetime.fromtimestamp(ms / 1000, UTC) for ms in d["ts"]]
    if kind == "pyarrow":
        table = pa.table({**d, "ts": pa.array(d["ts"], pa.int64())})
    elif kind == "pyarrow-batch":
        table = pa.RecordBatch.from_pydict({**d, "ts": pa.array(ts_dt, pa.timestamp("ms", tz="UTC"))})
    elif kind == "polars":
        table = pl.DataFrame({**d, "ts": ts_dt})
    else:
        table = pd.DataFrame({**d, "ts": pd.to_datetime(d["ts"], unit="ms", utc=True)})
    with log.producer(batch_events=1000) as p:
        assert p.send_batch("tab", table, key="sym", timestamp="ts") == 5000
    t = read_all(log, "tab")
    got = rows(t)
    assert len(got) == 5000
    for r in got:
        i = r["id"]
        assert r["sym"] == d["sym"][i] and r["price"] == d["price"][i]
        assert r["_partition"] == partition_for(d["sym"][i].encode(), 3)
        assert r["_key"] == d["sym"][i].encode()
        assert int(r["_timestamp"].timestamp() * 1000) == d["ts"][i]
    for part, ids in by_partition(t, "id").items():
        assert ids == [i for i in range(5000) if partition_for(d["sym"][i].encode(), 3) == part]


def test_send_batch_without_key_and_bad_columns(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("nk", partitions=2))
    with log.producer() as p:
        assert p.send_batch("nk", pa.table({"x": [1, 2, 3]})) == 3
        assert p.send_batch("nk", pa.table({"x": pa.array([], pa.int64())})) == 0
        with pytest.raises(SchemaError, match="nokey"):
            p.send_batch("nk", pa.table({"x": [1]}), key="nokey")
        with pytest.raises(SchemaError, match="nots"):
            p.send_batch("nk", pa.table({"x": [1]}), timestamp="nots")
        with pytest.raises(SchemaError):
            p.send_batch("nk", [1, 2, 3])
        with pytest.raises(SchemaError, match="reserved"):
            p.send_batch("nk", pa.table({"_offset": [1]}))
    assert sorted(r["x"] for r in rows(read_all(log, "nk"))) == [1, 2, 3]


def test_send_and_send_batch_interleave_in_order(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("mix", partitions=2))
    with log.producer(linger_ms=1000) as p:  # records stay buffered until the batch arrives
        for i in range(10):
            p.send("mix", {"id": i}, key="A")
        p.send_batch("mix", pa.table({"id": list(range(10, 20)), "k": ["A"] * 10}), key="k")
        for i in range(20, 30):
            p.send("mix", {"id": i}, key="A")
    parts = by_partition(read_all(log, "mix"), "id")
    assert parts == {partition_for(b"A", 2): list(range(30))}


def test_headers_round_trip(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("hdr", partitions=1))
    sent = {
        0: None,
        1: {"trace": "abc", "bin": b"\x00\xff"},
        2: None,
        3: {"empty": b""},
        4: {"u": "ü"},
    }
    with log.producer() as p:
        for i, h in sent.items():
            p.send("hdr", {"id": i}, headers=h)
        p.flush()
        p.send("hdr", {"id": 5})  # a batch with no headers at all
    t = read_all(log, "hdr")
    got = {r["id"]: r.get("_headers") for r in rows(t)}
    for i, h in sent.items():
        if h is None:
            assert got[i] is None
        else:
            assert dict(got[i]) == {k: v.encode() if isinstance(v, str) else v for k, v in h.items()}
    assert got[5] is None


def test_timestamps_and_metadata_columns(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("ts", partitions=1))
    aware = datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
    before = time.time() * 1000
    with log.producer() as p:
        p.send("ts", {"id": 0}, timestamp=1_600_000_000_123)
        p.send("ts", {"id": 1}, timestamp=1_600_000_000_456.0)
        p.send("ts", {"id": 2}, timestamp=aware)
        p.send("ts", {"id": 3}, key="k")
        with pytest.raises(ConfigError):
            p.send("ts", {"id": 4}, timestamp="yesterday")  # type: ignore[arg-type]
    after = time.time() * 1000
    t = read_all(log, "ts")
    schema = t.schema
    for col in ("_topic", "_partition", "_offset", "_timestamp", "_key"):
        assert col in schema.names
    assert set(schema.names) - {"id"} <= set(META_COLUMNS)
    assert schema.field("_partition").type == pa.int32()
    assert schema.field("_offset").type == pa.int64()
    assert schema.field("_timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("_key").type == pa.binary()
    ms = [int(r["_timestamp"].timestamp() * 1000) for r in rows(t)]
    assert ms[:3] == [1_600_000_000_123, 1_600_000_000_456, int(aware.timestamp() * 1000)]
    assert before - 1 <= ms[3] <= after + 1
    assert [r["_offset"] for r in rows(t)] == [0, 1, 2, 3]


def test_start_latest_and_earliest(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("se", partitions=2))
    with log.producer() as p:
        for i in range(20):
            p.send("se", {"id": i}, key=str(i))
    with log.consumer(start="latest") as late, log.consumer(start="earliest") as early:
        late.assign([("se", 0), ("se", 1)])
        early.assign([("se", 0), ("se", 1)])
        assert late.poll(0.2) == []
        with log.producer() as p:
            for i in range(20, 25):
                p.send("se", {"id": i}, key=str(i))
        got: list[int] = []
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            got += [r["id"] for b in late.poll(0.2) for r in b.to_pylist()]
        assert sorted(got) == [20, 21, 22, 23, 24]
        got_early: list[int] = []
        while len(got_early) < 25 and time.monotonic() < deadline:
            got_early += [r["id"] for b in early.poll(0.2) for r in b.to_pylist()]
        assert sorted(got_early) == list(range(25))


def _consume(c, expected: int, timeout: float = 5.0) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for b in c.poll(0.1):
            out.extend(b.to_pylist())
    time.sleep(0.05)
    for b in c.poll(0.05):  # nothing beyond what we expect
        out.extend(b.to_pylist())
    return out


def test_start_at_timestamp_and_seek_to_timestamp(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("tt", partitions=3))
    rng = random.Random(3)
    base = 1_700_000_000_000
    sent = []  # (id, key, ts) -- timestamps not monotonic, across several batches
    with log.producer() as p:
        for i in range(900):
            ts = base + rng.randrange(0, 100_000)
            k = f"k{rng.randrange(20)}"
            sent.append((i, k, ts))
            p.send("tt", {"id": i}, key=k, timestamp=ts)
            if i % 100 == 99:
                p.flush()
    # reference: per partition, the records in send order; start = first with ts >= T
    per_part: dict[int, list[tuple[int, int]]] = {}
    for i, k, ts in sent:
        per_part.setdefault(partition_for(k.encode(), 3), []).append((i, ts))

    def expected_ids(t_ms: int) -> list[int]:
        out = []
        for recs in per_part.values():
            first = next((j for j, (_, ts) in enumerate(recs) if ts >= t_ms), len(recs))
            out += [i for i, _ in recs[first:]]
        return sorted(out)

    for t_ms in (base - 1, base + 50_000, base + 99_990, base + 200_000):
        for start in (t_ms, datetime.fromtimestamp(t_ms / 1000, UTC)):
            with log.consumer(start=start) as c:
                c.assign([("tt", p) for p in range(3)])
                exp = expected_ids(t_ms)
                assert sorted(r["id"] for r in _consume(c, len(exp))) == exp
        with log.consumer() as c:
            c.assign([("tt", p) for p in range(3)])
            c.seek_to_timestamp(t_ms)
            exp = expected_ids(t_ms)
            assert sorted(r["id"] for r in _consume(c, len(exp))) == exp


def test_assign_seek_position(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("sk", partitions=2))
    with log.producer() as p:
        for i in range(100):
            p.send("sk", {"id": i}, key="same")
    part = partition_for(b"same", 2)
    other = 1 - part
    with log.consumer() as c:
        c.assign([("sk", part)])
        assert c.assignment() == [("sk", part)]
        assert c.position("sk", part) == 0
        c.seek("sk", part, 37)
        got = _consume(c, 63)
        assert [r["_offset"] for r in got] == list(range(37, 100))
        assert [r["id"] for r in got] == list(range(37, 100))
        assert c.position("sk", part) == 100
        c.seek("sk", part, 100)  # the end is a legal position
        c.seek("sk", part, 0)
        assert c.poll(1.0, max_records=1)[0].column("_offset").to_pylist() == [0]
        with pytest.raises(OffsetOutOfRangeError, match="101"):
            c.seek("sk", part, 101)
        with pytest.raises(OffsetOutOfRangeError):
            c.seek("sk", part, -1)
        with pytest.raises(ConsumerError):
            c.seek("sk", other, 0)
        with pytest.raises(ConsumerError):
            c.position("sk", other)


def test_poll_max_records(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("mr", partitions=2))
    with log.producer(batch_events=64) as p:
        for i in range(1000):
            p.send("mr", {"id": i}, key=str(i % 5))
    with log.consumer() as c:
        c.assign([("mr", 0), ("mr", 1)])
        seen: list[int] = []
        polls = 0
        while len(seen) < 1000 and polls < 200:
            batches = c.poll(0.2, max_records=70)
            n = sum(b.num_rows for b in batches)
            assert n <= 70
            seen += [r["id"] for b in batches for r in b.to_pylist()]
            polls += 1
        assert sorted(seen) == list(range(1000))
        assert polls >= 1000 // 70


def test_commit_committed_and_resume(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("cm", partitions=2))
    with log.producer() as p:
        for i in range(500):
            p.send("cm", {"id": i}, key=str(i))
    tps = [("cm", 0), ("cm", 1)]
    with log.consumer("g1") as c:
        c.assign(tps)
        assert c.committed("cm", 0) is None
        first = [r["id"] for b in c.poll(1.0, max_records=300) for r in b.to_pylist()]
        assert len(first) == 300
        c.commit()
        for t, p in tps:
            assert c.committed(t, p) == c.position(t, p)
    with log.consumer("g1") as c2:
        c2.assign(tps)
        assert {c2.position(t, p) for t, p in tps} == {c2.committed(t, p) for t, p in tps}
        rest = [r["id"] for r in _consume(c2, 200)]
        assert sorted(first + rest) == list(range(500))
        c2.commit({("cm", 0): 0})  # explicit offsets
        assert c2.committed("cm", 0) == 0
    with log.consumer("other-group") as c3:
        c3.assign(tps)
        assert sorted(r["id"] for r in _consume(c3, 500)) == list(range(500))
    with log.consumer() as nogroup:
        nogroup.assign(tps)
        assert nogroup.committed("cm", 0) is None
        with pytest.raises(ConfigError):
            nogroup.commit()
        with pytest.raises(ConfigError):
            nogroup.subscribe(["cm"])


def test_subscribed_group_resumes_at_committed_offset(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("sub", partitions=3))
    with log.producer() as p:
        for i in range(300):
            p.send("sub", {"id": i}, key=str(i))
    c = log.consumer("sg", session_timeout_ms=3000, heartbeat_ms=200)
    c.subscribe(["sub"])
    first = [r["id"] for b in c.poll(2.0, max_records=120) for r in b.to_pylist()]
    assert sorted(c.assignment()) == [("sub", 0), ("sub", 1), ("sub", 2)]
    assert 0 < len(first) <= 120
    c.commit()
    c.close()
    with log.consumer("sg", session_timeout_ms=3000, heartbeat_ms=200) as c2:
        c2.subscribe(["sub"])
        rest = [r["id"] for r in _consume(c2, 300 - len(first))]
    assert sorted(first + rest) == list(range(300))


def test_dataclass_and_pydantic_values(log: EmbeddedLog) -> None:
    @dataclasses.dataclass
    class Tick:
        symbol: str
        price: float
        qty: int

    class TickM(pydantic.BaseModel):
        symbol: str
        price: float
        qty: int

    log.create_topic(TopicSpec("ticks", schema=arrow_schema(Tick)))
    with log.producer() as p:
        p.send("ticks", Tick("A", 1.5, 10), key="A")
        p.send("ticks", TickM(symbol="B", price=2.0, qty=20), key="B")
        p.send("ticks", {"symbol": "C", "price": 3, "qty": 30})
        p.send("ticks", {"symbol": "D"})  # missing fields are nulls
    got = [{k: r[k] for k in ("symbol", "price", "qty")} for r in rows(read_all(log, "ticks"))]
    assert got == [
        {"symbol": "A", "price": 1.5, "qty": 10},
        {"symbol": "B", "price": 2.0, "qty": 20},
        {"symbol": "C", "price": 3.0, "qty": 30},
        {"symbol": "D", "price": None, "qty": None},
    ]


def test_undeclared_topic_keeps_fields_that_appear_later(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("loose"))
    with log.producer() as p:
        p.send("loose", {"a": 1})
        p.flush()
        p.send("loose", {"a": 2, "b": "new"})  # a field the first batch did not have
        p.flush()
        p.send("loose", {"a": 3})
        p.send("loose", {"a": 4, "c": 4.5})  # ... and one only a later row of a batch has
    got = [{k: r.get(k) for k in ("a", "b", "c")} for r in rows(read_all(log, "loose"))]
    assert got == [
        {"a": 1, "b": None, "c": None},
        {"a": 2, "b": "new", "c": None},
        {"a": 3, "b": None, "c": None},
        {"a": 4, "b": None, "c": 4.5},
    ]
    assert p.dead_letters == 0


def test_flush_is_durable_for_a_new_process_view(data_dir: Path) -> None:
    """What flush() acknowledged is visible to a log opened afterwards (a fresh connection)."""
    with EmbeddedLog(data_dir) as lg:
        lg.create_topic(TopicSpec("dur", partitions=2))
        p = lg.producer(linger_ms=10_000)
        for i in range(50):
            p.send("dur", {"id": i}, key=str(i))
        p.flush()
        with EmbeddedLog(data_dir) as other:
            assert sorted(r["id"] for r in rows(read_all(other, "dur"))) == list(range(50))
        p.close()


def test_large_send_is_complete(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("big", partitions=4))
    n = 100_000
    with log.producer() as p:
        for i in range(n):
            p.send("big", {"id": i, "sym": "S"}, key=i % 97)
    t = read_all(log, "big")
    ids = np.sort(t.column("id").to_numpy())
    assert np.array_equal(ids, np.arange(n))
    # ordered within each partition
    part = t.column("_partition").to_numpy()
    idc = t.column("id").to_numpy()
    for q in range(4):
        sel = idc[part == q]
        assert np.all(np.diff(sel) > 0)


def test_auto_commit_on_close(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("ac", partitions=2))
    with log.producer() as p:
        for i in range(200):
            p.send("ac", {"id": i}, key=str(i))
    with log.consumer("acg", auto_commit=True, session_timeout_ms=3000, heartbeat_ms=200) as c:
        c.subscribe(["ac"])
        first = [r["id"] for b in c.poll(2.0, max_records=50) for r in b.to_pylist()]
        positions = {p: c.position("ac", p) for p in (0, 1)}
    with log.consumer("acg") as c2:
        assert {p: c2.committed("ac", p) for p in (0, 1)} == positions
        c2.assign([("ac", 0), ("ac", 1)])
        rest = [r["id"] for r in _consume(c2, 200 - len(first))]
    assert sorted(first + rest) == list(range(200))
