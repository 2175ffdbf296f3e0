"""The real broker is stopped and restarted mid-stream (runs last: marked ``kafka_restart``).

A producer thread keeps sending, a group member keeps reading and committing; the broker process
is stopped with ``scripts/kafka-broker.sh stop`` and started again. Afterwards:

- the topic holds every record exactly once, in order per key (idempotent retries: no duplicates);
- the member read everything, and a record was read twice only if a commit after reading it failed;
- a new member of the same group resumes exactly at the committed offsets.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from everstream.errors import CommitFailedError, EverstreamError
from everstream.log import TopicSpec
from everstream.log.kafka import KafkaConsumer, KafkaLog
from everstream.log.partitioner import partition_for

pytestmark = [pytest.mark.kafka, pytest.mark.kafka_restart]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka-broker.sh"
PARTS = 3


def _broker(cmd: str) -> str:
    out = subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True, timeout=180)
    if cmd != "status" and out.returncode != 0:
        raise AssertionError(f"kafka-broker.sh {cmd} failed: {out.stderr[-2000:]}")
    return out.stdout


def _key(i: int) -> str:
    return f"k{i % 13}"


class _Producer(threading.Thread):
    def __init__(self, log: KafkaLog, topic: str) -> None:
        super().__init__(daemon=True)
        self.log, self.topic = log, topic
        self.sent = 0
        self.acked = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with self.log.producer(linger_ms=2) as p:
                while not self.stop.is_set():
                    for _ in range(50):
                        p.send(self.topic, {"id": self.sent}, key=_key(self.sent))
                        self.sent += 1
                    p.flush()  # blocks while the broker is away; librdkafka retries
                    self.acked = self.sent
                    time.sleep(0.02)
        except BaseException as e:
            self.error = e


class _Member(threading.Thread):
    def __init__(self, log: KafkaLog, topic: str, group: str) -> None:
        super().__init__(daemon=True)
        self.log, self.topic, self.group = log, topic, group
        self.records: list[tuple[int, int, int]] = []  # (partition, offset, id)
        self.unacked: set[tuple[int, int]] = set()  # read by polls whose commit failed
        self.commit_failures = 0
        self.last = ("start", time.monotonic())  # what the thread did last, for diagnostics
        self.consumer: KafkaConsumer | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            debug = os.environ.get("EVERSTREAM_KAFKA_DEBUG_LOG")  # librdkafka's group/fetch log, to a file
            if debug:
                handler = logging.FileHandler(debug)
                handler.setLevel(logging.DEBUG)
                logging.getLogger("everstream.kafka").addHandler(handler)
                logging.getLogger("everstream.kafka").setLevel(logging.DEBUG)
            config = {"debug": "cgrp,fetch,topic"} if debug else None
            with self.log.consumer(self.group, session_timeout_ms=6000, heartbeat_ms=500, config=config) as c:
                self.consumer = c
                c.subscribe([self.topic])
                while not self.stop.is_set():
                    self.last = ("poll", time.monotonic())
                    got = [(p, o, i) for b in c.poll(0.2) for p, o, i in zip(
                        b.column("_partition").to_pylist(), b.column("_offset").to_pylist(),
                        b.column("id").to_pylist(), strict=True)]
                    with self.lock:
                        self.records += got
                    self.last = (f"commit after reading {len(got)}; assignment {c.assignment()}", time.monotonic())
                    try:
                        c.commit()
                    except (CommitFailedError, EverstreamError) as e:
                        self.last = (f"commit failed: {e}", time.monotonic())
                        with self.lock:
                            self.commit_failures += 1
                            self.unacked |= {(p, o) for p, o, _ in got}
        except BaseException as e:
            self.error = e

    def describe(self) -> str:
        c = self.consumer
        if c is None:
            return "no consumer"
        try:
            return (f"assignment {c.assignment()}, librdkafka assignment "
                    f"{[(tp.topic, tp.partition) for tp in c._c.assignment()]}, positions {c.positions()}")
        except Exception as e:
            return f"state unavailable: {e!r}"

    def ids(self) -> set[int]:
        with self.lock:
            return {i for _, _, i in self.records}


def _wait(cond: Callable[[], bool], timeout: float, what: str, *threads: _Producer | _Member) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for t in threads:
            assert t.error is None, f"{type(t).__name__} failed while waiting for {what}: {t.error!r}"
        if time.monotonic() > deadline:
            state = "; ".join(f"{type(t).__name__}: last {t.last[0]} {time.monotonic() - t.last[1]:.1f}s ago, "
                              f"{t.describe()}" for t in threads if isinstance(t, _Member))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; {state}")
        time.sleep(0.1)


@pytest.mark.timeout(240)
def test_broker_restart_mid_stream(bootstrap: str, names: Callable[[str], str], kafka: KafkaLog) -> None:
    port = os.environ.get("KAFKA_PORT", "9092")  # the port scripts/kafka-broker.sh manages
    if bootstrap not in (f"127.0.0.1:{port}", f"localhost:{port}") or "running" not in _broker("status"):
        pytest.skip(f"the broker at {bootstrap} is not the one scripts/kafka-broker.sh manages here")
    topic, group = names("restart"), names("restart")
    kafka.create_topic(TopicSpec(topic, partitions=PARTS))
    prod = _Producer(KafkaLog(bootstrap), topic)
    member = _Member(KafkaLog(bootstrap), topic, group)
    outage = 0.0
    try:
        prod.start()
        member.start()
        _wait(lambda: len(member.ids()) > 500, 60, "the member reading before the outage", prod, member)
        t0 = time.monotonic()
        _broker("stop")
        sent_during = prod.sent
        time.sleep(2.0)  # the producer keeps sending into its buffer while the broker is away
        _broker("start")
        outage = time.monotonic() - t0
        _wait(lambda: prod.acked > sent_during + 500, 90, "the producer getting acknowledgements again", prod)
        _wait(lambda: len(member.ids()) > sent_during + 500, 90, "the member reading after the restart", member)
        prod.stop.set()
        prod.join(120)
        assert prod.error is None, prod.error
        n = prod.sent
        _wait(lambda: member.ids() >= set(range(n)) or member.error is not None, 90, "the member reading everything")
        # stop the member between polls, then produce a tail that only the next member may read
        member.stop.set()
        member.join(60)
        assert member.error is None, member.error
    finally:
        prod.stop.set()
        member.stop.set()
        if "running" not in _broker("status"):
            _broker("start")  # never leave the other tests without a broker
    with kafka.producer() as p:
        for i in range(n, n + 100):
            p.send(topic, {"id": i}, key=_key(i))

    # 1. stored exactly once, in order per key
    with kafka.consumer() as c:
        c.assign([(topic, q) for q in range(PARTS)])
        ends = {pi.partition: pi.end_offset for pi in kafka.describe_topic(topic).partitions}
        stored: list[tuple[int, int, int]] = []
        deadline = time.monotonic() + 60
        while any(c.position(topic, q) < e for q, e in ends.items()):
            assert time.monotonic() < deadline
            stored += [(p, o, i) for b in c.poll(0.3) for p, o, i in zip(
                b.column("_partition").to_pylist(), b.column("_offset").to_pylist(), b.column("id").to_pylist(),
                strict=True)]
    ids = [i for _, _, i in stored]
    assert len(ids) == len(set(ids)) == n + 100, (
        f"{len(ids) - len(set(ids))} duplicates, {n + 100 - len(set(ids))} lost")
    for q in range(PARTS):
        part_ids = [i for p, _, i in sorted(stored) if p == q]
        assert part_ids == sorted(part_ids), f"partition {q} out of order"
        assert all(partition_for(_key(i).encode(), PARTS) == q for i in part_ids)

    # 2. the member read everything; repeats only where a commit failed
    seen: dict[tuple[int, int], int] = {}
    for p, o, _ in member.records:
        seen[(p, o)] = seen.get((p, o), 0) + 1
    assert {i for _, _, i in member.records} == set(range(n))
    repeated = {k for k, v in seen.items() if v > 1}
    assert repeated <= member.unacked, f"{len(repeated - member.unacked)} records read twice without a failed commit"

    # 3. a new member resumes at the committed offsets: it gets exactly the tail
    with kafka.consumer(group, session_timeout_ms=6000, heartbeat_ms=500) as c:
        c.subscribe([topic])
        tail: list[int] = []
        deadline = time.monotonic() + 60
        while len(tail) < 100 and time.monotonic() < deadline:
            tail += [i for b in c.poll(0.3) for i in b.column("id").to_pylist()]
        time.sleep(0.5)
        tail += [i for b in c.poll(0.5) for i in b.column("id").to_pylist()]
    assert sorted(tail) == list(range(n, n + 100))
    print(f"outage {outage:.1f}s; {n} records during the run, {len(repeated)} re-read after "
          f"{member.commit_failures} failed commit(s)")
