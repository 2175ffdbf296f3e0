"""Damaged storage is detected and never served: bit flips in a payload, a truncated file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from logtools import read_all, rows

from everstream.errors import CorruptBatchError, StorageError
from everstream.log import EmbeddedLog, TopicSpec

MARK = b"MARK-7f3a9c-MARK"


def _write_three_batches(data_dir: Path) -> None:
    with EmbeddedLog(data_dir) as lg:
        lg.create_topic(TopicSpec("t", partitions=1, compression="none"))
        lg.create_topic(TopicSpec("other", partitions=1))
        with lg.producer() as p:
            p.send_batch("t", pa.table({"id": list(range(0, 10)), "s": ["before"] * 10}))
            p.send_batch("t", pa.table({"id": list(range(10, 20)), "s": [MARK.decode()] * 10}))
            p.send_batch("t", pa.table({"id": list(range(20, 30)), "s": ["after"] * 10}))
            p.send("other", {"x": 1})
    # every connection is closed: the WAL was checkpointed into log.db
    assert not (data_dir / "log.db-wal").exists() or os.path.getsize(data_dir / "log.db-wal") == 0


def _flip_marker(db: Path) -> None:
    data = bytearray(db.read_bytes())
    at = data.find(MARK)
    assert at > 0, "the marker payload was not found in log.db"
    data[at + 5] ^= 0x01
    db.write_bytes(bytes(data))


def test_bit_flip_is_detected_reported_and_repaired(data_dir: Path) -> None:
    _write_three_batches(data_dir)
    _flip_marker(data_dir / "log.db")
    with EmbeddedLog(data_dir) as lg:
        with lg.consumer() as c:
            c.assign([("t", 0)])
            served: list[dict] = []
            with pytest.raises(CorruptBatchError) as ei:
                for _ in range(10):
                    for b in c.poll(0.2):
                        served += b.to_pylist()
            err = ei.value
            assert (err.topic, err.partition, err.first, err.last) == ("t", 0, 10, 19)
            msg = str(err)
            assert "'t'" in msg and "partition 0" in msg and "10..19" in msg and "repair" in msg
            # nothing of the damaged batch was served
            assert all(r["s"] != MARK.decode() and not 10 <= r["id"] < 20 for r in served)
            with pytest.raises(CorruptBatchError):  # still refused on the next poll
                c.poll(0.2)

        checked, damage = lg.check()
        assert checked == 4
        assert [(d.topic, d.partition, d.first, d.last) for d in damage] == [("t", 0, 10, 19)]
        assert "checksum" in damage[0].reason

        _, repaired = lg.check(repair=True)
        assert len(repaired) == 1
        assert lg.check() == (3, [])
        got = rows(read_all(lg, "t"))
        assert [r["id"] for r in got] == list(range(0, 10)) + list(range(20, 30))
        assert [r["_offset"] for r in got] == list(range(0, 10)) + list(range(20, 30))
        # the log still takes writes after the repair; offsets keep going
        with lg.producer() as p:
            p.send("t", {"id": 30, "s": "new"})
        assert rows(read_all(lg, "t"))[-1]["_offset"] == 30
        assert [r["x"] for r in rows(read_all(lg, "other"))] == [1]


def test_seek_into_and_past_a_corrupt_batch(data_dir: Path) -> None:
    _write_three_batches(data_dir)
    _flip_marker(data_dir / "log.db")
    with EmbeddedLog(data_dir) as lg, lg.consumer() as c:
        c.assign([("t", 0)])
        c.seek("t", 0, 15)
        with pytest.raises(CorruptBatchError, match=r"10\.\.19"):
            c.poll(0.2)
        c.seek("t", 0, 20)  # batches after the damage are still served
        assert [r["id"] for b in c.poll(0.5) for r in b.to_pylist()] == list(range(20, 30))


def test_truncated_database_gives_storage_error(data_dir: Path, tmp_path: Path) -> None:
    with EmbeddedLog(data_dir) as lg:
        lg.create_topic(TopicSpec("t", partitions=2, compression="none"))
        with lg.producer() as p:
            for i in range(20_000):
                p.send("t", {"id": i, "s": f"row-{i:08d}" * 4}, key=str(i % 10))
                if i % 2000 == 1999:
                    p.flush()
        ref = {(r["_partition"], r["_offset"]): r["id"] for r in rows(read_all(lg, "t"))}
    db = data_dir / "log.db"
    size = db.stat().st_size
    assert size > 1_000_000
    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    os.truncate(broken / "log.db", size // 2)

    errors: list[StorageError] = []
    served: list[dict] = []
    try:
        lg = EmbeddedLog(broken)
    except StorageError as e:  # refusing to open is fine too
        errors.append(e)
    else:
        try:
            try:
                lg.list_topics()
                with lg.consumer() as c:
                    c.assign([("t", 0), ("t", 1)])
                    for _ in range(200):
                        bs = c.poll(0.05)
                        if not bs:
                            break
                        for b in bs:
                            served += b.to_pylist()
            except StorageError as e:
                errors.append(e)
            _, damage = lg.check()
            assert damage, "log check must report the truncation"
        finally:
            lg.close()
    assert errors, f"reading a half-truncated log served {len(served)} records and raised nothing"
    msg = str(errors[0])
    assert str(broken / "log.db") in msg or str(broken) in msg, msg
    assert "log check" in msg or "backup" in msg, msg
    for r in served:  # whatever was served before the damage was found is genuine
        assert ref[(r["_partition"], r["_offset"])] == r["id"]
