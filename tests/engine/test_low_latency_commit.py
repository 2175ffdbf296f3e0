"""``commit_interval=0``: the low-latency commit mode of the runtime.

Exactly-once outputs become readable only at a commit; in this mode a commit follows every cycle
that read or wrote something once its poll was not full (the input caught up), full polls defer it
(at most ``LOW_LATENCY_MAX_DEFER_S``) and idle cycles never commit. At-least-once outputs do not
wait for commits, so there the mode commits offsets on the ``LOW_LATENCY_MAX_DEFER_S`` cadence.
References are plain Python over the produced rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from enginetools import produce, trades

import everstream as es
from everstream.engine.runtime import LOW_LATENCY_MAX_DEFER_S, Runner
from everstream.engine.testing import read_topic
from everstream.errors import ConfigError
from everstream.log import EmbeddedLog, Log


class Clock:
    """A manual monotonic clock (seconds)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _app(name: str, src: str, out: str) -> es.App:
    app = es.App(name)
    app.stream(src).with_watermark("ts", max_delay="1s").filter(pl.col("qty") >= 500).select(
        "ts", "symbol", "qty").to(out)
    return app


def _expected(df: pl.DataFrame) -> list[tuple[int, str, int]]:
    return sorted((int(r["ts"]), str(r["symbol"]), int(r["qty"])) for r in df.iter_rows(named=True) if r["qty"] >= 500)


def _got(log: Log, topic: str) -> list[tuple[int, str, int]]:
    df = read_topic(log, topic)
    if df.is_empty():
        return []
    return sorted((int(t), str(s), int(q)) for t, s, q in df.select("ts", "symbol", "qty").iter_rows())


def _cycle_until(runner: Runner, events: int, timeout: float = 20.0) -> int:
    """Cycle until ``events`` were polled (Kafka fetches arrive a few ms late); returns cycles that polled."""
    got, polled = 0, 0
    deadline = time.monotonic() + timeout
    while got < events:
        n = runner.cycle(timeout=0.05)
        got += n
        polled += n > 0
        assert time.monotonic() < deadline, f"polled {got} of {events} events within {timeout} s"
    return polled


def test_each_small_batch_is_readable_at_once_and_idle_cycles_do_not_commit(
        log: Log, names: Callable[[str], str]) -> None:
    """Exactly-once, commit_interval=0: after the cycle that processed a small batch its outputs are
    committed (readable by any consumer) without an explicit commit; empty polls add no commit."""
    src, out = names("ll-in"), names("ll-out")
    df = trades(300, symbols=4, gap_ms=10)
    produce(log, src, df.head(0))
    with _app(names("ll"), src, out).runner(log, guarantee="exactly_once", commit_interval=0.0,
                                            poll_timeout=0.01) as runner:
        seen = 0
        for start in range(0, df.height, 100):  # three live "bursts", each processed and readable at once
            part = df.slice(start, 100)
            before = runner.commits
            produce(log, src, part)
            polled = _cycle_until(runner, part.height)
            seen += part.height
            assert _got(log, out) == _expected(df.head(seen))
            assert 1 <= runner.commits - before <= polled  # at most one commit per cycle that read something
        idle = runner.commits
        for _ in range(5):
            assert runner.cycle(timeout=0.01) == 0
        assert runner.commits == idle, "idle cycles must not commit (each commit is a log transaction)"


def test_full_polls_defer_the_commit_and_a_crash_then_replays_exactly_once(tmp_path: Path) -> None:
    """Full polls (a backlog) defer the commit until a poll is not full or LOW_LATENCY_MAX_DEFER_S passed;
    work of deferred cycles is lost with a crash and redone once by the next runner."""
    log = EmbeddedLog(tmp_path / "data")
    try:
        df = trades(950, symbols=3, gap_ms=10)
        produce(log, "in", df, chunk=50)
        app = _app("ll-defer", "in", "out")
        clock = Clock()
        r1 = app.runner(log, guarantee="exactly_once", commit_interval=0.0, max_batch_events=100, clock=clock)
        assert r1.cycle(timeout=0.5) == 100 and r1.commits == 0  # full: more is waiting, no commit yet
        assert r1.cycle(timeout=0.5) == 100 and r1.commits == 0
        assert _got(log, "out") == []  # nothing committed, nothing readable
        clock.t += LOW_LATENCY_MAX_DEFER_S  # deferred long enough: the next (full) cycle commits
        assert r1.cycle(timeout=0.5) == 100 and r1.commits == 1
        assert _got(log, "out") == _expected(df.head(300))
        assert r1.cycle(timeout=0.5) == 100 and r1.commits == 1
        r1.close()  # a crash: the 4th batch's outputs were never committed
        assert _got(log, "out") == _expected(df.head(300))
        r2 = app.runner(log, guarantee="exactly_once", commit_interval=0.0, max_batch_events=100, clock=clock)
        polls = [r2.cycle(timeout=0.5) for _ in range(7)]
        assert polls == [100] * 6 + [50]  # the backlog from offset 300 on, re-read once
        assert r2.commits == 1  # deferred through the full polls, committed when caught up
        assert _got(log, "out") == _expected(df)  # every output exactly once
        r2.close()
    finally:
        log.close()


def test_at_least_once_commits_offsets_on_the_low_latency_cadence(tmp_path: Path) -> None:
    """At-least-once outputs are readable without a commit; its offsets commit every LOW_LATENCY_MAX_DEFER_S."""
    log = EmbeddedLog(tmp_path / "data")
    try:
        df = trades(200, symbols=3, gap_ms=10)
        produce(log, "in", df)
        clock = Clock()
        with _app("ll-alo", "in", "out").runner(log, commit_interval=0.0, clock=clock) as runner:
            assert runner.cycle(timeout=0.5) == 200
            runner.producer.flush()
            assert _got(log, "out") == _expected(df)  # readable: outputs never wait for an offset commit
            assert runner.consumer.committed("in", 0) is None  # the cadence has not come round yet
            clock.t += LOW_LATENCY_MAX_DEFER_S
            deadline = time.monotonic() + 10
            while runner.consumer.committed("in", 0) != 200:  # pipelined: once the outputs are durable
                runner.cycle(timeout=0.01)
                clock.t += LOW_LATENCY_MAX_DEFER_S
                assert time.monotonic() < deadline, "offsets not committed within 10 s"
    finally:
        log.close()


def test_a_negative_commit_interval_is_refused(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "data")
    try:
        produce(log, "in", trades(5))
        with pytest.raises(ConfigError, match="commit_interval"):
            _app("ll-bad", "in", "out").runner(log, commit_interval=-0.5)
    finally:
        log.close()
