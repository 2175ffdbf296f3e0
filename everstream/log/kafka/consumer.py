"""The Kafka log's consumer: messages -> Arrow record batches with the log's metadata columns.

A poll takes what librdkafka has fetched (``consume``), pulls each message's value, key, offset,
timestamp and headers out with ``map`` over the message objects (no per-message Python frame),
and decodes the values of each topic in one ``pyarrow.json.read_json`` call (see
:mod:`everstream.log.kafka.codec`). Values that are not a JSON object, or that do not match the
topic's declared schema, go to ``<topic>.dlq`` with their raw bytes, the error and the source
partition/offset, and the poll goes on. Batches are returned per partition, in offset order.

Positions are what the contract says: the next offset to read. They are resolved to absolute
offsets when partitions are assigned (committed offset, else ``start``), follow librdkafka's own
position once messages flow (it steps over transaction markers), and move with ``seek``.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import OffsetSpec

from everstream.errors import (
    BrokerError,
    CommitFailedError,
    ConfigError,
    ConsumerError,
    EverstreamError,
    LogClosedError,
    OffsetOutOfRangeError,
    UnknownTopicError,
)
from everstream.log import batch as batchcodec
from everstream.log.contract import (
    Consumer,
    StartAt,
)
from everstream.log.contract import TopicPartition as TP
from everstream.log.kafka.client import base_config, describe, error_of, is_retriable, logger
from everstream.log.kafka.codec import JsonCodec, warm_up
from everstream.log.kafka.messages import record_batches
from everstream.log.records import DeadLetter, check_consumer_options

if TYPE_CHECKING:
    from everstream.log.kafka.log import KafkaLog
    from everstream.log.kafka.producer import KafkaProducer

#: Records per poll while most of the input is undecodable (each costs ~0.5 ms to pin down).
_DLQ_POLL = 1_000
#: How long a commit waits for the broker's confirmation before giving the thread back.
_COMMIT_WAIT_S = 5.0
#: Messages decoded together (one JSON parse) within a poll.
_CHUNK = 20_000
#: Largest number of messages librdkafka hands over in one ``consume`` call.
_CONSUME_MAX = 100_000
#: Position of a partition whose start offset librdkafka resolves itself (see ``_on_assign``).
_UNKNOWN = -1
_FENCED = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
})


@dataclass
class _Commit:
    done: bool = False
    error: KafkaError | None = None


def _ms(start: int | datetime) -> int:
    return int(start.timestamp() * 1000) if isinstance(start, datetime) else int(start)


class KafkaConsumer(Consumer):
    """Reads partitions it was assigned, or its share of a consumer group's partitions."""

    def __init__(
        self,
        log: KafkaLog,
        group: str | None = None,
        start: StartAt = "earliest",
        auto_commit: bool = False,
        session_timeout_ms: int = 10_000,
        heartbeat_ms: int = 1_000,
        max_poll_records: int = 500_000,
        isolation: str = "read_committed",
        config: Mapping[str, Any] | None = None,
        string_views: bool = False,
    ) -> None:
        check_consumer_options(start, session_timeout_ms, heartbeat_ms)
        self._views = string_views
        if isolation not in ("read_committed", "read_uncommitted"):
            raise ConfigError(f"isolation={isolation!r}: use read_committed (default) or read_uncommitted")
        if group is not None:  # the broker refuses sessions outside its bounds: stay inside them
            low = log.admin.broker_setting("group.min.session.timeout.ms")
            if low is not None and low.isdigit() and session_timeout_ms < int(low):
                logger.info("group %r: session timeout %d ms raised to the broker's minimum %s ms",
                            group, session_timeout_ms, low)
                session_timeout_ms = int(low)
        self._log = log
        self.group = group
        self._start = start
        self._auto_commit = auto_commit and group is not None
        self._max_poll = max_poll_records
        self._timeout = log.timeout
        self._isolation = isolation
        conf = base_config(log.bootstrap, {
            "group.id": group if group is not None else f"everstream-unassigned-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": self._auto_commit,
            "auto.commit.interval.ms": 5000,  # as the embedded log
            "auto.offset.reset": "latest" if start == "latest" else "earliest",
            "isolation.level": isolation,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": heartbeat_ms,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 8 << 20,
            "queued.max.messages.kbytes": 256 << 10,
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
            **log.client_config,
            **(config or {}),
        })
        try:
            self._c = RdConsumer(conf)
        except KafkaException as e:
            raise ConfigError(f"invalid Kafka consumer settings: {describe(e)}") from e
        warm_up()
        self._pos: dict[TP, int] = {}
        self._assigned: list[TP] = []
        self._codecs: dict[str, JsonCodec] = {}
        self._partitions: dict[str, int] = {}
        self._subscribed = False
        self._closed = False
        self._error: EverstreamError | None = None
        self._callback_error: BaseException | None = None
        self._dlq: KafkaProducer | None = None
        self._dead = 0
        self._cap = max_poll_records  # lowered to _DLQ_POLL while most records are dead letters
        self._commits: deque[_Commit] = deque()  # commits waiting for the broker's answer, in order
        self._stash: list[Message] = []  # fetched while waiting for a commit: served by the next poll
        self._in_callback = False
        self._looked_up: dict[str, set[str]] = {}  # per topic: untyped fields already looked up

    # ------------------------------------------------------------------ topics

    def _load(self, names: Iterable[str]) -> None:
        todo = [n for n in dict.fromkeys(names) if n not in self._codecs]
        if not todo:
            return
        for name, meta in self._log.admin.meta(todo).items():
            self._codecs[name] = JsonCodec(name, meta.spec.schema, meta.observed)
            self._partitions[name] = meta.spec.partitions

    @property
    def dead_letters(self) -> int:
        """Messages this consumer diverted to dead-letter topics (undecodable, schema mismatch)."""
        return self._dead

    # ------------------------------------------------------------------ assignment

    def subscribe(self, topics: Sequence[str]) -> None:
        self._check_open()
        if self.group is None:
            raise ConfigError("subscribe() needs a consumer group: log.consumer(group='name'); or use assign()")
        if isinstance(topics, str):
            topics = [topics]
        if self._assigned and not self._subscribed:
            raise ConfigError("this consumer was assigned partitions; use a separate consumer for subscribe()")
        self._load(topics)
        self._c.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._subscribed = True

    def assign(self, partitions: Iterable[TP]) -> None:
        self._check_open()
        if self._subscribed:
            raise ConfigError("this consumer subscribed to a group; use a separate consumer for assign()")
        wanted = [(str(t), int(p)) for t, p in partitions]
        self._load(t for t, _ in wanted)
        for t, p in wanted:
            n = self._partitions[t]
            if not 0 <= p < n:
                raise ConfigError(f"topic {t!r} has partitions 0..{n - 1}; got {p}")
        wanted = list(dict.fromkeys(wanted))
        new = [tp for tp in wanted if tp not in self._pos]
        resolved = self._resolve(new)
        self._pos = {tp: self._pos[tp] if tp in self._pos else resolved[tp] for tp in wanted}
        self._assigned = wanted
        self._c.assign([TopicPartition(t, p, self._pos[(t, p)]) for t, p in wanted])

    def assignment(self) -> list[TP]:
        return list(self._assigned)

    def _resolve(self, tps: Sequence[TP]) -> dict[TP, int]:
        """Where reading starts: the group's committed offset, else ``start``."""
        out: dict[TP, int] = {}
        if not tps:
            return out
        if self.group is not None:
            for r in self._call("reading committed offsets", lambda: self._c.committed(
                    [TopicPartition(t, p) for t, p in tps], timeout=self._timeout)):
                if r.offset >= 0:
                    out[(r.topic, r.partition)] = r.offset
        rest = [tp for tp in tps if tp not in out]
        if rest:
            out.update(self._offsets_for(rest, self._start))
        return out

    def _offsets_for(self, tps: Sequence[TP], start: StartAt) -> dict[TP, int]:
        """Absolute offsets for ``start``: earliest, latest (last stable), or first at/after a time."""
        admin = self._log.admin
        committed = self._isolation == "read_committed"
        if start == "earliest":
            return admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps})
        if start == "latest":
            return admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, committed)
        ms = _ms(start)  # type: ignore[arg-type]
        out = admin.list_offsets({tp: OffsetSpec.for_timestamp(ms) for tp in tps}, committed)
        missing = [tp for tp, off in out.items() if off < 0]
        if missing:  # no record at or after the time: the end
            out.update(admin.list_offsets({tp: OffsetSpec.latest() for tp in missing}, committed))
        return out

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        try:
            self._load(t for t, _ in tps)
            resolved = self._resolve(tps)
        except BrokerError as e:
            # the broker is (still) unreachable, e.g. restarting: let librdkafka start these partitions
            # itself (committed offset, else auto.offset.reset) once it is back; positions follow
            logger.warning("group %r: resolving start offsets of %s failed (%s); librdkafka resolves them",
                           self.group, tps, e)
            self._pos.update({tp: _UNKNOWN for tp in tps})
            self._assigned = sorted(set(self._assigned) | set(tps))
            consumer.incremental_assign(partitions)
            return
        except BaseException as e:  # raised by the poll that served the callback
            self._callback_error = e
            consumer.incremental_assign(partitions)
            return
        self._pos.update(resolved)
        self._assigned = sorted(set(self._assigned) | set(tps))
        consumer.incremental_assign([TopicPartition(t, p, resolved[(t, p)]) for t, p in tps])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        if self._auto_commit and gone:
            self._in_callback = True
            try:
                self._commit({tp: o for tp, o in self.positions().items() if tp in gone})
            except EverstreamError as e:
                logger.warning("group %r: commit on revocation failed: %s", self.group, e)
            finally:
                self._in_callback = False
        self._drop(gone)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._drop({(tp.topic, tp.partition) for tp in partitions})

    def _drop(self, gone: set[TP]) -> None:
        if self._stash:
            self._stash = [m for m in self._stash if (m.topic(), m.partition()) not in gone]
        for tp in gone:
            self._pos.pop(tp, None)
        self._assigned = [tp for tp in self._assigned if tp not in gone]

    # ------------------------------------------------------------------ reading

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[pa.RecordBatch]:
        self._check_open()
        limit = max(1, min(max_records or self._max_poll, self._cap))
        msgs = self._take_stash(limit) or self._c.consume(min(limit, _CONSUME_MAX), 0)
        if not msgs:
            deadline = time.monotonic() + max(timeout, 0.0)
            while not msgs:
                self._raise_pending()
                left = deadline - time.monotonic()
                msgs = self._c.consume(1, max(0.0, min(left, 0.2)))
                if not msgs and left <= 0.2:
                    if left > 0:
                        continue
                    self._raise_pending()
                    return []
        while len(msgs) < limit:  # take everything librdkafka has already fetched, up to the limit
            more = self._c.consume(min(limit - len(msgs), _CONSUME_MAX), 0)
            if not more:
                break
            msgs.extend(more)
        self._raise_pending()
        if any(map(Message.error, msgs)):
            msgs = self._errors(msgs)
            if not msgs:
                return []
        out = self._batches(msgs)
        return [batchcodec.as_views(b) for b in out] if self._views else out

    def _errors(self, msgs: list[Message]) -> list[Message]:
        keep = []
        for m in msgs:
            err = m.error()
            if err is None:
                keep.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID) and m.topic():
                raise UnknownTopicError(str(m.topic()), "it was deleted while this consumer read it")
            elif m.topic() is None and not err.retriable():
                raise ConsumerError(f"consumer group {self.group!r}: {err.name()}: {err.str()}")
            elif err.fatal() or not (err.retriable() or err.code() in (KafkaError._TRANSPORT,)):
                raise ConsumerError(
                    f"reading topic {m.topic()!r} partition {m.partition()} failed: {err.name()}: {err.str()}"
                )
            else:
                logger.info("kafka consumer: %s", err.str())
        return keep

    def _batches(self, msgs: list[Message]) -> list[pa.RecordBatch]:
        """Decode in chunks; when a chunk is mostly bad, hand back what is done and read the rest later.

        Pinning down a bad record costs ~0.5 ms (bisection), so a poll full of them would block for
        minutes: instead the consumer moves back to the first record not yet decoded and takes
        small polls until the input is clean again.
        """
        out: list[pa.RecordBatch] = []
        for start in range(0, len(msgs), _CHUNK):
            chunk = msgs[start:start + _CHUNK]
            try:
                bad = self._chunk(chunk, out)
            except ConsumerError as e:
                if not out:
                    raise
                self._rewind(msgs[start:])  # hand back what is decoded; the error comes with the next poll
                self._callback_error = e
                return out
            if bad > 100 and bad * 10 > len(chunk):
                self._cap = _DLQ_POLL
                if start + _CHUNK < len(msgs):
                    self._rewind(msgs[start + _CHUNK:])
                    break
            elif bad * 100 <= len(chunk):
                self._cap = self._max_poll
        return out

    def _rewind(self, rest: list[Message]) -> None:
        first: dict[TP, int] = {}
        for m in rest:
            tp = (str(m.topic()), int(m.partition()))
            off = int(m.offset())
            if off < first.get(tp, off + 1):
                first[tp] = off
        for tp, off in first.items():
            if tp in self._pos:
                self._seek(tp, off)

    def _chunk(self, msgs: list[Message], out: list[pa.RecordBatch]) -> int:
        n = len(msgs)
        parts = np.fromiter(map(Message.partition, msgs), dtype=np.int32, count=n)
        offs = np.fromiter(map(Message.offset, msgs), dtype=np.int64, count=n)
        if len(self._codecs) == 1 or len(self._assigned_topics()) == 1:
            topic = str(msgs[0].topic())
            groups: list[tuple[str, list[Message], np.ndarray | None]] = [(topic, msgs, None)]
        else:
            topics = list(map(Message.topic, msgs))
            names = list(dict.fromkeys(topics))
            if len(names) == 1:
                groups = [(names[0], msgs, None)]
            else:
                tarr = np.asarray(topics, dtype=object)
                groups = []
                for name in names:
                    rows = np.flatnonzero(tarr == name)
                    groups.append((name, [msgs[i] for i in rows], rows))
        self._advance(groups, parts, offs)
        letters: list[DeadLetter] = []
        for topic, tmsgs, sel in groups:
            tparts = parts if sel is None else parts[sel]
            toffs = offs if sel is None else offs[sel]
            out.extend(self._decode(topic, tmsgs, tparts, toffs, letters))
        if letters:
            self._write_dead(letters, groups, parts, offs)
        return len(letters)

    def _assigned_topics(self) -> set[str]:
        return {t for t, _ in self._assigned}

    def _advance(self, groups: list[tuple[str, list[Message], np.ndarray | None]],
                 parts: np.ndarray, offs: np.ndarray) -> None:
        for topic, _, sel in groups:
            tp_parts = parts if sel is None else parts[sel]
            tp_offs = offs if sel is None else offs[sel]
            for p in np.unique(tp_parts):
                last = int(tp_offs[tp_parts == p].max())
                tp = (topic, int(p))
                if tp in self._pos:
                    self._pos[tp] = last + 1

    def _decode(self, topic: str, msgs: list[Message], parts: np.ndarray, offs: np.ndarray,
                letters: list[DeadLetter]) -> list[pa.RecordBatch]:
        codec = self._codecs.get(topic)
        if codec is None:
            self._load([topic])
            codec = self._codecs[topic]
        values = list(map(Message.value, msgs))
        keys = list(map(Message.key, msgs))
        dec = codec.decode(values)
        if dec.table is not None and codec.schema is None:
            unknown = set(codec.unknown_fields(dec.table)) - self._looked_up.setdefault(topic, set())
            if unknown:  # fields without recorded types: a producer may have recorded them since
                self._looked_up[topic] |= unknown
                meta = self._log.admin.meta([topic])[topic]
                if meta.observed is not None and meta.observed != codec.observed:
                    codec = self._codecs[topic] = JsonCodec(topic, meta.spec.schema, meta.observed)
                    dec = codec.decode(values)
        for i, err in dec.bad:
            raw = values[i]
            letters.append(DeadLetter(
                topic, err, b"" if raw is None else raw, int(parts[i]), int(offs[i]), key=keys[i],
            ))
        if dec.table is None or dec.table.num_rows == 0:
            return []
        rows = dec.rows
        allrows = len(rows) == len(msgs)
        good_msgs = msgs if allrows else [msgs[i] for i in rows]
        gparts = parts if allrows else parts[rows]
        goffs = offs if allrows else offs[rows]
        gkeys = keys if allrows else [keys[i] for i in rows]
        return record_batches(dec.table, topic, good_msgs, gparts, goffs, gkeys)

    def _write_dead(self, letters: list[DeadLetter], groups: list[tuple[str, list[Message], np.ndarray | None]],
                    parts: np.ndarray, offs: np.ndarray) -> None:
        by_topic: dict[str, list[DeadLetter]] = {}
        for d in letters:
            by_topic.setdefault(d.source_topic, []).append(d)
        try:
            if self._dlq is None:
                self._dlq = self._log.producer(linger_ms=0)
            for topic, ds in by_topic.items():
                self._dlq.send_dead_letters(topic, ds)
            self._dlq.flush(self._timeout * 3)
        except EverstreamError as e:
            # nothing may be lost: rewind to the first message of this poll, then fail
            for topic, _, sel in groups:
                tparts = parts if sel is None else parts[sel]
                toffs = offs if sel is None else offs[sel]
                for p in np.unique(tparts):
                    first = int(toffs[tparts == p].min())
                    if (topic, int(p)) in self._pos:
                        self._seek((topic, int(p)), first)
            if self._dlq is not None:
                try:
                    self._dlq.close()
                except EverstreamError:
                    pass
                self._dlq = None
            raise ConsumerError(
                f"could not write {len(letters)} undecodable record(s) of {sorted(by_topic)} to their dead-letter "
                f"topic ({e}); the consumer was moved back to the first record of this poll, nothing was "
                "skipped. Fix the cause and poll again."
            ) from e
        self._dead += len(letters)

    # ------------------------------------------------------------------ positions and commits

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._check_open()
        tp = (topic, partition)
        if tp not in self._pos:
            raise ConsumerError(f"seek: topic {topic!r} partition {partition} is not assigned to this consumer")
        lo, hi = self._watermarks(tp)
        if not isinstance(offset, int) or not lo <= offset <= hi:
            raise OffsetOutOfRangeError(
                f"seek: offset {offset} is outside topic {topic!r} partition {partition}'s stored range {lo}..{hi}"
            )
        self._seek(tp, offset)

    def _watermarks(self, tp: TP) -> tuple[int, int]:
        return self._log.admin.offsets([tp])[tp]

    def _seek(self, tp: TP, offset: int) -> None:
        if self._stash:
            self._stash = [m for m in self._stash if (m.topic(), m.partition()) != tp]
        target = TopicPartition(tp[0], tp[1], offset)
        deadline = time.monotonic() + 2.0
        while True:
            try:
                self._c.seek(target)
                break
            except KafkaException as e:
                err = error_of(e)
                if err is None or err.code() != KafkaError._STATE:
                    raise ConsumerError(
                        f"seek to offset {offset} of topic {tp[0]!r} partition {tp[1]}: {describe(e)}"
                    ) from e
                # the partition was assigned a moment ago and is not fetching yet: re-assign it at the offset
                if not self._subscribed:
                    self._pos[tp] = offset
                    self._c.assign([TopicPartition(t, p, self._pos[(t, p)]) for t, p in self._assigned])
                    break
                if time.monotonic() > deadline:
                    raise ConsumerError(
                        f"seek to offset {offset} of topic {tp[0]!r} partition {tp[1]}: the partition is not "
                        "ready yet; poll() once and seek again"
                    ) from e
                self._c.consume(0, 0.05)  # serve the fetcher's state change
        self._pos[tp] = offset

    def seek_to_timestamp(self, timestamp: int | datetime) -> None:
        self._check_open()
        if not self._assigned:
            return
        for tp, off in self._offsets_for(list(self._assigned), timestamp).items():
            if tp in self._pos:
                self._seek(tp, off)

    def position(self, topic: str, partition: int) -> int:
        tp = (topic, partition)
        if tp not in self._pos:
            raise ConsumerError(f"topic {topic!r} partition {partition} is not assigned to this consumer")
        held = self._stashed().get(tp)
        if held is not None:  # fetched while a commit was confirmed, not handed out yet
            return held
        lib = self._c.position([TopicPartition(topic, partition)])[0].offset
        if lib >= 0:
            return int(lib)
        if self._pos[tp] == _UNKNOWN:
            self._pos[tp] = self._resolve([tp])[tp]
        return self._pos[tp]

    def positions(self) -> dict[TP, int]:
        """The next offset to read of every assigned partition."""
        tps = list(self._assigned)
        if not tps:
            return {}
        lib = self._c.position([TopicPartition(t, p) for t, p in tps])
        out = {tp: (int(r.offset) if r.offset >= 0 else self._pos[tp]) for tp, r in zip(tps, lib, strict=True)
               if tp in self._pos}
        out.update({tp: off for tp, off in self._stashed().items() if tp in out})
        return {tp: off for tp, off in out.items() if off != _UNKNOWN}  # unknown: nothing read, nothing to commit

    def group_metadata(self) -> Any:
        """The group metadata a transactional producer's ``send_offsets`` needs."""
        if self.group is None:
            raise ConfigError("transactional offsets need a consumer group: log.consumer(group='name')")
        return self._c.consumer_group_metadata()

    def commit(self, offsets: Mapping[TP, int] | None = None) -> None:
        self._check_open()
        if self.group is None:
            raise ConfigError("commit() needs a consumer group: log.consumer(group='name')")
        self._commit(self.positions() if offsets is None else dict(offsets))

    def _commit(self, todo: Mapping[TP, int]) -> None:
        if not todo:
            return
        tps = [TopicPartition(t, p, int(o)) for (t, p), o in todo.items()]
        deadline = time.monotonic() + self._timeout * 3
        while True:
            try:
                self._commit_once(tps, deadline)
                return
            except KafkaException as e:
                err = error_of(e)
                code = err.code() if err is not None else None
                if code == KafkaError._NO_OFFSET:
                    return
                if code in _FENCED:
                    raise CommitFailedError(
                        f"group {self.group!r}: cannot commit offsets {dict(todo)}: the group rebalanced and "
                        f"these partitions may now belong to another member ({describe(e)}). Their records since "
                        "the last commit will be read again by the new owner; poll() again to get a fresh "
                        "assignment."
                    ) from e
                if is_retriable(e) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise BrokerError(f"group {self.group!r}: committing offsets {dict(todo)} failed: {describe(e)}") from e

    def _commit_once(self, tps: list[TopicPartition], deadline: float) -> None:
        """One commit, confirmed by the broker before ``deadline``.

        librdkafka's synchronous commit cannot be bounded and serves nothing while it waits: a
        rebalance that needs this consumer's callbacks (or another member polled by the same
        thread) would block it for minutes. So: commit asynchronously and serve the consumer
        (rebalance callbacks included) until the commit's own callback arrives; messages fetched
        meanwhile are kept for the next poll. With ``auto_commit`` (librdkafka's commits share the
        callback), and inside a rebalance callback, the synchronous commit is used.
        """
        if self._auto_commit or self._in_callback:
            res = self._c.commit(offsets=tps, asynchronous=False)
            bad = [r for r in (res or []) if r.error is not None]
            if bad:
                raise KafkaException(bad[0].error)
            return
        slot = _Commit()
        self._commits.append(slot)
        self._c.commit(offsets=tps, asynchronous=True)
        wait_until = min(deadline, time.monotonic() + _COMMIT_WAIT_S)
        while not slot.done:
            if time.monotonic() > wait_until:
                offsets = {(tp.topic, tp.partition): tp.offset for tp in tps}
                raise CommitFailedError(
                    f"group {self.group!r}: the commit of offsets {offsets} was not confirmed within "
                    f"{_COMMIT_WAIT_S:g} s: the group is rebalancing (another member, possibly polled by this "
                    "same thread, has to rejoin first) or the broker is unreachable. Poll and commit again; "
                    "records since the last confirmed commit may be read again."
                )
            m = self._c.poll(0.05)
            if m is not None:
                self._stash.append(m)
        if slot.error is not None:
            raise KafkaException(slot.error)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if not self._commits:
            return
        slot = self._commits.popleft()
        slot.error = err if err is not None else next((p.error for p in partitions if p.error is not None), None)
        slot.done = True

    def _stashed(self) -> dict[TP, int]:
        """First stashed offset per partition (data messages only)."""
        first: dict[TP, int] = {}
        for m in self._stash:
            if m.error() is None:
                tp = (str(m.topic()), int(m.partition()))
                first.setdefault(tp, int(m.offset()))
        return first

    def _take_stash(self, limit: int) -> list[Message]:
        if not self._stash:
            return []
        out, self._stash = self._stash[:limit], self._stash[limit:]
        return out

    def committed(self, topic: str, partition: int) -> int | None:
        if self.group is None:
            return None
        self._load([topic])
        res = self._call("reading committed offsets", lambda: self._c.committed(
            [TopicPartition(topic, partition)], timeout=self._timeout))
        off = res[0].offset
        return None if off < 0 else int(off)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._auto_commit and self._assigned:
                try:
                    self.commit()
                except EverstreamError as e:
                    logger.warning("group %r: final commit failed: %s", self.group, e)
            self._c.close()
        finally:
            self._closed = True
            if self._dlq is not None:
                self._dlq.close()

    # ------------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Any) -> Any:
        deadline = time.monotonic() + self._timeout * 3
        while True:
            try:
                return fn()
            except KafkaException as e:
                if is_retriable(e) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                if is_retriable(e):
                    raise BrokerError(f"{what}: the Kafka broker at {self._log.bootstrap} did not answer "
                                      f"({describe(e)}); check that it is running") from e
                raise ConsumerError(f"{what} failed: {describe(e)}") from e

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._error = ConsumerError(f"the Kafka consumer hit a fatal error: {err.name()}: {err.str()}; close it "
                                        "and create a new one")
        elif err.code() == KafkaError.INVALID_SESSION_TIMEOUT:
            self._error = ConfigError(f"the broker refused the session timeout ({err.str()}); brokers accept "
                                      "6000..1800000 ms by default (group.min/max.session.timeout.ms)")
        else:
            logger.debug("kafka consumer: %s", err.str())

    def _raise_pending(self) -> None:
        if self._callback_error is not None:
            e, self._callback_error = self._callback_error, None
            raise e
        if self._error is not None:
            raise self._error

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("consumer is closed")
        if self._error is not None:
            raise self._error
