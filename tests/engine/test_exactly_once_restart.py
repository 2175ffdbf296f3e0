"""Exactly-once across a Kafka broker outage (runs last: marked ``kafka_restart``).

An exactly-once pipeline (windows + a per-key running sum) runs under a supervisor that starts a
new runner whenever the current one fails, as a process manager would. Mid-run the real broker
is stopped with ``scripts/kafka-broker.sh stop`` and started again; more input arrives after it
is back. A last runner drains the input; the committed outputs must equal the batch references
exactly: nothing lost, nothing twice.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from enginetools import produce, trades
from test_exactly_once import build, check_outputs

from everstream.engine.testing import read_topic
from everstream.log import Log

pytestmark = [pytest.mark.kafka, pytest.mark.kafka_restart]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka-broker.sh"


def _broker(cmd: str) -> str:
    out = subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True, timeout=180)
    if cmd != "status" and out.returncode != 0:
        raise AssertionError(f"kafka-broker.sh {cmd} failed: {out.stderr[-2000:]}")
    return out.stdout


class _Supervisor(threading.Thread):
    """Runs the app exactly-once; a failed runner is replaced by a new one (state from the changelog)."""

    def __init__(self, make_log: Callable[[], Log], names: tuple[str, str, str, str]) -> None:
        super().__init__(daemon=True)
        self.make_log, self.names = make_log, names
        self.stop = threading.Event()
        self.restarts = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            log = None
            try:
                log = self.make_log()
                with build(*self.names).runner(log, guarantee="exactly_once", commit_interval=0.02,
                                               max_batch_events=300) as runner:
                    while not self.stop.is_set():
                        runner.cycle(timeout=0.05)
            except Exception as e:  # the broker went away: start over, as a process manager would
                self.errors.append(f"{type(e).__name__}: {e}")
                self.restarts += 1
                time.sleep(1.0)
            finally:
                if log is not None:
                    try:
                        log.close()
                    except Exception:
                        pass


@pytest.mark.timeout(420)
def test_exactly_once_across_a_broker_restart(names: Callable[[str], str]) -> None:
    bootstrap = os.environ.get("EVERSTREAM_TEST_KAFKA", "")
    port = os.environ.get("KAFKA_PORT", "9092")  # the port scripts/kafka-broker.sh manages
    if bootstrap not in (f"127.0.0.1:{port}", f"localhost:{port}") or "running" not in _broker("status"):
        pytest.skip(f"the broker at {bootstrap or '(none)'} is not the one scripts/kafka-broker.sh manages here")
    from everstream.log.kafka import KafkaLog

    app_name, src, bars, sums = names("eo"), names("trades"), names("bars"), names("sums")
    df = trades(6000, seed=41, disorder_ms=500)
    first, second = df.head(3000), df.tail(3000)
    log = KafkaLog(bootstrap)
    sup = _Supervisor(lambda: KafkaLog(bootstrap), (app_name, src, bars, sums))
    try:
        produce(log, src, first, partitions=2, chunk=500)
        sup.start()
        deadline = time.monotonic() + 90
        while not log.has_topic(sums) or read_topic(log, sums).height < 500:
            assert time.monotonic() < deadline, f"no output before the outage; supervisor errors: {sup.errors}"
            time.sleep(0.5)
        _broker("stop")
        time.sleep(2.0)
        _broker("start")
        produce(log, src, second, partitions=2, chunk=500)  # input that arrives after the outage
        time.sleep(5.0)
    finally:
        sup.stop.set()
        sup.join(120)
        if "running" not in _broker("status"):
            _broker("start")  # never leave the other tests without a broker
    log.close()
    final = KafkaLog(bootstrap)
    try:
        build(app_name, src, bars, sums).run(final, until_idle=True, guarantee="exactly_once")
        check_outputs(final, df, bars, sums)
    finally:
        final.close()
