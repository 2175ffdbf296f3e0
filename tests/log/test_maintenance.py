"""Compaction (latest value per key) and retention by age and by size."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pyarrow as pa
import pytest
from logtools import read_all, rows

from everstream.errors import ConfigError, OffsetOutOfRangeError
from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.partitioner import partition_for


def _batches(data_dir: Path, topic: str) -> list[tuple[int, int, int, int, int]]:
    """(partition, base, last, size, max_ts) of every stored batch, straight from SQLite."""
    con = sqlite3.connect(data_dir / "log.db")
    try:
        return con.execute(
            "SELECT b.partition, b.base_offset, b.last_offset, b.size, b.max_ts FROM batches b "
            "JOIN topics t ON t.id = b.topic_id WHERE t.name = ? ORDER BY b.partition, b.last_offset",
            (topic,),
        ).fetchall()
    finally:
        con.close()


def test_compaction_keeps_latest_value_per_key(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("prices", partitions=2, compact=True))
    with log.producer() as p:
        with pytest.raises(ConfigError, match="key"):
            p.send("prices", {"v": 1})
        with pytest.raises(ConfigError, match="key"):
            p.send_batch("prices", pa.table({"v": [1]}))
        n = 0
        for rnd in range(6):
            for k in range(25 if rnd < 3 else 10):  # keys 10..24 stop updating after round 2
                p.send("prices", {"key": f"k{k}", "v": rnd * 100 + k, "n": n}, key=f"k{k}")
                n += 1
            p.flush()
    before = rows(read_all(log, "prices"))
    assert len(before) == n
    ends = {pi.partition: pi.end_offset for pi in log.describe_topic("prices").partitions}

    # reference: the last record of each key, with the offset it was written at
    latest: dict[str, dict] = {}
    for r in before:
        latest[r["key"]] = r
    removed = log.maintain()
    assert removed.get("prices") == n - len(latest)

    after = rows(read_all(log, "prices"))
    assert len(after) == len(latest) == 25
    for r in after:
        ref = latest[r["key"]]
        assert (r["_partition"], r["_offset"], r["v"], r["n"]) == (
            ref["_partition"], ref["_offset"], ref["v"], ref["n"]
        )
        assert r["_partition"] == partition_for(r["key"].encode(), 2)
        assert r["_key"] == r["key"].encode()
    for part in (0, 1):
        offs = [r["_offset"] for r in after if r["_partition"] == part]
        assert offs == sorted(offs)
    # end offsets unchanged; new records continue after them; compaction is idempotent
    info = {pi.partition: pi for pi in log.describe_topic("prices").partitions}
    assert {p: i.end_offset for p, i in info.items()} == ends
    assert log.maintain() == {}
    with log.producer() as p:
        p.send("prices", {"key": "k0", "v": -1, "n": n}, key="k0")
    kp = partition_for(b"k0", 2)
    new = [r for r in rows(read_all(log, "prices")) if r["n"] == n]
    assert [(r["_partition"], r["_offset"]) for r in new] == [(kp, ends[kp])]

    # a consumer seeking into a compacted-away range gets the next surviving record
    survivors = sorted(r["_offset"] for r in after if r["_partition"] == kp)
    gap = next(o for o in range(survivors[0], survivors[-1]) if o not in survivors)
    with log.consumer() as c:
        c.assign([("prices", kp)])
        c.seek("prices", kp, gap)
        b = c.poll(1.0, max_records=1)
        assert b[0].column("_offset").to_pylist() == [min(o for o in survivors if o > gap)]


def test_retention_by_age(log: EmbeddedLog, data_dir: Path) -> None:
    log.create_topic(TopicSpec("aged", partitions=1, retention_ms=60_000))
    now = int(time.time() * 1000)
    plan = [  # batches: (timestamps); retention drops a prefix of the expired ones only
        [now - 3_600_000] * 100,
        [now - 120_000] * 99 + [now - 61_000],
        [now - 3_600_000] * 50 + [now],  # max is recent: kept whole
        [now - 3_600_000] * 100,  # expired but after a kept batch: kept (no hole)
        [now] * 10,
    ]
    with log.producer() as p:
        i = 0
        for stamps in plan:
            for ts in stamps:
                p.send("aged", {"id": i}, timestamp=ts)
                i += 1
            p.flush()
    total = i
    with log.consumer("g") as c:  # a group and a reader positioned before the future start
        c.assign([("aged", 0)])
        got = c.poll(1.0, max_records=30)
        assert sum(b.num_rows for b in got) == 30
        c.commit()
        # reference from the stored index: expired batches = the prefix with max_ts too old
        stored = _batches(data_dir, "aged")
        cutoff = int(time.time() * 1000) - 60_000
        prefix = 0
        for _, _, _, _, max_ts in stored:
            if max_ts >= cutoff:
                break
            prefix += 1
        assert prefix == 2
        expected_start = stored[prefix][1]
        assert expected_start == 200

        assert log.maintain() == {"aged": 2}
        info = log.describe_topic("aged").partitions[0]
        assert (info.start_offset, info.end_offset) == (expected_start, total)
        assert info.bytes == sum(s for _, _, _, s, _ in stored[prefix:])
        # the reader at offset 30 moves to the start; nothing before it is served
        out = []
        while True:
            bs = c.poll(0.3)
            if not bs:
                break
            out += [r["id"] for b in bs for r in b.to_pylist()]
        assert out == list(range(expected_start, total))
    with log.consumer("g") as c2:  # committed offset 30 is below the start: resume at the start
        c2.assign([("aged", 0)])
        first = c2.poll(1.0, max_records=1)
        assert first[0].column("_offset").to_pylist() == [expected_start]
        with pytest.raises(OffsetOutOfRangeError):
            c2.seek("aged", 0, 10)
    assert [r["id"] for r in rows(read_all(log, "aged"))] == list(range(expected_start, total))
    assert log.maintain() == {}


def test_retention_by_size(log: EmbeddedLog, data_dir: Path) -> None:
    limit = 3500 * 3  # about three batches' worth
    log.create_topic(TopicSpec("sized", partitions=2, compression="none", retention_bytes=limit))
    with log.producer() as p:
        for b in range(10):
            for j in range(200):
                p.send("sized", {"id": b * 200 + j, "pad": "x" * 50}, key=str(j % 2))
            p.flush()
    stored = _batches(data_dir, "sized")
    expected_start: dict[int, int] = {}
    for part in (0, 1):
        mine = [s for s in stored if s[0] == part]
        total = sum(s[3] for s in mine)
        k = 0
        while total > limit:  # reference: drop the oldest while over the limit
            total -= mine[k][3]
            k += 1
        assert 0 < k < len(mine)
        expected_start[part] = mine[k][1]
    with log.consumer() as c:
        c.assign([("sized", 0), ("sized", 1)])
        log.maintain()
        for pi in log.describe_topic("sized").partitions:
            assert pi.start_offset == expected_start[pi.partition]
            assert 0 < pi.bytes <= limit
        t = read_all(log, "sized")
        for part in (0, 1):
            offs = [r["_offset"] for r in rows(t) if r["_partition"] == part]
            end = log.describe_topic("sized").partitions[part].end_offset
            assert offs == list(range(expected_start[part], end))  # no hole
            ids = [r["id"] for r in rows(t) if r["_partition"] == part]
            assert ids == sorted(ids)
        # consumer that had not read anything starts at the new start
        first = {}
        for b in c.poll(1.0):
            for r in b.to_pylist():
                first.setdefault(r["_partition"], r["_offset"])
        assert first == expected_start


def test_retention_runs_in_the_background(data_dir: Path) -> None:
    """A producer applies retention by itself every maintenance interval."""
    with EmbeddedLog(data_dir, maintenance_interval_s=0.1) as lg:
        lg.create_topic(TopicSpec("bg", partitions=1, retention_ms=1000))
        old = int(time.time() * 1000) - 10_000
        with lg.producer(linger_ms=5) as p:
            for i in range(50):
                p.send("bg", {"id": i}, timestamp=old)
            p.flush()
            for i in range(50, 60):
                p.send("bg", {"id": i})
            p.flush()
            deadline = time.monotonic() + 10
            while lg.describe_topic("bg").partitions[0].start_offset != 50:
                assert time.monotonic() < deadline, "retention never ran"
                time.sleep(0.05)
                p.send("bg", {"id": -1})  # keep the producer's thread busy
        assert [r["id"] for r in rows(read_all(lg, "bg"))][:10] == list(range(50, 60))


def test_whole_partition_expired(log: EmbeddedLog) -> None:
    log.create_topic(TopicSpec("gone", partitions=1, retention_ms=1000))
    with log.producer() as p:
        for i in range(20):
            p.send("gone", {"id": i}, timestamp=1_000)
    with log.consumer() as c:
        c.assign([("gone", 0)])
        c.poll(1.0, max_records=5)
        log.maintain()
        info = log.describe_topic("gone").partitions[0]
        assert (info.start_offset, info.end_offset, info.bytes) == (20, 20, 0)
        assert c.poll(0.2) == []
        assert c.position("gone", 0) == 20
        with log.producer() as p:
            p.send("gone", {"id": 20})
        assert [r["_offset"] for b in c.poll(1.0) for r in b.to_pylist()] == [20]
