"""The ``Log`` contract: what every log (embedded, Apache Kafka) offers the rest of everstream.

A log holds topics; a topic has N partitions; a partition is an ordered sequence of records with
dense offsets. Records are rows of Arrow record batches. When a consumer polls, every batch it
returns carries the user's columns plus the metadata columns named in :data:`META_COLUMNS`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias

import pyarrow as pa

from everstream.errors import ConfigError

if TYPE_CHECKING:
    from everstream.log.records import DeadLetter

#: Metadata columns added to every polled batch (and reserved: user fields may not use them).
TOPIC_COL = "_topic"
PARTITION_COL = "_partition"
OFFSET_COL = "_offset"
TIMESTAMP_COL = "_timestamp"
KEY_COL = "_key"
HEADERS_COL = "_headers"
META_COLUMNS = (TOPIC_COL, PARTITION_COL, OFFSET_COL, TIMESTAMP_COL, KEY_COL, HEADERS_COL)

TIMESTAMP_TYPE = pa.timestamp("ms", tz="UTC")
HEADERS_TYPE = pa.map_(pa.string(), pa.binary())

#: Where a consumer starts when its group has no committed offset (or it has no group).
StartAt: TypeAlias = Literal["earliest", "latest"] | int | datetime
Key: TypeAlias = str | bytes | int | None
TopicPartition: TypeAlias = tuple[str, int]

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

DEFAULT_MAX_RECORD_BYTES = 1 << 20


def check_topic_name(name: str) -> str:
    """Return ``name`` if it is a legal topic name (Kafka's rules), else raise ConfigError."""
    if not isinstance(name, str) or not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise ConfigError(
            f"invalid topic name {name!r}: use 1-249 characters from a-z A-Z 0-9 . _ - "
            "(the same rule as Apache Kafka)"
        )
    return name


def check_partitions(partitions: int) -> int:
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise ConfigError(f"invalid partition count {partitions!r}: a topic needs at least 1")
    if partitions > 10_000:
        raise ConfigError(f"invalid partition count {partitions}: at most 10000 are supported")
    return partitions


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return f"{topic}.dlq"


@dataclass(frozen=True)
class TopicSpec:
    """How a topic is configured when it is created."""

    name: str
    partitions: int = 1
    compact: bool = False
    retention_ms: int | None = None
    retention_bytes: int | None = None
    schema: pa.Schema | None = None
    compression: Literal["lz4", "zstd", "none"] = "lz4"

    def __post_init__(self) -> None:
        check_topic_name(self.name)
        check_partitions(self.partitions)
        if self.retention_ms is not None and self.retention_ms <= 0:
            raise ConfigError(f"topic {self.name!r}: retention must be positive, got {self.retention_ms} ms")
        if self.retention_bytes is not None and self.retention_bytes <= 0:
            raise ConfigError(f"topic {self.name!r}: retention bytes must be positive")
        if self.compression not in ("lz4", "zstd", "none"):
            raise ConfigError(f"topic {self.name!r}: compression must be lz4, zstd or none")
        if self.schema is not None:
            clash = [f for f in self.schema.names if f in META_COLUMNS]
            if clash:
                raise ConfigError(
                    f"topic {self.name!r}: field names {clash} are reserved for record metadata; rename them"
                )


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    start_offset: int
    end_offset: int  # next offset to be written
    bytes: int = 0

    @property
    def records(self) -> int:
        return self.end_offset - self.start_offset


@dataclass(frozen=True)
class TopicInfo:
    spec: TopicSpec
    partitions: tuple[PartitionInfo, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {
            "name": s.name,
            "partitions": s.partitions,
            "compact": s.compact,
            "retention_ms": s.retention_ms,
            "retention_bytes": s.retention_bytes,
            "compression": s.compression,
            "schema": None if s.schema is None else {f.name: str(f.type) for f in s.schema},
            "records": sum(p.records for p in self.partitions),
            "bytes": sum(p.bytes for p in self.partitions),
            "partition_offsets": [
                {"partition": p.partition, "start": p.start_offset, "end": p.end_offset, "bytes": p.bytes}
                for p in self.partitions
            ],
        }


class Closeable(ABC):
    """Something to close; usable as a context manager."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Producer(Closeable):
    """Buffers records into batches and writes them to the log.

    ``send`` returns at once; records become durable when ``flush`` returns (or a linger tick
    has written them). A failed background write is raised by the next ``send`` or ``flush``.
    """

    @abstractmethod
    def send(
        self,
        topic: str,
        value: Mapping[str, Any] | Any,
        key: Key = None,
        timestamp: int | float | datetime | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Buffer one record. ``value`` is a mapping, a dataclass or a pydantic model."""

    @abstractmethod
    def send_batch(
        self,
        topic: str,
        table: Any,
        key: str | pa.Array | pa.ChunkedArray | None = None,
        timestamp: str | pa.Array | None = None,
    ) -> int:
        """Write an Arrow/Polars/pandas table; returns the rows written (oversize rows: dead letters).

        ``key`` names the key column or is an array of keys (binary, string or integer);
        ``timestamp`` names the event-time column (timestamps or epoch ms) or is an array of
        epoch ms; records get the current time without it.
        """

    @abstractmethod
    def send_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        """Write records that could not be taken to ``<topic>.dlq`` (created when missing)."""

    @abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Return once every record sent so far is durable (per the log's durability policy)."""

    def mark(self) -> int:
        """A marker for everything sent so far; :meth:`is_durable` says, without waiting, when all of it is.

        Lets an at-least-once caller commit input offsets once their outputs are durable while it carries on
        (pipelined commits). This default flushes, so the marker is durable at once; a log whose writes
        complete in order (the embedded log's writer thread) returns without waiting.
        """
        self.flush()
        return 0

    def is_durable(self, marker: int) -> bool:
        """Whether everything sent before :meth:`mark` returned ``marker`` is durable (raises if a write failed)."""
        return True

    @property
    @abstractmethod
    def dead_letters(self) -> int:
        """Records this producer diverted to dead-letter topics (schema mismatch, oversize)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources."""


class TransactionalProducer(Producer):
    """A producer whose records, and consumer-group offsets, become visible atomically or not at all.

    ::

        tx = log.transactional_producer("app-task-0")   # fences older instances with this id
        tx.begin()
        tx.send_batch("out", table)                     # to any number of topics
        tx.send_offsets(consumer)                       # input positions (or a group name + offsets)
        tx.commit()                                     # or tx.abort(); `with tx.transaction():` does both

    Consumers see only committed records. Creating a second producer with the same
    ``transactional_id`` bumps its epoch: the older one's ``commit`` (and further calls) raise
    :class:`~everstream.errors.ProducerFencedError`, so a zombie task cannot write.
    """

    transactional_id: str

    @abstractmethod
    def begin(self) -> None:
        """Open a transaction; every send until commit/abort belongs to it."""

    @abstractmethod
    def send_offsets(self, consumer: Consumer | str, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (next offset to read) of a consumer group with this transaction.

        ``consumer``: a consumer in a group (its positions by default), or the group's name
        (then ``offsets`` is required).
        """

    @abstractmethod
    def commit(self, timeout: float | None = None) -> None:
        """Make the transaction's records and offsets visible at once."""

    @abstractmethod
    def abort(self, timeout: float | None = None) -> None:
        """Discard the open transaction (no-op without one)."""

    @property
    @abstractmethod
    def in_transaction(self) -> bool: ...

    def transaction(self) -> _TransactionScope:
        """``with tx.transaction(): ...`` begins, then commits (or aborts on an exception)."""
        return _TransactionScope(self)


class _TransactionScope:
    def __init__(self, producer: TransactionalProducer) -> None:
        self._p = producer

    def __enter__(self) -> TransactionalProducer:
        self._p.begin()
        return self._p

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self._p.commit()
        else:
            self._p.abort()


class Consumer(Closeable):
    """Reads record batches from topic partitions, alone or as a member of a consumer group."""

    @abstractmethod
    def subscribe(self, topics: Sequence[str]) -> None:
        """Join the group for these topics; partitions are shared among the group's members."""

    @abstractmethod
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (no group membership)."""

    @abstractmethod
    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer reads now."""

    @abstractmethod
    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[pa.RecordBatch]:
        """Return the next record batches (possibly empty after ``timeout`` seconds)."""

    @abstractmethod
    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` on the next poll."""

    @abstractmethod
    def seek_to_timestamp(self, timestamp: int | datetime) -> None:
        """Move every assigned partition to its first record at or after ``timestamp`` (ms)."""

    @abstractmethod
    def position(self, topic: str, partition: int) -> int:
        """The next offset this consumer will read from the partition."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit the group's offsets (next offset to read); default: the current positions."""

    @abstractmethod
    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset for the partition, or None."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group and release resources."""


class Log(Closeable):
    """A partitioned, durable, append-only log: topics, producers, consumers."""

    #: "embedded" or "kafka"
    kind: str

    @abstractmethod
    def create_topic(self, spec: TopicSpec, exist_ok: bool = False) -> TopicInfo: ...

    @abstractmethod
    def delete_topic(self, name: str) -> None: ...

    @abstractmethod
    def list_topics(self) -> list[TopicInfo]: ...

    @abstractmethod
    def describe_topic(self, name: str) -> TopicInfo: ...

    def has_topic(self, name: str) -> bool:
        return any(t.name == name for t in self.list_topics())

    @abstractmethod
    def producer(
        self,
        *,
        linger_ms: float = 5.0,
        batch_events: int = 10_000,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> Producer:
        """A producer; records over ``max_record_bytes`` go to the topic's dead-letter topic."""

    def transactional_producer(self, transactional_id: str, **kwargs: Any) -> TransactionalProducer:
        """A transactional producer (see :class:`TransactionalProducer`); one id per task."""
        raise ConfigError(f"the {type(self).__name__} log has no transactions")

    @abstractmethod
    def consumer(
        self,
        group: str | None = None,
        *,
        start: StartAt = "earliest",
        auto_commit: bool = False,
        session_timeout_ms: int = 10_000,
        heartbeat_ms: int = 1_000,
        string_views: bool = False,
    ) -> Consumer:
        """A consumer, in ``group`` when given (then ``subscribe``), else ``assign`` partitions.

        ``string_views``: string and binary columns come as Arrow ``string_view``/``binary_view`` (same
        values; what Polars uses, so a stream engine converts them without copying)."""

    @abstractmethod
    def close(self) -> None: ...
