"""Crash safety: kill -9 a producing process at random points, in a loop, and check the log.

After every kill: each record whose flush() returned is present exactly once; in every
partition the stored records are a prefix of what each producer incarnation sent there, in
order, with no hole; `log.check()` finds nothing damaged; the log accepts new writes.
EVERSTREAM_CRASH_ITERATIONS sets the number of kills (default 20).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from logtools import HERE

from everstream.log import EmbeddedLog, TopicSpec
from everstream.log.partitioner import partition_for

ITERATIONS = int(os.environ.get("EVERSTREAM_CRASH_ITERATIONS", "20"))
PARTS = 4
TOPIC = "crash"
# _producer.py sends seq s with key k{s % 13}: the partition of every seq, by s % 13
PART_OF = np.array([partition_for(f"k{j}".encode(), PARTS) for j in range(13)])


@dataclass
class Incarnation:
    writer: int
    start: int
    acked: int | None = None  # last seq whose flush() returned
    lines: list[str] = field(default_factory=list)


def run_and_kill(data_dir: Path, inc: Incarnation, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_producer.py"), str(data_dir), TOPIC, str(inc.writer),
         str(inc.start), "-", str(rng.randrange(1 << 30))],
        stdout=subprocess.PIPE, text=True, bufsize=1,
    )
    acking = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            inc.lines.append(line.strip())
            if line.startswith("ack"):
                acking.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if rng.random() < 0.15:  # sometimes while it starts, opens the database, flushes first
        time.sleep(rng.uniform(0.0, 1.0))
    else:  # mostly while it is producing steadily (its first flush also warms up imports)
        assert acking.wait(30), "the producer process never acknowledged a flush"
        time.sleep(rng.uniform(0.2, 0.6))
    proc.kill()
    proc.wait(10)
    reader.join(10)
    acks = [int(x.split()[1]) for x in inc.lines if x.startswith("ack ")]
    inc.acked = acks[-1] if acks else None


COLS = ["writer", "seq", "_partition", "_offset"]


class Stored:
    """The topic's records, read incrementally (new offsets only) or in full (every few kills)."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.next = dict.fromkeys(range(PARTS), 0)

    def read(self, data_dir: Path, full: bool) -> pa.Table:
        old = pa.concat_tables(self.tables) if self.tables else None
        if full:
            self.tables, self.next = [], dict.fromkeys(range(PARTS), 0)
        with EmbeddedLog(data_dir) as lg, lg.consumer() as c:
            infos = lg.describe_topic(TOPIC).partitions
            ends = {pi.partition: pi.end_offset for pi in infos}
            for pi in infos:
                assert pi.start_offset == 0, f"partition {pi.partition} lost its first records"
                assert pi.end_offset >= self.next[pi.partition], "stored records disappeared"
            c.assign([(TOPIC, p) for p in range(PARTS)])
            for p in range(PARTS):
                c.seek(TOPIC, p, self.next[p])
            deadline = time.monotonic() + 120
            while any(c.position(TOPIC, p) < e for p, e in ends.items()):
                assert time.monotonic() < deadline
                self.tables += [pa.Table.from_batches([b]).select(COLS) for b in c.poll(0.2)]
            self.next = {p: c.position(TOPIC, p) for p in range(PARTS)}
        if not self.tables:
            return pa.table({c: pa.array([], pa.int64()) for c in COLS})
        t = pa.concat_tables(self.tables).combine_chunks()
        self.tables = [t]
        if full and old is not None:  # what was verified before is still there, unchanged
            key = [("_partition", "ascending"), ("_offset", "ascending")]
            before = old.combine_chunks().sort_by(key)
            now = t.sort_by(key)
            for p in range(PARTS):
                b = before.filter(pc.equal(before["_partition"], p))
                n = now.filter(pc.equal(now["_partition"], p)).slice(0, b.num_rows)
                assert n.equals(b), f"partition {p}: records verified earlier have changed"
        return t


