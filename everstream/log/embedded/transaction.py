"""Transactions on the embedded log: records to many topics + group offsets in one SQLite commit.

:class:`EmbeddedTransactionalProducer` reuses the embedded producer's batching (per-partition
buffers, schema checks, oversize rows to dead letters, encoding in the caller's thread), but
instead of queueing encoded batches for the group-commit writer it keeps them in memory until
``commit()``. ``commit()`` then runs one ``BEGIN IMMEDIATE`` transaction that

1. checks the producer's epoch in the ``producers`` table (fencing),
2. appends every buffered batch (``txn`` column = the transactional id, for provenance),
3. writes the consumer-group offsets given to ``send_offsets``,

and commits (fsync'd with ``durability="fsync"``). Nothing of a transaction is in the database
before that commit, so every consumer is "read committed" by construction and an abort (or a
crash) leaves no trace.

Fencing: creating a producer bumps the epoch stored for its transactional id; a commit whose
epoch is no longer the stored one raises :class:`ProducerFencedError` and writes nothing: a
zombie (a task presumed dead that carries on) can never overwrite its successor's results.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from everstream.errors import (
    CommitFailedError,
    ConfigError,
    ProducerError,
    ProducerFencedError,
)
from everstream.log.contract import Consumer, Key, TopicPartition, TransactionalProducer
from everstream.log.embedded.producer import EmbeddedProducer, _Topic, _Work
from everstream.log.embedded.store import now_ms
from everstream.log.records import DeadLetter

if TYPE_CHECKING:
    from everstream.log.embedded.log import EmbeddedLog


class EmbeddedTransactionalProducer(EmbeddedProducer, TransactionalProducer):
    """Buffers a transaction's batches and offsets in memory; ``commit()`` writes them in one SQLite commit."""

    def __init__(self, log: EmbeddedLog, transactional_id: str, *, linger_ms: float = 5.0,
                 batch_events: int = 10_000, max_buffered: int = 500_000, max_record_bytes: int = 1 << 20) -> None:
        if not transactional_id or not isinstance(transactional_id, str):
            raise ConfigError(f"transactional_id {transactional_id!r}: give a stable, non-empty name per task")
        self.transactional_id = transactional_id
        self._in_txn = False
        self._fenced = False
        self._txn_works: list[Future[_Work | None]] = []  # encoded (or being encoded) in submission order
        # (group, topic id, partition) -> (offset, member id holding the lease or None)
        self._txn_offsets: dict[tuple[str, int, int], tuple[int, str | None]] = {}
        super().__init__(log, linger_ms, batch_events, max_buffered, max_record_bytes)
        try:
            with self._store.write() as con:
                row = con.execute("SELECT epoch FROM producers WHERE transactional_id = ?",
                                  (transactional_id,)).fetchone()
                self.epoch = 0 if row is None else int(row[0]) + 1
                con.execute("INSERT OR REPLACE INTO producers (transactional_id, epoch) VALUES (?, ?)",
                            (transactional_id, self.epoch))
        except sqlite3.Error as e:
            super().close()
            raise self._store.storage_error(e, f"registering transactional id {transactional_id!r}") from e

    # ------------------------------------------------------------------ transactions

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def begin(self) -> None:
        self._check_usable()
        if self._in_txn:
            raise ProducerError(f"transactional producer {self.transactional_id!r}: a transaction is already open")
        self._in_txn = True

    def send_offsets(self, consumer: Consumer | str, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._check_txn()
        member: str | None = None
        if isinstance(consumer, str):
            group = consumer
            if offsets is None:
                raise ConfigError(f"send_offsets({group!r}): give the offsets to commit for a group name")
            todo = dict(offsets)
        else:
            group_of = getattr(consumer, "group", None)
            if not group_of:
                raise ConfigError("send_offsets(consumer): the consumer has no group; "
                                  "create it with log.consumer(group)")
            group = str(group_of)
            if offsets is None:
                todo = {tp: consumer.position(*tp) for tp in consumer.assignment()}
            else:
                todo = dict(offsets)
            if getattr(consumer, "_subscribed", False):  # group member: only partitions it holds a lease on
                member = str(consumer.member_id)  # type: ignore[attr-defined]
        for (topic, part), off in todo.items():
            t = self._topics.get(topic) or self._load(topic)
            if not 0 <= part < t.partitions:
                raise ConfigError(f"send_offsets: topic {topic!r} has partitions 0..{t.partitions - 1}; got {part}")
            self._txn_offsets[(group, t.row.id, int(part))] = (int(off), member)

    def commit(self, timeout: float | None = None) -> None:
        self._check_txn()
        with self._drain_lock:
            self._drain_locked()
            offsets = self._txn_offsets
            try:
                works = [w for w in (f.result() for f in self._txn_works) if w is not None]
            except Exception as e:  # an encoding failure: nothing of the transaction is written
                self._reset_txn()
                raise ProducerError(
                    f"transactional producer {self.transactional_id!r}: encoding a batch of the transaction "
                    f"failed ({e}); the transaction was discarded, nothing of it is visible"
                ) from e
            items = [item for w in works for item in w.items]
            try:
                with self._store.write() as con:
                    row = con.execute("SELECT epoch FROM producers WHERE transactional_id = ?",
                                      (self.transactional_id,)).fetchone()
                    if row is None or int(row[0]) != self.epoch:
                        self._fenced = True
                        raise ProducerFencedError(
                            f"transactional producer {self.transactional_id!r} (epoch {self.epoch}) was fenced: "
                            f"a newer instance with the same id (epoch {None if row is None else row[0]}) took "
                            "over. This transaction was discarded, nothing of it is visible; close this producer "
                            "(its task runs elsewhere now)."
                        )
                    for tid, p, enc in items:
                        self._store.append(con, tid, p, enc, txn=self.transactional_id)
                    stamp = now_ms()
                    for (group, tid, p), (off, member) in offsets.items():
                        if member is not None:
                            lease = con.execute(
                                "SELECT member_id FROM group_leases WHERE group_id = ? AND topic_id = ? "
                                "AND partition = ?", (group, tid, p)).fetchone()
                            if lease is None or lease[0] != member:
                                raise CommitFailedError(
                                    f"transactional producer {self.transactional_id!r}: group {group!r} no longer "
                                    f"holds topic #{tid} partition {p} (reassigned after a missed heartbeat); the "
                                    "transaction was discarded, the new owner re-reads those records"
                                )
                        con.execute("INSERT OR REPLACE INTO group_offsets VALUES (?, ?, ?, ?, ?)",
                                    (group, tid, p, off, stamp))
            except sqlite3.Error as e:
                self._reset_txn()
                raise self._store.storage_error(e, f"committing transaction of {self.transactional_id!r}") from e
            except BaseException:
                self._reset_txn()
                raise
            self._produced += sum(w.produced for w in works)
            self._wal.appended(sum(len(enc.payload) for _, _, enc in items))  # checkpoint off-path
            self._dead += sum(w.dead for w in works)
            self._reset_txn()

    def abort(self, timeout: float | None = None) -> None:
        if not self._in_txn:
            return
        with self._drain_lock:
            with self._lock:
                self._buf = {}
                self._buffered = 0
            self._reset_txn()

    def _reset_txn(self) -> None:
        for f in self._txn_works:  # an abandoned transaction: let queued encodes go, wait for none
            f.cancel()
        self._txn_works, self._txn_offsets = [], {}
        self._in_txn = False

    # ------------------------------------------------------------------ producer overrides

    def send(self, topic: str, value: Mapping[str, Any] | Any, key: Key = None,
             timestamp: int | float | datetime | None = None,
             headers: Mapping[str, str | bytes] | None = None) -> None:
        self._check_txn()
        super().send(topic, value, key, timestamp, headers)

    def send_batch(self, topic: str, table: Any, key: str | pa.Array | pa.ChunkedArray | None = None,
                   timestamp: str | pa.Array | None = None) -> int:
        self._check_txn()
        return super().send_batch(topic, table, key, timestamp)

    def send_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        self._check_txn()
        super().send_dead_letters(topic, letters)

    def flush(self, timeout: float | None = None) -> None:
        """Build batches of buffered records into the open transaction (visible only at commit)."""
        if self._error is not None:
            self._raise_state()
        self._drain()

    def mark(self) -> int:
        raise ProducerError(
            f"transactional producer {self.transactional_id!r}: records become durable at commit(), not "
            "through mark()/is_durable(); commit the transaction instead"
        )

    def close(self) -> None:
        """Discard an open transaction (never commit on close) and release the producer."""
        if self._closed:
            return
        self.abort()
        super().close()

    def _submit(self, out: list[tuple[_Topic, int, pa.RecordBatch]], dead: list[tuple[str, DeadLetter]]) -> None:
        """Keep the batches, encoding on the encoder thread, for the commit instead of the writer thread."""
        if not out and not dead:
            return
        if not self._in_txn:  # the linger thread found records of a transaction aborted meanwhile
            return
        self._txn_works.append(self._encode_later(out, dead))

    def _wait_committed(self, target: int, timeout: float | None) -> None:
        return None  # nothing is queued for the writer thread

    def _check_usable(self) -> None:
        if self._fenced:
            raise ProducerFencedError(
                f"transactional producer {self.transactional_id!r} was fenced by a newer instance with the same "
                "id; close it"
            )
        if self._error is not None or self._closed:
            self._raise_state()

    def _check_txn(self) -> None:
        self._check_usable()
        if not self._in_txn:
            raise ProducerError(
                f"transactional producer {self.transactional_id!r}: call begin() before sending "
                "(or use `with producer.transaction():`)"
            )


__all__ = ["EmbeddedTransactionalProducer"]
