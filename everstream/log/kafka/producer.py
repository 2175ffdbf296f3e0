"""The Kafka log's producer: one Kafka message per record, idempotent, acks=all.

Records given to :meth:`KafkaProducer.send` are buffered per topic (like the embedded log) and,
every ``linger_ms`` or ``batch_events`` records, turned into one Arrow batch (checked against the
topic's schema: mismatches go to ``<topic>.dlq``), encoded to JSON in one vectorized call and
handed to librdkafka. :meth:`send_batch` takes the vectorized path directly. The partition is
computed here with the embedded log's Kafka-compatible murmur2 partitioner and passed
explicitly, so a key lands on the same partition number on both logs.

Delivery reports are requested for failures only (``delivery.report.only.error``): success costs
nothing per message; ``flush()`` returns once librdkafka holds no unacknowledged message and
raises :class:`ProducerError` naming the topic and partition when any delivery failed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as RdProducer

from everstream.errors import ConfigError, LogClosedError, ProducerError, ProducerFencedError, SchemaError
from everstream.log.contract import (
    DEFAULT_MAX_RECORD_BYTES,
    META_COLUMNS,
    Key,
    Producer,
    TopicSpec,
    dead_letter_topic,
)
from everstream.log.kafka import codec
from everstream.log.kafka.client import base_config, describe, error_of, logger
from everstream.log.partitioner import key_bytes, keys_to_binary, partition_for, record_partition
from everstream.log.records import (
    DEAD_LETTER_SCHEMA,
    DeadLetter,
    keyed_batch,
    raw_json,
    rows_to_batch,
    timestamp_ms,
    to_arrow_table,
)
from everstream.schema.arrow import record_to_dict

if TYPE_CHECKING:
    from everstream.log.kafka.log import KafkaLog
    from everstream.log.kafka.transaction import KafkaTransactionalProducer

BatchT = TypeVar("BatchT", pa.RecordBatch, pa.Table)
_CODECS = {"lz4": "lz4", "zstd": "zstd", "none": "none"}


@dataclass
class _Topic:
    spec: TopicSpec
    schema: pa.Schema | None  # declared, or inferred from the first batch this producer wrote
    declared: bool
    partitions: int
    topic_id: str = ""
    observed: pa.Schema | None = None  # no declared schema: the types recorded in the schema topic
    key_partition: dict[bytes, int] = field(default_factory=dict)
    sticky: int = 0


@dataclass
class _Pending:
    values: list[Mapping[str, Any]] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    parts: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    headers: list[list[tuple[str, bytes]] | None] | None = None


class KafkaProducer(Producer):
    """Writes records to Kafka topics; see the module docstring."""

    def __init__(
        self,
        log: KafkaLog,
        linger_ms: float = 5.0,
        batch_events: int = 10_000,
        max_buffered: int = 500_000,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        delivery_timeout_ms: int = 120_000,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if linger_ms < 0 or batch_events < 1 or max_buffered < batch_events:
            raise ConfigError(
                f"producer: linger_ms={linger_ms} must be >= 0, batch_events={batch_events} >= 1, "
                f"max_buffered={max_buffered} >= batch_events"
            )
        self._log = log
        self._linger_ms = linger_ms
        self._linger = linger_ms / 1000.0
        self._batch_events = batch_events
        self._max_buffered = max_buffered
        self._max_record_bytes = max_record_bytes
        self._delivery_timeout_ms = delivery_timeout_ms
        conf = base_config(log.bootstrap, {
            "enable.idempotence": True,
            "acks": "all",
            # this producer already gathers records for linger_ms before handing them over as a
            # burst: librdkafka needs only long enough to put one burst into one request
            "linger.ms": min(linger_ms, 1.0),
            "compression.codec": _CODECS[log.compression],
            "batch.num.messages": 100_000,
            "batch.size": 4_000_000,
            "queue.buffering.max.messages": 4_000_000,
            "queue.buffering.max.kbytes": 2_097_151,
            "message.timeout.ms": delivery_timeout_ms,
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            **log.client_config,
            **(config or {}),
        })
        self._topics: dict[str, _Topic] = {}
        self._buf: dict[str, _Pending] = {}
        self._buffered = 0
        self._lock = threading.Lock()  # guards _buf/_buffered
        self._drain_lock = threading.RLock()  # one thread hands records to librdkafka at a time
        self._serve_lock = threading.Lock()  # one thread serves librdkafka's callbacks at a time
        self._wake = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._fatal = False
        self._failures: list[tuple[str, int, str]] = []
        self._failed = 0
        self._dead = 0
        self._enqueued = 0
        try:
            self._p = RdProducer(conf)
        except KafkaException as e:
            raise ConfigError(f"invalid Kafka producer settings: {describe(e)}") from e
        codec.warm_up()
        self._thread = threading.Thread(target=self._run, name="everstream-kafka-producer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    @property
    def dead_letters(self) -> int:
        return self._dead

    @property
    def produced(self) -> int:
        """Records handed to Kafka by this producer, less those whose delivery failed."""
        return self._enqueued - self._failed

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
        self._check_txn()
        t = self._topics.get(topic) or self._load(topic)
        rec = value if type(value) is dict else record_to_dict(value)
        kb = key if type(key) is bytes or key is None else key_bytes(key)
        p = -1 if kb is None else t.key_partition.get(kb, -1)  # the common case inline: a key seen before
        if p < 0:
            p = record_partition(topic, kb, t.partitions, t.sticky, t.spec.compact, t.key_partition)
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp_ms(timestamp, 0)
        with self._lock:
            pend = self._buf.get(topic)
            if pend is None:
                pend = self._buf[topic] = _Pending()
            pend.values.append(rec)
            pend.keys.append(kb)
            pend.parts.append(p)
            pend.ts.append(ts)
            if headers or pend.headers is not None:
                if pend.headers is None:
                    pend.headers = [None] * (len(pend.values) - 1)
                pend.headers.append(
                    [(k, v.encode() if isinstance(v, str) else bytes(v)) for k, v in headers.items()]
                    if headers else None
                )
            self._buffered += 1
            full = len(pend.values) >= self._batch_events
            over = self._buffered >= self._max_buffered
        if full and not self._wake.is_set():
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
        self._check_txn()
        t = self._topics.get(topic) or self._load(topic)
        tab = to_arrow_table(table)
        n = int(tab.num_rows)
        if n == 0:
            return 0
        clash = [c for c in tab.column_names if c in META_COLUMNS]
        if clash:
            raise SchemaError(
                f"send_batch to {topic!r}: field names {clash} are reserved for record metadata; rename them"
            )
        kb = keyed_batch(tab, topic, key, timestamp, schema=t.schema if t.declared else None,
                         compact=t.spec.compact, partitions=t.partitions, sticky=t.sticky)
        tab, keys, ts, parts = kb.table, kb.keys, kb.timestamps, kb.partitions
        if not t.declared:
            tab = self._observe(t, tab)
        if keys is not None:
            karr = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
            key_list: list[bytes | None] = keys_to_binary(karr).to_pylist()
            part_list: list[int] = parts.tolist()
        else:
            key_list = [None] * n
            part_list = [t.sticky] * n
        lines = codec.encode(tab)
        ts_list: list[int] = np.asarray(ts.fill_null(time.time_ns() // 1_000_000) if ts.null_count else ts).tolist()
        dead = self._oversize(topic, lines, key_list)
        with self._drain_lock:
            self._drain_locked()
            if dead:
                keep = np.ones(n, dtype=bool)
                keep[[i for i, _ in dead]] = False
                sel = np.flatnonzero(keep).tolist()
                lines = [lines[i] for i in sel]
                key_list = [key_list[i] for i in sel]
                part_list = [part_list[i] for i in sel]
                ts_list = [ts_list[i] for i in sel]
                self._write_dead(topic, [d for _, d in dead])
            self._enqueue(topic, lines, key_list, part_list, ts_list)
            self._enqueued += len(lines)
        t.sticky = (t.sticky + 1) % t.partitions
        self._serve(0)
        return n

    def send_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        if self._error is not None or self._closed:
            self._raise_state()
        if letters:
            with self._drain_lock:
                self._drain_locked()
                self._write_dead(topic, letters)

    def flush(self, timeout: float | None = None) -> None:
        if self._error is not None:
            self._raise_state()
        self._drain()
        self._wait_acks(timeout)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._error is None:
                self._close_hook()
                self.flush()
        finally:
            self._closed = True
            self._wake.set()
            self._thread.join(timeout=5)
        if self._error is not None:
            self._raise_state()

    def transactional(self, transactional_id: str, **kwargs: Any) -> KafkaTransactionalProducer:
        """A new producer with the same settings whose writes commit atomically (see the subclass)."""
        from everstream.log.kafka.transaction import KafkaTransactionalProducer

        opts: dict[str, Any] = {
            "linger_ms": self._linger_ms, "batch_events": self._batch_events, "max_buffered": self._max_buffered,
            "max_record_bytes": self._max_record_bytes, "delivery_timeout_ms": self._delivery_timeout_ms,
        }
        opts.update(kwargs)
        return KafkaTransactionalProducer(self._log, transactional_id, **opts)

    # ------------------------------------------------------------------ internals

    def _close_hook(self) -> None:
        """Subclasses settle open work before the final flush."""

    def _diagnose(self) -> KafkaException | None:
        """The fatal error behind a failure confluent-kafka did not report (subclasses can ask)."""
        return None

    def _check_txn(self) -> None:
        """Subclasses refuse writes outside a transaction."""

    def _raise_state(self) -> None:
        if self._error is not None:
            if isinstance(self._error, ProducerError):
                raise self._error
            raise ProducerError(
                f"a previous write failed, so records sent since the last successful flush were not "
                f"acknowledged: {self._error}. Create a new producer and re-send them."
            ) from self._error
        raise LogClosedError("producer is closed")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self._failed += 1
        if len(self._failures) < 20:
            self._failures.append((str(msg.topic()), int(msg.partition()), f"{err.name()}: {err.str()}"))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = True
            self._error = ProducerError(
                f"the Kafka producer hit a fatal error ({err.name()}: {err.str()}); records not yet "
                "acknowledged are lost for this producer. Create a new producer and re-send them."
            )
        else:
            logger.debug("kafka producer: %s", err.str())

    def _load(self, topic: str) -> _Topic:
        meta = self._log.admin.meta([topic])[topic]
        spec = meta.spec
        t = _Topic(spec, spec.schema, spec.schema is not None, spec.partitions, meta.topic_id, meta.observed)
        if not t.declared and meta.observed is not None:
            t.schema = meta.observed  # records are typed as earlier producers' were (like the embedded log)
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
                self._serve(0)
            except BaseException as e:  # surfaced on the next send/flush: never silent
                self._error = e
                return

    def _drain(self) -> None:
        with self._drain_lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        with self._lock:
            if not self._buf:
                return
            bufs, self._buf = self._buf, {}
            self._buffered = 0
        try:
            for name, pend in bufs.items():
                self._write_pending(self._topics[name], pend)
        except BaseException as e:
            self._error = e
            raise

    def _write_pending(self, t: _Topic, pend: _Pending) -> None:
        name = t.spec.name
        t.sticky = (t.sticky + 1) % t.partitions
        batch, good, bad, schema = rows_to_batch(pend.values, t.schema, strict=t.declared)
        if not t.declared:
            t.schema = schema
        dead = [DeadLetter(name, err, raw_json(pend.values[i]), key=pend.keys[i]) for i, err in bad]
        if batch is not None and batch.num_rows:
            if not t.declared:
                batch = self._observe(t, batch)
            lines = codec.encode(batch)
            if len(good) == len(pend.values):
                keys, parts, ts, hdrs = pend.keys, pend.parts, pend.ts, pend.headers
            else:
                keys = [pend.keys[i] for i in good]
                parts = [pend.parts[i] for i in good]
                ts = [pend.ts[i] for i in good]
                hdrs = None if pend.headers is None else [pend.headers[i] for i in good]
            big = self._oversize(name, lines, keys)
            if big:
                dead += [d for _, d in big]
                drop = {i for i, _ in big}
                sel = [i for i in range(len(lines)) if i not in drop]
                lines = [lines[i] for i in sel]
                keys = [keys[i] for i in sel]
                parts = [parts[i] for i in sel]
                ts = [ts[i] for i in sel]
                hdrs = None if hdrs is None else [hdrs[i] for i in sel]
            if hdrs is None:
                self._enqueue(name, lines, keys, parts, ts)
            else:
                self._enqueue(name, lines, keys, parts, ts, hdrs)
            self._enqueued += len(lines)
        if dead:
            self._write_dead(name, dead)

    def _observe(self, t: _Topic, batch: BatchT) -> BatchT:
        """A topic without a declared schema: record the types of new fields in the schema topic
        (before the records that carry them), and write known fields with their recorded types
        when they convert safely, so that consumers read back what was sent."""
        if t.observed is None or any(n not in t.observed.names for n in batch.schema.names):
            t.observed = self._log.admin.observe(t.spec.name, t.topic_id, batch.schema) or t.observed
        if t.observed is None:
            return batch
        want = {f.name: f.type for f in t.observed}
        cols = []
        changed = False
        for f, col in zip(batch.schema, batch.columns, strict=True):
            target = want.get(f.name)
            if target is not None and target != f.type and not pa.types.is_null(f.type):
                try:
                    col = col.cast(target)
                    changed = True
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    pass  # a different type: consumers decode such records by inference
            cols.append(col)
        if not changed:
            return batch
        names = batch.schema.names
        if isinstance(batch, pa.Table):
            return pa.Table.from_arrays(cols, names=names)  # type: ignore[return-value]
        return pa.RecordBatch.from_arrays(cols, names=names)  # type: ignore[return-value]

    def _oversize(self, topic: str, lines: list[bytes], keys: Sequence[bytes | None]) -> list[tuple[int, DeadLetter]]:
        limit = self._max_record_bytes
        if sum(map(len, lines)) <= limit:
            return []
        big = np.flatnonzero(np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)) > limit)
        return [
            (int(i), DeadLetter(topic, f"record over the size limit of {limit} bytes", lines[i][:4096], key=keys[i]))
            for i in big.tolist()
        ]

    def _enqueue(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None], parts: Sequence[int],
        ts: Iterable[int], headers: Sequence[list[tuple[str, bytes]] | None] | None = None,
    ) -> None:
        """Hand messages to librdkafka (one ``produce`` call each), waiting for room when its queue is full."""
        produce = self._p.produce
        try:
            if headers is None:
                it = zip(values, keys, parts, ts, strict=False)
                while True:
                    try:
                        for v, k, p, t in it:
                            produce(topic, v, k, p, None, None, t)
                        break
                    except BufferError:  # v, k, p, t: the message that did not fit
                        self._wait_room(produce, (topic, v, k, p, None, None, t))
            else:
                hit = zip(values, keys, parts, ts, headers, strict=False)
                while True:
                    try:
                        for v, k, p, t, h in hit:
                            produce(topic, v, k, p, None, None, t, h)
                        break
                    except BufferError:
                        self._wait_room(produce, (topic, v, k, p, None, None, t, h))
        except KafkaException as e:
            err = error_of(e)
            if err is not None and err.code() == KafkaError._FATAL:  # why? (fenced by a newer instance?)
                diag = self._diagnose()
                cause = None if diag is None else error_of(diag)
                if diag is not None and cause is not None and cause.code() == KafkaError._FENCED:
                    self._fatal = True
                    self._error = ProducerFencedError(
                        f"producing to topic {topic!r} failed: this transactional producer was fenced by a newer "
                        f"instance with the same transactional id ({describe(diag)}); its open "
                        "transaction is discarded. Close it: its task runs elsewhere now.")
                    raise self._error from e
            raise ProducerError(f"producing to topic {topic!r} failed: {describe(e)}") from e

    def _wait_room(self, produce: Callable[..., None], args: tuple[Any, ...]) -> None:
        while True:
            self._serve(0.05)
            try:
                produce(*args)
                return
            except BufferError:
                continue

    def _write_dead(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        """Write dead letters to ``<topic>.dlq`` (created when missing): one message each."""
        dlq = dead_letter_topic(topic)
        t = self._topics.get(dlq)
        if t is None:
            self._log.admin.create(TopicSpec(dlq, 1, schema=DEAD_LETTER_SCHEMA), exist_ok=True)
            t = self._load(dlq)
        batch = pa.RecordBatch.from_pylist([d.row() for d in letters], schema=DEAD_LETTER_SCHEMA)
        lines = codec.encode(batch)
        now = time.time_ns() // 1_000_000
        keys = [d.key for d in letters]
        parts = [0 if k is None else partition_for(k, t.partitions) for k in keys]
        self._enqueue(dlq, lines, keys, parts, itertools.repeat(now))
        self._dead += len(letters)

    def _serve(self, timeout: float, flush: bool = False) -> int:
        """librdkafka's poll (or flush): runs the delivery and error callbacks.

        A fatal producer error (e.g. fenced by a newer transactional producer) surfaces from
        confluent-kafka as a KafkaException, sometimes wrapped in a SystemError raised inside a
        callback; both become a ProducerError and poison this producer.
        """
        try:
            # one thread at a time: a fatal error is raised in exactly one of the callers, and the
            # other one would otherwise get a SystemError with nothing to say
            with self._serve_lock:
                return int(self._p.flush(timeout) if flush else self._p.poll(timeout))
        except (KafkaException, SystemError) as e:
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, KafkaException):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                # confluent-kafka lost the exception (a callback ran while it was pending): either
                # the linger thread recorded it already, or librdkafka can be asked again
                if isinstance(self._error, ProducerError):
                    raise self._error from e
                cause = self._diagnose()
                if cause is None:
                    self._fatal = True
                    self._error = ProducerError(
                        f"the Kafka producer failed ({e}); create a new producer and re-send")
                    raise self._error from e
            err = error_of(cause)
            fenced = err is not None and err.code() == KafkaError._FENCED
            self._fatal = True
            self._error = (ProducerFencedError if fenced else ProducerError)(
                f"the Kafka producer failed fatally ({describe(cause)})"
                + ("; it was fenced by a newer producer with the same transactional id" if fenced else "")
                + ". Records not yet acknowledged are not stored; create a new producer and re-send them."
            )
            raise self._error from cause

    def _wait_acks(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # slices, so that Ctrl-C is honoured; bounded by message.timeout.ms
            step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            left = self._serve(step, flush=True)
            if left == 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise ProducerError(
                    f"flush timed out after {timeout:g} s: {left} record(s) are not yet acknowledged by "
                    f"the Kafka broker at {self._log.bootstrap} (they are still being retried). Call "
                    "flush() again, or check the broker."
                )
        self._check_failures()

    def _check_failures(self) -> None:
        if self._error is not None:
            self._raise_state()
        if self._failed:
            where = "; ".join(f"topic {t!r} partition {p}: {why}" for t, p, why in self._failures[:5])
            self._error = ProducerError(
                f"{self._failed} record(s) were not acknowledged by Kafka and are not stored ({where}). "
                "Fix the cause (broker down longer than the delivery timeout, topic deleted, record too "
                "large), then create a new producer and re-send them."
            )
            raise self._error
