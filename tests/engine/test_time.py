"""Event time: late events to the side topic, idle partitions, watermark bookkeeping, final watermark."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from enginetools import BARS, aggs, assert_same, engine_output, produce, reference, trades

import everstream as es
from everstream.engine.testing import read_topic
from everstream.engine.time import MAX_TIME, MIN_TIME, PartitionWatermarks, duration_ms
from everstream.errors import ConfigError
from everstream.log import Log
from everstream.log.partitioner import key_bytes, partition_for


class ManualClock:
    """Processing time that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _with_stragglers(seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """2000 trades, then 25 copies of later trades moved 150 s back, one after every 40 events.

    Returns (on-time data, stragglers, arrival order).
    """
    data = trades(2000, seed=seed, disorder_ms=800)
    rng = np.random.default_rng(0)
    picks = rng.choice(np.arange(1000, 2000), size=25, replace=False)
    late = data[np.sort(picks)].with_columns((pl.col("ts") - 150_000).alias("ts"))  # 150 s behind
    rows = []
    for i in range(0, 1000, 40):
        rows.append(data.slice(1000 + i, 40))
        rows.append(late.slice(i // 40, 1))
    return data, late, pl.concat([data.head(1000), *rows])


def _late_app(names: Callable[[str], str], topic: str, out: str) -> es.App:
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="800ms").window(
        es.tumbling("5s"), by="symbol", name="bars").agg(**aggs(BARS)).to(out)
    return app


def test_late_events_go_to_side_topic_and_are_counted(log: Log, names: Callable[[str], str]) -> None:
    """Events behind the watermark by more than max_delay: side topic <app>.<step>.late, counted, not in results."""
    data, late, arrival = _with_stragglers(seed=4)
    topic, out = names("trades"), names("out")
    produce(log, topic, arrival, partitions=1, chunk=300)
    app = _late_app(names, topic, out)
    result = app.run(log, until_idle=True, max_batch_events=100)

    assert result.late_events == 25
    assert result.metrics["bars"]["late_events"] == 25
    side = read_topic(log, es.engine.late_topic_of(app.name, "bars"))
    assert side.height == 25
    assert sorted(side["ts"].to_list()) == sorted(late["ts"].to_list())
    assert set(side.columns) >= {"ts", "symbol", "price", "qty", "source_partition", "source_offset"}
    assert_same(engine_output(log, out, "symbol"), reference(data, es.tumbling("5s"), "symbol", BARS))


def test_late_events_on_several_partitions_are_either_counted_or_in_results(
    log: Log, names: Callable[[str], str]
) -> None:
    """Two partitions: which stragglers are late depends on how the partitions' reads interleave
    (the watermark is their minimum), but every event is either in the results or in the side
    topic, never both, never neither; the results equal the reference over the events not late."""
    _data, late, arrival = _with_stragglers(seed=6)
    topic, out = names("trades"), names("out")
    produce(log, topic, arrival, partitions=2, chunk=300)
    app = _late_app(names, topic, out)
    result = app.run(log, until_idle=True, max_batch_events=100)

    side = read_topic(log, es.engine.late_topic_of(app.name, "bars")) if result.late_events else None
    n_side = 0 if side is None else side.height
    assert result.late_events == n_side
    assert set(() if side is None else side["ts"].to_list()) <= set(late["ts"].to_list())  # only stragglers
    kept = arrival
    if side is not None:  # drop exactly the side topic's rows: (partition, offset) of the input
        cols = ["source_partition", "source_offset"]
        src = read_topic(log, topic, meta=True).rename({"_partition": "source_partition", "_offset": "source_offset"})
        src = src.cast({c: pl.Int64 for c in cols}).join(side.select(cols).cast({c: pl.Int64 for c in cols}),
                                                         on=cols, how="anti")
        kept = src.select(arrival.columns)
    assert kept.height == arrival.height - n_side
    assert_same(engine_output(log, out, "symbol"), reference(kept, es.tumbling("5s"), "symbol", BARS))


def _symbols_by_partition(partitions: int, wanted: int = 2) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(v) < wanted for v in found.values()):
        sym = f"S{i}"
        p = partition_for(key_bytes(sym), partitions)
        if len(found[p]) < wanted:
            found[p].append(sym)
        i += 1
    return found


def _events(symbols: list[str], start_ms: int, stop_ms: int, every_ms: int) -> pl.DataFrame:
    ts = np.arange(start_ms, stop_ms, every_ms, dtype=np.int64)
    return pl.DataFrame({
        "ts": ts, "symbol": [symbols[i % len(symbols)] for i in range(len(ts))],
        "price": np.linspace(10, 20, len(ts)), "qty": np.full(len(ts), 100, np.int64),
    })


def _drain(runner: es.engine.Runner) -> None:
    runner.catch_up()


@pytest.mark.parametrize("idle_timeout", ["5s", None])
def test_idle_partition_is_left_out_of_the_watermark(
    idle_timeout: str | None, log: Log, names: Callable[[str], str]
) -> None:
    """A partition without data for idle_timeout no longer holds the watermark; without a timeout it does."""
    syms = _symbols_by_partition(2)
    topic, out = names("trades"), names("out")
    quiet = _events(syms[1], 0, 3000, 500)  # partition 1: a few events, then nothing
    busy = _events(syms[0], 0, 60_000, 100)  # partition 0: a minute of events
    produce(log, topic, pl.concat([quiet, busy]), partitions=2)
    clock = ManualClock()
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="1s", idle_timeout=idle_timeout).window(
        es.tumbling("10s"), by="symbol", name="bars").agg(n=es.count()).to(out)
    with app.runner(log, clock=clock) as runner:
        _drain(runner)
        runner.commit()
        fired = read_topic(log, out)
        assert fired.is_empty()  # partition 1's watermark (1.5 s) holds every window

        clock.now += 6.0  # partition 1 has been quiet for 6 s of processing time
        produce(log, topic, _events(syms[0], 60_000, 61_000, 100), partitions=2)
        _drain(runner)
        runner.commit()
        fired = read_topic(log, out)
        wm = runner.metrics()["bars"]["watermark"]
        if idle_timeout is None:
            assert fired.is_empty()
            assert wm == 2500 - 1000
        else:
            assert wm == 61_000 - 100 - 1000
            ends = fired["window_end"].dt.epoch("ms").to_list()
            # 5 windows for each of partition 0's 2 symbols, 1 for each of partition 1's
            assert max(ends) == 50_000 and fired.height == 2 * 5 + 2
        runner.finish()
    final = read_topic(log, out)
    assert final["n"].sum() == quiet.height + busy.height + 10


