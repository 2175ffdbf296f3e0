"""Property: any arrival order within max_delay, any partitioning and batching: the batch reference's result."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from enginetools import AGGREGATES, aggs, assert_same, engine_output, produce, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine.testing import read_topic
from everstream.log import EmbeddedLog

NAMES = tuple(AGGREGATES)
MAX_DELAY = 3000


@st.composite
def streams(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events with unique times; arrival order = time + a jitter in [0, MAX_DELAY]."""
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(st.integers(1, 4000), min_size=n, max_size=n))
    ts = 1_000_000 + np.cumsum(np.asarray(gaps, dtype=np.int64))
    syms = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=n, max_size=n))
    prices = draw(st.lists(st.integers(1, 500), min_size=n, max_size=n))
    qtys = draw(st.lists(st.integers(1, 9), min_size=n, max_size=n))
    accts = draw(st.lists(st.sampled_from(["x", "y"]), min_size=n, max_size=n))
    jitter = draw(st.lists(st.integers(0, MAX_DELAY), min_size=n, max_size=n))
    data = pl.DataFrame({"ts": ts, "symbol": syms, "price": np.asarray(prices, float) / 4,
                         "qty": np.asarray(qtys, np.int64) * 10, "account": accts})
    order = np.argsort(ts + np.asarray(jitter), kind="stable")
    return data, data[order]


SPECS = st.sampled_from([es.tumbling("5s"), es.hopping("10s", every="5s"), es.hopping("7s", every="3s"),
                         es.session("2500ms"), es.cumulative("20s", step="5s")])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), SPECS, st.integers(1, 3), st.integers(1, 25), st.integers(1, 40))
def test_any_arrival_order_within_max_delay_gives_the_batch_result(
    stream: tuple[pl.DataFrame, pl.DataFrame], spec: es.engine.windows.WindowSpec, partitions: int,
    chunk: int, max_batch: int,
) -> None:
    """Out-of-order arrival within the bound, any partitions/chunks/poll sizes: equal to DuckDB, nothing late."""
    data, arrival = stream
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp) / "data", durability="relaxed")
        try:
            produce(log, "trades", arrival, partitions=partitions, chunk=chunk)
            app = es.App("prop")
            app.stream("trades").with_watermark("ts", max_delay=f"{MAX_DELAY}ms").window(spec, by="symbol").agg(
                **aggs(NAMES)).to("out")
            result = app.run(log, until_idle=True, max_batch_events=max_batch, poll_timeout=0.005)
            assert result.late_events == 0
            assert_same(engine_output(log, "out", "symbol"), reference(data, spec, "symbol", NAMES))
        finally:
            log.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(1, 3), st.integers(1, 25), st.integers(1, 40))
def test_rolling_features_any_arrival_order(
    stream: tuple[pl.DataFrame, pl.DataFrame], partitions: int, chunk: int, max_batch: int,
) -> None:
    """Rolling features: any arrival within the bound and any batching give DuckDB's RANGE-window answer."""
    data, arrival = stream
    data = data.with_row_index("id")
    arrival = arrival.join(data.select("ts", "id"), on="ts")
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp) / "data", durability="relaxed")
        try:
            produce(log, "trades", arrival, partitions=partitions, chunk=chunk)
            app = es.App("prop")
            app.stream("trades").with_watermark("ts", max_delay=f"{MAX_DELAY}ms").rolling(
                by="symbol", n=es.rolling_count("7s"), q=es.rolling_sum("qty", "7s"), hi=es.rolling_max("price", "4s"),
                gap=es.time_since_last()).to("out")
            result = app.run(log, until_idle=True, max_batch_events=max_batch, poll_timeout=0.005)
            assert result.late_events == 0
            got = read_topic(log, "out").sort("id").select("n", "q", "hi", "gap")
        finally:
            log.close()
    con = duckdb.connect()
    con.register("t", data.to_arrow())
    w = "PARTITION BY symbol ORDER BY ts RANGE BETWEEN {} PRECEDING AND CURRENT ROW"
    ref = con.sql(f"""SELECT count(*) OVER ({w.format(6999)}) AS n, sum(qty) OVER ({w.format(6999)}) AS q,
        max(price) OVER ({w.format(3999)}) AS hi, ts - lag(ts) OVER (PARTITION BY symbol ORDER BY ts) AS gap
        FROM t ORDER BY id""").pl()
    con.close()
    assert_frame_equal(got, ref, check_dtypes=False)
