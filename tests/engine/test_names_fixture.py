"""The ``names`` fixture: names never reused across runs on the long-lived test broker.

A kafka-hopping window test once found every window twice: its 6-hex-digit suffix had been drawn
by a run an hour earlier, so it appended to that run's input topic, resumed from that run's
committed offsets and added a second copy of the output. These tests pin the guard.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from everstream.log import Log, TopicSpec

_EARLIER = uuid.UUID("900cd6a1b2c3d4e5f60718293a4b5c6d")


def test_names_carry_48_random_bits(names: Callable[[str], str]) -> None:
    a = names("trades")
    assert a.startswith("trades-") and len(a.rsplit("-", 1)[1]) == 12
    assert names("trades") == a and names("out") == "out-" + a.rsplit("-", 1)[1]


def test_a_name_left_on_the_broker_fails_the_test_at_once(
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, log: Log) -> None:
    if log.kind != "kafka":
        pytest.skip("the embedded log is new for every test: nothing is left over")
    leftover = f"trades-{_EARLIER.hex[:12]}"
    log.create_topic(TopicSpec(leftover, 1), exist_ok=True)  # what an earlier run left behind
    monkeypatch.setattr(uuid, "uuid4", lambda: _EARLIER)  # this run draws the same suffix
    try:
        names: Callable[[str], str] = request.getfixturevalue("names")
        with pytest.raises(AssertionError, match="already exists on the test broker"):
            names("trades")
    finally:
        log.delete_topic(leftover)
