"""The Apache Kafka log: the same ``Log`` contract as the embedded log, on a Kafka cluster."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from everstream.errors import BrokerError, ConfigError, UnknownTopicError
from everstream.log.contract import DEFAULT_MAX_RECORD_BYTES, Log, StartAt, TopicInfo, TopicSpec, check_topic_name
from everstream.log.kafka.admin import KafkaAdmin
from everstream.log.kafka.client import check_bootstrap
from everstream.log.kafka.consumer import KafkaConsumer
from everstream.log.kafka.producer import KafkaProducer
from everstream.log.kafka.transaction import KafkaTransactionalProducer

DEFAULT_TIMEOUT_S = 10.0


class KafkaLog(Log):
    """Topics, producers and consumers on Apache Kafka (``bootstrap``: ``host:port[,host:port]``).

    - ``replication_factor``: of topics created here (default: min(3, brokers));
    - ``compression``: the producers' codec (lz4, zstd or none); a topic's own ``compression``
      is its Kafka ``compression.type``, which the broker applies when it stores batches;
    - ``timeout_s`` (env ``EVERSTREAM_KAFKA_TIMEOUT``, default 10): bound of every administrative
      call, and of the first contact: an unreachable broker raises
      :class:`~everstream.errors.BrokerError` within it;
    - ``client_config``: extra librdkafka settings for every client (e.g. SASL/SSL).

    The wire format, the schema topic and the transaction API are described in
    :mod:`everstream.log.kafka`.
    """

    kind = "kafka"

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        replication_factor: int | None = None,
        compression: Literal["lz4", "zstd", "none"] = "lz4",
        timeout_s: float | None = None,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        raw = bootstrap if bootstrap is not None else os.environ.get("EVERSTREAM_BROKER", "")
        self.bootstrap = check_bootstrap(raw)
        if compression not in ("lz4", "zstd", "none"):
            raise ConfigError(f"compression {compression!r}: use lz4, zstd or none")
        if timeout_s is None:
            env = os.environ.get("EVERSTREAM_KAFKA_TIMEOUT", "")
            try:
                timeout_s = float(env) if env else DEFAULT_TIMEOUT_S
            except ValueError as e:
                raise ConfigError(f"EVERSTREAM_KAFKA_TIMEOUT={env!r}: give seconds, e.g. 10") from e
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
        self.compression = compression
        self.timeout = float(timeout_s)
        self.client_config: dict[str, Any] = dict(client_config or {})
        self.admin = KafkaAdmin(self.bootstrap, self.client_config, self.timeout, replication_factor, compression)
        self._closed = False

    def __repr__(self) -> str:
        return f"KafkaLog({self.bootstrap!r})"

    # ------------------------------------------------------------------ topics

    def create_topic(self, spec: TopicSpec, exist_ok: bool = False, replication_factor: int | None = None) -> TopicInfo:
        return self.admin.create(spec, exist_ok, replication_factor)

    def delete_topic(self, name: str) -> None:
        self.admin.delete(name)

    def list_topics(self) -> list[TopicInfo]:
        names = self.admin.names()
        if not names:
            return []
        try:
            return self.admin.describe(names)
        except (UnknownTopicError, BrokerError):
            # Kafka deletes topics asynchronously: one listed a moment ago may have no partitions left by
            # the time its offsets are read. Describe one by one and leave out the ones that are gone.
            out = []
            for name in names:
                try:
                    out += self.admin.describe([name])
                except (UnknownTopicError, BrokerError):
                    if self.admin.exists(name):
                        raise
            return out

    def describe_topic(self, name: str) -> TopicInfo:
        check_topic_name(name)
        return self.admin.describe([name])[0]

    def has_topic(self, name: str) -> bool:
        check_topic_name(name)
        return self.admin.exists(name)

    # ------------------------------------------------------------------ clients

    def producer(
        self,
        *,
        linger_ms: float = 5.0,
        batch_events: int = 10_000,
        max_buffered: int = 500_000,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        delivery_timeout_ms: int = 120_000,
        transactional_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> KafkaProducer:
        """An idempotent producer (acks=all); with ``transactional_id``, a transactional one."""
        opts: dict[str, Any] = {
            "linger_ms": linger_ms, "batch_events": batch_events, "max_buffered": max_buffered,
            "max_record_bytes": max_record_bytes, "delivery_timeout_ms": delivery_timeout_ms, "config": config,
        }
        if transactional_id is not None:
            return KafkaTransactionalProducer(self, transactional_id, **opts)
        return KafkaProducer(self, **opts)

    def transactional_producer(self, transactional_id: str, **kwargs: Any) -> KafkaTransactionalProducer:
        """A producer whose records and consumer offsets commit atomically (begin/commit/abort)."""
        return KafkaTransactionalProducer(self, transactional_id, **kwargs)

    def consumer(
        self,
        group: str | None = None,
        *,
        start: StartAt = "earliest",
        auto_commit: bool = False,
        session_timeout_ms: int = 10_000,
        heartbeat_ms: int = 1_000,
        max_poll_records: int = 500_000,
        isolation: str = "read_committed",
        config: Mapping[str, Any] | None = None,
        string_views: bool = False,
    ) -> KafkaConsumer:
        return KafkaConsumer(
            self, group, start, auto_commit, session_timeout_ms, heartbeat_ms, max_poll_records, isolation, config,
            string_views,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.admin.close()
