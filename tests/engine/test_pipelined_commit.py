"""At-least-once pipelined commits: input offsets are committed only once the outputs before them are durable,
without the engine's thread waiting for the writes (Runner._commit_pipelined).

Reference: plain Python sets of the ids that pass the filter.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from enginetools import produce

import everstream as es
from everstream.engine.testing import read_topic
from everstream.log import EmbeddedLog, Log


def _ids(start: int, n: int) -> pl.DataFrame:
    return pl.DataFrame({"id": range(start, start + n), "ts": [1_700_000_000_000 + i for i in range(start, start + n)]})


def _app(name: str, src: str, out: str) -> es.App:
    app = es.App(name)
    app.stream(src).filter(pl.col("id") % 3 != 0).select("id").to(out)
    return app


def test_offsets_wait_for_the_durability_marker(log: Log, names: Callable[[str], str]) -> None:
    src, out = names("src"), names("out")
    produce(log, src, _ids(0, 3000), key=None, chunk=500)
    app = _app(names("app"), src, out)
    with app.runner(log, commit_interval=0.0, max_batch_events=500) as runner:
        durable = {"now": False}
        real = runner.producer.is_durable
        runner.producer.is_durable = lambda marker: durable["now"] and real(marker)  # type: ignore[method-assign]
        runner.catch_up()
        with log.consumer(app.name) as c:
            assert c.committed(src, 0) is None  # outputs not confirmed: nothing committed
        durable["now"] = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runner.cycle(0.01)
            with log.consumer(app.name) as c:
                if c.committed(src, 0) == 3000:
                    break
        with log.consumer(app.name) as c:
            assert c.committed(src, 0) == 3000
    got = read_topic(log, out)["id"].to_list()
    assert sorted(got) == [i for i in range(3000) if i % 3]


_WORKER = textwrap.dedent("""
    import sys, polars as pl, everstream as es
    from everstream.log import EmbeddedLog
    log = EmbeddedLog(sys.argv[1])
    app = es.App("pipelined")
    app.stream("src").filter(pl.col("id") % 3 != 0).select("id").to("out")
    with app.runner(log, commit_interval=0.0, max_batch_events=700, poll_timeout=0.005) as runner:
        print("ready", flush=True)
        runner.run()
""")


@pytest.mark.crash
def test_kill_9_at_least_once_loses_nothing(tmp_path: Path) -> None:
    """A worker committing per cycle is killed -9 at random moments while input keeps arriving; a final run
    drains the rest. Every id that passes the filter is in the output (duplicates are at-least-once's right)."""
    rng = random.Random(20261126)
    data = tmp_path / "data"
    log = EmbeddedLog(data)
    try:
        log.create_topic(es.TopicSpec("src", 1))
        total, piece = 0, 20_000
        for _ in range(5):
            with log.producer() as p:
                p.send_batch("src", _ids(total, piece), timestamp="ts")
            total += piece
            proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(data)], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.6))
            proc.kill()
            proc.wait(10)
        _app("pipelined", "src", "out").run(log, until_idle=True)
        got = read_topic(log, "out")["id"].to_list()
    finally:
        log.close()
    assert set(got) == {i for i in range(total) if i % 3}
    assert len(got) >= len(set(got))
