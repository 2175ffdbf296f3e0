"""Fixtures of the Kafka-only tests: the real broker named by ``EVERSTREAM_TEST_KAFKA``.

Without it every test here is SKIPPED (``bash scripts/test.sh`` starts a broker and sets it), or
FAILS when ``EVERSTREAM_REQUIRE_KAFKA=1``. Tests marked ``kafka_restart`` stop and restart the
broker; they are moved to the very end of the run so that nothing else sees the outage.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from everstream.log.kafka import KafkaLog


def kafka_bootstrap() -> str:
    addr = os.environ.get("EVERSTREAM_TEST_KAFKA", "").strip()
    if not addr:
        msg = ("no Kafka broker for the tests: set EVERSTREAM_TEST_KAFKA=127.0.0.1:9092 after "
               "`bash scripts/kafka-broker.sh start`, or run `bash scripts/test.sh` (starts one)")
        if os.environ.get("EVERSTREAM_REQUIRE_KAFKA") == "1":
            pytest.fail("EVERSTREAM_REQUIRE_KAFKA=1 but " + msg)
        pytest.skip(msg)
    return addr


@pytest.fixture(scope="session")
def bootstrap() -> str:
    return kafka_bootstrap()


@pytest.fixture
def kafka(bootstrap: str) -> Iterator[KafkaLog]:
    lg = KafkaLog(bootstrap)
    yield lg
    lg.close()


@pytest.fixture
def names(kafka: KafkaLog) -> Iterator[Callable[[str], str]]:
    """``names("orders")`` -> a topic/group/transactional id unique to this test; topics are deleted after."""
    tag = uuid.uuid4().hex[:8]

    def name(base: str) -> str:
        return f"{base}-{tag}"

    yield name
    try:
        for t in kafka.list_topics():
            if tag in t.name:
                kafka.delete_topic(t.name)
    except Exception:  # cleanup only (the broker may be down after a failed restart test)
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the broker-restart tests last: they take the broker away for a few seconds."""
    last = [it for it in items if it.get_closest_marker("kafka_restart")]
    if last:
        items[:] = [it for it in items if not it.get_closest_marker("kafka_restart")] + last
