"""Fixtures of the engine tests: a fresh log per test, parametrized over log implementations.

The embedded log always runs. The Kafka log joins the parametrization when
``EVERSTREAM_TEST_KAFKA`` is set (to the bootstrap address, or ``1`` for
``EVERSTREAM_BROKER`` / 127.0.0.1:9092; scripts/test.sh sets it) unless
``EVERSTREAM_ENGINE_ON_KAFKA=0``; every name a test creates goes through ``names`` so tests
never share topics or consumer groups on a shared broker.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from everstream.log import EmbeddedLog, Log


def _log_kinds() -> list[str]:
    kinds = ["embedded"]
    if (
        os.environ.get("EVERSTREAM_ENGINE_ON_KAFKA", "1") != "0"
        and os.environ.get("EVERSTREAM_TEST_KAFKA")
        and importlib.util.find_spec("everstream.log.kafka")
    ):
        kinds.append("kafka")
    return kinds


@pytest.fixture(params=_log_kinds())
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    """A fresh, empty log: embedded in a temporary directory, or the test Kafka broker."""
    if request.param == "embedded":
        lg: Log = EmbeddedLog(tmp_path / "data", durability="relaxed")
    else:
        from everstream.log.kafka import KafkaLog

        setting = os.environ["EVERSTREAM_TEST_KAFKA"]
        bootstrap = setting if setting not in ("1", "true", "yes") else (
            os.environ.get("EVERSTREAM_BROKER", "").removeprefix("kafka://") or "127.0.0.1:9092")
        lg = KafkaLog(bootstrap)
    yield lg
    lg.close()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """Unique topic / app names for this test: ``names("trades")`` -> ``trades-1a2b3c4d5e6f``.

    The test broker keeps every topic and consumer group of earlier runs. With a 6-hex-digit
    suffix a run once drew an earlier run's names: it appended its input to the old topic, resumed
    from the old group's committed offsets and found every window twice in the output. Hence 48
    random bits, a name already on the broker fails the test at once, and on Kafka the test's
    topics are deleted afterwards.
    """
    lg: Log | None = request.getfixturevalue("log") if "log" in request.fixturenames else None
    kafka = lg if lg is not None and lg.kind == "kafka" else None
    suffix = uuid.uuid4().hex[:12]
    given: set[str] = set()

    def name(base: str) -> str:
        n = f"{base}-{suffix}"
        if kafka is not None and n not in given:
            given.add(n)
            if kafka.has_topic(n):
                raise AssertionError(f"topic {n!r} already exists on the test broker: the test would read an earlier "
                                     "run's records; delete it (everstream topics delete) and run again")
        return n

    yield name
    if kafka is not None:
        for t in kafka.admin.names():  # type: ignore[attr-defined]
            if suffix in t:
                try:
                    kafka.delete_topic(t)
                except Exception:  # cleanup only: never fail a test for it
                    pass
