"""Cumulative and count windows, early firing, processing-time windows and sketch aggregates vs DuckDB."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import numpy as np
import polars as pl
import pytest
from enginetools import AGGREGATES, BARS, aggs, assert_same, engine_output, produce, trades
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine.aggregates import EVENT_TIME, OFFSET
from everstream.engine.testing import read_topic
from everstream.errors import ConfigError, PlanError
from everstream.log import Log

ALL = tuple(AGGREGATES)


def _duck(df: pl.DataFrame, sql: str) -> pl.DataFrame:
    con = duckdb.connect()
    try:
        con.register("t", df.with_row_index("arrival").to_arrow())
        return con.sql(sql).pl()
    finally:
        con.close()


def _select(names: tuple[str, ...]) -> str:
    return ", ".join(f"{AGGREGATES[n][1]} AS {n}" for n in names)


def test_cumulative_windows_match_duckdb(log: Log, names: Callable[[str], str]) -> None:
    """Minute-to-date in 10 s steps, out of order over 2 partitions, every aggregate: equals DuckDB."""
    data = trades(3000, seed=13, disorder_ms=1000)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=400)
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="1s").window(
        es.cumulative("1m", step="10s"), by="symbol").agg(**aggs(ALL)).to(out)
    result = app.run(log, until_idle=True)
    assert result.late_events == 0
    ref = _duck(data, f"""
        WITH w AS (SELECT *, ts - ts % 60000 AS window_start, ts - ts % 60000 + i * 10000 AS window_end
                   FROM t, range(1, 7) r(i))
        SELECT symbol, window_start, window_end, {_select(ALL)} FROM w WHERE window_end > ts
        GROUP BY ALL ORDER BY symbol, window_start, window_end""")
    got = engine_output(log, out, "symbol").sort("symbol", "window_start", "window_end")
    assert_same(got, ref)


@pytest.mark.parametrize("n", [1, 7, 50])
def test_count_windows_match_duckdb(n: int, log: Log, names: Callable[[str], str]) -> None:
    """Every n events per key in event-time order (input out of order): complete windows equal DuckDB."""
    data = trades(1500, seed=17, disorder_ms=800, symbols=3)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=300)
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts", max_delay="800ms").window(
        es.count_window(n), by="symbol").agg(**aggs(ALL)).to(out)
    app.run(log, until_idle=True)
    ref = _duck(data, f"""
        WITH r AS (SELECT *, (row_number() OVER (PARTITION BY symbol ORDER BY ts) - 1) // {n} AS "window" FROM t)
        SELECT symbol, "window", min(ts) AS window_start, max(ts) + 1 AS window_end, {_select(ALL)}
        FROM r GROUP BY symbol, "window" HAVING count(*) = {n} ORDER BY 1, 2""")
    got = engine_output(log, out, "symbol").sort("symbol", "window")
    assert_same(got, ref)


def test_count_window_bad_definitions() -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        es.count_window(0)
    with pytest.raises(ConfigError, match="multiple"):
        es.cumulative("1d", step="7h")
    app = es.App("bad")
    timed = app.stream("t").with_watermark("ts")
    with pytest.raises(PlanError, match="count windows"):
        timed.window(es.count_window(5), early_fire="1s")
    with pytest.raises(PlanError, match="'event'"):
        timed.window(es.tumbling("1m"), time="wall")
    with pytest.raises(PlanError, match="clashes"):
        timed.window(es.tumbling("1m"), early_fire="1s").agg(final=es.count())


class ManualClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _drain(runner: es.engine.Runner) -> None:
    runner.catch_up()


def test_early_firing_emits_running_values_then_one_final(log: Log, names: Callable[[str], str]) -> None:
    """Open windows report running values at most every early_fire; each window's final result comes once."""
    data = trades(2000, seed=23)
    first, second = data.head(1000), data.tail(1000)
    topic, out = names("trades"), names("out")
    produce(log, topic, first, partitions=1)
    app = es.App(names("live"))
    app.stream(topic).with_watermark("ts", max_delay="1s").window(
        es.tumbling("1m"), by="symbol", early_fire="500ms").agg(**aggs(BARS)).to(out)
    clock = ManualClock()
    with app.runner(log, clock=clock) as runner:
        _drain(runner)  # t=0: no early result yet (less than 500 ms since start)
        clock.t = 0.3
        runner.cycle(timeout=0.01)
        assert runner.metrics()[f"{topic}.window"].get("early_results", 0) == 0
        clock.t = 0.6
        runner.cycle(timeout=0.01)
        runner.commit()  # outputs durable and visible
        early = read_topic(log, out)  # windows closed by now (final) and open ones (running)
        assert (~early["final"]).sum() == runner.metrics()[f"{topic}.window"]["early_results"] > 0
        produce(log, topic, second, partitions=1)
        clock.t = 0.8
        _drain(runner)
        runner.finish()
    got = read_topic(log, out).with_columns(pl.col("window_start", "window_end").dt.epoch("ms"))
    final = got.filter(pl.col("final")).drop("final").sort("symbol", "window_start")
    from enginetools import reference

    assert_same(final, reference(data, es.tumbling("1m"), "symbol", BARS))
    assert final.select("symbol", "window_start").is_unique().all()
    # the running values were those of the first part's events, for windows still open then
    running = got.filter(~pl.col("final")).drop("final").sort("symbol", "window_start")
    ref_first = reference(first, es.tumbling("1m"), "symbol", BARS).join(
        running.select("symbol", "window_start"), on=["symbol", "window_start"], how="semi")
    assert_same(running, ref_first)
    wm_at_early = int(first["ts"].max()) - 1000  # type: ignore[arg-type]
    assert (running["window_end"] > wm_at_early).all()


def test_processing_time_windows_use_the_wall_clock(log: Log, names: Callable[[str], str]) -> None:
    """time='processing': events count in the window of the wall-clock time they were processed."""
    data = trades(600, seed=29)
    topic, out = names("trades"), names("out")
    produce(log, topic, data.head(200), partitions=1)
    app = es.App(names("proc"))
    app.stream(topic).window(es.tumbling("5s"), by="symbol", time="processing").agg(n=es.count(),
                                                                                     q=es.sum("qty")).to(out)
    wall = ManualClock(1_000_000.0)
    with app.runner(log, wall_clock=wall) as runner:
        _drain(runner)
        wall.t = 1_000_007.0  # the first window [1000000 s, 1000005 s) closes
        runner.cycle(timeout=0.01)
        runner.commit()
        assert read_topic(log, out)["n"].sum() == 200
        produce(log, topic, data.tail(400), partitions=1)
        _drain(runner)
        runner.finish()
    got = read_topic(log, out).with_columns(pl.col("window_start").dt.epoch("s"))
    per = got.group_by("window_start").agg(pl.col("n").sum()).sort("window_start")
    assert per.rows() == [(1_000_000, 200), (1_000_005, 400)]
    ref = data.group_by("symbol").agg(pl.len().alias("n"), pl.col("qty").sum().alias("q")).sort("symbol")
    tot = got.group_by("symbol").agg(pl.col("n").sum(), pl.col("q").sum()).sort("symbol")
    assert_frame_equal(tot, ref, check_dtypes=False)


# ---------------------------------------------------------------------- sketches


def test_sketches_are_exact_when_small(log: Log, names: Callable[[str], str]) -> None:
    """Within k values, approx_count_distinct and quantile equal DuckDB's exact answers."""
    data = trades(2000, seed=31, disorder_ms=500, accounts=300)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=300)
    app = es.App(names("sk"))
    app.stream(topic).with_watermark("ts", max_delay="500ms").window(es.tumbling("30s"), by="symbol").agg(
        d=es.approx_count_distinct("account"), p50=es.median("price"), p90=es.quantile("qty", 0.9),
        p0=es.quantile("price", 0.0)).to(out)
    app.run(log, until_idle=True)
    ref = _duck(data, """SELECT symbol, ts - ts % 30000 AS window_start, count(DISTINCT account) AS d,
        quantile_cont(price, 0.5) AS p50, quantile_cont(qty, 0.9) AS p90, min(price) AS p0
        FROM t GROUP BY ALL ORDER BY symbol, window_start""")
    assert_same(engine_output(log, out, "symbol"), ref)


