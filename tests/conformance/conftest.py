"""The conformance suite: every test runs against both logs through the ``log`` fixture.

- ``embedded``: a fresh EmbeddedLog in a temporary directory;
- ``kafka``: the real broker named by ``EVERSTREAM_TEST_KAFKA`` (``scripts/test.sh`` starts one and
  sets it). Without it the Kafka half is SKIPPED, or FAILS when ``EVERSTREAM_REQUIRE_KAFKA=1``.

Tests take topic and group names from the ``names`` fixture: unique per test (a Kafka broker
outlives the test run), and the test's Kafka topics are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from everstream.log import EmbeddedLog, Log


def kafka_bootstrap() -> str:
    """The test broker, or skip (fail with EVERSTREAM_REQUIRE_KAFKA=1) when there is none."""
    addr = os.environ.get("EVERSTREAM_TEST_KAFKA", "").strip()
    if not addr:
        msg = ("no Kafka broker for the tests: set EVERSTREAM_TEST_KAFKA=127.0.0.1:9092 after "
               "`bash scripts/kafka-broker.sh start`, or run `bash scripts/test.sh` (starts one)")
        if os.environ.get("EVERSTREAM_REQUIRE_KAFKA") == "1":
            pytest.fail("EVERSTREAM_REQUIRE_KAFKA=1 but " + msg)
        pytest.skip(msg)
    return addr


@pytest.fixture(scope="session")
def kafka_log() -> Iterator[Log]:
    from everstream.log.kafka import KafkaLog

    lg = KafkaLog(kafka_bootstrap())
    yield lg
    lg.close()


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    if request.param == "embedded":
        lg = EmbeddedLog(tmp_path / "data")
        yield lg
        lg.close()
    else:
        yield request.getfixturevalue("kafka_log")


@pytest.fixture
def names(log: Log) -> Iterator[Callable[[str], str]]:
    """``names("orders")`` -> a topic or group name unique to this test."""
    tag = uuid.uuid4().hex[:8]
    made: list[str] = []

    def name(base: str) -> str:
        n = f"{base}-{tag}"
        made.append(n)
        return n

    yield name
    if log.kind == "kafka":
        for t in log.list_topics():
            if tag in t.name:
                try:
                    log.delete_topic(t.name)
                except Exception:  # cleanup only: never fail a test for it
                    pass
