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
def names() -> Callable[[str], str]:
    """Unique topic / app names for this test: ``names("trades")`` -> ``trades-1a2b3c``."""
    suffix = uuid.uuid4().hex[:6]
    return lambda base: f"{base}-{suffix}"