def verify(data_dir: Path, incs: list[Incarnation], cache: Stored, full: bool) -> int:
    """Check the crash guarantees; returns the next seq to send."""
    t = cache.read(data_dir, full)
    writer = t.column("writer").to_numpy().astype(np.int64)
    seq = t.column("seq").to_numpy().astype(np.int64)
    part = t.column("_partition").to_numpy().astype(np.int64)
    off = t.column("_offset").to_numpy().astype(np.int64)

    # exactly once: no (writer, seq) twice -- and no seq twice at all
    assert len(np.unique(seq)) == len(seq), "a record is stored twice"
    by_writer = {i.writer: i for i in incs}
    assert set(np.unique(writer).tolist()) <= set(by_writer)
    assert np.all(PART_OF[seq % 13] == part), "a record is in the wrong partition"

    for inc in incs:  # every acknowledged record is there
        mine = np.sort(seq[writer == inc.writer])
        if inc.acked is not None:
            need = np.arange(inc.start, inc.acked + 1)
            assert np.all(np.isin(need, mine)), (
                f"incarnation {inc.writer}: acknowledged records up to {inc.acked} are missing "
                f"{need[~np.isin(need, mine)][:10]}"
            )
        assert np.all(mine >= inc.start)

    for p in range(PARTS):
        sel = part == p
        o = off[sel]
        order = np.argsort(o, kind="stable")
        o, w, s = o[order], writer[sel][order], seq[sel][order]
        assert np.array_equal(o, np.arange(len(o))), f"partition {p}: offsets have holes"
        assert np.all(np.diff(w) >= 0), f"partition {p}: incarnations interleave"
        for wr in np.unique(w):
            got = s[w == wr]
            start = by_writer[int(wr)].start
            cand = np.arange(start, start + 13 * (len(got) + 1))
            sent_here = cand[PART_OF[cand % 13] == p][: len(got)]
            assert np.array_equal(got, sent_here), (
                f"partition {p}: incarnation {wr} stored {got[:10]}..., not a prefix of what it sent"
            )

    with EmbeddedLog(data_dir) as lg:
        checked, damage = lg.check()
        assert damage == [], damage
        assert checked > 0 or len(seq) == 0
        with lg.producer() as pr:  # the log accepts new writes
            pr.send("probe", {"n": len(incs)})
        assert lg.describe_topic("probe").partitions[0].end_offset == len(incs)
    return int(seq.max()) + 1 if len(seq) else 0


@pytest.mark.crash
@pytest.mark.timeout(max(600, ITERATIONS * 20))
def test_kill_9_producer_loop(data_dir: Path) -> None:
    seed = int(os.environ.get("EVERSTREAM_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"crash loop: {ITERATIONS} iterations, EVERSTREAM_CRASH_SEED={seed}")
    rng = random.Random(seed)
    with EmbeddedLog(data_dir) as lg:
        lg.create_topic(TopicSpec(TOPIC, partitions=PARTS))
        lg.create_topic(TopicSpec("probe"))
    incs: list[Incarnation] = []
    cache = Stored()
    next_seq = 0
    acked_total = 0
    for it in range(ITERATIONS):
        inc = Incarnation(writer=it, start=next_seq)
        incs.append(inc)
        t0 = time.monotonic()
        run_and_kill(data_dir, inc, rng)
        t1 = time.monotonic()
        next_seq = verify(data_dir, incs, cache, full=it % 10 == 9)
        print(f"kill {it}: acked up to {inc.acked}, {next_seq} records stored, "
              f"ran {t1 - t0:.2f}s, verified in {time.monotonic() - t1:.2f}s")
        acked_total += 0 if inc.acked is None else inc.acked - inc.start + 1
    assert acked_total > 0, "no producer incarnation ever got a flush acknowledged"
    # finally a clean run on the same topic: everything it sends is stored
    final = Incarnation(writer=ITERATIONS, start=next_seq)
    incs.append(final)
    out = subprocess.run(
        [sys.executable, str(HERE / "_producer.py"), str(data_dir), TOPIC, str(final.writer),
         str(final.start), "500", "1"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split("\n")
    assert "done" in out
    final.acked = final.start + 499
    assert verify(data_dir, incs, cache, full=True) == final.start + 500
    print(f"{acked_total} acknowledged records across {ITERATIONS} kills, all present exactly once")
