"""Bad input in send(): schema mismatches and oversize records go to ``<topic>.dlq``."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pytest
from logtools import read_all, rows

from everstream.errors import SchemaError
from everstream.log import EmbeddedLog, TopicSpec, dead_letter_topic
from everstream.schema import arrow_schema


@dataclasses.dataclass
class Trade:
    symbol: str
    price: float
    qty: int


DLQ_FIELDS = [
    ("source_topic", pa.string()),
    ("source_partition", pa.int32()),
    ("source_offset", pa.int64()),
    ("source_line", pa.int64()),
    ("error", pa.string()),
    ("raw", pa.binary()),
]


def test_bad_records_go_to_the_dead_letter_topic(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("trades", partitions=2, schema=arrow_schema(Trade)))
    good = [{"symbol": f"S{i}", "price": i + 0.5, "qty": i} for i in range(200)]
    bad = {
        17: ({"symbol": "X", "price": "not-a-number", "qty": 1}, "price"),
        50: ({"symbol": "Y", "price": 1.0, "qty": 1, "extra": 5}, "extra"),
        51: ({"symbol": "Z", "price": 1.0, "qty": "many"}, "qty"),
        120: ({"symbol": "W" * 5000, "price": 1.0, "qty": 1}, "size limit"),
        199: ({"symbol": "V", "price": 1.0, "qty": 2**70}, "qty"),
    }
    stream: list[tuple[dict, bool]] = []
    for i, g in enumerate(good):
        if i in bad:
            stream.append((bad[i][0], False))
        stream.append((g, True))
    with log.producer(max_record_bytes=1000) as p:
        for n, (rec, _) in enumerate(stream):
            p.send("trades", rec, key=str(n % 7))
            if n % 64 == 0:
                p.flush()
        p.flush()
        assert p.dead_letters == len(bad)

    # every good record stored, in order per key (single key -> single partition)
    stored = rows(read_all(log, "trades"))
    assert sorted((r["symbol"], r["price"], r["qty"]) for r in stored) == sorted(
        (g["symbol"], g["price"], g["qty"]) for g in good
    )
    per_key: dict[bytes, list[str]] = {}
    for r in stored:
        per_key.setdefault(r["_key"], []).append(r["symbol"])
    for k, syms in per_key.items():
        expected = [rec["symbol"] for n, (rec, ok) in enumerate(stream) if ok and str(n % 7).encode() == k]
        assert syms == expected

    dlq = dead_letter_topic("trades")
    assert dlq == "trades.dlq"
    t = read_all(log, dlq)
    user_fields = [(f.name, f.type) for f in t.schema if not f.name.startswith("_")]
    assert user_fields == DLQ_FIELDS
    letters = rows(t)
    assert len(letters) == len(bad)
    by_error = {}
    for letter in letters:
        assert letter["source_topic"] == "trades"
        assert letter["error"]
        by_error[letter["raw"]] = letter
    for rec, needle in bad.values():
        raw = json.dumps(rec, default=str).encode()
        match = [lt for r, lt in by_error.items() if raw.startswith(r) or r == raw]
        assert len(match) == 1, f"no dead letter for {rec!r:.80}"
        assert needle in match[0]["error"], match[0]["error"]
        if needle != "size limit":
            assert json.loads(match[0]["raw"]) == json.loads(raw)


def test_oversize_record_in_undeclared_topic(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("blobs"))
    with log.producer(max_record_bytes=2000) as p:
        p.send("blobs", {"id": 0, "data": b"x" * 10})
        p.send("blobs", {"id": 1, "data": b"x" * 2001})
        p.send("blobs", {"id": 2, "data": b"y" * 1999})
        p.flush()
        assert p.dead_letters == 1
    assert [r["id"] for r in rows(read_all(log, "blobs"))] == [0, 2]
    letters = rows(read_all(log, "blobs.dlq"))
    assert len(letters) == 1 and "2000" in letters[0]["error"]


def test_oversize_nested_values(log: EmbeddedLog) -> None:
    """Big lists and nested strings count towards the size limit, not only top-level strings."""
    log.create_topic(TopicSpec("nested"))
    with log.producer(max_record_bytes=1000) as p:
        p.send("nested", {"id": 0, "xs": list(range(10)), "tags": ["a"], "info": {"note": "ok"}})
        p.send("nested", {"id": 1, "xs": list(range(1000)), "tags": ["a"], "info": {"note": "ok"}})
        p.send("nested", {"id": 2, "xs": [1], "tags": ["t" * 600, "u" * 600], "info": {"note": "ok"}})
        p.send("nested", {"id": 3, "xs": [1], "tags": [], "info": {"note": "n" * 1500}})
        p.send("nested", {"id": 4, "xs": list(range(100)), "tags": ["b" * 100], "info": {"note": "x" * 99}})
        p.flush()
        assert p.dead_letters == 3
    assert [r["id"] for r in rows(read_all(log, "nested"))] == [0, 4]
    raws = sorted(r["raw"][:8] for r in rows(read_all(log, "nested.dlq")))  # raw may be cut at 4 KiB
    assert raws == [b'{"id": 1', b'{"id": 2', b'{"id": 3']


def test_send_batch_schema_mismatch_is_an_error(log: EmbeddedLog) -> None:
    """A whole table that does not fit is refused loudly (nothing half-written)."""
    log.create_topic(TopicSpec("typed", schema=arrow_schema(Trade)))
    with log.producer() as p:
        with pytest.raises(SchemaError, match="extra"):
            p.send_batch("typed", pa.table({"symbol": ["a"], "price": [1.0], "qty": [1], "extra": [1]}))
        with pytest.raises(SchemaError, match="price"):
            p.send_batch("typed", pa.table({"symbol": ["a"], "price": ["abc"], "qty": [1]}))
        assert p.send_batch("typed", pa.table({"symbol": ["a"], "price": [1], "qty": [1]})) == 1
    got = rows(read_all(log, "typed"))
    assert [(r["symbol"], r["price"], r["qty"]) for r in got] == [("a", 1.0, 1)]


def test_reserved_field_names_are_dead_lettered_not_fatal(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("loose", partitions=2))
    with log.producer(linger_ms=1000) as p:
        p.send("loose", {"a": 1}, key="x")
        p.send("loose", {"a": 2, "_key": "mine"}, key="x", headers={"h": "1"})
        p.send("loose", {"a": 3}, key="y", headers={"h": "3"})
        p.send("loose", {"a": 4, "_offset": 9}, key="y")
        p.flush()
        assert p.dead_letters == 2
        p.send("loose", {"a": 5}, key="x")  # the producer keeps working
    got = rows(read_all(log, "loose"))
    assert sorted(r["a"] for r in got) == [1, 3, 5]
    assert {r["a"]: r.get("_headers") for r in got}[3] == [("h", b"3")]
    letters = rows(read_all(log, "loose.dlq"))
    assert sorted(json.loads(lt["raw"])["a"] for lt in letters) == [2, 4]
    assert all("reserved" in lt["error"] for lt in letters)
    # a declared topic refuses them as unknown fields
    log.create_topic(TopicSpec("typed", schema=arrow_schema(Trade)))
    with log.producer() as p:
        p.send("typed", {"symbol": "A", "price": 1.0, "qty": 1, "_key": "k"})
        p.send("typed", {"symbol": "B", "price": 2.0, "qty": 2})
        p.flush()
        assert p.dead_letters == 1
    assert [r["symbol"] for r in rows(read_all(log, "typed"))] == ["B"]