def _partials_merged(df: pl.DataFrame, agg: es.engine.Aggregate, batches: int) -> pl.DataFrame:
    """The runtime's shape: partial per batch, merge of all partials, finalize."""
    step = -(-df.height // batches)
    parts = [df.slice(i, step).group_by("g").agg(*agg.partial("r")) for i in range(0, df.height, step)]
    merged = pl.concat(parts).group_by("g").agg(*agg.merge("r"))
    return merged.select("g", agg.finalize("r")).sort("g")


def test_sketch_error_bounds_against_exact() -> None:
    """Beyond k: distinct counts within 4 standard errors (1/sqrt(k-2)), quantile ranks within 4 sd."""
    rng = np.random.default_rng(5)
    n = 200_000
    df = pl.DataFrame({"g": rng.integers(0, 4, n), "x": rng.zipf(1.3, n) % 1_000_003,
                       "v": rng.lognormal(3, 1, n), EVENT_TIME: np.arange(n), OFFSET: np.arange(n)})
    exact = _duck(df.drop(EVENT_TIME, OFFSET), """SELECT g, count(DISTINCT x) AS d,
        quantile_cont(v, 0.5) AS q50, quantile_cont(v, 0.99) AS q99 FROM t GROUP BY g ORDER BY g""")
    k = 1024
    est = _partials_merged(df, es.approx_count_distinct("x", k=k), 37)["r"].to_numpy()
    rel = np.abs(est / exact["d"].to_numpy() - 1)
    assert (rel < 4 / np.sqrt(k - 2)).all(), rel
    for q in (0.5, 0.99):
        got = _partials_merged(df, es.quantile("v", q, k=k), 37)["r"].to_numpy()
        for g, value in enumerate(got):
            vs = df.filter(pl.col("g") == g)["v"].to_numpy()
            rank = (vs <= value).mean()
            assert abs(rank - q) < 4 * np.sqrt(q * (1 - q) / k) + 1 / k, (g, q, rank)


def test_sketch_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        es.quantile("price", 1.5)
    with pytest.raises(ConfigError, match="k="):
        es.approx_count_distinct("account", k=2)


@pytest.mark.parametrize("spec", [es.tumbling("10s"), es.hopping("20s", every="5s")], ids=["tumbling", "hopping"])
def test_many_small_cycles_defer_merges_and_stay_exact(spec: object, log: Log, names: Callable[[str], str]) -> None:
    """Tiny polls (partials merged into state only when a window is due or they pile up): still DuckDB's answer."""
    from enginetools import reference

    data = trades(1500, seed=37, disorder_ms=700)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=37)
    app = es.App(names("small"))
    app.stream(topic).with_watermark("ts", max_delay="700ms").window(spec, by="symbol").agg(  # type: ignore[arg-type]
        **aggs(ALL)).to(out)
    result = app.run(log, until_idle=True, max_batch_events=40)
    assert result.late_events == 0
    assert_same(engine_output(log, out, "symbol"), reference(data, spec, "symbol", ALL))


