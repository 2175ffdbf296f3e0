"""Every window type and aggregate against a DuckDB batch reference over the same data."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from enginetools import AGGREGATES, BARS, aggs, assert_same, engine_output, produce, reference, trades

import everstream as es
from everstream.log import Log

ALL = tuple(AGGREGATES)

SPECS = {
    "tumbling": es.tumbling("10s"),
    "hopping": es.hopping("30s", every="10s"),
    "hopping_uneven": es.hopping("25s", every="10s"),
    "session": es.session("1s"),
}


@pytest.mark.parametrize("kind", list(SPECS))
def test_window_matches_duckdb_with_out_of_order_input(kind: str, log: Log, names: Callable[[str], str]) -> None:
    """Each window type, every aggregate, 3 partitions, input out of order within max_delay: equals DuckDB."""
    spec = SPECS[kind]
    gap = 600.0 if kind == "session" else 200.0
    data = trades(3000, seed=11, disorder_ms=1500, gap_ms=gap)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=3, chunk=400)
    app = es.App(names("market"))
    stream = app.stream(topic).with_watermark("ts", max_delay="1500ms")
    stream.window(spec, by="symbol").agg(**aggs(ALL)).to(out)
    result = app.run(log, until_idle=True)
    assert result.late_events == 0
    assert result.dead_letters == 0
    assert_same(engine_output(log, out, "symbol"), reference(data, spec, "symbol", ALL))


def test_window_without_key(log: Log, names: Callable[[str], str]) -> None:
    """A window over all events (no by=) equals the batch reference."""
    data = trades(1000, seed=3, disorder_ms=500)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=250)
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="500ms").window(es.tumbling("5s")).agg(**aggs(BARS)).to(out)
    app.run(log, until_idle=True)
    assert_same(engine_output(log, out, None), reference(data, es.tumbling("5s"), None, BARS))


def test_datetime_event_time_and_output_types(log: Log, names: Callable[[str], str]) -> None:
    """A datetime time field works; window_start/window_end come back as datetimes in its zone."""
    import polars as pl

    data = trades(500, seed=5)
    dt = data.with_columns(pl.col("ts").cast(pl.Datetime("ms")))
    topic, out = names("trades"), names("out")
    produce(log, topic, dt, partitions=1, time_field=None)
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts").window(es.tumbling("10s"), by="symbol").agg(**aggs(BARS)).to(out)
    app.run(log, until_idle=True)
    from everstream.engine.testing import read_topic

    raw = read_topic(log, out)
    assert isinstance(raw.schema["window_start"], pl.Datetime)
    assert_same(engine_output(log, out, "symbol"), reference(data, es.tumbling("10s"), "symbol", BARS))


def test_allowed_lateness_keeps_windows_open(log: Log, names: Callable[[str], str]) -> None:
    """Events later than max_delay but within allowed_lateness still count; the window fires once."""
    import polars as pl

    base = trades(400, seed=9, symbols=2)
    last = int(base["ts"].max())  # type: ignore[arg-type]
    # a straggler 3 s behind the newest event: beyond max_delay=1s, within lateness 5s
    straggler = base.head(1).with_columns(pl.lit(last - 3000, dtype=pl.Int64).alias("ts"))
    data = pl.concat([base, straggler])
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=1, chunk=100)
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="1s").window(
        es.tumbling("2s"), by="symbol", allowed_lateness="5s").agg(**aggs(BARS)).to(out)
    res = app.run(log, until_idle=True)
    assert res.late_events == 0
    assert_same(engine_output(log, out, "symbol"), reference(data, es.tumbling("2s"), "symbol", BARS))
