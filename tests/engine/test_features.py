"""Rolling per-key features against DuckDB window functions and a plain-Python EWMA."""

from __future__ import annotations

import math
from collections.abc import Callable

import duckdb
import numpy as np
import polars as pl
import pytest
from enginetools import produce, trades
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine.features import decayed_sums
from everstream.engine.testing import read_topic
from everstream.errors import PlanError, StepError
from everstream.log import Log

FEATURES = {
    "n_10s": es.rolling_count("10s"),
    "qty_10s": es.rolling_sum("qty", "10s"),
    "avg_30s": es.rolling_mean("price", "30s"),
    "max_30s": es.rolling_max("price", "30s"),
    "min_5s": es.rolling_min("price", "5s"),
    "gap": es.time_since_last(),
}

SQL = """
SELECT id,
  count(*) OVER (PARTITION BY symbol ORDER BY ts RANGE BETWEEN 9999 PRECEDING AND CURRENT ROW) AS n_10s,
  sum(qty) OVER (PARTITION BY symbol ORDER BY ts RANGE BETWEEN 9999 PRECEDING AND CURRENT ROW) AS qty_10s,
  avg(price) OVER (PARTITION BY symbol ORDER BY ts RANGE BETWEEN 29999 PRECEDING AND CURRENT ROW) AS avg_30s,
  max(price) OVER (PARTITION BY symbol ORDER BY ts RANGE BETWEEN 29999 PRECEDING AND CURRENT ROW) AS max_30s,
  min(price) OVER (PARTITION BY symbol ORDER BY ts RANGE BETWEEN 4999 PRECEDING AND CURRENT ROW) AS min_5s,
  ts - lag(ts) OVER (PARTITION BY symbol ORDER BY ts, arrival) AS gap
FROM t ORDER BY id
"""


def duckdb_features(arrived: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    try:
        con.register("t", arrived.with_row_index("arrival").to_arrow())
        return con.sql(SQL).pl()
    finally:
        con.close()


def python_ewma(arrived: pl.DataFrame, column: str, half_life_ms: float) -> dict[int, float | None]:
    """The definition, event by event: decayed sums per key in (time, arrival) order."""
    lam = math.log(2) / half_life_ms
    state: dict[str, tuple[float, float, int]] = {}
    out: dict[int, float | None] = {}
    rows = arrived.with_row_index("arrival").sort("ts", "arrival").iter_rows(named=True)
    for r in rows:
        s, w, t = state.get(r["symbol"], (0.0, 0.0, r["ts"]))
        d = math.exp(-lam * (r["ts"] - t))
        s, w = s * d, w * d
        if r[column] is not None:
            s, w = s + r[column], w + 1.0
        state[r["symbol"]] = (s, w, r["ts"])
        out[r["id"]] = s / w if w > 0 else None
    return out


def _run(log: Log, names: Callable[[str], str], data: pl.DataFrame, partitions: int, delay: str,
         **features: object) -> tuple[pl.DataFrame, es.engine.RunResult]:
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=partitions, chunk=300)
    app = es.App(names("fraud"))
    app.stream(topic).with_watermark("ts", max_delay=delay).rolling(by="symbol", **features).to(out)  # type: ignore[arg-type]
    result = app.run(log, until_idle=True)
    return read_topic(log, out), result


def test_rolling_features_match_duckdb_out_of_order(log: Log, names: Callable[[str], str]) -> None:
    """count/sum/mean/max/min over the last N and time since last: DuckDB's RANGE windows, 3 partitions."""
    data = trades(2500, seed=21, disorder_ms=1500, symbols=4).with_row_index("id")
    got, result = _run(log, names, data, 3, "1500ms", **FEATURES, ewma=es.ewma("price", half_life="20s"))
    assert result.late_events == 0
    assert got.height == data.height
    # emitted in event-time order within each key
    assert got.group_by("symbol", maintain_order=True).agg(pl.col("ts").is_sorted().alias("ok"))["ok"].all()
    ref = duckdb_features(data)
    assert_frame_equal(got.sort("id").select(ref.columns), ref, check_dtypes=False, rel_tol=1e-9, abs_tol=1e-9)
    ewma = python_ewma(data, "price", 20_000)
    engine = dict(zip(got["id"].to_list(), got["ewma"].to_list(), strict=True))
    assert all(math.isclose(engine[i], ewma[i] or 0.0, rel_tol=1e-9) for i in ewma)  # type: ignore[arg-type]


