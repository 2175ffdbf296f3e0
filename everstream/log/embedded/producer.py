"""The embedded log's producer: per-partition buffers, group commit, linger, dead letters."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from everstream.errors import ConfigError, LogClosedError, ProducerError
from everstream.log import batch as batchcodec
from everstream.log.contract import (
    DEFAULT_MAX_RECORD_BYTES,
    META_COLUMNS,
    Key,
    Producer,
    TopicSpec,
    dead_letter_topic,
)
from everstream.log.embedded.store import Store, TopicRow, now_ms
from everstream.log.embedded.wal import WalCheckpointer
from everstream.log.partitioner import key_bytes, record_partition
from everstream.log.records import (
    DEAD_LETTER_SCHEMA,
    DeadLetter,
    add_meta,
    dead_letter_batch,
    keyed_batch,
    oversize_rows,
    raw_json,
    rows_to_batch,
    timestamp_ms,
    to_arrow_table,
)
from everstream.schema.arrow import record_to_dict

if TYPE_CHECKING:
    from everstream.log.embedded.log import EmbeddedLog

_RESERVED = frozenset(META_COLUMNS)


@dataclass
class _Topic:
    row: TopicRow
    schema: pa.Schema | None  # declared, or inferred from the first batch this producer wrote
    declared: bool
    partitions: int
    key_partition: dict[bytes, int] = field(default_factory=dict)
    sticky: int = 0


@dataclass
class _Work:
    """Encoded batches of one submit, committed together by the writer thread."""

    items: list[tuple[int, int, batchcodec.EncodedBatch]]
    produced: int
    dead: int


#: Submits waiting for the writer before send_batch blocks (back-pressure).
_MAX_QUEUED = 16

#: Submits of at least this many records are encoded on the producer's encoder thread (Arrow IPC + LZ4 release
#: the GIL, so the caller's next step runs meanwhile on the other core: about 1.5 ms per 10,000 records moved off
#: the engine's thread); smaller ones are encoded inline, where a thread hand-off would cost more than it saves.
ASYNC_ENCODE_ROWS = 4096

#: A submit of fewer records than this, made while no write is in flight, is committed on the caller's thread
#: ("leader" group commit). Handing it to the writer thread costs a condition-variable wake-up plus a wait for
#: the GIL, which the caller may hold for up to the 5 ms switch interval: measured, 1.8 ms p50 / 7.4 ms p99 from
#: ``send_batch`` returning to committed, for a 0.3 ms commit. While a write is in flight, submits queue as
#: before and the writer commits them together; big submits always go through the encoder and writer threads,
#: so the caller's next step overlaps their encoding and fsync. 0 turns inline commits off.
INLINE_COMMIT_ROWS = ASYNC_ENCODE_ROWS


@dataclass
class _Pending:
    values: list[Mapping[str, Any]] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    headers: list[Mapping[str, bytes] | None] | None = None


class EmbeddedProducer(Producer):
    """Buffers records per partition; a linger thread and ``flush()`` write them in one commit."""

    def __init__(
        self,
        log: EmbeddedLog,
        linger_ms: float = 5.0,
        batch_events: int = 10_000,
        max_buffered: int = 500_000,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        if linger_ms < 0 or batch_events < 1 or max_buffered < batch_events:
            raise ConfigError(
                f"producer: linger_ms={linger_ms} must be >= 0, batch_events={batch_events} >= 1, "
                f"max_buffered={max_buffered} >= batch_events"
            )
        self._log = log
        self._store = Store(log.data_dir, log.durability)
        self._wal = WalCheckpointer(self._store.path)  # checkpoints off the commit path: see wal.py
        self._linger = linger_ms / 1000.0
        self._batch_events = batch_events
        self._max_buffered = max_buffered
        self._max_record_bytes = max_record_bytes
        self._topics: dict[str, _Topic] = {}
        self._buf: dict[tuple[str, int], _Pending] = {}
        self._buffered = 0
        self._lock = threading.Lock()  # guards _buf/_buffered
        self._drain_lock = threading.Lock()  # one writer at a time
        self._wake = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._dead = 0
        self._produced = 0
        self._last_maintenance = time.monotonic()
        # encoded work waits here for the writer thread, which commits everything queued in one
        # transaction (group commit): encoding the next batch overlaps the fsync of the last one
        self._queue: deque[Future[_Work | None]] = deque()
        self._encoder: ThreadPoolExecutor | None = None  # created on the first big submit
        self._cv = threading.Condition()
        self._submitted = 0  # works queued so far
        self._committed = 0  # works durable so far
        self._writing = False  # a transaction is being written (by the writer thread or an inline commit)
        self._thread = threading.Thread(target=self._run, name="everstream-producer", daemon=True)
        self._thread.start()
        self._writer = threading.Thread(target=self._write_loop, name="everstream-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ public

    @property
    def dead_letters(self) -> int:
        return self._dead

    @property
    def produced(self) -> int:
        """Records written durably by this producer."""
        return self._produced

    def send(
        self,
        topic: str,
        value: Mapping[str, Any] | Any,
        key: Key = None,
        timestamp: int | float | datetime | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        if self._error is not None or self._closed:
            self._raise_state()
        t = self._topics.get(topic) or self._load(topic)
        rec = value if type(value) is dict else record_to_dict(value)
        kb = key if type(key) is bytes or key is None else key_bytes(key)
        p = -1 if kb is None else t.key_partition.get(kb, -1)  # the common case inline: a key seen before
        if p < 0:
            p = record_partition(topic, kb, t.partitions, t.sticky, t.row.spec.compact, t.key_partition)
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp_ms(timestamp, 0)
        with self._lock:
            pend = self._buf.get((topic, p))
            if pend is None:
                pend = self._buf[(topic, p)] = _Pending()
            pend.values.append(rec)
            pend.keys.append(kb)
            pend.ts.append(ts)
            if headers or pend.headers is not None:
                if pend.headers is None:
                    pend.headers = [None] * (len(pend.values) - 1)
                pend.headers.append(
                    {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in headers.items()}
                    if headers
                    else None
                )
            self._buffered += 1
            full = len(pend.values) >= self._batch_events
            over = self._buffered >= self._max_buffered
        if full and not self._wake.is_set():  # Event.set() costs ~1.5 us; once per batch is enough
            self._wake.set()
        if over:
            self._drain()

    def send_batch(
        self,
        topic: str,
        table: Any,
        key: str | pa.Array | pa.ChunkedArray | None = None,
        timestamp: str | pa.Array | None = None,
    ) -> int:
        if self._error is not None or self._closed:
            self._raise_state()
        t = self._topics.get(topic) or self._load(topic)
        tab = to_arrow_table(table)
        n = int(tab.num_rows)
        if n == 0:
            return 0
        kb = keyed_batch(tab, topic, key, timestamp, schema=t.schema if t.declared else None,
                         compact=t.row.spec.compact, partitions=t.partitions, sticky=t.sticky,
                         key_cache=t.key_partition)
        tab, keys, ts, parts = kb.table, kb.keys, kb.timestamps, kb.partitions
        keyarr = keys if keys is not None else pa.nulls(n, pa.binary())
        full = _one_batch(tab)
        stored = add_meta(full, ts, keyarr, None)
        dead: list[tuple[str, DeadLetter]] = []
        big = oversize_rows(full, self._max_record_bytes)
        if len(big):
            for i, row in zip(big, full.take(pa.array(big)).to_pylist(), strict=True):
                dead.append((topic, DeadLetter(
                    topic, f"record over the size limit of {self._max_record_bytes} bytes",
                    raw_json(row)[:4096], key=keyarr[int(i)].as_py(),
                )))
            keep = np.ones(n, dtype=bool)
            keep[big] = False
            stored, parts = stored.filter(pa.array(keep)), parts[keep]
        out: list[tuple[_Topic, int, pa.RecordBatch]] = []
        for p, sel in _by_partition(stored, parts, t.partitions if keys is not None else 1):
            for start in range(0, sel.num_rows, max(self._batch_events, 1)):
                out.append((t, p, sel.slice(start, self._batch_events)))
        with self._drain_lock:  # buffered single records go first: per-partition order
            first = self._drain_locked()
            then = self._submit(out, dead)
        self._commit_inline(first, then)  # outside the lock: other senders queue meanwhile
        t.sticky = (t.sticky + 1) % t.partitions
        return n - len(dead)

    def send_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        if self._error is not None or self._closed:
            self._raise_state()
        if letters:
            with self._drain_lock:
                first = self._drain_locked()
                then = self._submit([], [(topic, d) for d in letters])
            self._commit_inline(first, then)

    def flush(self, timeout: float | None = None) -> None:
        """Return once everything sent before the call is committed (fsync'd by default)."""
        if self._error is not None:
            self._raise_state()
        self._drain()
        self._wait_committed(self._submitted, timeout)
        if self._error is not None:
            self._raise_state()

    def mark(self) -> int:
        """Everything sent so far, handed to the writer thread (which commits in order): no waiting."""
        if self._error is not None or self._closed:
            self._raise_state()
        self._drain()
        return self._submitted

    def is_durable(self, marker: int) -> bool:
        if self._error is not None:
            self._raise_state()
        return self._committed >= marker

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._error is None:
                self._drain()
                self._wait_committed(self._submitted, None)
        finally:
            self._closed = True
            self._wake.set()
            with self._cv:
                self._cv.notify_all()
            self._thread.join(timeout=5)
            self._writer.join(timeout=30)
            if self._encoder is not None:
                self._encoder.shutdown(wait=True)
            self._wal.close()
            self._store.close()
        if self._error is not None:
            self._raise_state()

    # ------------------------------------------------------------------ internals

    def _raise_state(self) -> None:
        if self._error is not None:
            raise ProducerError(
                f"a previous write failed, so records sent since the last successful flush were "
                f"not acknowledged: {self._error}. Create a new producer and re-send them."
            ) from self._error
        raise LogClosedError("producer is closed")

    def _load(self, topic: str) -> _Topic:
        row = self._store.topic(topic)
        t = _Topic(row, row.spec.schema, row.spec.schema is not None, row.spec.partitions)
        t.sticky = int.from_bytes(np.random.bytes(2), "little") % t.partitions
        self._topics[topic] = t
        return t

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._linger if self._linger > 0 else 0.001)
            self._wake.clear()
            if self._closed:
                break
            try:
                self._drain()
                if time.monotonic() - self._last_maintenance > self._log.maintenance_interval_s:
                    self._last_maintenance = time.monotonic()
                    self._log.maintain(list(self._topics), store=self._store)
            except BaseException as e:  # surfaced on the next send/flush: never silent
                self._error = e
                return

    def _drain(self) -> None:
        """Build batches of the buffered single records and queue them for the writer."""
        with self._drain_lock:
            work = self._drain_locked()
        self._commit_inline(work)

    def _drain_locked(self) -> Future[_Work | None] | None:
        """Queue the buffered records; returns the work the caller must pass to :meth:`_commit_inline`
        (after releasing ``_drain_lock``), if any."""
        with self._lock:
            if not self._buf:
                return None
            bufs, self._buf = self._buf, {}
            self._buffered = 0
        for name in {tp[0] for tp in bufs}:
            t = self._topics[name]
            t.sticky = (t.sticky + 1) % t.partitions
        out: list[tuple[_Topic, int, pa.RecordBatch]] = []
        dead: list[tuple[str, DeadLetter]] = []
        for (name, p), pend in bufs.items():
            t = self._topics[name]
            batch = self._build(t, p, pend, dead)
            if batch is not None:
                out.append((t, p, batch))
        try:
            return self._submit(out, dead)
        except BaseException as e:
            if self._error is None:  # a failed inline commit already kept its cause
                self._error = e
            raise

    def _build(
        self, t: _Topic, p: int, pend: _Pending, dead: list[tuple[str, DeadLetter]]
    ) -> pa.RecordBatch | None:
        name = t.row.spec.name
        batch, good, bad, schema = rows_to_batch(pend.values, t.schema, strict=t.declared)
        if batch is not None and not _RESERVED.isdisjoint(batch.schema.names):
            return self._build_without_reserved(t, p, pend, dead)
        if not t.declared:
            t.schema = schema
        for i, err in bad:
            dead.append((name, DeadLetter(name, err, raw_json(pend.values[i]), key=pend.keys[i])))
        if batch is None:
            return None
        if len(good) == len(pend.values):
            ts, keys, hdrs = pend.ts, pend.keys, pend.headers
        else:
            ts = [pend.ts[i] for i in good]
            keys = [pend.keys[i] for i in good]
            hdrs = None if pend.headers is None else [pend.headers[i] for i in good]
        stored = add_meta(batch, np.asarray(ts, dtype=np.int64), keys, hdrs)
        big = oversize_rows(batch, self._max_record_bytes)
        if len(big):
            for i in big:
                dead.append((name, DeadLetter(
                    name, f"record over the size limit of {self._max_record_bytes} bytes",
                    raw_json(pend.values[good[i]])[:4096], key=keys[i],
                )))
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[big] = False
            stored = stored.filter(pa.array(keep))
        return stored if stored.num_rows else None

    def _build_without_reserved(
        self, t: _Topic, p: int, pend: _Pending, dead: list[tuple[str, DeadLetter]]
    ) -> pa.RecordBatch | None:
        """Dead-letter the records using metadata field names (``_key``...), build the rest."""
        name = t.row.spec.name
        rest = _Pending(headers=None if pend.headers is None else [])
        for i, v in enumerate(pend.values):
            clash = sorted(_RESERVED.intersection(v))
            if clash:
                err = f"field names {clash} are reserved for record metadata; rename them"
                dead.append((name, DeadLetter(name, err, raw_json(v), key=pend.keys[i])))
                continue
            rest.values.append(v)
            rest.keys.append(pend.keys[i])
            rest.ts.append(pend.ts[i])
            if rest.headers is not None and pend.headers is not None:
                rest.headers.append(pend.headers[i])
        return self._build(t, p, rest, dead) if rest.values else None

    def _submit(
        self, out: list[tuple[_Topic, int, pa.RecordBatch]], dead: list[tuple[str, DeadLetter]]
    ) -> Future[_Work | None] | None:
        """Encode batches (see :data:`ASYNC_ENCODE_ROWS`) and queue them for the writer thread.

        Returns the work instead when the caller is to commit it inline (see :data:`INLINE_COMMIT_ROWS`): it
        must pass it to :meth:`_commit_inline` at once, after releasing ``_drain_lock``, as the writer and every
        later submit wait for it.
        """
        if not out and not dead:
            return None
        work = self._encode_later(out, dead)
        small = bool(dead) or sum(b.num_rows for _, _, b in out) < INLINE_COMMIT_ROWS
        with self._cv:
            while len(self._queue) >= _MAX_QUEUED and self._error is None:
                self._cv.wait(0.1)
            if self._error is not None:
                self._raise_state()
            self._submitted += 1
            if not (small and not self._writing and not self._queue):
                self._queue.append(work)
                self._cv.notify_all()
                return None
            self._writing = True  # the writer waits for us; later submits queue behind this one: order kept
        return work

    def _commit_inline(self, *works: Future[_Work | None] | None) -> None:
        """Commit what :meth:`_submit` handed back, on the caller's thread (see :data:`INLINE_COMMIT_ROWS`).

        A failure is kept exactly like a writer-thread failure: this call returns, and the next send, ``flush``,
        ``is_durable`` or ``close`` raises it (the contract callers already handle).
        """
        for work in works:
            if work is not None:
                self._commit_works([work])

    def _commit_works(self, pending: list[Future[_Work | None]]) -> bool:
        """Resolve ``pending`` (the writer's queue, or one inline submit), write it in one transaction and count
        it; a failure is kept for the next send/flush (never silent) and gives False."""
        try:
            works = [w for w in (f.result() for f in pending) if w is not None]
            self._write(works)
        except BaseException as e:
            err = self._store.storage_error(e, "appending batches") if isinstance(e, sqlite3.Error) else e
            with self._cv:
                self._error = err
                self._writing = False
                self._cv.notify_all()
            return False
        with self._cv:
            self._produced += sum(w.produced for w in works)
            self._dead += sum(w.dead for w in works)
            self._committed += len(pending)
            self._writing = False
            self._cv.notify_all()
        return True

    def _write(self, works: list[_Work]) -> None:
        """Append the works' batches in one transaction, then count the bytes for the WAL checkpointer."""
        if works:
            with self._store.write() as con:
                for work in works:
                    for tid, p, enc in work.items:
                        self._store.append(con, tid, p, enc)
        self._wal.appended(sum(len(enc.payload) for work in works for _, _, enc in work.items))
        if self._wal.error is not None:
            raise self._store.storage_error(self._wal.error, "checkpointing the WAL")

    def _encode_later(
        self, out: list[tuple[_Topic, int, pa.RecordBatch]], dead: list[tuple[str, DeadLetter]]
    ) -> Future[_Work | None]:
        """:meth:`_encode` on the encoder thread for big submits, inline for small ones and dead letters.

        The futures are resolved in submission order (by the writer thread, or by a transaction's commit), so
        per-partition order is kept; an encoding error surfaces there like a write error.
        """
        if dead or sum(b.num_rows for _, _, b in out) < ASYNC_ENCODE_ROWS:
            done: Future[_Work | None] = Future()
            done.set_result(self._encode(out, dead))  # dead letters may create their topic: this thread
            return done
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="everstream-encode")
        return self._encoder.submit(self._encode, out, dead)

    def _encode(
        self, out: list[tuple[_Topic, int, pa.RecordBatch]], dead: list[tuple[str, DeadLetter]]
    ) -> _Work | None:
        """Encoded batches (dead letters routed to their topics, created when missing), or None."""
        items = [
            (t.row.id, p, batchcodec.encode(b, t.row.spec.compression)) for t, p, b in out if b.num_rows
        ]
        produced = sum(enc.count for _, _, enc in items)
        if dead:
            stamp = now_ms()
            by_topic = {
                name: [d for n, d in dead if n == name] for name in dict.fromkeys(n for n, _ in dead)
            }
            for name, letters in by_topic.items():
                row = self._store.find_topic(dead_letter_topic(name)) or self._store.create_topic(
                    TopicSpec(dead_letter_topic(name), 1, schema=DEAD_LETTER_SCHEMA), exist_ok=True
                )
                items.append((row.id, 0, batchcodec.encode(dead_letter_batch(letters, stamp))))
        if not items:
            return None
        return _Work(items, produced, len(dead))

    def _wait_committed(self, target: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._committed < target and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ProducerError(
                        f"flush timed out after {timeout} s with {target - self._committed} commit(s) pending"
                    )
                self._cv.wait(0.1 if left is None else min(left, 0.1))

    def _write_loop(self) -> None:
        """The writer thread: commit everything queued in one transaction, repeatedly."""
        while True:
            with self._cv:
                while not self._queue or self._writing:  # an inline commit in flight goes first
                    if self._closed and not self._queue:
                        return
                    self._cv.wait(0.1)
                if self._error is not None:  # an inline commit failed: nothing after it may be written
                    return
                pending = list(self._queue)
                self._queue.clear()
                self._writing = True
            if not self._commit_works(pending):
                return


def _one_batch(tab: pa.Table) -> pa.RecordBatch:
    """``tab`` as one record batch: zero-copy when every column is one chunk (one call, not one per column)."""
    batches = tab.to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_arrays(
        [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in tab.columns], schema=tab.schema
    )


def _by_partition(
    stored: pa.RecordBatch, parts: np.ndarray, partitions: int
) -> list[tuple[int, pa.RecordBatch]]:
    """``stored``'s rows per partition (``parts[i]`` is row i's), in row order within each partition.

    One stable reorder (``take``) and zero-copy slices: a ``filter`` per partition would cost one call per
    column per partition (~0.2 ms each for a 40-column batch).
    """
    if partitions == 1 or len(parts) == 0 or (parts == parts[0]).all():
        return [(int(parts[0]), stored)] if len(parts) else []
    counts = np.bincount(parts, minlength=partitions)
    order = np.argsort(parts, kind="stable")
    grouped = stored.take(pa.array(order))
    out: list[tuple[int, pa.RecordBatch]] = []
    start = 0
    for p in np.flatnonzero(counts).tolist():
        c = int(counts[p])
        out.append((p, grouped.slice(start, c)))
        start += c
    return out
