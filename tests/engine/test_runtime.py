"""Runtime: at-least-once commits, restart, metrics, adaptive batches, stop, and `everstream run`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import polars as pl
from enginetools import BARS, aggs, assert_same, engine_output, produce, reference, trades

import everstream as es
from everstream.engine.testing import read_topic
from everstream.log import EmbeddedLog, Log


def _bars_app(name: str, topic: str, out: str, delay: str = "1s") -> es.App:
    app = es.App(name)
    app.stream(topic).with_watermark("ts", max_delay=delay).window(es.tumbling("10s"), by="symbol",
                                                                   name="bars").agg(**aggs(BARS)).to(out)
    return app


def test_stateless_commit_reaches_the_end(log: Log, names: Callable[[str], str]) -> None:
    """After a run, the app's group has committed every input partition's end offset."""
    topic = names("trades")
    produce(log, topic, trades(500), partitions=2)
    app = es.App(names("market"))
    app.stream(topic).filter(pl.col("qty") > 0).to(names("out"))
    app.run(log, until_idle=True)
    ends = {p.partition: p.end_offset for p in log.describe_topic(topic).partitions}
    with log.consumer(app.name) as c:
        assert {p: c.committed(topic, p) for p in ends} == ends


def test_commits_never_pass_events_open_windows_hold(log: Log, names: Callable[[str], str]) -> None:
    """Stopped mid-stream (no final watermark), a restart re-reads what open windows held: nothing lost."""
    data = trades(3000, seed=5)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=500)
    app_name = names("market")
    with _bars_app(app_name, topic, out).runner(log) as runner:
        runner.catch_up()
        runner.commit()
        open_rows = runner.metrics()["bars"]["state_rows"]
        held = runner.ops["bars"].held_offsets()  # type: ignore[attr-defined]
    assert open_rows > 0
    ends = {p.partition: p.end_offset for p in log.describe_topic(topic).partitions}
    with log.consumer(app_name) as c:
        committed = {p: c.committed(topic, p) for p in ends}
    assert all(committed[p] == held[(topic, p)] < ends[p] for p in ends)  # the crash keeps them readable

    _bars_app(app_name, topic, out).run(log, until_idle=True)  # the "restarted" process
    # windows open at the "crash" are complete in the restarted run (at-least-once: no loss)
    got = engine_output(log, out, "symbol").unique(["symbol", "window_start"], keep="last", maintain_order=True)
    assert_same(got.sort("symbol", "window_start"), reference(data, es.tumbling("10s"), "symbol", BARS))


def test_batching_does_not_change_results(log: Log, names: Callable[[str], str]) -> None:
    """Tiny polls and one big poll give identical windows (lateness is judged per event)."""
    data = trades(1500, seed=21, disorder_ms=900)
    topic = names("trades")
    produce(log, topic, data, partitions=2, chunk=100)
    outs = []
    for batch in (7, 1_000_000):
        out = names(f"out{batch}")
        _bars_app(names(f"m{batch}"), topic, out, delay="900ms").run(log, until_idle=True, max_batch_events=batch)
        outs.append(engine_output(log, out, "symbol"))
    assert_same(outs[0], outs[1])
    assert_same(outs[0], reference(data, es.tumbling("10s"), "symbol", BARS))


def test_metrics_per_step(log: Log, names: Callable[[str], str]) -> None:
    """Metrics: events in/out, batches, latency histogram, watermark and lag, windows fired."""
    data = trades(1000, seed=3)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=200)
    result = _bars_app(names("market"), topic, out).run(log, until_idle=True)
    m = result.metrics
    assert set(m) == {topic, f"{topic}.watermark", "bars", f"to.{out}"}
    assert m[topic]["events_in"] == m[topic]["events_out"] == 1000
    assert m[f"{topic}.watermark"]["events_out"] == 1000
    assert m[f"{topic}.watermark"]["watermark"] is None  # the final watermark is past every event
    bars = m["bars"]
    assert bars["events_in"] == 1000 and bars["windows_fired"] == bars["events_out"] == read_topic(log, out).height
    assert bars["late_events"] == 0 and bars["state_rows"] == 0
    assert bars["latency"]["count"] >= bars["batches"] >= 2
    assert bars["latency"]["p99_ms"] >= bars["latency"]["p50_ms"] > 0
    assert sum(bars["latency"]["buckets_ms"].values()) == bars["latency"]["count"]
    assert m[f"{topic}.watermark"]["dead_letters"] == 0
    assert json.dumps(result.to_dict())


def test_live_run_stops_cleanly(tmp_path: Path) -> None:
    """A live run picks up new data as it comes and stop() ends it after writing and committing."""
    log = EmbeddedLog(tmp_path / "data", durability="relaxed")
    produce(log, "trades", trades(10), partitions=1)
    app = es.App("live")
    app.stream("trades").select("symbol", "qty").to("out")
    runner = app.runner(log, poll_timeout=0.01)
    done: list[es.engine.RunResult] = []
    thread = threading.Thread(target=lambda: done.append(runner.run()))
    thread.start()
    try:
        produce(log, "trades", trades(15, seed=9), partitions=1)
        for _ in range(200):
            if read_topic(log, "out").height == 25:
                break
            threading.Event().wait(0.02)
    finally:
        runner.stop()
        thread.join(10)
        runner.close()
    assert done and done[0].stopped == "stopped" and done[0].events_in == 25
    with log.consumer("live") as c:
        assert c.committed("trades", 0) == 25
    log.close()


PIPELINE = '''
import everstream as es

app = es.App("cli-bars")
trades = app.stream("trades").with_watermark("ts", max_delay="1s")
trades.window(es.tumbling("10s"), by="symbol").agg(high=es.max("price"), n=es.count()).to("bars")

if __name__ == "__main__":  # not run by `everstream run`
    raise SystemExit("should not run")
'''


def test_cli_run_until_idle(tmp_path: Path) -> None:
    """`everstream run PIPELINE.py --until-idle` runs the file's app over the data and exits with a summary."""
    data_dir = tmp_path / "data"
    log = EmbeddedLog(data_dir, durability="relaxed")
    data = trades(400, seed=4)
    produce(log, "trades", data, partitions=2)
    log.close()
    path = tmp_path / "pipeline.py"
    path.write_text(PIPELINE)
    proc = subprocess.run([sys.executable, "-m", "everstream.cli", "--data-dir", str(data_dir), "run", str(path),
                           "--until-idle"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["app"] == "cli-bars" and summary["events_in"] == 400 and summary["stopped"] == "idle"
    with EmbeddedLog(data_dir) as log2:
        bars = read_topic(log2, "bars")
    assert bars["n"].sum() == 400


def test_cli_run_without_app(tmp_path: Path) -> None:
    """A pipeline file without an App is a clear error (exit code 2)."""
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    proc = subprocess.run([sys.executable, "-m", "everstream.cli", "--data-dir", str(tmp_path / "d"), "run",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "defines no App" in proc.stderr


def test_outputs_are_written_with_standard_arrow_types_and_same_values() -> None:
    """Sinks write strings and binaries with plain offsets at the top level and 64-bit offsets inside lists and
    structs (what older versions wrote), whatever Polars exports; values survive the round trip."""
    import datetime as dt
    import decimal

    import pyarrow as pa

    from everstream.engine.runtime import to_arrow

    df = pl.DataFrame({
        "s": ["a", None], "b": [b"x", None], "i8": pl.Series([1, 2], dtype=pl.Int8), "f": [1.5, None],
        "d": [dt.date(2020, 1, 1), None], "t": [dt.datetime(2020, 1, 1, 1), None],
        "tz": pl.Series([dt.datetime(2020, 1, 1, 1), None]).dt.replace_time_zone("Europe/London"),
        "dur": [dt.timedelta(seconds=1), None], "dec": pl.Series([decimal.Decimal("1.10"), None],
                                                                 dtype=pl.Decimal(10, 2)),
        "ls": [["a"], None], "lls": [[["a"]], None], "st": [{"a": "x", "n": 1}, None], "nul": [None, None],
        "cat": pl.Series(["a", "b"], dtype=pl.Categorical), "en": pl.Series(["a", "b"], dtype=pl.Enum(["a", "b"])),
    })
    want = {"s": pa.string(), "b": pa.binary(), "ls": pa.large_list(pa.large_string()),
            "lls": pa.large_list(pa.large_list(pa.large_string())),
            "st": pa.struct([("a", pa.large_string()), ("n", pa.int64())]), "cat": pa.string(), "en": pa.string()}
    for cols in [[c] for c in df.columns] + [df.columns]:  # categoricals alone take the fallback path
        frame = df.select(cols)
        table = to_arrow(frame)
        for f in table.schema:
            assert "view" not in str(f.type) and str(f.type) not in ("large_string", "large_binary")
            if f.name in want:
                assert f.type == want[f.name], f
        back = pl.from_arrow(table)
        assert isinstance(back, pl.DataFrame)
        assert back.with_columns(pl.col(c).cast(pl.String) for c in ("cat", "en") if c in cols).equals(
            frame.with_columns(pl.col(c).cast(pl.String) for c in ("cat", "en") if c in cols))
    many = pl.concat([df.drop("cat", "en")] * 3000, rechunk=False)  # thousands of chunks: no blow-up
    assert to_arrow(many).num_rows == 6000
