"""Kafka transactions through the Kafka log: records and consumer offsets committed atomically."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from everstream.errors import ConfigError, ProducerError, ProducerFencedError
from everstream.log.contract import Consumer as ContractConsumer
from everstream.log.contract import TopicPartition as TP
from everstream.log.contract import TransactionalProducer
from everstream.log.kafka.client import describe
from everstream.log.kafka.producer import KafkaProducer

if TYPE_CHECKING:
    from everstream.log.kafka.consumer import KafkaConsumer
    from everstream.log.kafka.log import KafkaLog


#: Error codes meaning "a newer producer with this transactional id exists".
_FENCED_CODES = frozenset(
    c for c in (getattr(KafkaError, n, None) for n in ("_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"))
    if c is not None
)


class KafkaTransactionalProducer(KafkaProducer, TransactionalProducer):
    """A producer whose writes (and consumer offsets) become visible atomically, or not at all.

    ::

        with log.transactional_producer("step-7") as tx:
            tx.begin()
            tx.send_batch("out", table)
            tx.send_offsets(consumer)       # the input positions, in the same transaction
            tx.commit()                     # or tx.abort(); ``with tx.transaction():`` does both

    Consumers with ``read_committed`` isolation (every everstream consumer) never see aborted
    records. A second producer with the same ``transactional_id`` fences this one off: its next
    call raises :class:`ProducerError`.
    """

    def __init__(
        self, log: KafkaLog, transactional_id: str, *, transaction_timeout_ms: int = 60_000,
        **kwargs: Any,
    ) -> None:
        if not transactional_id or not isinstance(transactional_id, str):
            raise ConfigError(f"transactional_id {transactional_id!r}: give a stable, non-empty name per task")
        self.transactional_id = transactional_id
        self._in_txn = False
        config = dict(kwargs.pop("config", None) or {})
        config.update({"transactional.id": transactional_id, "transaction.timeout.ms": transaction_timeout_ms})
        # librdkafka: a message may not outlive the transaction that carries it
        kwargs["delivery_timeout_ms"] = min(kwargs.get("delivery_timeout_ms", 120_000), transaction_timeout_ms)
        super().__init__(log, config=config, **kwargs)
        self._txn_call("initializing transactions", lambda: self._p.init_transactions(log.timeout))

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def begin(self) -> None:
        if self._error is not None or self._closed:
            self._raise_state()
        if self._in_txn:
            raise ProducerError(f"transactional producer {self.transactional_id!r}: a transaction is already open")
        self._txn_call("beginning a transaction", self._p.begin_transaction)
        self._in_txn = True

    def send_offsets(self, consumer: KafkaConsumer | ContractConsumer | str,
                     offsets: Mapping[TP, int] | None = None) -> None:
        """Commit the consumer group's ``offsets`` (default: its positions) with this transaction.

        ``consumer`` may also be a group name (then ``offsets`` is required): the offsets are
        committed for the group without a member's generation (no zombie check on the group side).
        """
        self._check_txn()
        if isinstance(consumer, str):
            if offsets is None:
                raise ConfigError(f"send_offsets({consumer!r}): give the offsets to commit for a group name")
            todo = dict(offsets)
            meta = self._group_metadata(consumer)
        else:
            todo = consumer.positions() if offsets is None else dict(offsets)  # type: ignore[union-attr,attr-defined]
            meta = consumer.group_metadata()  # type: ignore[union-attr,attr-defined]
        tps = [TopicPartition(t, p, int(o)) for (t, p), o in todo.items()]
        with self._drain_lock:
            self._drain_locked()
            self._txn_call(
                "sending consumer offsets", lambda: self._p.send_offsets_to_transaction(tps, meta, self._log.timeout)
            )

    def _group_metadata(self, group: str) -> Any:
        """Group metadata of ``group`` for a producer that has no consumer of it at hand."""
        from confluent_kafka import Consumer as RdConsumer

        from everstream.log.kafka.client import base_config

        c = RdConsumer(base_config(self._log.bootstrap, {**self._log.client_config, "group.id": group,
                                                         "enable.auto.commit": False}))
        try:
            return c.consumer_group_metadata()
        finally:
            c.close()

    def commit(self, timeout: float | None = None) -> None:
        self._check_txn()
        with self._drain_lock:
            self._drain_locked()
            wait = self._log.timeout * 6 if timeout is None else timeout
            try:
                self._wait_acks(wait)
            except ProducerError as e:
                if not self._failed or self._fatal:
                    raise
                # some records of the transaction failed: abort it as a whole, the producer stays usable
                self._error, self._failed, self._failures = None, 0, []
                self.abort()
                raise ProducerError(
                    f"transactional producer {self.transactional_id!r}: the transaction was aborted because "
                    f"records were not acknowledged ({e}); nothing of it is visible. Re-run the step."
                ) from e
            self._txn_call("committing the transaction", lambda: self._p.commit_transaction(wait))
            self._in_txn = False

    def abort(self, timeout: float | None = None) -> None:
        if not self._in_txn:
            return
        with self._lock:
            self._buf = {}
            self._buffered = 0
        wait = self._log.timeout * 6 if timeout is None else timeout
        with self._drain_lock:
            if not self._fatal:
                # let produce requests in flight settle first: a broker (Kafka 4) answers an EndTxn that
                # races them with INVALID_TXN_STATE, a fatal error (seen when a task aborts right after
                # sending); their records stay invisible, the abort discards them
                self._p.flush(min(wait, self._log.timeout))
            self._txn_call("aborting the transaction", lambda: self._p.abort_transaction(wait), abortable=False)
            self._in_txn = False
            # messages of the aborted transaction still queued were purged: their (failed) delivery
            # reports are expected, not errors of this producer
            self._serve(0)
            if not self._fatal:
                self._error, self._failed, self._failures = None, 0, []

    def _close_hook(self) -> None:
        if self._in_txn:  # never commit on close: uncommitted work is discarded
            self.abort()

    def _diagnose(self) -> KafkaException | None:
        try:  # a producer in a fatal state (e.g. fenced) says why when asked to abort
            self._p.abort_transaction(1.0)
        except KafkaException as e:
            return e
        except SystemError:
            return None
        self._in_txn = False
        return None

    def _check_txn(self) -> None:
        if not self._in_txn:
            raise ProducerError(
                f"transactional producer {self.transactional_id!r}: call begin() before sending "
                "(or use `with producer.transaction():`)"
            )

    def _txn_call(self, what: str, fn: Any, abortable: bool = True) -> None:
        deadline = time.monotonic() + self._log.timeout * 6
        while True:
            try:
                fn()
                return
            except KafkaException as e:
                err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
                if err is not None and err.retriable() and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                if err is not None and err.fatal():
                    fenced = err.code() in _FENCED_CODES
                    self._error = (ProducerFencedError if fenced else ProducerError)(
                        f"transactional producer {self.transactional_id!r}: {what} failed fatally "
                        f"({err.name()}: {err.str()}); it was probably fenced by a newer producer with the "
                        "same transactional id. Its open transaction is aborted; create a new producer."
                    )
                    raise self._error from e
                if err is not None and err.txn_requires_abort() and abortable:
                    try:
                        self._p.abort_transaction(self._log.timeout)
                    finally:
                        self._in_txn = False
                    raise ProducerError(
                        f"transactional producer {self.transactional_id!r}: {what} failed "
                        f"({err.name()}: {err.str()}); the transaction was aborted, nothing of it is "
                        "visible. Re-run the step from the last committed offsets."
                    ) from e
                raise ProducerError(
                    f"transactional producer {self.transactional_id!r}: {what} failed: {describe(e)}"
                ) from e
