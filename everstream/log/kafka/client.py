"""What every librdkafka client of the Kafka log shares: configuration, logging, error translation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

from everstream.errors import BrokerError, ConfigError

T = TypeVar("T")

logger = logging.getLogger("everstream.kafka")

#: Broker errors that go away by themselves (leader moves, coordinator loading, broker restart).
RETRIABLE = frozenset({
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NOT_COORDINATOR,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    # stale partition metadata (a leader epoch the broker has not caught up with, e.g. right after a
    # topic is created or a broker restarts): the client refreshes metadata and the next try succeeds
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.REPLICA_NOT_AVAILABLE,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError._WAIT_COORD,
    KafkaError._RESOLVE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
})


#: The broker does not know the topic (deleted, or never created).
UNKNOWN_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID})


def check_bootstrap(bootstrap: str) -> str:
    """``host:port[,host:port...]`` (a ``kafka://`` prefix is accepted and dropped)."""
    text = bootstrap.removeprefix("kafka://").strip() if isinstance(bootstrap, str) else ""
    if not text or any(":" not in part or not part.rsplit(":", 1)[1].isdigit() for part in text.split(",")):
        raise ConfigError(
            f"invalid Kafka bootstrap servers {bootstrap!r}: use host:port[,host:port], e.g. 127.0.0.1:9092"
        )
    return text


def base_config(bootstrap: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Settings for every client; ``extra`` (e.g. security settings) overrides them."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": "everstream",
        "socket.connection.setup.timeout.ms": 10_000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1_000,
        "retry.backoff.ms": 50,
        "topic.metadata.refresh.interval.ms": 30_000,
        # never let a metadata request create a topic (brokers default to auto.create.topics.enable)
        "allow.auto.create.topics": False,
        # librdkafka's own log lines (connection refused, ...) go to Python logging, not stderr
        "logger": logger,
    }
    if extra:
        conf.update(extra)
    return conf


def error_of(e: BaseException) -> KafkaError | None:
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        return e.args[0]
    return None


def describe(e: BaseException) -> str:
    err = error_of(e)
    if err is None:
        return str(e)
    return f"{err.name()}: {err.str()}"


def is_retriable(e: BaseException) -> bool:
    err = error_of(e)
    return err is not None and (err.code() in RETRIABLE or bool(err.retriable()))


def unreachable(bootstrap: str, seconds: float, cause: BaseException | str) -> BrokerError:
    why = cause if isinstance(cause, str) else describe(cause)
    return BrokerError(
        f"cannot reach the Kafka broker at {bootstrap} within {seconds:g} s ({why}). Start it "
        "(bash scripts/kafka-broker.sh start), or point --broker / EVERSTREAM_BROKER at a running "
        "broker (kafka://host:port)"
    )


def retry(what: str, fn: Callable[[], T], deadline_s: float, bootstrap: str) -> T:
    """Call ``fn`` until it succeeds, retrying transient broker errors until ``deadline_s`` passes."""
    deadline = time.monotonic() + deadline_s
    pause = 0.05
    while True:
        try:
            return fn()
        except KafkaException as e:
            if not is_retriable(e) or time.monotonic() + pause > deadline:
                if is_retriable(e):
                    raise BrokerError(
                        f"{what}: the Kafka broker at {bootstrap} did not answer within {deadline_s:g} s "
                        f"({describe(e)}); check that it is running and reachable"
                    ) from e
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
