"""Topic administration on Kafka: create, list, describe, delete (AdminClient + schema registry)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from everstream.errors import BrokerError, ConfigError, TopicExistsError, UnknownTopicError
from everstream.log.contract import PartitionInfo, TopicInfo, TopicSpec, check_topic_name
from everstream.log.kafka.client import UNKNOWN_TOPIC, base_config, describe, error_of, is_retriable, unreachable
from everstream.log.kafka.codec import check_encodable
from everstream.log.kafka.registry import SCHEMAS_TOPIC, SchemaEntry, SchemaRegistry

#: Kafka's "no limit" for message.timestamp.after.max.ms (the broker default rejects event
#: times more than an hour ahead; the embedded log takes any timestamp).
_NO_LIMIT = str(2**63 - 1)
_COMPRESSION_TO_KAFKA = {"lz4": "lz4", "zstd": "zstd", "none": "uncompressed"}
_COMPRESSION_FROM_KAFKA = {"lz4": "lz4", "zstd": "zstd", "uncompressed": "none"}


def is_internal(name: str) -> bool:
    """Topics hidden from listings: Kafka's own (``__consumer_offsets``) and ours (``_everstream_*``)."""
    return name.startswith("_")


@dataclass(frozen=True)
class TopicMeta:
    """What producers and consumers need to know about a topic."""

    spec: TopicSpec
    topic_id: str
    observed: pa.Schema | None = None  # no declared schema: the types producers wrote so far


