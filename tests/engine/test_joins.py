"""Joins against batch references (Polars join_asof, DuckDB SQL) with out-of-order input, on both logs.

Each test writes both inputs out of order (bounded by ``max_delay``) over several partitions, runs
the app to the end of its input, and compares the joined output with the batch answer over the
same data. The as-of tests also check that rows were emitted *before* the end of input (the
watermark, not the final flush, made them final).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import duckdb
import numpy as np
import polars as pl
import pytest
from enginetools import BASE_MS, produce, trades
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine import plan as p
from everstream.engine.joins import AsofJoinOp, AsofSpec
from everstream.engine.operators import Ctx
from everstream.engine.testing import FakeServices, read_topic
from everstream.engine.time import MAX_TIME
from everstream.log import Log


def _services() -> FakeServices:
    """An in-process runtime for driving the operator: late rows and dead letters collected, not raised."""
    return FakeServices("asof-ops", late="keep", dead="keep")

DELAY = "1500ms"


def quotes(n: int, *, seed: int, symbols: int = 5, gap_ms: float = 260.0, disorder_ms: int = 1500,
           exact_from: pl.DataFrame | None = None) -> pl.DataFrame:
    """Quotes with unique times (no two quotes tie), out of order by at most ``disorder_ms``.

    ``exact_from``: also quote at exactly some trades' times and symbols (exact matches)."""
    rng = np.random.default_rng(seed)
    ts = BASE_MS + np.cumsum(rng.integers(1, int(2 * gap_ms), size=n))
    df = pl.DataFrame({"ts": ts.astype(np.int64), "symbol": [f"S{i}" for i in rng.integers(0, symbols, size=n)],
                       "bid": np.round(rng.uniform(99, 101, n), 2), "qty": rng.integers(1, 9, n) * 100})
    if exact_from is not None:
        exact = exact_from.sample(fraction=0.1, seed=seed).select("ts", "symbol").with_columns(
            bid=pl.lit(1.0), qty=pl.lit(1, dtype=pl.Int64))
        df = pl.concat([df, exact]).unique("ts", keep="last", maintain_order=True)
    arrival = df["ts"].to_numpy() + rng.uniform(0, disorder_ms, size=df.height)
    return df[np.argsort(arrival, kind="stable")]


def run_app(log: Log, build: Callable[[es.App], None], app_name: str) -> tuple[int, es.engine.RunResult]:
    """Run to the end of input; returns (rows written before the final watermark, result)."""
    app = es.App(app_name)
    build(app)
    with app.runner(log) as r:
        r.catch_up()
        out = [s.step.topic for s in r._sinks]
        early = sum(read_topic(log, t).height for t in out if t in {x.name for x in log.list_topics()})
        r.finish()
        return early, r.result("idle")


def same(got: pl.DataFrame, want: pl.DataFrame, sort: list[str]) -> None:
    assert got.height == want.height, f"engine gave {got.height} rows, the reference {want.height}"
    assert_frame_equal(got.select(want.columns).sort(sort, nulls_last=True), want.sort(sort, nulls_last=True),
                       check_dtypes=False, rel_tol=1e-9, abs_tol=1e-9)


def polars_asof(left: pl.DataFrame, right: pl.DataFrame, **kw: object) -> pl.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return left.sort("ts").join_asof(right.sort("ts"), on="ts", by="symbol", **kw)  # type: ignore[arg-type]


