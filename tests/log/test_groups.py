"""Consumer groups and producers across real processes sharing one data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from logtools import HERE, read_all, rows

from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.partitioner import partition_for

SESSION_MS = 3000  # generous: heartbeats of a loaded 2-core CI machine must not lapse
HEARTBEAT_MS = 500
TOPIC = "g6"
GROUP = "grp"


class Member:
    """A consumer-group member process (tests/log/_member.py) and the events it printed."""

    def __init__(self, data_dir: Path, name: str, mode: str = "normal") -> None:
        args = [sys.executable, str(HERE / "_member.py"), str(data_dir), TOPIC, GROUP, name,
                str(SESSION_MS), str(HEARTBEAT_MS), mode]
        self.name = name
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            with self._lock:
                self.events.append(ev)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def parts(self) -> list[int]:
        assigns = [e for e in self.snapshot() if e["ev"] == "assign"]
        return assigns[-1]["parts"] if assigns else []

    def has(self, ev: str) -> bool:
        return any(e["ev"] == ev for e in self.snapshot())

    def records(self) -> list[tuple[int, int, int]]:
        return [tuple(r) for e in self.snapshot() if e["ev"] == "poll" for r in e["recs"]]

    def uncommitted(self) -> set[tuple[int, int]]:
        """(partition, offset) read in polls whose commit was never acknowledged."""
        pending: set[tuple[int, int]] = set()
        for e in self.snapshot():
            if e["ev"] == "poll":
                pending |= {(p, o) for p, o, _ in e["recs"]}
            elif e["ev"] == "commit":
                pending = set()
        return pending

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0, f"member {self.name} exited with {self.proc.returncode}"
        self._reader.join(10)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.02)
    return time.time()


def balanced(members: list[Member], n_parts: int = 6) -> bool:
    parts = [m.parts() for m in members]
    flat = [p for ps in parts for p in ps]
    per = n_parts // len(members)
    return sorted(flat) == list(range(n_parts)) and all(len(ps) in (per, per + 1) for ps in parts)


class Feeder:
    """Produces ids 0, 1, 2, ... with key k{id % 101} from a thread, a small chunk at a time."""

    def __init__(self, log: EmbeddedLog, topic: str) -> None:
        self.log, self.topic = log, topic
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def produce(self, n: int) -> None:
        with self.log.producer() as p:
            for _ in range(n):
                p.send(self.topic, {"id": self.sent}, key=f"k{self.sent % 101}")
                self.sent += 1

    def _run(self) -> None:
        try:
            with self.log.producer(linger_ms=2) as p:
                while not self._stop.is_set():
                    for _ in range(30):
                        p.send(self.topic, {"id": self.sent}, key=f"k{self.sent % 101}")
                        self.sent += 1
                    p.flush()
                    time.sleep(0.02)
        except BaseException as e:
            self.error = e

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.error is None, self.error


def expected_positions(n_sent: int, n_parts: int = 6) -> dict[tuple[int, int], int]:
    """Reference: (partition, offset) -> id, for a single producer sending ids in order."""
    nxt = [0] * n_parts
    out = {}
    for i in range(n_sent):
        p = partition_for(f"k{i % 101}".encode(), n_parts)
        out[(p, nxt[p])] = i
        nxt[p] += 1
    return out


def all_committed(log: EmbeddedLog, topic: str, n_parts: int) -> bool:
    ends = {pi.partition: pi.end_offset for pi in log.describe_topic(topic).partitions}
    with log.consumer(GROUP) as c:
        return all(c.committed(topic, p) == ends[p] for p in range(n_parts))


def check_consumption(members: list[Member], expected: dict[tuple[int, int], int],
                      may_repeat: set[tuple[int, int]]) -> Counter:
    seen: Counter = Counter()
    for m in members:
        last: dict[int, int] = {}
        for p, o, i in m.records():
            assert expected.get((p, o)) == i, f"{m.name} read id {i} at {p}/{o}, expected {expected.get((p, o))}"
            assert o > last.get(p, -1), f"{m.name} read partition {p} offset {o} again or backwards"
            last[p] = o
            seen[(p, o)] += 1
    assert set(seen) == set(expected), f"{len(set(expected) - set(seen))} records never consumed"
    dups = {k for k, n in seen.items() if n > 1}
    assert dups <= may_repeat, f"records consumed twice without a crash: {sorted(dups - may_repeat)[:10]}"
    return seen


@pytest.mark.timeout(180)
def test_group_members_share_partitions_and_take_over_after_kill(data_dir: Path) -> None:
    log = EmbeddedLog(data_dir)
    log.create_topic(TopicSpec(TOPIC, partitions=6))
    feeder = Feeder(log, TOPIC)
    feeder.produce(600)
    feeder.start()
    members: list[Member] = []
    try:
        m1, m2 = Member(data_dir, "m1", mode="slow"), Member(data_dir, "m2")
        members += [m1, m2]
        wait_until(lambda: balanced([m1, m2]), 30, "two members holding 3 partitions each")
        time.sleep(0.5)
        m3 = Member(data_dir, "m3")
        members.append(m3)
        wait_until(lambda: balanced([m1, m2, m3]), 30, "three members holding 2 partitions each")
        time.sleep(0.5)
        assert m1.records(), "m1 read nothing before being killed"
        gone = set(m1.parts())
        # kill m1 while it holds records it read but has not committed
        wait_until(lambda: m1.snapshot()[-1]["ev"] == "poll", 10, "m1 between a poll and its commit")
        t_kill = time.time()
        m1.kill()
        assert m1.uncommitted()
        t_over = wait_until(lambda: balanced([m2, m3]), 30, "survivors taking over the killed member")
        delay = t_over - t_kill
        # the leases of a dead member are only taken once its session has expired
        assert (SESSION_MS - 2 * HEARTBEAT_MS) / 1000 - 0.15 <= delay <= 15, delay
        time.sleep(0.5)
        feeder.stop()
        wait_until(lambda: all_committed(log, TOPIC, 6), 30, "the group committing everything")
        for m in (m2, m3):
            m.stop()
            assert m.has("closed")
    finally:
        feeder._stop.set()
        for m in members:
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait()

    expected = expected_positions(feeder.sent)
    assert len(expected) == feeder.sent
    assert log.describe_topic(TOPIC).partitions and sum(
        pi.end_offset for pi in log.describe_topic(TOPIC).partitions
    ) == feeder.sent
    # only what the killed member read but had not committed may be read twice
    seen = check_consumption(members, expected, may_repeat=m1.uncommitted())
    redelivered = {k for k, n in seen.items() if n > 1}
    assert redelivered == m1.uncommitted(), "the killed member's uncommitted records were not redelivered"
    print(f"takeover after {delay:.2f}s; {sum(seen.values()) - len(seen)} redelivered; "
          f"{len(m1.uncommitted())} uncommitted by the killed member")
    for m in members:
        assert not m.has("commit_failed"), f"{m.name}: a live member's commit was refused"
    # the killed member's partitions were read by the survivors after the kill
    later = {(p, o) for m in (m2, m3) for p, o, _ in m.records()}
    for p in gone:
        assert any(q == p for q, _ in later)
    assert sum(seen.values()) >= feeder.sent
    log.close()


@pytest.mark.timeout(120)
def test_stale_member_commit_is_refused(data_dir: Path) -> None:
    log = EmbeddedLog(data_dir)
    log.create_topic(TopicSpec(TOPIC, partitions=4))
    feeder = Feeder(log, TOPIC)
    feeder.produce(400)
    a = Member(data_dir, "a", mode="stale")
    b: Member | None = None
    try:
        wait_until(lambda: a.has("waiting"), 30, "the stale member reading its first records")
        assert a.parts() == [0, 1, 2, 3]
        os.kill(a.proc.pid, signal.SIGSTOP)  # no more heartbeats: its session runs out
        b = Member(data_dir, "b")
        wait_until(lambda: b.parts() == [0, 1, 2, 3], 30, "b taking over a's partitions")
        wait_until(lambda: all_committed(log, TOPIC, 4), 30, "b committing everything")
        os.kill(a.proc.pid, signal.SIGCONT)
        assert a.proc.stdin is not None
        a.proc.stdin.write("commit\n")
        a.proc.stdin.flush()
        wait_until(lambda: a.has("commit_failed") or a.has("commit"), 30, "a's late commit")
        failed = [e for e in a.snapshot() if e["ev"] == "commit_failed"]
        assert failed, "a member whose session expired was allowed to commit"
        assert "grp" in failed[0]["error"] and "reassigned" in failed[0]["error"]
        assert all_committed(log, TOPIC, 4), "the stale commit overwrote the new owner's offsets"
        # a then rejoins and the group splits the partitions again
        wait_until(lambda: balanced([a, b], 4), 30, "a rejoining the group")
        feeder.produce(200)
        wait_until(lambda: all_committed(log, TOPIC, 4), 30, "the group committing the new records")
        a.stop()
        b.stop()
    finally:
        for m in (a, b):
            if m is not None and m.proc.poll() is None:
                os.kill(m.proc.pid, signal.SIGCONT)
                m.proc.kill()
                m.proc.wait()
    expected = expected_positions(feeder.sent, 4)
    first_poll = next(e for e in a.snapshot() if e["ev"] == "poll")
    stale_read = {(p, o) for p, o, _ in first_poll["recs"]}
    check_consumption([a, b], expected, may_repeat=stale_read)
    log.close()


@pytest.mark.timeout(120)
def test_concurrent_producer_processes(data_dir: Path) -> None:
    n_writers, per_writer = 3, 4000
    with EmbeddedLog(data_dir) as lg:
        lg.create_topic(TopicSpec("multi", partitions=4))
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_producer.py"), str(data_dir), "multi", str(w), "0",
             str(per_writer), str(w)],
            stdout=subprocess.PIPE, text=True,
        )
        for w in range(n_writers)
    ]
    outs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n_writers
    assert all(o.rstrip().endswith("done") for o in outs)
    with EmbeddedLog(data_dir) as lg:
        t = read_all(lg, "multi")
    got = rows(t)
    assert len(got) == n_writers * per_writer
    assert Counter((r["writer"], r["seq"]) for r in got) == Counter(
        {(w, s): 1 for w in range(n_writers) for s in range(per_writer)}
    )
    per: dict[tuple[int, int], list[int]] = {}
    writers_in: dict[int, set[int]] = {}
    for r in got:  # rows are in (partition, offset) order
        assert r["_partition"] == partition_for(f"k{r['seq'] % 13}".encode(), 4)
        per.setdefault((r["_partition"], r["writer"]), []).append(r["seq"])
        writers_in.setdefault(r["_partition"], set()).add(r["writer"])
    for (part, w), seqs in per.items():
        assert seqs == sorted(seqs), f"writer {w} out of order in partition {part}"
        assert seqs == [s for s in range(per_writer) if partition_for(f"k{s % 13}".encode(), 4) == part]
    assert all(len(ws) == n_writers for ws in writers_in.values())  # every partition has every writer