def test_rolling_ties_and_nulls(log: Log, names: Callable[[str], str]) -> None:
    """Events at the same time see each other (RANGE peers); null values are skipped; since-last is 0 for ties."""
    ts = [1000, 1000, 1500, 1500, 1500, 9000, 12000, 12000]
    data = pl.DataFrame({
        "id": list(range(8)), "ts": ts, "symbol": ["A", "A", "A", "B", "A", "A", "A", "B"],
        "price": [1.0, None, 3.0, 4.0, 5.0, None, 7.0, 8.0], "qty": [1, 2, 3, 4, 5, 6, 7, 8],
    })
    got, _ = _run(log, names, data, 1, "0s", **FEATURES, ewma=es.ewma("price", half_life="2s"))
    ref = duckdb_features(data)
    assert_frame_equal(got.sort("id").select(ref.columns), ref, check_dtypes=False, rel_tol=1e-9, abs_tol=1e-9)
    ewma = python_ewma(data, "price", 2000)
    assert [None if v is None else round(v, 9) for v in got.sort("id")["ewma"].to_list()] == \
        [None if v is None else round(v, 9) for v in (ewma[i] for i in range(8))]


def test_rolling_late_events_go_to_side_output(log: Log, names: Callable[[str], str]) -> None:
    """An event older than the watermark when it arrives is late: side topic and metrics, not in the output."""
    data = trades(300, seed=4, symbols=2).with_row_index("id")
    straggler = data.head(1).with_columns(pl.lit(int(data["ts"].max()) - 5000, dtype=pl.Int64).alias("ts"),  # type: ignore[arg-type]
                                          pl.lit(999, dtype=pl.UInt32).alias("id"))
    got, result = _run(log, names, pl.concat([data, straggler]), 1, "1s", n=es.rolling_count("1m"))
    assert result.late_events == 1
    assert got.height == data.height
    late = read_topic(log, es.engine.late_topic_of(result.app, next(s for s in result.metrics if "rolling" in s)))
    assert late["id"].to_list() == [999]


def test_decayed_sums_long_spans_and_carry() -> None:
    """Spans of thousands of half-lives (rebased in pieces) and carried state equal the sequential definition."""
    rng = np.random.default_rng(3)
    n = 4000
    kid = np.sort(rng.integers(0, 5, n))
    ts = np.concatenate([np.sort(rng.integers(0, 10_000_000, (kid == k).sum())) for k in range(5)])
    x = rng.normal(100, 10, n)
    valid = rng.random(n) > 0.1
    lam = math.log(2) / 1000.0  # 10,000 half-lives per key
    s0, w0, t0 = rng.random(5) * 50, rng.random(5), np.full(5, -5000)
    s, w = decayed_sums(kid, ts, x, valid, lam, s0, w0, t0)
    cs, cw, ct = list(s0), list(w0), list(t0)
    for i in range(n):
        k = kid[i]
        d = math.exp(-lam * (ts[i] - ct[k]))
        cs[k], cw[k], ct[k] = cs[k] * d + (x[i] if valid[i] else 0.0), cw[k] * d + float(valid[i]), ts[i]
        assert math.isclose(s[i] / w[i], cs[k] / cw[k], rel_tol=1e-9)


def test_rolling_bad_definitions() -> None:
    """Bad features and streams without event time fail at definition with the fix."""
    app = es.App("bad")
    src = app.stream("payments")
    with pytest.raises(PlanError, match="needs event time"):
        src.rolling(by="card", n=es.rolling_count("1m"))
    timed = src.with_watermark("ts")
    with pytest.raises(PlanError, match="not a feature"):
        timed.rolling(by="card", n=es.count())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        es.rolling_sum("amount", "0s")
    with pytest.raises(ValueError, match="column name"):
        es.ewma(3, "1m")  # type: ignore[arg-type]


def test_rolling_on_text_column_names_the_step(log: Log, names: Callable[[str], str]) -> None:
    """A feature over a text column stops with a StepError naming the step and the fix."""
    data = trades(50, seed=2).with_row_index("id")
    with pytest.raises(StepError, match=r"rolling.*(numeric|number)"):
        _run(log, names, data, 1, "0s", e=es.ewma("symbol", "1m"))
