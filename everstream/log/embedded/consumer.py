"""The embedded log's consumer: reads stored batches, verifies them, adds metadata columns."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from everstream.errors import (
    ConfigError,
    ConsumerError,
    CorruptBatchError,
    LogClosedError,
    OffsetOutOfRangeError,
)
from everstream.log import batch as batchcodec
from everstream.log.contract import TIMESTAMP_COL, Consumer, StartAt, TopicPartition
from everstream.log.embedded.group import GroupMember, committed_offset
from everstream.log.embedded.store import READ_MMAP_BYTES, Store, StoredBatch, TopicRow
from everstream.log.records import check_consumer_options

if TYPE_CHECKING:
    from everstream.log.embedded.log import EmbeddedLog

_FETCH_BATCHES = 64
#: Polls asking for fewer records than this never read ahead (a caller reading a few records at a time).
_READ_AHEAD_MIN = 4096


@dataclass
class _Read:
    """One read: the batches, the positions after them, the next round-robin start, whether ``limit`` cut it
    (more is waiting), and a corrupt batch met after some good ones (raised by the next poll)."""

    out: list[pa.RecordBatch]
    positions: dict[tuple[int, int], int]
    rr: int
    full: bool
    deferred: CorruptBatchError | None
#: With ``auto_commit``, positions are committed at most this often (at poll), on rebalance and on close.
AUTO_COMMIT_INTERVAL_S = 5.0


class EmbeddedConsumer(Consumer):
    """Reads partitions it was assigned, or its share of a group's partitions."""

    def __init__(
        self,
        log: EmbeddedLog,
        group: str | None = None,
        start: StartAt = "earliest",
        auto_commit: bool = False,
        session_timeout_ms: int = 10_000,
        heartbeat_ms: int = 1_000,
        max_poll_records: int = 500_000,
        string_views: bool = False,
    ) -> None:
        check_consumer_options(start, session_timeout_ms, heartbeat_ms)
        self._log = log
        self._views = string_views  # cast in _read: on the read-ahead thread when reading ahead
        self._store = Store(log.data_dir, log.durability, mmap_bytes=READ_MMAP_BYTES)
        self.group = group
        self._start = start
        self._auto_commit = auto_commit
        self._max_poll = max_poll_records
        self._member: GroupMember | None = None
        self._session_ms = session_timeout_ms
        self._heartbeat_ms = heartbeat_ms
        self._topics_by_name: dict[str, TopicRow] = {}
        self._names: dict[int, str] = {}
        self._assigned: list[tuple[int, int]] = []  # (topic id, partition), read order
        self._positions: dict[tuple[int, int], int] = {}
        self._subscribed = False
        self._next_check = 0.0
        self._rr = 0
        self._closed = False
        self._deferred: CorruptBatchError | None = None
        self._reader: ThreadPoolExecutor | None = None  # the read-ahead thread, started on the first backlog
        self._ahead: tuple[tuple[object, ...], Future[_Read]] | None = None
        self._next_auto_commit = time.monotonic() + AUTO_COMMIT_INTERVAL_S
        self.member_id = f"{uuid.uuid4().hex[:12]}"

    # ------------------------------------------------------------------ assignment

    def _topic(self, name: str) -> TopicRow:
        row = self._topics_by_name.get(name)
        if row is None:
            row = self._store.topic(name)
            self._topics_by_name[name] = row
            self._names[row.id] = name
        return row

    def subscribe(self, topics: Sequence[str]) -> None:
        self._check_open()
        if self.group is None:
            raise ConfigError("subscribe() needs a consumer group: log.consumer(group='name'); or use assign()")
        if isinstance(topics, str):
            topics = [topics]
        for t in topics:
            self._topic(t)
        if self._member is None:
            self._member = GroupMember(
                self._store, Store(self._log.data_dir, self._log.durability), self.group,
                self.member_id, self._session_ms, self._heartbeat_ms,
            )
        self._member.join(list(topics))
        self._subscribed = True
        self._apply_rebalance()

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._check_open()
        if self._subscribed:
            raise ConfigError("this consumer subscribed to a group; use a separate consumer for assign()")
        wanted: list[tuple[int, int]] = []
        for name, p in partitions:
            row = self._topic(name)
            if not 0 <= p < row.spec.partitions:
                raise ConfigError(f"topic {name!r} has partitions 0..{row.spec.partitions - 1}; got {p}")
            wanted.append((row.id, p))
        self._assigned = wanted
        self._positions = {tp: self._positions[tp] for tp in wanted if tp in self._positions}
        for tp in wanted:
            if tp not in self._positions:
                self._positions[tp] = self._initial_position(tp)

    def assignment(self) -> list[TopicPartition]:
        return [(self._names[t], p) for t, p in self._assigned]

    def _initial_position(self, tp: tuple[int, int]) -> int:
        if self.group is not None:
            off = committed_offset(self._store, self.group, *tp)
            if off is not None:
                return off
        return self._offset_for_start(tp, self._start)

    def _offset_for_start(self, tp: tuple[int, int], start: StartAt) -> int:
        first, end = self._store.end_offsets(tp[0]).get(tp[1], (0, 0))
        if start == "earliest":
            return first
        if start == "latest":
            return end
        ts = int(start.timestamp() * 1000) if isinstance(start, datetime) else int(start)
        return self._offset_for_time(tp, ts, end)

    def _offset_for_time(self, tp: tuple[int, int], ts: int, end: int) -> int:
        base = self._store.offset_for_time(tp[0], tp[1], ts)
        if base is None:
            return end
        for sb in self._store.fetch(tp[0], tp[1], base, 1):
            stored = self._verified(tp, sb)
            times = np.asarray(stored.column(TIMESTAMP_COL).cast(pa.int64()))
            offs = batchcodec.offsets_of(stored, sb.base_offset)
            hits = np.flatnonzero(times >= ts)
            if len(hits):
                return int(offs[hits[0]])
        return base

    def _apply_rebalance(self) -> None:
        assert self._member is not None
        if self._member.error is not None:
            raise ConsumerError(
                f"group {self.group!r}: the heartbeat thread failed ({self._member.error}); "
                "this consumer lost its partitions. Close it and create a new one."
            ) from self._member.error
        if self._auto_commit and self._positions:
            revoking = [tp for tp in self._assigned if tp in self._positions]
            try:
                self._member.commit({tp: self._positions[tp] for tp in revoking}, True, self._names)
            except ConsumerError:
                pass
        change = self._member.rebalance()
        for tid, _ in change.owned:
            if tid not in self._names:
                name = self._store.con.execute("SELECT name FROM topics WHERE id = ?", (tid,)).fetchone()
                if name is not None:
                    self._topic(str(name[0]))
        for tp in change.revoked:
            self._positions.pop(tp, None)
        for tp in change.claimed:
            self._positions[tp] = self._initial_position(tp)
        self._assigned = sorted(change.owned)
        self._next_check = time.monotonic() + self._heartbeat_ms / 1000.0

    # ------------------------------------------------------------------ reading

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[pa.RecordBatch]:
        self._check_open()
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        if self._auto_commit and self.group is not None and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + AUTO_COMMIT_INTERVAL_S
            if self._positions:
                try:
                    self.commit()
                except ConsumerError:
                    pass  # partitions moved: the rebalance below sorts it out
        limit = max_records or self._max_poll
        deadline = time.monotonic() + max(timeout, 0.0)
        version = -1
        pause = 0.0002
        while True:
            if self._member is not None and time.monotonic() >= self._next_check:
                if self._member.error is not None or self._member.needs_rebalance():
                    self._apply_rebalance()
                    version = -1  # our own commits do not move data_version: fetch anew
                else:
                    self._next_check = time.monotonic() + self._heartbeat_ms / 1000.0
            v = self._store.data_version()
            if v != version:
                version = v
                out = self._fetch(limit)
                if out:
                    return out
            now = time.monotonic()
            if now >= deadline:
                return []
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.002)

    def _fetch(self, limit: int) -> list[pa.RecordBatch]:
        """Up to ``limit`` records from the positions on: the read-ahead's result when it read from exactly here."""
        ahead, self._ahead = self._ahead, None
        here = self._read_key(limit)
        got: _Read | None = None
        if ahead is not None and ahead[0] == here:
            try:
                got = ahead[1].result()
            except Exception:  # read again below, in this thread, so the error surfaces the usual way
                got = None
            if got is not None and (not got.out or self._retention_moved()):
                got = None  # it found nothing (new data may have come since), or retention removed what it read
        elif ahead is not None:
            ahead[1].cancel()  # positions or assignment moved (seek, rebalance): stale
        if got is None:
            got = self._read(dict(self._positions), self._rr, limit)
        self._positions.update(got.positions)
        self._rr = got.rr
        if got.deferred is not None:
            self._deferred = got.deferred
        elif got.full and limit >= _READ_AHEAD_MIN and not self._closed:
            self._read_ahead(limit)
        return got.out

    def _read_key(self, limit: int) -> tuple[object, ...]:
        """What a read depends on: a read-ahead is used only by a poll that would have read exactly it."""
        return (tuple(self._assigned), tuple(sorted(self._positions.items())), self._rr, limit)

    def _retention_moved(self) -> bool:
        """Whether retention or compaction removed records at or after a position since the read-ahead ran."""
        ends: dict[int, dict[int, tuple[int, int]]] = {}
        for (tid, p), pos in self._positions.items():
            bounds = ends.get(tid)
            if bounds is None:
                bounds = ends[tid] = self._store.end_offsets(tid)
            if bounds.get(p, (0, 0))[0] > pos:
                return True
        return False

    def _read_ahead(self, limit: int) -> None:
        """Read and decode the next poll's records on the read-ahead thread while the caller processes these.

        Only when the last read was cut by ``limit`` (a backlog: replay or catch-up), never on a live tail where
        the next poll would find little. SQLite reads, CRC-32 and LZ4/IPC decoding release the GIL, so this
        overlaps the caller's work on the other core. Nothing moves until a poll takes the result: positions
        (hence commits) only ever reflect records handed out.
        """
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="everstream-read-ahead")
        self._ahead = (self._read_key(limit), self._reader.submit(self._read, dict(self._positions), self._rr, limit))

    def _read(self, positions: dict[tuple[int, int], int], rr: int, limit: int) -> _Read:
        """Up to ``limit`` records from ``positions``, reading partitions round-robin from ``rr``.

        Pure with respect to the consumer's positions (it returns the moved ones), so it can run ahead.
        """
        out: list[pa.RecordBatch] = []
        got = 0
        n = len(self._assigned)
        if not n:
            return _Read(out, positions, rr, False, None)
        ends: dict[int, dict[int, tuple[int, int]]] = {}
        start = rr
        rr = (rr + 1) % n
        for k in range(n):
            tp = self._assigned[(start + k) % n]
            tid, p = tp
            bounds = ends.get(tid)
            if bounds is None:
                bounds = ends[tid] = self._store.end_offsets(tid)
            first, end = bounds.get(p, (0, 0))
            pos = positions.get(tp)
            if pos is None:
                continue
            if pos < first:  # retention removed what we had not read yet
                pos = positions[tp] = first
            if pos >= end:
                continue
            name = self._names[tid]
            pieces: list[tuple[pa.RecordBatch, np.ndarray]] = []  # this partition's slices, made one batch
            while got < limit and pos < end:
                stored = self._store.fetch(tid, p, pos, _FETCH_BATCHES)
                if not stored:
                    break
                for sb in stored:
                    try:
                        batch = self._verified(tp, sb)
                    except CorruptBatchError as e:
                        # serve what came before the damage; the next poll raises
                        out += _joined(pieces, name, p)
                        if not out:
                            raise
                        positions[tp] = pos
                        return _Read(self._typed(out), positions, rr, False, e)
                    offs = batchcodec.offsets_of(batch, sb.base_offset)
                    skip = int(np.searchsorted(offs, pos)) if len(offs) and offs[0] < pos else 0
                    take = min(batch.num_rows - skip, limit - got)
                    if take <= 0:
                        pos = max(pos, sb.last_offset + 1)
                        continue
                    pieces.append((batch.slice(skip, take), offs[skip:skip + take]))
                    got += take
                    pos = int(offs[skip + take - 1]) + 1
                    if got >= limit:
                        break
            out += _joined(pieces, name, p)
            positions[tp] = pos
            if got >= limit:
                break
        return _Read(self._typed(out), positions, rr, got >= limit, None)

    def _typed(self, out: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """String columns as the caller asked: views (``string_views=True``), else as they were produced."""
        if self._views:
            return [batchcodec.as_views(b) for b in out]
        return [batchcodec.as_plain(b) for b in out]

    def _verified(self, tp: tuple[int, int], sb: StoredBatch) -> pa.RecordBatch:
        """Decode a stored batch after checking its CRC; corrupt batches are never served."""
        name = self._names[tp[0]]
        if batchcodec.checksum(sb.payload) != sb.crc:
            raise CorruptBatchError(name, tp[1], sb.base_offset, sb.last_offset, "checksum mismatch")
        try:
            batch = batchcodec.decode(sb.payload, self._topics_by_name[name].spec.compression)
        except (pa.ArrowInvalid, ValueError, OSError) as e:
            raise CorruptBatchError(name, tp[1], sb.base_offset, sb.last_offset, f"undecodable: {e}") from e
        if batch.num_rows != sb.count:
            raise CorruptBatchError(
                name, tp[1], sb.base_offset, sb.last_offset,
                f"holds {batch.num_rows} records, the index says {sb.count}",
            )
        return batch

    # ------------------------------------------------------------------ positions and commits

    def seek(self, topic: str, partition: int, offset: int) -> None:
        tp = (self._topic(topic).id, partition)
        if tp not in self._positions:
            raise ConsumerError(f"seek: topic {topic!r} partition {partition} is not assigned to this consumer")
        first, end = self._store.end_offsets(tp[0]).get(partition, (0, 0))
        if not first <= offset <= end:
            raise OffsetOutOfRangeError(
                f"seek: offset {offset} is outside topic {topic!r} partition {partition}'s stored "
                f"range {first}..{end}"
            )
        self._positions[tp] = offset

    def seek_to_timestamp(self, timestamp: int | datetime) -> None:
        for tp in self._assigned:
            self._positions[tp] = self._offset_for_start(tp, timestamp)

    def position(self, topic: str, partition: int) -> int:
        tp = (self._topic(topic).id, partition)
        if tp not in self._positions:
            raise ConsumerError(f"topic {topic!r} partition {partition} is not assigned to this consumer")
        return self._positions[tp]

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._check_open()
        if self.group is None:
            raise ConfigError("commit() needs a consumer group: log.consumer(group='name')")
        if offsets is None:
            todo = {tp: self._positions[tp] for tp in self._assigned if tp in self._positions}
        else:
            todo = {(self._topic(t).id, p): o for (t, p), o in offsets.items()}
        member = self._member or GroupMember(
            self._store, self._store, self.group, self.member_id, self._session_ms, self._heartbeat_ms
        )
        member.commit(todo, self._subscribed, self._names)

    def committed(self, topic: str, partition: int) -> int | None:
        if self.group is None:
            return None
        return committed_offset(self._store, self.group, self._topic(topic).id, partition)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._auto_commit and self.group is not None and self._assigned:
                try:
                    self.commit()
                except ConsumerError:
                    pass
            if self._member is not None:
                self._member.leave()
        finally:
            self._closed = True
            if self._reader is not None:  # a read-ahead may be using the store: let it finish first
                if self._ahead is not None:
                    self._ahead[1].cancel()
                self._ahead = None
                self._reader.shutdown(wait=True)
            self._store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("consumer is closed")


#: Stored batches below this many records are joined into one before the metadata is added.
_SMALL_BATCH = 2048


def _joined(pieces: list[tuple[pa.RecordBatch, np.ndarray]], topic: str, partition: int) -> list[pa.RecordBatch]:
    """Consecutive slices of one partition as few batches as their schemas allow, metadata added once.

    Small stored batches (a producer writing every millisecond) are common on a live topic; adding
    the metadata columns and converting per batch would cost more than the records themselves.
    """
    out: list[pa.RecordBatch] = []
    i = 0
    while i < len(pieces):
        j = i + 1
        schema = pieces[i][0].schema
        if pieces[i][0].num_rows < _SMALL_BATCH:  # big batches go as they are: joining would copy them
            while j < len(pieces) and pieces[j][0].num_rows < _SMALL_BATCH and pieces[j][0].schema.equals(schema):
                j += 1
        run = pieces[i:j]
        if len(run) == 1:
            batch, offs = run[0]
        else:
            batch = pa.concat_batches([b for b, _ in run])
            offs = np.concatenate([o for _, o in run])
        out.append(batchcodec.with_metadata(batch, topic, partition, int(offs[0]), offsets=offs))
        i = j
    return out
