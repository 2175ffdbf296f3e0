"""Stateless steps (filter, select, with_columns, map, flat_map, map_batches, union, branches) against Polars."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
from enginetools import BARS, aggs, assert_same, engine_output, produce, reference, trades
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine.testing import read_topic
from everstream.log import Log


def _add_notional(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(notional=pl.col("price") * pl.col("qty"))


def _split(e: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"ts": e["ts"], "symbol": e["symbol"], "leg": i, "qty": e["qty"] // 2} for i in range(2)]


def test_stateless_pipeline_equals_polars(log: Log, names: Callable[[str], str]) -> None:
    """filter -> with_columns -> map_batches -> select -> map -> flat_map gives what Polars gives."""
    data = trades(2000, seed=8).with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=3, chunk=300)
    app = es.App(names("market"))
    (app.stream(topic)
        .filter(pl.col("qty") >= 300, pl.col("symbol") != "S0")
        .with_columns(big=pl.col("qty") > 600)
        .map_batches(_add_notional)
        .select("id", "ts", "symbol", "qty", "big", "notional")
        .map(lambda e: {**e, "side": "B" if e["id"] % 2 else "S"})
        .flat_map(lambda e: [e] if e["big"] else [e, e])
        .to(out))
    result = app.run(log, until_idle=True)
    expected = (data.filter(pl.col("qty") >= 300, pl.col("symbol") != "S0")
                .with_columns(big=pl.col("qty") > 600).pipe(_add_notional)
                .select("id", "ts", "symbol", "qty", "big", "notional")
                .with_columns(side=pl.when(pl.col("id") % 2 == 1).then(pl.lit("B")).otherwise(pl.lit("S"))))
    expected = pl.concat([expected, expected.filter(~pl.col("big"))]).sort("id", "ts")
    got = read_topic(log, out).sort("id", "ts")
    assert_frame_equal(got, expected, check_dtypes=False)
    assert result.events_in == 2000
    assert result.metrics["to." + out]["events_in"] == expected.height


def test_branches_and_flat_map(log: Log, names: Callable[[str], str]) -> None:
    """One stream feeding two sinks (a split) and a flat_map that fans out."""
    data = trades(300, seed=2)
    topic, small, big, legs = names("trades"), names("small"), names("big"), names("legs")
    produce(log, topic, data, partitions=2)
    app = es.App(names("market"))
    s = app.stream(topic)
    s.filter(pl.col("qty") < 500).to(small)
    s.filter(pl.col("qty") >= 500).to(big)
    s.flat_map(_split).to(legs)
    app.run(log, until_idle=True)
    assert read_topic(log, small).height == data.filter(pl.col("qty") < 500).height
    assert read_topic(log, big).height == data.filter(pl.col("qty") >= 500).height
    assert read_topic(log, legs).height == 2 * data.height


def test_union_then_window_uses_the_slower_watermark(log: Log, names: Callable[[str], str]) -> None:
    """Two input topics merged then windowed: equal to the batch result over both."""
    a, b = trades(800, seed=1, disorder_ms=300), trades(600, seed=2, disorder_ms=300)
    ta, tb, out = names("venue-a"), names("venue-b"), names("out")
    produce(log, ta, a, partitions=2, chunk=200)
    produce(log, tb, b, partitions=1, chunk=200)
    app = es.App(names("market"))
    sa = app.stream(ta).with_watermark("ts", max_delay="300ms")
    sb = app.stream(tb).with_watermark("ts", max_delay="300ms")
    sa.union(sb).window(es.tumbling("10s"), by="symbol").agg(**aggs(BARS)).to(out)
    result = app.run(log, until_idle=True)
    assert result.late_events == 0
    both = pl.concat([a, b])
    assert_same(engine_output(log, out, "symbol"), reference(both, es.tumbling("10s"), "symbol", BARS))


def test_window_of_window(log: Log, names: Callable[[str], str]) -> None:
    """1 s bars rolled up into 10 s bars equal 10 s bars computed directly."""
    data = trades(1500, seed=6, disorder_ms=400)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=250)
    app = es.App(names("market"))
    bars = app.stream(topic).with_watermark("ts", max_delay="400ms").window(es.tumbling("1s"), by="symbol").agg(
        high=es.max("price"), volume=es.sum("qty"), n=es.count())
    bars.window(es.tumbling("10s"), by="symbol").agg(high=es.max("high"), volume=es.sum("volume"),
                                                      n=es.sum("n")).to(out)
    result = app.run(log, until_idle=True)
    assert result.late_events == 0
    ref = reference(data, es.tumbling("10s"), "symbol", ("high", "volume", "n"))
    assert_same(engine_output(log, out, "symbol"), ref)


def test_custom_aggregate(log: Log, names: Callable[[str], str]) -> None:
    """A user-defined decomposable aggregate (price range) equals the batch answer."""
    data = trades(700, seed=12, disorder_ms=200)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=100)
    app = es.App(names("market"))
    rng = es.custom({"hi": (pl.col("price").max(), "max"), "lo": (pl.col("price").min(), "min")},
                    finalize=lambda p: p["hi"] - p["lo"])
    app.stream(topic).with_watermark("ts", max_delay="200ms").window(es.tumbling("5s"), by="symbol").agg(
        range=rng, high=es.max("price"), low=es.min("price")).to(out)
    app.run(log, until_idle=True)
    got = read_topic(log, out)
    assert got.height > 0
    assert_frame_equal(got.select("range"), got.select((pl.col("high") - pl.col("low")).alias("range")))


def test_first_and_last_break_event_time_ties_by_arrival(log: Log, names: Callable[[str], str]) -> None:
    """Trades in the same millisecond: first = earliest arrival, last = latest arrival (as DuckDB, kdb+)."""
    base = 1_767_225_600_000
    data = pl.DataFrame({
        "ts": [base, base, base + 5, base + 5, base + 5, base + 70_000],
        "symbol": ["A"] * 6,
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 9.0],
        "qty": [1, 1, 1, 1, 1, 1],
    })
    topic, out = names("trades"), names("bars")
    produce(log, topic, data, chunk=2)  # ties split across batches too
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="1s").window(es.tumbling("1m"), by="symbol").agg(
        open=es.first("price"), close=es.last("price")).to(out)
    app.run(log, until_idle=True)
    got = read_topic(log, out).sort("window_start").select("open", "close")
    assert got.rows() == [(1.0, 5.0), (9.0, 9.0)]