def test_hopping_lateness_counts_a_straggler_only_in_windows_still_open(log: Log, names: Callable[[str], str]) -> None:
    """Hopping windows (computed by panes): a late-ish event joins the windows open when it arrived, and no other."""
    from enginetools import reference

    base = trades(600, seed=47, symbols=1)
    newest = int(base["ts"].max())  # type: ignore[arg-type]
    t = newest - 25_000
    straggler = base.head(1).with_columns(pl.lit(t, dtype=pl.Int64).alias("ts"))
    topic, out = names("trades"), names("out")
    produce(log, topic, pl.concat([base, straggler]), partitions=1, chunk=100)
    spec = es.hopping("30s", every="10s")
    app = es.App(names("late"))
    app.stream(topic).with_watermark("ts", max_delay="1s").window(spec, by="symbol", allowed_lateness="12s").agg(
        n=es.count(), q=es.sum("qty")).to(out)
    result = app.run(log, until_idle=True)
    assert result.late_events == 0
    got = engine_output(log, out, "symbol")
    ref = reference(base, spec, "symbol", ("n",))
    wm = newest - 1000  # the watermark when the straggler arrived
    holding = [s for s in range(t - t % 10_000 - 20_000, t + 1, 10_000) if s + 30_000 > t]
    open_ = {s for s in holding if s + 30_000 + 12_000 > wm}
    assert 0 < len(open_) < len(holding)  # some of its windows had fired, some had not
    expected = ref.with_columns(pl.when(pl.col("window_start").is_in(list(open_))).then(pl.col("n") + 1)
                                .otherwise(pl.col("n")).alias("n"))
    assert got.select("window_start", "n").rows() == expected.select("window_start", "n").rows()
