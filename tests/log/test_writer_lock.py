"""The writer lock of the embedded log: writers of all processes queue on one flock, and a dead holder's lock goes
with it (the kernel releases it), so nothing waits forever on a killed process."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.embedded.store import Store, writer_lock_path


def _timed_create(store: Store, name: str, done: dict[str, float]) -> None:
    store.create_topic(TopicSpec(name, 1))
    done[name] = time.monotonic()


def test_a_writer_waits_for_the_lock_and_goes_as_soon_as_it_is_released(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "data")
    log.close()
    store = Store(tmp_path / "data")
    fd = os.open(writer_lock_path(tmp_path / "data"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer is mid-transaction
        done: dict[str, float] = {}
        t = threading.Thread(target=_timed_create, args=(store, "t", done))
        t.start()
        time.sleep(0.3)
        assert "t" not in done  # it queued on the lock, it did not write around it
        released = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_UN)
        t.join(10)
        assert done["t"] - released < 0.25  # woke on release, not after a busy-handler sleep
    finally:
        os.close(fd)
        store.close()
    log = EmbeddedLog(tmp_path / "data")
    try:
        assert "t" in {i.name for i in log.list_topics()}
    finally:
        log.close()


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    EmbeddedLog(tmp_path / "data").close()
    lock = writer_lock_path(tmp_path / "data")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    done: dict[str, float] = {}

    def open_and_write() -> None:  # opening a Store writes (its schema): that waits too
        s = Store(tmp_path / "data")
        try:
            _timed_create(s, "after", done)
        finally:
            s.close()

    t = threading.Thread(target=open_and_write)
    t.start()
    time.sleep(0.3)
    assert "after" not in done
    holder.kill()
    holder.wait(10)
    t.join(10)
    assert "after" in done
