"""Exactly-once commits: outputs, operator state and input offsets in one log transaction.

The runtime in ``guarantee="exactly_once"`` mode writes through a transactional producer
(:meth:`Log.transactional_producer`, one transactional id per task: a restarted task fences its
predecessor). A :class:`Checkpointer` then does, at every commit interval:

1. snapshot every stateful operator (:mod:`everstream.engine.state`); those whose encoded
   state changed since the last commit go to ``<app>.<step_id>.changelog`` (compacted) as
   chunk records of a new generation;
2. ``send_offsets``: the next offset of *every* input partition read (state holds the open
   windows now, so nothing needs re-reading);
3. commit the transaction, and begin the next one.

On start (:meth:`Checkpointer.restore`, before the consumer reads its committed offsets), each
operator's changelog is read to its end and the newest complete generation restored, after its
state-shape fingerprint is checked against the operator's. A crash at any point leaves the log
at the last commit: outputs, state and offsets of the same instant; the restarted task resumes
from there and produces exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from everstream.engine import state as st
from everstream.errors import EngineError, StateError, StateIncompatibleError
from everstream.log.contract import TopicSpec, TransactionalProducer

if TYPE_CHECKING:
    from everstream.engine.operators import Operator
    from everstream.log.contract import Log, TopicPartition

GUARANTEES = ("at_least_once", "exactly_once")


def changelog_topic_of(app: str, step_id: str) -> str:
    """Where a step's state changes go: ``<app>.<step_id>.changelog`` (compacted)."""
    return f"{app}.{step_id}.changelog"


def transactional_id_of(group: str, task: int = 0) -> str:
    """The transactional id of a task of an app (stable across restarts: restarts fence zombies)."""
    return f"{group}.task-{task}"


@dataclass
class _Tracked:
    step_id: str
    handler: st.StatefulOperator
    topic: str
    fingerprint: str
    digest: bytes = b""  # of the state last committed
    pending: bytes | None = None  # of the state written into the open transaction


