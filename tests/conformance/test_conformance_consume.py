"""Consuming through the Log contract on both logs: start positions, seek, seek by time, limits,
commits and consumer groups."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conformance_settings import HEARTBEAT_MS, SESSION_MS
from conformtools import consume

from everstream.errors import CommitFailedError, ConfigError, ConsumerError, OffsetOutOfRangeError
from everstream.log import Consumer, Log, TopicSpec
from everstream.log.partitioner import partition_for


def _group_consumer(log: Log, group: str, **kw: Any) -> Consumer:
    return log.consumer(group, session_timeout_ms=SESSION_MS, heartbeat_ms=HEARTBEAT_MS, **kw)  # type: ignore[call-arg]


def test_start_latest_and_earliest(log: Log, names: Callable[[str], str]) -> None:
    topic = names("se")
    log.create_topic(TopicSpec(topic, partitions=2))
    with log.producer() as p:
        for i in range(20):
            p.send(topic, {"id": i}, key=str(i))
    with log.consumer(start="latest") as late, log.consumer(start="earliest") as early:
        late.assign([(topic, 0), (topic, 1)])
        early.assign([(topic, 0), (topic, 1)])
        assert late.poll(0.3) == []
        with log.producer() as p:
            for i in range(20, 25):
                p.send(topic, {"id": i}, key=str(i))
        assert sorted(r["id"] for r in consume(late, 5)) == [20, 21, 22, 23, 24]
        assert sorted(r["id"] for r in consume(early, 25)) == list(range(25))


def test_start_at_timestamp_and_seek_to_timestamp(log: Log, names: Callable[[str], str]) -> None:
    topic = names("tt")
    log.create_topic(TopicSpec(topic, partitions=3))
    rng = random.Random(3)
    base = 1_700_000_000_000
    sent = []  # (id, key, ts): timestamps not monotonic, over several batches
    with log.producer() as p:
        for i in range(600):
            ts = base + rng.randrange(0, 100_000)
            k = f"k{rng.randrange(20)}"
            sent.append((i, k, ts))
            p.send(topic, {"id": i}, key=k, timestamp=ts)
            if i % 100 == 99:
                p.flush()
    per_part: dict[int, list[tuple[int, int]]] = {}
    for i, k, ts in sent:
        per_part.setdefault(partition_for(k.encode(), 3), []).append((i, ts))

    def expected_ids(t_ms: int) -> list[int]:  # reference: per partition, from the first record at/after T
        out = []
        for recs in per_part.values():
            first = next((j for j, (_, ts) in enumerate(recs) if ts >= t_ms), len(recs))
            out += [i for i, _ in recs[first:]]
        return sorted(out)

    for t_ms in (base - 1, base + 50_000, base + 99_990, base + 200_000):
        exp = expected_ids(t_ms)
        for start in (t_ms, dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC)):
            with log.consumer(start=start) as c:
                c.assign([(topic, p) for p in range(3)])
                assert sorted(r["id"] for r in consume(c, len(exp), settle=0.1)) == exp
        with log.consumer() as c:
            c.assign([(topic, p) for p in range(3)])
            c.seek_to_timestamp(t_ms)
            assert sorted(r["id"] for r in consume(c, len(exp), settle=0.1)) == exp


def test_assign_seek_position(log: Log, names: Callable[[str], str]) -> None:
    topic = names("sk")
    log.create_topic(TopicSpec(topic, partitions=2))
    with log.producer() as p:
        for i in range(100):
            p.send(topic, {"id": i}, key="same")
    part = partition_for(b"same", 2)
    other = 1 - part
    with log.consumer() as c:
        c.assign([(topic, part)])
        assert c.assignment() == [(topic, part)]
        assert c.position(topic, part) == 0
        c.seek(topic, part, 37)
        got = consume(c, 63)
        assert [r["_offset"] for r in got] == list(range(37, 100))
        assert [r["id"] for r in got] == list(range(37, 100))
        assert c.position(topic, part) == 100
        c.seek(topic, part, 100)  # the end is a legal position
        c.seek(topic, part, 0)
        assert c.position(topic, part) == 0
        first: list[int] = []
        deadline = time.monotonic() + 10
        while not first and time.monotonic() < deadline:
            first = [o for b in c.poll(0.5, max_records=1) for o in b.column("_offset").to_pylist()]
        assert first == [0]
        with pytest.raises(OffsetOutOfRangeError, match="101"):
            c.seek(topic, part, 101)
        with pytest.raises(OffsetOutOfRangeError):
            c.seek(topic, part, -1)
        with pytest.raises(ConsumerError):
            c.seek(topic, other, 0)
        with pytest.raises(ConsumerError):
            c.position(topic, other)


def test_poll_max_records(log: Log, names: Callable[[str], str]) -> None:
    topic = names("mr")
    log.create_topic(TopicSpec(topic, partitions=2))
    with log.producer(batch_events=64) as p:
        for i in range(1000):
            p.send(topic, {"id": i}, key=str(i % 5))
    with log.consumer() as c:
        c.assign([(topic, 0), (topic, 1)])
        seen: list[int] = []
        polls = 0
        while len(seen) < 1000 and polls < 400:
            batches = c.poll(0.3, max_records=70)
            assert sum(b.num_rows for b in batches) <= 70
            seen += [r["id"] for b in batches for r in b.to_pylist()]
            polls += 1
        assert sorted(seen) == list(range(1000))


def test_commit_committed_and_resume(log: Log, names: Callable[[str], str]) -> None:
    topic, group = names("cm"), names("g1")
    log.create_topic(TopicSpec(topic, partitions=2))
    with log.producer() as p:
        for i in range(500):
            p.send(topic, {"id": i}, key=str(i))
    tps = [(topic, 0), (topic, 1)]
    with log.consumer(group) as c:
        c.assign(tps)
        assert c.committed(topic, 0) is None
        first: list[int] = []
        deadline = time.monotonic() + 10
        while len(first) < 300 and time.monotonic() < deadline:
            first += [r["id"] for b in c.poll(0.5, max_records=300 - len(first)) for r in b.to_pylist()]
        assert len(first) == 300
        c.commit()
        for t, p in tps:
            assert c.committed(t, p) == c.position(t, p)
    with log.consumer(group) as c2:
        c2.assign(tps)
        assert {c2.position(t, p) for t, p in tps} == {c2.committed(t, p) for t, p in tps}
        rest = [r["id"] for r in consume(c2, 200)]
        assert sorted(first + rest) == list(range(500))
        c2.commit({(topic, 0): 0})  # explicit offsets
        assert c2.committed(topic, 0) == 0
    with log.consumer(names("other-group")) as c3:
        c3.assign(tps)
        assert sorted(r["id"] for r in consume(c3, 500)) == list(range(500))
    with log.consumer() as nogroup:
        nogroup.assign(tps)
        assert nogroup.committed(topic, 0) is None
        with pytest.raises(ConfigError):
            nogroup.commit()
        with pytest.raises(ConfigError):
            nogroup.subscribe([topic])


def test_subscribed_group_resumes_at_committed_offset(log: Log, names: Callable[[str], str]) -> None:
    topic, group = names("sub"), names("sg")
    log.create_topic(TopicSpec(topic, partitions=3))
    with log.producer() as p:
        for i in range(300):
            p.send(topic, {"id": i}, key=str(i))
    c = _group_consumer(log, group)
    c.subscribe([topic])
    first: list[int] = []
    deadline = time.monotonic() + 20
    while not first and time.monotonic() < deadline:
        first = [r["id"] for b in c.poll(0.5, max_records=120) for r in b.to_pylist()]
    assert sorted(c.assignment()) == [(topic, 0), (topic, 1), (topic, 2)]
    assert 0 < len(first) <= 120
    c.commit()
    c.close()
    with _group_consumer(log, group) as c2:
        c2.subscribe([topic])
        rest = [r["id"] for r in consume(c2, 300 - len(first), timeout=30)]
    assert sorted(first + rest) == list(range(300))


def test_group_start_latest_commits_its_start(log: Log, names: Callable[[str], str]) -> None:
    """A group starting at "latest" that commits before reading anything resumes from there."""
    topic, group = names("gl"), names("gl")
    log.create_topic(TopicSpec(topic, partitions=2))
    with log.producer() as p:
        for i in range(10):
            p.send(topic, {"id": i}, key=str(i))
    with log.consumer(group, start="latest") as c:
        c.assign([(topic, 0), (topic, 1)])
        c.commit()
    with log.producer() as p:
        for i in range(10, 15):
            p.send(topic, {"id": i}, key=str(i))
    with log.consumer(group, start="latest") as c:
        c.assign([(topic, 0), (topic, 1)])
        assert sorted(r["id"] for r in consume(c, 5)) == [10, 11, 12, 13, 14]


class _Member:
    """A group member polling and committing in its own thread (as one per process would)."""

    def __init__(self, log: Log, group: str, topic: str) -> None:
        self.c = _group_consumer(log, group)
        self.c.subscribe([topic])
        self.records: list[tuple[int, int]] = []  # (partition, id)
        self.owned: set[tuple[str, int]] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                got = []
                for batch in self.c.poll(0.1):
                    got += list(zip(batch.column("_partition").to_pylist(), batch.column("id").to_pylist(),
                                    strict=True))
                try:
                    self.c.commit()
                except CommitFailedError:
                    pass  # a rebalance is under way: the next poll brings the new assignment
                with self._lock:
                    self.records += got
                    self.owned = set(self.c.assignment())
            self.c.close()
        except BaseException as e:
            self.error = e

    def snapshot(self) -> tuple[list[tuple[int, int]], set[tuple[str, int]]]:
        with self._lock:
            return list(self.records), set(self.owned)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert self.error is None, self.error


def test_two_members_share_partitions(log: Log, names: Callable[[str], str]) -> None:
    topic, group = names("share"), names("share")
    n_parts = 4
    log.create_topic(TopicSpec(topic, partitions=n_parts))
    with log.producer() as p:
        for i in range(100):
            p.send(topic, {"id": i}, key=f"k{i}")
    a = _Member(log, group, topic)
    b = _Member(log, group, topic)
    try:
        deadline = time.monotonic() + 60
        while True:  # until the group has settled: disjoint shares covering every partition
            (ra, sa), (rb, sb) = a.snapshot(), b.snapshot()
            if sa and sb and not sa & sb and len(sa | sb) == n_parts and len({i for _, i in ra + rb}) == 100:
                break
            assert a.error is None and b.error is None, (a.error, b.error)
            assert time.monotonic() < deadline, f"no balanced assignment: a={sa} b={sb}"
            time.sleep(0.05)
        before = {"a": len(ra), "b": len(rb)}
        with log.producer() as p:
            for i in range(100, 500):
                p.send(topic, {"id": i}, key=f"k{i}")
        while len({i for _, i in a.snapshot()[0] + b.snapshot()[0]}) < 500:
            assert time.monotonic() < deadline + 30, "the group did not read everything"
            time.sleep(0.05)
        time.sleep(0.3)
        (ra, sa2), (rb, sb2) = a.snapshot(), b.snapshot()
        assert (sa2, sb2) == (sa, sb), "the group rebalanced without a reason"
    finally:
        a.stop()
        b.stop()
    seen = {"a": ra, "b": rb}
    owned = {"a": {p for _, p in sa}, "b": {p for _, p in sb}}
    assert {i for recs in seen.values() for _, i in recs} == set(range(500))
    for name, recs in seen.items():
        later = recs[before[name]:]
        assert later, f"member {name} read none of the records produced after the group settled"
        assert {p for p, _ in later} <= owned[name], f"member {name} read a partition it does not own"
    later_ids = sorted(i for name, recs in seen.items() for _, i in recs[before[name]:])
    assert later_ids == list(range(100, 500)), "records produced after the group settled were read twice or lost"
    for name, recs in seen.items():
        for p, i in recs[before[name]:]:
            assert p == partition_for(f"k{i}".encode(), n_parts)


def test_two_members_polled_by_one_thread(log: Log, names: Callable[[str], str]) -> None:
    """Members of one group driven by the same thread (commit after every poll) never block each other."""
    topic, group = names("one-thread"), names("one-thread")
    log.create_topic(TopicSpec(topic, partitions=4))
    with log.producer() as p:
        for i in range(400):
            p.send(topic, {"id": i}, key=f"k{i}")
    a, b = _group_consumer(log, group), _group_consumer(log, group)
    seen: set[int] = set()
    longest = 0.0
    try:
        a.subscribe([topic])
        b.subscribe([topic])
        deadline = time.monotonic() + 60
        while True:
            for c in (a, b):
                seen.update(i for batch in c.poll(0.1) for i in batch.column("id").to_pylist())
                t0 = time.monotonic()
                try:
                    c.commit()
                except CommitFailedError:
                    pass  # a rebalance is under way
                longest = max(longest, time.monotonic() - t0)
            sa, sb = set(a.assignment()), set(b.assignment())
            if sa and sb and not sa & sb and len(sa | sb) == 4 and len(seen) == 400:
                break
            assert time.monotonic() < deadline, f"a={sa} b={sb}, {len(seen)} read"
    finally:
        a.close()
        b.close()
    assert longest < 10, f"a commit blocked for {longest:.1f}s"


def test_string_views_give_the_same_values_as_view_types(log: Log, names: Callable[[str], str]) -> None:
    """``string_views=True``: string and binary columns (and the binary key) as Arrow views, values unchanged,
    on a backlog read in several polls (the embedded log casts on its read-ahead thread)."""
    import pyarrow as pa

    topic = names("sv")
    log.create_topic(TopicSpec(topic, partitions=1))
    n = 12_000
    table = pa.table({"id": list(range(n)), "name": [f"n{i}" if i % 7 else None for i in range(n)],
                      "blob": [bytes([i % 256]) * (i % 5) for i in range(n)]})
    with log.producer() as p:
        p.send_batch(topic, table, key="name")
    got: dict[str, list[Any]] = {"id": [], "name": [], "blob": [], "_key": []}
    with log.consumer(string_views=True) as c:
        c.assign([(topic, 0)])
        deadline = time.monotonic() + 30
        while len(got["id"]) < n and time.monotonic() < deadline:
            for b in c.poll(0.5, max_records=5000):
                assert b.schema.field("name").type == pa.string_view()
                assert b.schema.field("blob").type == pa.binary_view()
                assert b.schema.field("_key").type == pa.binary_view()
                for col in got:
                    got[col] += b.column(col).to_pylist()
    with log.consumer() as c:  # the reference: the same records without views
        c.assign([(topic, 0)])
        ref = consume(c, n)
    assert got["id"] == [r["id"] for r in ref] and sorted(got["id"]) == list(range(n))
    for col in ("name", "blob", "_key"):
        assert got[col] == [r[col] for r in ref]