def test_watermark_is_minimum_over_partitions_and_monotonic() -> None:
    """Per-partition max minus delay, min across partitions, never backwards; rows see the watermark before them."""
    clock = ManualClock()
    wm = PartitionWatermarks(2, max_delay_ms=100, idle_timeout_ms=None, clock=clock)
    assert wm.current() == MIN_TIME
    rows = wm.row_watermarks(0, np.array([1000, 900, 1200], dtype=np.int64))
    assert rows.tolist() == [MIN_TIME] * 3  # partition 1 has not been seen: it holds the watermark
    wm.observe(0, 1200)
    wm.observe(1, 500)
    assert wm.current() == 400
    rows = wm.row_watermarks(1, np.array([700, 600, 900], dtype=np.int64))
    assert rows.tolist() == [400, 600, 600]  # min(own running max - delay, partition 0's 1100)
    wm.observe(1, 900)
    assert wm.current() == 800
    wm.observe(1, 950)
    assert wm.current() == 850
    wm.finish()
    assert wm.current() == MAX_TIME


def test_row_watermarks_equal_a_row_by_row_reference() -> None:
    """The watermark in force before each row: min over the other partitions' watermarks and this partition's
    running max (minus the delay) of the rows before it, never below the source's current watermark; MIN_TIME
    while no event time has been seen. Random partitions, delays, batches (empty ones too), out of order."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        parts, delay = int(rng.integers(1, 4)), int(rng.integers(0, 100))
        pw = PartitionWatermarks(parts, delay, None, lambda: 0.0)
        seen = [MIN_TIME] * parts
        current = MIN_TIME
        for _ in range(5):
            p, n = int(rng.integers(0, parts)), int(rng.integers(0, 20))
            ts = rng.integers(0, 1000, n).astype(np.int64)
            others = min((s - delay if s != MIN_TIME else MIN_TIME for q, s in enumerate(seen) if q != p),
                         default=MAX_TIME)
            want, run = [], seen[p]
            for t in ts.tolist():
                own = MIN_TIME if run == MIN_TIME else run - delay
                want.append(max(min(own, others), current))
                run = max(run, t)
            assert pw.row_watermarks(p, ts).tolist() == want
            if n:
                pw.observe(p, int(ts.max()))
                seen[p] = max(seen[p], int(ts.max()))
            current = pw.current()  # the floor of the next batch (the source's monotonic watermark)


def test_idle_timeout_excludes_quiet_partitions() -> None:
    """After idle_timeout of processing time a partition no longer counts; all idle: the watermark holds."""
    clock = ManualClock()
    wm = PartitionWatermarks(2, max_delay_ms=0, idle_timeout_ms=5000, clock=clock)
    wm.observe(0, 10_000)
    wm.observe(1, 1_000)
    assert wm.current() == 1_000
    clock.now += 4.0
    wm.observe(0, 20_000)
    assert wm.current() == 1_000
    clock.now += 2.0  # partition 1 quiet for 6 s
    assert wm.current() == 20_000
    assert wm.idle_partitions() == [1]
    clock.now += 10.0  # both quiet: hold
    assert wm.current() == 20_000


def test_durations() -> None:
    """Durations accept units, timedeltas and seconds; bad ones say how to write them."""
    from datetime import timedelta

    assert duration_ms("250ms") == 250
    assert duration_ms("2s") == 2000
    assert duration_ms("1m") == 60_000
    assert duration_ms(timedelta(hours=1)) == 3_600_000
    assert duration_ms(1.5) == 1500
    with pytest.raises(ConfigError, match=r"e\.g\."):
        duration_ms("two seconds")


def test_windows_fire_while_running_not_only_at_the_end(log: Log, names: Callable[[str], str]) -> None:
    """Windows close as the watermark passes them, before the input ends."""
    data = trades(3000, seed=2)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=1, chunk=500)
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="1s").window(es.tumbling("10s"), by="symbol").agg(
        **aggs(BARS)).to(out)
    with app.runner(log, max_batch_events=500) as runner:
        _drain(runner)
        runner.commit()
        before = read_topic(log, out).height
        runner.finish()
    total = read_topic(log, out).height
    assert 0 < before < total
    assert_same(engine_output(log, out, "symbol"), reference(data, es.tumbling("10s"), "symbol", BARS))
