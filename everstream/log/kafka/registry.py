"""Where the Kafka log keeps what Kafka's topic configuration cannot hold: declared Arrow schemas.

Kafka topic configs accept only the broker's own keys, so a topic's declared schema (and its
wire format) lives in a compacted topic, ``_everstream_schemas``: one message per topic, key =
topic name, value = JSON::

    {"topic": "trades", "topic_id": "<Kafka topic UUID>", "format": "json",
     "schema": "<base64 Arrow IPC schema>", "fields": {"symbol": "string", ...}, "version": 1}

Topics without a declared schema get the Arrow types their producers wrote instead, as
``observed`` / ``observed_fields`` (first types win; fields are added as they appear), so that
consumers decode timestamps, decimals, binary, ... back to the types that were sent, as the
embedded log does. A tombstone (null value) is written when the topic is deleted. The ``topic_id`` ties the entry to
one incarnation of the topic: if another tool deletes and re-creates a topic of the same name,
the stale entry no longer matches and is ignored. Every process reads the topic from the start
once and then only what was appended since (it is tiny). ``fields`` is there for people and
other tools; ``schema`` is authoritative. Compaction, retention and compression are ordinary
Kafka topic configs (``cleanup.policy``, ``retention.ms``, ``retention.bytes``,
``compression.type``), so every Kafka tool sees them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from everstream.errors import BrokerError
from everstream.log.kafka.client import base_config, describe, is_retriable
from everstream.schema.arrow import schema_from_bytes, schema_to_bytes

SCHEMAS_TOPIC = "_everstream_schemas"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SchemaEntry:
    """A topic's declared schema, or (topics without one) the ``observed`` types its producers wrote."""

    topic: str
    topic_id: str
    schema: pa.Schema | None
    format: str = "json"
    observed: pa.Schema | None = None

    def to_json(self) -> bytes:
        return json.dumps({
            "topic": self.topic,
            "topic_id": self.topic_id,
            "format": self.format,
            "schema": _b64(self.schema),
            "fields": _fields(self.schema),
            "observed": _b64(self.observed),
            "observed_fields": _fields(self.observed),
            "version": FORMAT_VERSION,
        }).encode()

    @staticmethod
    def from_json(data: bytes) -> SchemaEntry:
        d: dict[str, Any] = json.loads(data)
        return SchemaEntry(
            str(d["topic"]), str(d["topic_id"]), _unb64(d.get("schema")), str(d.get("format") or "json"),
            _unb64(d.get("observed")),
        )


def _b64(schema: pa.Schema | None) -> str | None:
    return None if schema is None else base64.b64encode(schema_to_bytes(schema)).decode()


def _unb64(raw: str | None) -> pa.Schema | None:
    return None if raw is None else schema_from_bytes(base64.b64decode(raw))


def _fields(schema: pa.Schema | None) -> dict[str, str] | None:
    return None if schema is None else {f.name: str(f.type) for f in schema}