class Checkpointer:
    """Snapshots operator state into the open transaction and commits it with the input offsets."""

    def __init__(self, app: str, log: Log, producer: TransactionalProducer, ops: dict[str, Operator]) -> None:
        self.app = app
        self.log = log
        self.producer = producer
        self.generation = 0
        self.tracked: list[_Tracked] = []
        self.restore_seconds = 0.0
        self.state_bytes = 0
        for sid, op in ops.items():
            handler = st.state_of(op)
            if handler is not None:
                self.tracked.append(_Tracked(sid, handler, changelog_topic_of(app, sid), handler.state_fingerprint()))
            elif hasattr(op, "held_offsets") or hasattr(op, "advance"):  # stateful, but cannot be checkpointed
                raise EngineError(
                    f"step {sid!r} of app {app!r} ({type(op).__name__}) keeps state but does not implement "
                    "state_fingerprint/snapshot_state/restore_state (everstream.engine.state), so exactly_once "
                    "cannot restore it after a restart; run the app with guarantee='at_least_once'"
                )
        for t in self.tracked:
            self.log.create_topic(TopicSpec(t.topic, 1, compact=True, schema=st.CHANGELOG_SCHEMA), exist_ok=True)

    # ------------------------------------------------------------------ restore

    def restore(self, timeout: float = 120.0) -> int:
        """Restore every tracked operator from its changelog; returns how many had state."""
        t0 = time.perf_counter()
        restored = 0
        for t in self.tracked:
            got = _read_latest(self.log, t.topic, timeout)
            if got is None:
                continue
            gen, fp, data = got
            if fp != t.fingerprint:
                raise StateIncompatibleError(
                    f"step {t.step_id!r} of app {self.app!r}: its stored state (changelog {t.topic!r}, generation "
                    f"{gen}) has another shape (fingerprint {fp}) than the step now has ({t.fingerprint}): its keys, "
                    "window or aggregates changed. Give the changed step a new name= (it starts empty), revert the "
                    f"change, or delete the topic {t.topic!r} to drop its state (its open windows are lost)."
                )
            try:
                snap = st.decode(data)
                t.handler.restore_state(snap)
            except StateError:
                raise
            except Exception as e:
                raise StateError(
                    f"step {t.step_id!r} of app {self.app!r}: restoring its state from {t.topic!r} generation {gen} "
                    f"failed: {type(e).__name__}: {e}. Delete the topic to start the step empty, or report a bug."
                ) from e
            t.digest = hashlib.blake2b(data, digest_size=16).digest()
            self.generation = max(self.generation, gen)
            restored += 1
        self.restore_seconds = time.perf_counter() - t0
        return restored

    # ------------------------------------------------------------------ commit

    def write_state(self) -> int:
        """Send the changed snapshots into the open transaction; returns the bytes written."""
        self.generation += 1
        written = 0
        for t in self.tracked:
            data = st.encode(t.handler.snapshot_state())
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest == t.digest:
                continue
            pieces = st.chunks(data)
            n = len(pieces)
            table = pa.table({
                "generation": pa.array([self.generation] * n, pa.int64()),
                "chunk": pa.array(range(n), pa.int32()),
                "chunks": pa.array([n] * n, pa.int32()),
                "fingerprint": pa.array([t.fingerprint] * n, pa.string()),
                "payload": pa.array(pieces, pa.binary()),
            }, schema=st.CHANGELOG_SCHEMA)
            keys = pa.array([f"chunk-{i}" for i in range(n)], pa.string())
            self.producer.send_batch(t.topic, table, key=keys)
            t.pending = digest
            written += len(data)
        self.state_bytes = written
        return written

    def commit(self, consumer: object, offsets: dict[TopicPartition, int]) -> None:
        """Write state, the input offsets, and commit the open transaction; then begin the next."""
        self.write_state()
        if offsets:
            self.producer.send_offsets(consumer, offsets)  # type: ignore[arg-type]
        self.producer.commit()
        for t in self.tracked:  # only now is the written state durable
            if t.pending is not None:
                t.digest, t.pending = t.pending, None
        self.producer.begin()


def _read_latest(log: Log, topic: str, timeout: float) -> tuple[int, str, bytes] | None:
    """The newest complete generation of a changelog, reading only its tail.

    A generation's chunks are written in one transaction, so the newest one is contiguous at the
    end of the (one-partition) topic: read the last 64 offsets, then 8 times more, ... until a
    complete generation is in view or the whole topic was read. Restore time so depends on the
    state's size, not on how many commits wrote it (compaction or not).
    """
    part = log.describe_topic(topic).partitions[0]
    first, end = part.start_offset, part.end_offset
    if end <= first:
        return None
    window = 64
    while True:
        start = max(first, end - window)
        got = st.latest(_read_range(log, topic, start, end, timeout))
        if got is not None or start == first:
            return got
        window *= 8


def _read_range(log: Log, topic: str, start: int, end: int, timeout: float) -> pa.Table:
    """The records of partition 0 of ``topic`` from offset ``start`` up to ``end``."""
    batches: list[pa.RecordBatch] = []
    deadline = time.monotonic() + timeout
    with log.consumer(start="earliest") as c:
        c.assign([(topic, 0)])
        c.seek(topic, 0, start)
        while c.position(topic, 0) < end:
            got = c.poll(0.2)
            batches += [b for b in got if b.num_rows]
            if not got and c.position(topic, 0) >= end:
                break
            if time.monotonic() > deadline:
                raise StateError(f"changelog {topic!r}: not read to its end (offset {end}) within {timeout:g} s; "
                                 "is the log reachable?")
    if not batches:
        return st.CHANGELOG_SCHEMA.empty_table()
    tables = [pa.Table.from_batches([b]).select(st.CHANGELOG_SCHEMA.names).cast(st.CHANGELOG_SCHEMA)
              for b in batches]
    return pa.concat_tables(tables)


__all__ = ["GUARANTEES", "Checkpointer", "changelog_topic_of", "transactional_id_of"]
