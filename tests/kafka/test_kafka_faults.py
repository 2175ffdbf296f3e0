"""Faults: an unreachable broker fails fast and clearly (needs no broker at all)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from everstream.errors import BrokerError, ConfigError
from everstream.log import open_log
from everstream.log.kafka import KafkaLog


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_raises_broker_error_quickly() -> None:
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port}") as exc:
        KafkaLog(f"127.0.0.1:{port}", timeout_s=2)
    took = time.monotonic() - t0
    assert took < 5, f"took {took:.1f}s"
    assert "kafka-broker.sh start" in str(exc.value)


def test_open_log_kafka_url_unreachable_within_default_bound() -> None:
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match="cannot reach"):
        open_log(f"kafka://127.0.0.1:{_free_port()}")
    assert time.monotonic() - t0 < 13  # the default bound is 10 s


def test_unresolvable_host_and_bad_addresses() -> None:
    t0 = time.monotonic()
    with pytest.raises(BrokerError):
        KafkaLog("no-such-host.invalid:9092", timeout_s=2)
    assert time.monotonic() - t0 < 15  # plus however long the system's resolver takes to give up
    for bad in ("", "localhost", "kafka://", "host:port"):
        with pytest.raises(ConfigError, match="bootstrap"):
            KafkaLog(bad)


def test_cli_reports_unreachable_broker() -> None:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "everstream.cli", "--broker", f"kafka://127.0.0.1:{_free_port()}", "topics", "list"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "EVERSTREAM_KAFKA_TIMEOUT": "2"},
    )
    assert out.returncode == 2, out
    assert "cannot reach the Kafka broker" in out.stderr and "within 2 s" in out.stderr
    assert time.monotonic() - t0 < 15