class KafkaAdmin:
    """Topic administration for one cluster."""

    def __init__(
        self, bootstrap: str, extra: dict[str, Any], timeout_s: float, replication_factor: int | None,
        default_compression: str = "lz4",
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout_s
        self.client = AdminClient(base_config(bootstrap, extra))
        self._default_compression = default_compression
        try:
            md = self.client.list_topics(timeout=timeout_s)
        except KafkaException as e:
            raise unreachable(bootstrap, timeout_s, e) from e
        self.brokers = max(len(md.brokers), 1)
        self._broker_ids = sorted(md.brokers)
        self._broker_config: dict[str, str | None] | None = None
        self._lock = threading.Lock()
        if replication_factor is not None and not 1 <= replication_factor <= self.brokers:
            raise ConfigError(
                f"replication factor {replication_factor}: the cluster at {bootstrap} has {self.brokers} "
                f"broker(s); use 1..{self.brokers}"
            )
        self.replication_factor = replication_factor or min(3, self.brokers)
        self.registry = SchemaRegistry(self.client, bootstrap, extra, timeout_s, self.replication_factor)

    def close(self) -> None:
        self.registry.close()

    def broker_setting(self, key: str) -> str | None:
        """A broker configuration value (read once; None when it cannot be read, e.g. no ACL)."""
        with self._lock:
            if self._broker_config is None:
                found: dict[str, str | None] = {}
                if self._broker_ids:
                    res = ConfigResource(ConfigResource.Type.BROKER, str(self._broker_ids[0]))
                    try:
                        entries = self.client.describe_configs([res], request_timeout=self.timeout)[res].result()
                        found = {k: v.value for k, v in entries.items()}
                    except KafkaException:
                        pass
                self._broker_config = found
            return self._broker_config.get(key)

    # ------------------------------------------------------------------ create / delete

    def create(self, spec: TopicSpec, exist_ok: bool, replication_factor: int | None = None) -> TopicInfo:
        check_topic_name(spec.name)
        if is_internal(spec.name) and spec.name == SCHEMAS_TOPIC:
            raise ConfigError(f"topic name {spec.name!r} is reserved by everstream")
        if spec.schema is not None:
            check_encodable(spec.schema, spec.name)
        rf = replication_factor or self.replication_factor
        if not 1 <= rf <= self.brokers:
            raise ConfigError(
                f"topic {spec.name!r}: replication factor {rf} needs at least {rf} brokers; the cluster at "
                f"{self.bootstrap} has {self.brokers}. Use --replication-factor 1..{self.brokers}"
            )
        policy = "compact" if spec.compact else "delete"
        if spec.compact and (spec.retention_ms is not None or spec.retention_bytes is not None):
            policy = "compact,delete"
        config = {
            "cleanup.policy": policy,
            "compression.type": _COMPRESSION_TO_KAFKA[spec.compression],
            "retention.ms": str(spec.retention_ms if spec.retention_ms is not None else -1),
            "retention.bytes": str(spec.retention_bytes if spec.retention_bytes is not None else -1),
            "message.timestamp.after.max.ms": _NO_LIMIT,
        }
        deadline = time.monotonic() + self.timeout
        while True:
            fut = self.client.create_topics(
                [NewTopic(spec.name, spec.partitions, rf, config=config)],
                request_timeout=self.timeout, operation_timeout=self.timeout,
            )[spec.name]
            try:
                fut.result()
                break
            except KafkaException as e:
                err = error_of(e)
                code = err.code() if err is not None else None
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    if "marked for deletion" in (err.str() if err else "") and time.monotonic() < deadline:
                        time.sleep(0.1)  # a delete of the same name is still under way
                        continue
                    if exist_ok:
                        return self.describe([spec.name])[0]
                    raise TopicExistsError(
                        f"topic {spec.name!r} already exists on {self.bootstrap}; pass exist_ok=True "
                        f"(CLI: --if-missing) to use it as it is, or delete it first"
                    ) from e
                if code in (KafkaError.INVALID_REPLICATION_FACTOR, KafkaError.INVALID_PARTITIONS,
                            KafkaError.INVALID_CONFIG, KafkaError.POLICY_VIOLATION):
                    raise ConfigError(f"topic {spec.name!r}: the broker refused it: {describe(e)}") from e
                if is_retriable(e) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise BrokerError(f"creating topic {spec.name!r} on {self.bootstrap} failed: {describe(e)}") from e
        meta = self._wait_ready(spec.name, spec.partitions)
        if spec.schema is not None:
            try:
                self.registry.put(SchemaEntry(spec.name, meta, spec.schema))
            except BaseException:
                self.client.delete_topics([spec.name], request_timeout=self.timeout)
                raise
        return self.describe([spec.name])[0]

    def _wait_ready(self, name: str, partitions: int) -> str:
        """Wait until every partition of a new topic has a leader; returns the topic id."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                d = self.client.describe_topics(TopicCollection([name]), request_timeout=self.timeout)[name].result()
                if len(d.partitions) == partitions and all(p.leader is not None for p in d.partitions):
                    md = self.client.list_topics(topic=name, timeout=self.timeout).topics.get(name)
                    if md is not None and md.error is None and len(md.partitions) == partitions and all(
                        p.leader >= 0 for p in md.partitions.values()
                    ):
                        return str(d.topic_id)
            except KafkaException as e:
                if not is_retriable(e):
                    raise BrokerError(f"topic {name!r} was created but cannot be described: {describe(e)}") from e
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"topic {name!r} was created but its partitions have no leader after {self.timeout:g} s"
                )
            time.sleep(0.05)

    def delete(self, name: str) -> None:
        check_topic_name(name)
        fut = self.client.delete_topics([name], request_timeout=self.timeout, operation_timeout=self.timeout)[name]
        try:
            fut.result()
        except KafkaException as e:
            err = error_of(e)
            if err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise UnknownTopicError(name) from e
            raise BrokerError(f"deleting topic {name!r} on {self.bootstrap} failed: {describe(e)}") from e
        self.registry.remove(name)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:  # so that a create of the same name right after works
            md = self.client.list_topics(topic=name, timeout=self.timeout).topics.get(name)
            if md is None or md.error is not None:
                return
            time.sleep(0.05)

    # ------------------------------------------------------------------ read

    def names(self) -> list[str]:
        try:
            md = self.client.list_topics(timeout=self.timeout)
        except KafkaException as e:
            raise unreachable(self.bootstrap, self.timeout, e) from e
        return sorted(n for n, t in md.topics.items() if not is_internal(n) and t.error is None)

    def exists(self, name: str) -> bool:
        md = self.client.list_topics(topic=name, timeout=self.timeout).topics.get(name)
        return md is not None and md.error is None

    def meta(self, names: Sequence[str]) -> dict[str, TopicMeta]:
        """Configuration, declared schema and id of each topic (UnknownTopicError if one is missing)."""
        if not names:
            return {}
        for n in names:
            check_topic_name(n)
        described = self.client.describe_topics(TopicCollection(list(names)), request_timeout=self.timeout)
        parts: dict[str, tuple[int, str]] = {}
        for name, fut in described.items():
            try:
                d = fut.result()
            except KafkaException as e:
                err = error_of(e)
                if err is not None and err.code() in UNKNOWN_TOPIC:
                    raise UnknownTopicError(name) from e
                raise BrokerError(f"describing topic {name!r} on {self.bootstrap} failed: {describe(e)}") from e
            parts[name] = (len(d.partitions), str(d.topic_id))
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
        configs: dict[str, dict[str, str | None]] = {}
        for res, fut in self.client.describe_configs(resources, request_timeout=self.timeout).items():
            try:
                entries = fut.result()
            except KafkaException as e:
                raise BrokerError(f"reading the config of topic {res.name!r} failed: {describe(e)}") from e
            configs[res.name] = {k: v.value for k, v in entries.items()}
        out: dict[str, TopicMeta] = {}
        for name in names:
            count, topic_id = parts[name]
            entry = self.registry.get(name, topic_id)
            observed = entry.observed if entry is not None and entry.schema is None else None
            out[name] = TopicMeta(self._spec(name, count, configs.get(name, {}), entry), topic_id, observed)
        return out

    def observe(self, name: str, topic_id: str, schema: pa.Schema) -> pa.Schema | None:
        """Record the types of fields a producer writes to a topic without a declared schema.

        Fields already recorded keep their types (first types win); fields whose values are all
        null so far are not recorded yet. Returns the topic's recorded types afterwards.
        """
        entry = self.registry.get(name, topic_id)
        if entry is not None and entry.schema is not None:
            return None  # declared meanwhile: nothing to observe
        known = entry.observed if entry is not None else None
        names = set(known.names) if known is not None else set()
        new = [f for f in schema if f.name not in names and not pa.types.is_null(f.type)]
        if not new:
            return known
        merged = pa.schema([*(known or []), *new])
        self.registry.put(SchemaEntry(name, topic_id, None, observed=merged))
        return merged

    def _spec(self, name: str, partitions: int, conf: dict[str, str | None], entry: SchemaEntry | None) -> TopicSpec:
        policy = (conf.get("cleanup.policy") or "delete").split(",")
        deletes = "delete" in policy

        def num(key: str) -> int | None:
            v = conf.get(key)
            if v is None or not deletes:
                return None
            n = int(v)
            return None if n < 0 else n

        compression = _COMPRESSION_FROM_KAFKA.get(conf.get("compression.type") or "", self._default_compression)
        schema: pa.Schema | None = entry.schema if entry is not None else None
        return TopicSpec(
            name, partitions, "compact" in policy, num("retention.ms"), num("retention.bytes"),
            schema, compression,  # type: ignore[arg-type]
        )

    def list_offsets(self, req: Mapping[tuple[str, int], Any], committed: bool = False) -> dict[tuple[str, int], int]:
        """Offsets for ``OffsetSpec`` s per partition (``committed``: the last stable offset for "latest").

        Asked through the admin connection, never behind a consumer's long-polling fetch.
        """
        if not req:
            return {}
        level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
        query = {TopicPartition(t, p): spec for (t, p), spec in req.items()}
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                res = self.client.list_offsets(query, isolation_level=level, request_timeout=self.timeout)
                return {(tp.topic, tp.partition): int(fut.result().offset) for tp, fut in res.items()}
            except KafkaException as e:
                err = error_of(e)
                gone = err is not None and err.code() in UNKNOWN_TOPIC
                if gone and not any(self.exists(t) for t in {t for t, _ in req}):
                    raise UnknownTopicError(next(iter(req))[0]) from e
                # a topic that exists but is unknown to the partition leader yet (just created: metadata
                # still propagating) is worth another try, like any retriable error
                if not (is_retriable(e) or gone) or time.monotonic() > deadline:
                    raise BrokerError(f"reading offsets from {self.bootstrap} failed: {describe(e)}") from e
                time.sleep(0.1)

    def offsets(self, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low watermark, high watermark) of each partition."""
        lo = self.list_offsets({tp: OffsetSpec.earliest() for tp in tps})
        hi = self.list_offsets({tp: OffsetSpec.latest() for tp in tps})
        return {tp: (lo[tp], hi[tp]) for tp in tps}

    def describe(self, names: Sequence[str]) -> list[TopicInfo]:
        metas = self.meta(names)
        tps = [(n, p) for n in names for p in range(metas[n].spec.partitions)]
        offs = self.offsets(tps)
        return [
            TopicInfo(metas[n].spec, tuple(
                PartitionInfo(p, *offs[(n, p)]) for p in range(metas[n].spec.partitions)
            ))
            for n in names
        ]
