"""Smoke check for the broker started by scripts/kafka-broker.sh (needs confluent-kafka).

Checks what the platform relies on: an idempotent transactional producer (commit and
abort), read_committed consumption that hides aborted records, transactional offset
commits (send_offsets_to_transaction), and an incremental cooperative-sticky rebalance
when a second member joins a group. Exits non-zero on any failure.

    eval "$(scripts/kafka-broker.sh start)" && python3 scripts/kafka_smoke.py

With --topic NAME the topic is kept: the first run fills it, a later run (e.g. after a
broker restart) only verifies that its committed records are still there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

PARTITIONS = 3
COMMITTED = 100
ABORTED = 10
TIMEOUT = 30.0
T0 = time.monotonic()


def check(ok: bool, what: str) -> None:
    print(f"{time.monotonic() - T0:6.2f}s {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        sys.exit(1)


def on_delivery(err: KafkaError | None, _msg: Message) -> None:
    if err is not None:
        raise KafkaException(err)


def consumer(bootstrap: str, group: str, isolation: str) -> Consumer:
    conf: dict[str, str | int | bool] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.partition.eof": True,
        "heartbeat.interval.ms": 500,  # members learn of a rebalance within 0.5 s
    }
    return Consumer(conf)


def drain(c: Consumer, want: int) -> list[str]:
    """Polls until every partition hit its end (after `want` values) or TIMEOUT."""
    values: list[str] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if len(at_end) == PARTITIONS and len(values) >= want:
            break
        msg = c.poll(0.2)
        if msg is None:
            continue
        err = msg.error()
        if err is not None and err.code() == KafkaError._PARTITION_EOF:
            at_end.add(msg.partition() or 0)
            continue
        if err is not None:
            raise KafkaException(err)
        at_end.discard(msg.partition() or 0)
        value = msg.value()
        values.append(value.decode() if value is not None else "")
    return values


def read_all(bootstrap: str, topic: str, isolation: str, want: int) -> list[str]:
    """Reads every partition from the beginning, without group management."""
    c = consumer(bootstrap, f"smoke-reader-{uuid.uuid4().hex[:8]}", isolation)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    try:
        return drain(c, want)
    finally:
        c.close()


def produce(bootstrap: str, topic: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "transactional.id": f"smoke-txn-{uuid.uuid4().hex[:8]}",
            "linger.ms": 5,
        }
    )
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    for i in range(COMMITTED):
        producer.produce(topic, key=str(i % 7), value=f"committed-{i}", on_delivery=on_delivery)
    producer.commit_transaction(TIMEOUT)
    check(True, f"transaction committed: {COMMITTED} records")
    producer.begin_transaction()
    for i in range(ABORTED):
        producer.produce(topic, key="x", value=f"aborted-{i}", on_delivery=on_delivery)
    producer.flush(TIMEOUT)  # the records really reach the log before the abort
    producer.abort_transaction(TIMEOUT)
    check(True, f"transaction aborted: {ABORTED} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument("--topic", help="keep this topic; verify only if it already exists")
    args = parser.parse_args()
    bootstrap: str = args.bootstrap
    topic: str = args.topic or f"smoke-{uuid.uuid4().hex[:8]}"

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=TIMEOUT).topics
    if topic in existing:
        check(len(existing[topic].partitions) == PARTITIONS, f"topic {topic} survived")
        values = read_all(bootstrap, topic, "read_committed", COMMITTED)
        committed = sum(v.startswith("committed-") for v in values)
        check(
            len(values) == committed == COMMITTED,
            f"{committed} committed records still readable",
        )
        print(f"OK verify-only {topic} in {time.monotonic() - T0:.2f}s")
        return

    for fut in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        fut.result(timeout=TIMEOUT)
    check(True, f"created topic {topic} ({PARTITIONS} partitions)")
    produce(bootstrap, topic)

    raw = read_all(bootstrap, topic, "read_uncommitted", COMMITTED + ABORTED)
    check(
        len(raw) == COMMITTED + ABORTED,
        f"read_uncommitted sees {len(raw)} records (aborted included)",
    )

    group = f"smoke-group-{uuid.uuid4().hex[:8]}"
    events: dict[str, list[tuple[str, list[int]]]] = {"c1": [], "c2": []}

    def track(name: str, kind: str) -> Callable[[Consumer, list[TopicPartition]], None]:
        return lambda _c, parts: events[name].append((kind, sorted(p.partition for p in parts)))

    c1 = consumer(bootstrap, group, "read_committed")
    c1.subscribe([topic], on_assign=track("c1", "assign"), on_revoke=track("c1", "revoke"))
    values = drain(c1, COMMITTED)
    aborted_seen = sum(v.startswith("aborted-") for v in values)
    check(
        len(values) == COMMITTED and aborted_seen == 0,
        f"read_committed sees {len(values)}, aborted {aborted_seen}",
    )
    check(events["c1"] == [("assign", [0, 1, 2])], f"c1 assignment {events['c1']}")

    # Consume-transform-produce: offsets committed inside a transaction (KIP-98/447).
    eos = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"smoke-eos-{uuid.uuid4().hex[:8]}",
        }
    )
    eos.init_transactions(TIMEOUT)
    eos.begin_transaction()
    eos.produce(f"{topic}-out", value=b"derived", on_delivery=on_delivery)
    positions = c1.position(c1.assignment())
    eos.send_offsets_to_transaction(positions, c1.consumer_group_metadata(), TIMEOUT)
    eos.commit_transaction(TIMEOUT)
    committed_offsets = {p.partition: p.offset for p in c1.committed(c1.assignment(), TIMEOUT)}
    check(
        committed_offsets == {p.partition: p.offset for p in positions},
        f"offsets committed in transaction: {committed_offsets}",
    )

    # A second member joins: cooperative-sticky moves only some partitions, c1 keeps the rest.
    c2 = consumer(bootstrap, group, "read_committed")
    c2.subscribe([topic], on_assign=track("c2", "assign"), on_revoke=track("c2", "revoke"))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for c in (c1, c2):
            msg = c.poll(0.2)
            err = msg.error() if msg is not None else None
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)
        a1 = {p.partition for p in c1.assignment()}
        a2 = {p.partition for p in c2.assignment()}
        if a1 and a2 and a1 | a2 == set(range(PARTITIONS)) and not a1 & a2:
            break
    revoked = [p for kind, parts in events["c1"] if kind == "revoke" for p in parts]
    check(
        bool(a1) and bool(a2) and a1 | a2 == set(range(PARTITIONS)) and 0 < len(revoked) < PARTITIONS,
        f"cooperative rebalance: c1={sorted(a1)} c2={sorted(a2)} c1 revoked only {revoked}",
    )
    for c in (c1, c2):
        c.close()
    print(f"OK {topic} in {time.monotonic() - T0:.2f}s")


if __name__ == "__main__":
    main()
