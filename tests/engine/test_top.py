"""Window Top-N (``window(...).top(n, order)``) against DuckDB's RANK() / ROW_NUMBER(), on both logs."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest
from enginetools import produce, trades
from polars.testing import assert_frame_equal
from test_exactly_once_joins_cep import _split, run_with_crashes
from test_windows_more import _duck  # DuckDB over t, with the arrival index

import everstream as es
from everstream.engine.testing import read_topic
from everstream.engine.windows import WindowSpec
from everstream.errors import PlanError
from everstream.log import Log

COLS = ["ts", "symbol", "price", "qty", "account"]


def _ticks(n: int, seed: int, disorder_ms: int = 1000) -> pl.DataFrame:
    """Trades with prices rounded to whole units, so ties at the cut are common."""
    return trades(n, seed=seed, disorder_ms=disorder_ms).with_columns(pl.col("price").round(0))


def _ms(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(c).dt.epoch("ms") for c in ("window_start", "window_end") if c in df.columns)


def _same(got: pl.DataFrame, want: pl.DataFrame, keys: list[str]) -> None:
    order = [*keys, *(c for c in want.columns if c not in keys)]  # total: rows may tie on the keys
    got = _ms(got).select(want.columns).sort(order)
    assert got.height == want.height, f"{got.height} rows, the reference has {want.height}"
    assert_frame_equal(got, want.sort(order), check_dtypes=False)


@pytest.mark.parametrize("window, windows_sql", [
    (es.tumbling("1m"), "SELECT *, ts - ts % 60000 AS window_start, ts - ts % 60000 + 60000 AS window_end FROM t"),
    (es.hopping("1m", every="20s"),
     "SELECT * FROM (SELECT *, ts - ts % 20000 - i * 20000 AS window_start, ts - ts % 20000 - i * 20000 + 60000 "
     "AS window_end FROM t, range(0, 3) r(i)) WHERE window_end > ts"),
])
def test_top_with_ties_equals_duckdb_rank(window: WindowSpec, windows_sql: str, log: Log,
                                          names: Callable[[str], str]) -> None:
    """top(2, price) per symbol, out of order over 2 partitions: every row with RANK() <= 2, ties kept."""
    data = _ticks(3000, seed=41)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=350)
    app = es.App(names("top"))
    app.stream(topic).with_watermark("ts", max_delay="1s").window(window, by="symbol").top(2, "price").to(out)
    assert app.run(log, until_idle=True).late_events == 0
    want = _duck(data, f"""
        SELECT {', '.join(COLS)}, window_start, window_end FROM (
            SELECT *, rank() OVER (PARTITION BY symbol, window_start ORDER BY price DESC) AS r FROM ({windows_sql}))
        WHERE r <= 2""")
    got = read_topic(log, out)
    assert want.height > 2 * data.height / 60  # windows of ~300 trades: ties push some beyond 2 rows
    assert got.columns[:len(COLS)] == COLS and "window_start" in got.columns
    _same(got, want, ["symbol", "window_start", "ts"])


def test_top_row_number_lowest_first_breaks_ties_by_time_then_arrival(log: Log, names: Callable[[str], str]) -> None:
    """ties=False, descending=False, no key: ROW_NUMBER() ordered by price, event time, arrival."""
    data = _ticks(2500, seed=42).with_columns(pl.col("ts") // 1000 * 1000)  # equal times too
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=1, chunk=300)
    app = es.App(names("low"))
    (app.stream(topic).with_watermark("ts", max_delay="1s").window(es.tumbling("30s"))
     .top(3, "price", descending=False, ties=False).to(out))
    app.run(log, until_idle=True)
    want = _duck(data, """
        SELECT ts, symbol, price, qty, account, window_start, window_end FROM (
            SELECT *, ts - ts % 30000 AS window_start, ts - ts % 30000 + 30000 AS window_end,
                   row_number() OVER (PARTITION BY ts - ts % 30000 ORDER BY price, ts, arrival) AS r FROM t)
        WHERE r <= 3""")
    got = read_topic(log, out)
    assert got.height == want.height == 3 * data.select((pl.col("ts") // 30000).n_unique()).item()
    _same(got, want, ["window_start", "price", "ts"])
    # emitted in window order, then rank order
    firsts = _ms(got).get_column("window_start").to_list()
    assert firsts == sorted(firsts)


def test_top_state_survives_crashes(log: Log, names: Callable[[str], str]) -> None:
    """Exactly-once: the leaders of open windows are checkpointed; across 3 crashes the output is exact."""
    data = _ticks(2400, seed=43, disorder_ms=1500)
    topic, out = names("trades"), names("out")
    app = es.App(names("top-eo"))
    (app.stream(topic).with_watermark("ts", max_delay="1500ms").window(es.tumbling("30s"), by="symbol", name="leaders")
     .top(1, "price").to(out))
    assert run_with_crashes(log, app, [[(topic, piece, "symbol")] for piece in _split(data, 4)]) > 0
    want = _duck(data, f"""
        SELECT {', '.join(COLS)}, window_start, window_end FROM (
            SELECT *, ts - ts % 30000 AS window_start, ts - ts % 30000 + 30000 AS window_end,
                   rank() OVER (PARTITION BY symbol, ts - ts % 30000 ORDER BY price DESC) AS r FROM t)
        WHERE r = 1""")
    _same(read_topic(log, out), want, ["symbol", "window_start", "ts"])


def test_top_refuses_bad_arguments() -> None:
    app = es.App("bad-top")
    s = app.stream("trades").with_watermark("ts")
    with pytest.raises(PlanError, match="positive integer"):
        s.window(es.tumbling("1m")).top(0, "price")
    with pytest.raises(PlanError, match="column to rank by"):
        s.window(es.tumbling("1m")).top(1, "")
    with pytest.raises(PlanError, match="tumbling, hopping or cumulative"):
        s.window(es.session("1m")).top(1, "price")
    with pytest.raises(PlanError, match="early_fire"):
        s.window(es.tumbling("1m"), early_fire="1s").top(1, "price")


def test_top_on_a_missing_column_names_the_step(log: Log, names: Callable[[str], str]) -> None:
    data = _ticks(200, seed=44)
    topic = names("trades")
    produce(log, topic, data)
    app = es.App(names("missing"))
    app.stream(topic).with_watermark("ts").window(es.tumbling("1m"), name="biggest").top(1, "notional").to(names("o"))
    with pytest.raises(es.errors.StepError, match="biggest") as e:
        app.run(log, until_idle=True)
    assert "notional" in str(e.value)