class SchemaRegistry:
    """Reads and writes ``_everstream_schemas`` (thread-safe)."""

    def __init__(
        self, admin: AdminClient, bootstrap: str, extra: dict[str, Any], timeout_s: float, replication_factor: int
    ) -> None:
        self._admin = admin
        self._bootstrap = bootstrap
        self._extra = extra
        self._timeout = timeout_s
        self._rf = replication_factor
        self._lock = threading.Lock()
        self._entries: dict[str, SchemaEntry] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._position = 0

    def get(self, topic: str, topic_id: str) -> SchemaEntry | None:
        """The entry of this incarnation of ``topic`` (None: no declared schema)."""
        with self._lock:
            self._refresh()
            entry = self._entries.get(topic)
        return entry if entry is not None and entry.topic_id == topic_id else None

    def put(self, entry: SchemaEntry) -> None:
        with self._lock:
            self._ensure_topic()
            self._write(entry.topic, entry.to_json())
            self._entries[entry.topic] = entry

    def remove(self, topic: str) -> None:
        with self._lock:
            self._refresh()
            if topic in self._entries:
                self._write(topic, None)
                self._entries.pop(topic, None)

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                self._producer.flush(5)
                self._producer = None

    # ------------------------------------------------------------------ internals

    def _exists(self) -> bool:
        md = self._admin.list_topics(topic=SCHEMAS_TOPIC, timeout=self._timeout)
        t = md.topics.get(SCHEMAS_TOPIC)
        return t is not None and t.error is None

    def _ensure_topic(self) -> None:
        if self._consumer is not None or self._exists():
            return
        fut = self._admin.create_topics(
            [NewTopic(SCHEMAS_TOPIC, 1, self._rf, config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})],
            request_timeout=self._timeout,
        )[SCHEMAS_TOPIC]
        try:
            fut.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create the schema topic {SCHEMAS_TOPIC!r}: {describe(e)}") from e
        deadline = time.monotonic() + self._timeout
        while not self._exists():
            if time.monotonic() > deadline:
                raise BrokerError(f"the schema topic {SCHEMAS_TOPIC!r} was created but never became available")
            time.sleep(0.05)

    def _write(self, key: str, value: bytes | None) -> None:
        if self._producer is None:
            self._producer = Producer(base_config(self._bootstrap, {
                "enable.idempotence": True, "acks": "all", "linger.ms": 0, **self._extra,
            }))
        errors: list[KafkaError] = []

        def done(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        deadline = time.monotonic() + self._timeout
        while True:
            errors.clear()
            self._producer.produce(SCHEMAS_TOPIC, value, key.encode(), 0, on_delivery=done)
            left = self._producer.flush(self._timeout)
            if not errors and left == 0:
                return
            why = errors[0].str() if errors else "no acknowledgement"
            if left or time.monotonic() > deadline or (errors and not errors[0].retriable()):
                raise BrokerError(
                    f"cannot record the schema of topic {key!r} in {SCHEMAS_TOPIC!r}: {why}; check the broker"
                )

    def _high(self, spec: OffsetSpec | None = None) -> int:
        """The end of the schema topic, asked through the admin connection (a consumer's own
        watermark query would wait behind its long-polling fetch)."""
        tp = TopicPartition(SCHEMAS_TOPIC, 0)
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                res = self._admin.list_offsets({tp: spec or OffsetSpec.latest()}, request_timeout=self._timeout)
                return int(res[tp].result().offset)
            except KafkaException as e:
                if not is_retriable(e) or time.monotonic() > deadline:
                    raise BrokerError(f"cannot read {SCHEMAS_TOPIC!r} from {self._bootstrap}: {describe(e)}") from e
                time.sleep(0.1)

    def _refresh(self) -> None:
        if self._consumer is None:
            if not self._exists():
                return
            self._consumer = Consumer(base_config(self._bootstrap, {
                "group.id": f"everstream-registry-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                **self._extra,
            }))
            # an absolute offset: a logical one (OFFSET_BEGINNING) costs librdkafka ~0.5 s to resolve
            self._position = self._high(OffsetSpec.earliest())
            self._consumer.assign([TopicPartition(SCHEMAS_TOPIC, 0, self._position)])
        c = self._consumer
        deadline = time.monotonic() + self._timeout
        high = self._high()
        while self._position < high:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"timed out reading declared schemas from {SCHEMAS_TOPIC!r} (at offset {self._position} of "
                    f"{high}); check the broker at {self._bootstrap}"
                )
            for m in c.consume(1000, 0.01):
                if m.error() is not None:
                    continue
                name = (m.key() or b"").decode("utf-8", "replace")
                value = m.value()
                if value is None:
                    self._entries.pop(name, None)
                else:
                    try:
                        self._entries[name] = SchemaEntry.from_json(value)
                    except (ValueError, KeyError, TypeError, pa.ArrowInvalid):
                        pass  # not ours: ignore, never fail other topics for it
                self._position = m.offset() + 1
            pos = c.position([TopicPartition(SCHEMAS_TOPIC, 0)])[0].offset
            if pos >= 0:
                self._position = max(self._position, pos)