def duck(sql: str, **tables: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    try:
        for name, df in tables.items():
            con.register(name, df.to_arrow())
        return con.sql(sql).pl()
    finally:
        con.close()


# ---------------------------------------------------------------------- as-of


ASOF_CASES = [
    ("backward", True, None),
    ("backward", False, "2s"),
    ("forward", True, None),
    ("forward", False, "1s"),
    ("nearest", True, None),
    ("nearest", True, "500ms"),
]


@pytest.mark.parametrize(("direction", "exact", "tolerance"), ASOF_CASES)
def test_asof_join_matches_polars(direction: str, exact: bool, tolerance: str | None, log: Log,
                                  names: Callable[[str], str]) -> None:
    """Trades x quotes as-of (every direction, strict or not, with and without tolerance), inputs out of
    order within max_delay over 2 partitions each: equals Polars join_asof; rows leave before the end."""
    t = trades(1500, seed=5, disorder_ms=1500)
    q = quotes(1200, seed=6, exact_from=t)
    tt, qt, out = names("trades"), names("quotes"), names("out")
    produce(log, tt, t, partitions=2, chunk=250)
    produce(log, qt, q, partitions=2, chunk=250)

    def build(app: es.App) -> None:
        left = app.stream(tt).with_watermark("ts", max_delay=DELAY)
        right = app.stream(qt).with_watermark("ts", max_delay=DELAY)
        left.join_asof(right, on="ts", by="symbol", direction=direction, allow_exact_matches=exact,
                       tolerance=tolerance).to(out)

    early, result = run_app(log, build, names("asof"))
    assert result.late_events == 0 and result.dead_letters == 0
    got = read_topic(log, out)
    tol = None if tolerance is None else es.engine.time.duration_ms(tolerance)
    want = polars_asof(t, q, strategy=direction, allow_exact_matches=exact, tolerance=tol)
    same(got, want, ["ts"])
    assert want["bid"].null_count() < want.height  # the case matches something
    assert early > t.height // 2, f"only {early} of {t.height} rows before the end of input"


def test_asof_inner_and_key_type_mismatch(log: Log, names: Callable[[str], str]) -> None:
    """how='inner' drops unmatched trades; quotes whose symbol column has another type are converted
    where they can be, the rest go to the dead-letter topic with the reason."""
    t = trades(800, seed=7, disorder_ms=1000)
    q = quotes(500, seed=8, disorder_ms=1000)
    tt, qt, out = names("trades"), names("quotes"), names("out")
    produce(log, tt, t, partitions=1, chunk=200)
    produce(log, qt, q, partitions=1, chunk=200)
    bad = pl.DataFrame({"ts": [BASE_MS + 5, BASE_MS + 6], "symbol": [7, 8], "bid": [1.0, 2.0], "qty": [1, 2]})
    produce(log, qt, bad, partitions=1, key=None)  # int symbols: "7" and "8" convert, but match no trade

    def build(app: es.App) -> None:
        left = app.stream(tt).with_watermark("ts", max_delay="1s")
        right = app.stream(qt).with_watermark("ts", max_delay="1s")
        left.join_asof(right, by="symbol", how="inner").to(out)

    _, result = run_app(log, build, names("asof"))
    assert result.dead_letters == 0  # 7 and 8 convert to "7" and "8"
    want = polars_asof(t, pl.concat([q, bad.with_columns(pl.col("symbol").cast(pl.String))]))
    want = want.filter(pl.col("bid").is_not_null())
    same(read_topic(log, out), want, ["ts"])


def test_asof_missing_key_column_is_dead_lettered(log: Log, names: Callable[[str], str]) -> None:
    """A quote batch without the key column goes to <app>.dlq naming the step and column; the rest joins."""
    t = trades(300, seed=9)
    q = quotes(200, seed=10, disorder_ms=0)
    tt, qt, out, app_name = names("trades"), names("quotes"), names("out"), names("asof")
    produce(log, tt, t, partitions=1)
    produce(log, qt, q, partitions=1)
    produce(log, qt, pl.DataFrame({"ts": [int(q["ts"].max()) + 1], "bid": [1.0]}), key=None)  # type: ignore[arg-type]

    def build(app: es.App) -> None:
        left = app.stream(tt).with_watermark("ts")
        right = app.stream(qt).with_watermark("ts")
        left.join_asof(right, by="symbol", name="enrich").to(out)

    _, result = run_app(log, build, app_name)
    assert result.dead_letters == 1
    dlq = read_topic(log, es.engine.dead_letter_topic_of(app_name))
    assert "enrich" in dlq["error"][0] and "symbol" in dlq["error"][0]
    same(read_topic(log, out), polars_asof(t, q), ["ts"])


# ---------------------------------------------------------------------- stream-table


def _limits(n: int, seed: int, disorder_ms: int) -> pl.DataFrame:
    """A changelog of per-account limits (versions by event time)."""
    rng = np.random.default_rng(seed)
    ts = BASE_MS + np.cumsum(rng.integers(1, 2000, size=n))
    df = pl.DataFrame({"ts": ts.astype(np.int64), "account": [f"A{i}" for i in rng.integers(0, 20, n)],
                       "limit": rng.integers(1, 100, n).astype(np.int64) * 1000})
    return df[np.argsort(ts + rng.uniform(0, disorder_ms, n), kind="stable")]


@pytest.mark.parametrize("how", ["left", "inner"])
def test_stream_table_join_matches_duckdb_asof(how: str, log: Log, names: Callable[[str], str]) -> None:
    """Each trade sees the account's limit version valid at its event time (DuckDB ASOF JOIN)."""
    t = trades(1500, seed=12, disorder_ms=1500)
    lim = _limits(300, seed=13, disorder_ms=1500)
    tt, lt, out = names("trades"), names("limits"), names("out")
    produce(log, tt, t, partitions=2, chunk=300)
    produce(log, lt, lim, partitions=2, chunk=100, key="account")

    def build(app: es.App) -> None:
        trades_s = app.stream(tt).with_watermark("ts", max_delay=DELAY)
        table = app.stream(lt).with_watermark("ts", max_delay=DELAY)
        trades_s.join_table(table, by="account", how=how).to(out)

    _, result = run_app(log, build, names("table"))
    assert result.late_events == 0
    join = "ASOF LEFT JOIN" if how == "left" else "ASOF JOIN"
    want = duck(f"SELECT t.*, l.limit FROM t {join} l ON t.account = l.account AND t.ts >= l.ts", t=t, l=lim)
    same(read_topic(log, out), want, ["ts"])


def test_stream_table_grace_emits_without_table_updates(log: Log, names: Callable[[str], str]) -> None:
    """A table that stopped changing: with grace, events still leave once their own stream is grace ahead."""
    t = trades(600, seed=14)
    lim = _limits(30, seed=15, disorder_ms=0).sort("ts").head(10)  # all versions early
    tt, lt, out = names("trades"), names("limits"), names("out")
    produce(log, tt, t)
    produce(log, lt, lim, key="account")

    def build(app: es.App) -> None:
        table = app.stream(lt).with_watermark("ts")
        app.stream(tt).with_watermark("ts").join_table(table, by="account", grace="5s").to(out)

    early, _ = run_app(log, build, names("table"))
    assert early > t.height // 2
    want = duck("SELECT t.*, l.limit FROM t ASOF LEFT JOIN l ON t.account = l.account AND t.ts >= l.ts", t=t, l=lim)
    same(read_topic(log, out), want, ["ts"])


# ---------------------------------------------------------------------- interval


def _orders_execs(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n = 600
    ts = BASE_MS + np.cumsum(rng.integers(1, 400, n)).astype(np.int64)
    orders = pl.DataFrame({"ts": ts, "order_id": np.arange(n, dtype=np.int64), "qty": rng.integers(1, 10, n) * 100})
    m = 900
    oid = rng.integers(0, n, m)
    ets = ts[oid] + rng.integers(-1000, 7000, m)  # some before the order, some after the 5 s bound
    execs = pl.DataFrame({"ts": ets.astype(np.int64), "order_id": oid.astype(np.int64),
                          "px": np.round(rng.uniform(10, 20, m), 2)})
    execs = execs.unique(["ts", "order_id"], keep="first", maintain_order=True)
    shuffle = lambda df: df[np.argsort(df["ts"].to_numpy() + rng.uniform(0, 1500, df.height), kind="stable")]  # noqa: E731
    return shuffle(orders), shuffle(execs)


@pytest.mark.parametrize("how", ["inner", "left", "full"])
def test_interval_join_matches_duckdb(how: str, log: Log, names: Callable[[str], str]) -> None:
    """Orders x executions within [t, t + 5 s] (inner, left, full outer) equal DuckDB's join."""
    orders, execs = _orders_execs(16)
    ot, et, out = names("orders"), names("execs"), names("out")
    produce(log, ot, orders, partitions=2, chunk=150, key="order_id")
    produce(log, et, execs, partitions=2, chunk=150, key="order_id")

    def build(app: es.App) -> None:
        o = app.stream(ot).with_watermark("ts", max_delay=DELAY)
        e = app.stream(et).with_watermark("ts", max_delay=DELAY)
        o.join_interval(e, on=("ts", "ts"), by="order_id", lower="0s", upper="5s", how=how).to(out)

    _, result = run_app(log, build, names("interval"))
    assert result.late_events == 0
    join = {"inner": "JOIN", "left": "LEFT JOIN", "full": "FULL JOIN"}[how]
    want = duck(f"""SELECT o.ts, coalesce(o.order_id, e.order_id) AS order_id, o.qty, e.ts AS ts_right, e.px
                    FROM o {join} e ON o.order_id = e.order_id AND e.ts BETWEEN o.ts AND o.ts + 5000""",
                o=orders, e=execs)
    assert want["px"].null_count() < want.height
    same(read_topic(log, out), want, ["order_id", "ts", "ts_right"])


# ---------------------------------------------------------------------- window


@pytest.mark.parametrize("spec", [es.tumbling("10s"), es.hopping("10s", every="5s")], ids=["tumbling", "hopping"])
def test_window_join_matches_duckdb(spec: object, log: Log, names: Callable[[str], str]) -> None:
    """Trades and quotes of the same symbol in the same window equal DuckDB's join on (symbol, window)."""
    t = trades(400, seed=17, disorder_ms=1500, gap_ms=300)
    q = quotes(300, seed=18, gap_ms=400)
    tt, qt, out = names("trades"), names("quotes"), names("out")
    produce(log, tt, t, partitions=2, chunk=100)
    produce(log, qt, q, partitions=2, chunk=100)

    def build(app: es.App) -> None:
        left = app.stream(tt).with_watermark("ts", max_delay=DELAY)
        right = app.stream(qt).with_watermark("ts", max_delay=DELAY)
        left.join_window(right, spec, by="symbol").to(out)  # type: ignore[arg-type]

    _, result = run_app(log, build, names("wjoin"))
    assert result.late_events == 0
    size = spec.size_ms  # type: ignore[attr-defined]
    every = getattr(spec, "every_ms", size)
    k = size // every
    win = f"(SELECT *, ts - ts % {every} - i * {every} AS ws FROM {{t}}, range({k}) r(i))"
    want = duck(f"""SELECT a.symbol, a.ws AS window_start, a.ws + {size} AS window_end, a.ts, a.price, a.qty,
                           a.account, b.ts AS ts_right, b.bid, b.qty AS qty_right
                    FROM {win.format(t="t")} a JOIN {win.format(t="q")} b ON a.symbol = b.symbol AND a.ws = b.ws""",
                t=t, q=q)
    got = read_topic(log, out).with_columns(pl.col("window_start", "window_end").dt.epoch("ms"))
    same(got, want, ["symbol", "window_start", "ts", "ts_right"])


# ---------------------------------------------------------------------- joins in a pipeline


def test_asof_then_window_counts_every_row_once(log: Log, names: Callable[[str], str]) -> None:
    """A window after a forward as-of join (with tolerance) sees every joined row (no late rows)."""
    t = trades(1200, seed=19, disorder_ms=1000)
    q = quotes(900, seed=20, disorder_ms=1000)
    tt, qt, out = names("trades"), names("quotes"), names("out")
    produce(log, tt, t, partitions=2, chunk=200)
    produce(log, qt, q, partitions=2, chunk=200)

    def build(app: es.App) -> None:
        left = app.stream(tt).with_watermark("ts", max_delay="1s")
        right = app.stream(qt).with_watermark("ts", max_delay="1s")
        joined = left.join_asof(right, by="symbol", direction="forward", tolerance="3s")
        joined.window(es.tumbling("20s"), by="symbol").agg(n=es.count(), quoted=es.count("bid")).to(out)

    _, result = run_app(log, build, names("asofwin"))
    assert result.late_events == 0
    got = read_topic(log, out)
    ref = polars_asof(t, q, strategy="forward", tolerance=3000)
    assert int(got["n"].sum()) == t.height
    assert int(got["quoted"].sum()) == ref["bid"].count()


# ---------------------------------------------------------------------- projection pushdown through joins


def _asof_select_app(tt: str, qt: str, out: str, app_name: str = "pushdown") -> es.App:
    app = es.App(app_name)
    left = app.stream(tt).with_watermark("ts", max_delay=DELAY)
    right = app.stream(qt).with_watermark("ts", max_delay=DELAY)
    left.join_asof(right, on="ts", by="symbol").select("ts", "symbol", "price", "bid", "qty_right").to(out)
    return app


def test_required_columns_through_a_join() -> None:
    """A join reads its keys and times plus what follows it, from either input; a suffixed output name
    (``qty_right``) keeps its input column on both sides, so the output names do not change; a join
    followed by a sink or a map reads every column."""
    app = _asof_select_app("t", "q", "out")
    plan = app.plan
    want = {"ts", "symbol", "price", "bid", "qty_right", "qty"}
    assert {s.topic: plan.required_columns(s.step_id) for s in plan.sources()} == {"t": want, "q": want}

    whole = es.App("whole")
    left = whole.stream("t").with_watermark("ts", max_delay=DELAY)
    left.join_asof(whole.stream("q").with_watermark("ts", max_delay=DELAY), by="symbol").to("out")
    assert all(whole.plan.required_columns(s.step_id) is None for s in whole.plan.sources())

    interval = es.App("interval")
    o = interval.stream("o").with_watermark("t_o", max_delay=DELAY)
    e = interval.stream("e").with_watermark("t_e", max_delay=DELAY)
    o.join_interval(e, on=("t_o", "t_e"), by="order_id", upper="5s").select("order_id", "px").to("out")
    need = {"order_id", "px", "t_o", "t_e"}
    assert {s.topic: interval.plan.required_columns(s.step_id) for s in interval.plan.sources()} == {"o": need,
                                                                                                    "e": need}


def test_asof_join_reads_only_the_columns_it_needs(log: Log, names: Callable[[str], str]) -> None:
    """Inputs with columns nothing reads: the runner reads only the needed ones, and the output (with a
    clashing column, ``qty`` -> ``qty_right``) equals Polars join_asof over the whole inputs."""
    t = trades(900, seed=31, disorder_ms=1500).with_columns(note=pl.lit("x" * 40), big=pl.col("qty") * 7)
    q = quotes(700, seed=32, exact_from=t).with_columns(venue=pl.lit("XNAS"), wide=pl.lit("y" * 40))
    tt, qt, out = names("trades"), names("quotes"), names("out")
    produce(log, tt, t, partitions=2, chunk=200)
    produce(log, qt, q, partitions=2, chunk=200)
    app = _asof_select_app(tt, qt, out, names("pushdown"))
    with app.runner(log) as r:
        assert r._columns[tt] == r._columns[qt] == {"ts", "symbol", "price", "bid", "qty_right", "qty"}
        r.catch_up()
        r.finish()
        assert r.result().late_events == 0
    got = read_topic(log, out)
    assert got.columns == ["ts", "symbol", "price", "bid", "qty_right"]
    want = polars_asof(t, q).select("ts", "symbol", "price", "bid", "qty_right")
    same(got, want, ["ts"])


def test_interval_join_with_projection_matches_duckdb(log: Log, names: Callable[[str], str]) -> None:
    """An interval join followed by a select reads fewer columns and still equals DuckDB's join."""
    orders, execs = _orders_execs(23)
    orders = orders.with_columns(desk=pl.lit("rates"))
    execs = execs.with_columns(venue=pl.lit("XLON"), qty=pl.col("px") * 0 + 5)
    ot, et, out = names("orders"), names("execs"), names("out")
    produce(log, ot, orders, partitions=2, chunk=150, key="order_id")
    produce(log, et, execs, partitions=2, chunk=150, key="order_id")

    def build(app: es.App) -> None:
        o = app.stream(ot).with_watermark("ts", max_delay=DELAY)
        e = app.stream(et).with_watermark("ts", max_delay=DELAY)
        o.join_interval(e, on=("ts", "ts"), by="order_id", upper="5s", how="left").select(
            "order_id", "ts", "qty", "ts_right", "px", "qty_right").to(out)

    _, result = run_app(log, build, names("interval-proj"))
    assert result.late_events == 0
    want = duck("""SELECT o.order_id, o.ts, o.qty, e.ts AS ts_right, e.px, e.qty AS qty_right
                   FROM o LEFT JOIN e ON o.order_id = e.order_id AND e.ts BETWEEN o.ts AND o.ts + 5000""",
                o=orders, e=execs)
    got = read_topic(log, out)
    assert got.columns == want.columns
    same(got, want, ["order_id", "ts", "ts_right"])


# ---------------------------------------------------------------------- the as-of operator, poll by poll


def _side(rng: np.random.Generator, n: int, keys: int, span: int, disorder: int, value: str) -> pl.DataFrame:
    """``n`` rows over ``span`` ms (times repeat: ties), arriving out of order by less than ``disorder`` ms."""
    ts = rng.integers(0, span, n).astype(np.int64)
    df = pl.DataFrame({"id": np.arange(n, dtype=np.int64), "key": rng.integers(0, keys, n).astype(np.int64),
                       "ts": ts, value: rng.integers(0, 1000, n).astype(np.int64)})
    df = df[np.argsort(ts + rng.uniform(0, disorder - 1, n), kind="stable")]
    return df.with_columns(pl.col("ts").alias("_event_time"), pl.lit(0, dtype=pl.Int64).alias("_watermark"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), direction=st.sampled_from(["backward", "forward", "nearest"]),
       exact=st.booleans(), tolerance=st.sampled_from([None, 0, 7, 40]), how=st.sampled_from(["left", "inner"]),
       polls=st.integers(1, 12))
def test_asof_operator_matches_polars_poll_by_poll(seed: int, direction: str, exact: bool, tolerance: int | None,
                                                   how: str, polls: int) -> None:
    """The as-of operator driven directly, both inputs out of order with ties in time (same key, same ms)
    and cut into random polls: its output equals Polars join_asof over the whole inputs (ties: on arrival
    order), each emitted batch is in event-time order, and nothing is late."""
    rng = np.random.default_rng(seed)
    disorder = 30
    left = _side(rng, int(rng.integers(0, 160)), 3, 400, disorder, "price")
    right = _side(rng, int(rng.integers(1, 120)), 3, 400, disorder, "bid")  # no right row: no right columns known
    spec = AsofSpec(("key",), "ts", "ts", direction, exact, tolerance, how)  # type: ignore[arg-type]
    services = _services()
    wm = [-(1 << 62), -(1 << 62)]
    op = AsofJoinOp(p.Join("asof", ("l", "r"), spec=spec), services, lambda: (wm[0], wm[1]))
    cuts = [np.sort(rng.integers(0, f.height + 1, polls)) for f in (left, right)]
    outs: list[pl.DataFrame] = []
    for i in range(polls + 1):
        for side, (frame, cut) in enumerate(zip((left, right), cuts, strict=True)):
            lo, hi = (0 if i == 0 else int(cut[i - 1])), (frame.height if i == polls else int(cut[i]))
            part = frame.slice(lo, hi - lo)
            if part.height:
                op.process(part, Ctx("in", 0, ("l", "r")[side]))
                wm[side] = max(wm[side], int(frame.slice(0, hi)["ts"].max()) - disorder)  # type: ignore[arg-type]
        if i == polls:
            wm[0] = wm[1] = MAX_TIME
        got = op.advance(min(wm))
        if got is not None and got.height:
            assert got["_event_time"].is_sorted(), "an emitted batch is out of event-time order"
            outs.append(got)
    assert services.late_rows == 0 and not services.letters
    assert op.state_rows() == 0 or direction != "backward" or right.height  # a final watermark answers every row
    got = pl.concat(outs) if outs else pl.DataFrame(schema={"id": pl.Int64})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = left.drop("_event_time", "_watermark").sort("ts", maintain_order=True).join_asof(
            right.drop("_event_time", "_watermark", "id").sort("ts", maintain_order=True), on="ts", by="key",
            strategy=direction, allow_exact_matches=exact, tolerance=tolerance)  # type: ignore[arg-type]
    if how == "inner":
        want = want.filter(pl.col("bid").is_not_null())
    assert got.height == want.height, f"{got.height} rows, Polars {want.height}"
    if want.height:
        assert_frame_equal(got.select(want.columns).sort("id"), want.sort("id"), check_dtypes=False)
