"""The embedded log: a data directory with one SQLite database, shared by many processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from everstream.log.contract import Log, StartAt, TopicInfo, TopicSpec
from everstream.log.embedded import maintenance
from everstream.log.embedded.consumer import EmbeddedConsumer
from everstream.log.embedded.producer import EmbeddedProducer
from everstream.log.embedded.store import Durability, Store
from everstream.log.embedded.transaction import EmbeddedTransactionalProducer

DEFAULT_DATA_DIR = "./everstream-data"


def default_data_dir() -> Path:
    return Path(os.environ.get("EVERSTREAM_DATA") or DEFAULT_DATA_DIR)


class EmbeddedLog(Log):
    """The default backplane: durable topics in ``data_dir`` (env ``EVERSTREAM_DATA``).

    ``durability="fsync"`` (default) fsyncs every commit; ``"relaxed"`` survives a process crash
    but may lose the last commits on power loss, and is faster.
    """

    kind = "embedded"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        durability: Durability = "fsync",
        maintenance_interval_s: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.durability = durability
        self.maintenance_interval_s = maintenance_interval_s
        self._store = Store(self.data_dir, durability)

    def __repr__(self) -> str:
        return f"EmbeddedLog({str(self.data_dir)!r}, durability={self.durability!r})"

    def create_topic(self, spec: TopicSpec, exist_ok: bool = False) -> TopicInfo:
        return self._store.topic_info(self._store.create_topic(spec, exist_ok))

    def delete_topic(self, name: str) -> None:
        self._store.delete_topic(name)

    def list_topics(self) -> list[TopicInfo]:
        return [self._store.topic_info(r) for r in self._store.topics()]

    def describe_topic(self, name: str) -> TopicInfo:
        return self._store.topic_info(self._store.topic(name))

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to this log (any producer, a consumer's
        offset commit, another process; not this object's own topic admin): a cheap check (no I/O, ~10 us)
        before reading topic ends or records again."""
        return self._store.data_version()

    def has_topic(self, name: str) -> bool:
        return self._store.find_topic(name) is not None

    def producer(
        self,
        *,
        linger_ms: float = 5.0,
        batch_events: int = 10_000,
        max_record_bytes: int = 1 << 20,
        max_buffered: int = 500_000,
    ) -> EmbeddedProducer:
        return EmbeddedProducer(self, linger_ms, batch_events, max_buffered, max_record_bytes)

    def transactional_producer(self, transactional_id: str, **kwargs: Any) -> EmbeddedTransactionalProducer:
        """Records + group offsets committed in one SQLite transaction; fences older instances of the id.

        Options as for :meth:`producer` (``linger_ms``, ``batch_events``, ``max_record_bytes``,
        ``max_buffered``).
        """
        return EmbeddedTransactionalProducer(self, transactional_id, **kwargs)

    def consumer(
        self,
        group: str | None = None,
        *,
        start: StartAt = "earliest",
        auto_commit: bool = False,
        session_timeout_ms: int = 10_000,
        heartbeat_ms: int = 1_000,
        max_poll_records: int = 500_000,
        string_views: bool = False,
    ) -> EmbeddedConsumer:
        return EmbeddedConsumer(
            self, group, start, auto_commit, session_timeout_ms, heartbeat_ms, max_poll_records, string_views
        )

    def maintain(self, topics: list[str] | None = None, store: Store | None = None) -> dict[str, int]:
        """Apply retention and compaction now; returns records/batches removed per topic."""
        st = store or self._store
        rows = st.topics() if topics is None else [r for r in (st.find_topic(t) for t in topics) if r]
        done: dict[str, int] = {}
        for row in rows:
            n = maintenance.enforce_retention(st, row) + maintenance.compact(st, row)
            if n:
                done[row.spec.name] = n
        return done

    def check(self, repair: bool = False) -> tuple[int, list[maintenance.Damage]]:
        """Verify every stored batch; see :func:`maintenance.check`."""
        return maintenance.check(self._store, repair)

    def close(self) -> None:
        self._store.close()
