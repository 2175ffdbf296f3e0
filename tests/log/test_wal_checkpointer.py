"""The WAL checkpointer: checkpoints run on their own thread once enough bytes were committed, and
a failing checkpointer is surfaced, never silent."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from everstream.errors import ProducerError
from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.embedded.wal import WalCheckpointer


def _wait(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_checkpoints_run_after_enough_bytes_and_data_stays_readable(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log", durability="relaxed")
    log.create_topic(TopicSpec("t", 1))
    rng = np.random.default_rng(1)
    n = 200_000
    table = pa.table({"x": rng.integers(0, 1 << 62, n), "ts": np.arange(n, dtype=np.int64)})
    with log.producer() as producer:
        producer._wal._every = 1 << 20  # 1 MiB: several checkpoints for ~3 MB of payload
        producer.send_batch("t", table, timestamp="ts")
        producer.flush()
        assert _wait(lambda: producer._wal.checkpoints >= 1), "no checkpoint ran after 3 MB of commits"
        # what the checkpointer copied is in log.db: a fresh PASSIVE checkpoint finds nothing left to copy
        con = sqlite3.connect(tmp_path / "log" / "log.db")
        busy, frames, done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        con.close()
        assert busy == 0 and frames == done
    with log.consumer("readers") as c:
        c.subscribe(["t"])
        got: list[pa.RecordBatch] = []
        deadline = time.monotonic() + 30
        while sum(len(b) for b in got) < n and time.monotonic() < deadline:
            got += c.poll(timeout=1.0)
    xs = np.concatenate([b.column("x").to_numpy() for b in got])
    assert np.array_equal(np.sort(xs), np.sort(table.column("x").to_numpy()))
    log.close()


def test_a_failing_checkpointer_keeps_its_error(tmp_path: Path) -> None:
    wal = WalCheckpointer(tmp_path / "missing-dir" / "log.db", every_bytes=1)
    wal.appended(10)
    assert _wait(lambda: wal.error is not None), "the checkpointer's failure was not recorded"
    assert isinstance(wal.error, sqlite3.Error)
    wal.close()


def test_a_failing_checkpointer_surfaces_on_the_producer(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log", durability="relaxed")
    log.create_topic(TopicSpec("t", 1))
    producer = log.producer()
    producer._wal.error = sqlite3.OperationalError("disk I/O error")
    producer.send_batch("t", pa.table({"x": [1, 2, 3], "ts": [1, 2, 3]}), timestamp="ts")
    with pytest.raises(ProducerError, match="checkpointing the WAL"):
        producer.flush(timeout=10)
    with pytest.raises(ProducerError):
        producer.close()
    log.close()
