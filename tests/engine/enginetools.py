"""Test data and batch references (DuckDB) for the engine tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine.testing import read_topic
from everstream.log import Log, TopicSpec

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

#: Output name -> (engine aggregate, DuckDB expression over t(ts BIGINT, symbol, price, qty, account)).
AGGREGATES: dict[str, tuple[Any, str]] = {
    "open": (es.first("price"), "arg_min(price, ts)"),
    "high": (es.max("price"), "max(price)"),
    "low": (es.min("price"), "min(price)"),
    "close": (es.last("price"), "arg_max(price, ts)"),
    "volume": (es.sum("qty"), "sum(qty)"),
    "vwap": (es.vwap("price", "qty"), "sum(price * qty) / sum(qty)"),
    "n": (es.count(), "count(*)"),
    "n_qty": (es.count("qty"), "count(qty)"),
    "avg_price": (es.mean("price"), "avg(price)"),
    "var_price": (es.var("price"), "var_samp(price)"),
    "std_price": (es.std("price"), "stddev_samp(price)"),
    "accounts": (es.count_distinct("account"), "count(DISTINCT account)"),
}

BARS = ("open", "high", "low", "close", "volume", "vwap", "n")


def trades(n: int, *, symbols: int = 5, seed: int = 1, gap_ms: float = 200.0, disorder_ms: int = 0,
           accounts: int = 20) -> pl.DataFrame:
    """Trades with unique event times (ms) arriving out of order by at most ``disorder_ms``.

    Arrival order is by ``ts + u`` with ``u`` uniform in ``[0, disorder_ms]``, so every event's
    time is at least the highest earlier time minus ``disorder_ms``, in any subset (partition).
    """
    rng = np.random.default_rng(seed)
    ts = BASE_MS + np.cumsum(rng.integers(1, max(2, int(2 * gap_ms)), size=n))
    df = pl.DataFrame({
        "ts": ts.astype(np.int64),
        "symbol": [f"S{i}" for i in rng.integers(0, symbols, size=n)],
        "price": np.round(100 + rng.normal(0, 1, size=n).cumsum(), 2),
        "qty": rng.integers(1, 10, size=n).astype(np.int64) * 100,
        "account": [f"A{i}" for i in rng.integers(0, accounts, size=n)],
    })
    if disorder_ms:
        arrival = ts + rng.uniform(0, disorder_ms, size=n)
        df = df[np.argsort(arrival, kind="stable")]
    return df


def produce(log: Log, topic: str, df: pl.DataFrame, *, partitions: int = 1, key: str | None = "symbol",
            chunk: int = 0, time_field: str | None = "ts") -> None:
    """Create ``topic`` and write ``df`` in arrival order (in chunks, to get several batches)."""
    log.create_topic(TopicSpec(topic, partitions), exist_ok=True)
    step = chunk or max(df.height, 1)
    with log.producer() as producer:
        for start in range(0, df.height, step):
            part = df.slice(start, step)
            ts = time_field if time_field and time_field in part.columns and part.schema[time_field].is_integer() \
                else None
            producer.send_batch(topic, part, key=key, timestamp=ts)
        producer.flush()


def window_sql(spec: Any, by: str | None, aggs: Mapping[str, str], table: str = "t") -> str:
    """The batch reference of a window aggregation, in DuckDB SQL."""
    keys = f"{by}, " if by else ""
    part = f"PARTITION BY {by} " if by else ""
    select = ", ".join(f"{sql} AS {name}" for name, sql in aggs.items())
    if isinstance(spec, es.engine.Tumbling):
        s = spec.size_ms
        return (f"SELECT {keys}ts - ts % {s} AS window_start, ts - ts % {s} + {s} AS window_end, {select} "
                f"FROM {table} GROUP BY ALL")
    if isinstance(spec, es.engine.Hopping):
        size, every = spec.size_ms, spec.every_ms
        k = -(-size // every)
        return (
            f"WITH w AS (SELECT *, ts - ts % {every} - i * {every} AS window_start FROM {table}, range(0, {k}) r(i)) "
            f"SELECT {keys}window_start, window_start + {size} AS window_end, {select} "
            f"FROM w WHERE window_start + {size} > ts GROUP BY ALL"
        )
    if isinstance(spec, es.engine.Cumulative):
        size, step = spec.size_ms, spec.step_ms
        return (
            f"WITH w AS (SELECT *, ts - ts % {size} AS window_start, ts - ts % {size} + i * {step} AS window_end "
            f"FROM {table}, range(1, {size // step + 1}) r(i)) "
            f"SELECT {keys}window_start, window_end, {select} FROM w WHERE window_end > ts GROUP BY ALL"
        )
    gap = spec.gap_ms
    return (
        f"WITH s AS (SELECT *, CASE WHEN ts - lag(ts) OVER ({part}ORDER BY ts) <= {gap} THEN 0 ELSE 1 END AS new "
        f"FROM {table}), g AS (SELECT *, sum(new) OVER ({part}ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM s) "
        f"SELECT {keys}min(ts) AS window_start, max(ts) + {gap} AS window_end, {select} FROM g GROUP BY {keys}sid"
    )


def reference(df: pl.DataFrame, spec: Any, by: str | None, names: tuple[str, ...]) -> pl.DataFrame:
    """DuckDB's answer over the same data, sorted like the engine's output is compared."""
    con = duckdb.connect()
    try:
        con.register("t", df.with_columns(pl.col("ts").cast(pl.Int64)).to_arrow())
        out = con.sql(window_sql(spec, by, {n: AGGREGATES[n][1] for n in names})).pl()
    finally:
        con.close()
    return _sorted(out, by)


def engine_output(log: Log, topic: str, by: str | None) -> pl.DataFrame:
    out = read_topic(log, topic)
    if out.is_empty():
        return out
    out = out.with_columns(pl.col("window_start", "window_end").dt.epoch("ms").cast(pl.Int64))
    return _sorted(out, by)


def _sorted(df: pl.DataFrame, by: str | None) -> pl.DataFrame:
    return df.sort([c for c in (by, "window_start", "window_end") if c and c in df.columns])


def assert_same(engine: pl.DataFrame, ref: pl.DataFrame) -> None:
    """Same rows and values (floats to 1e-9 relative), whatever the integer widths."""
    assert engine.height == ref.height, f"engine gave {engine.height} windows, the reference {ref.height}"
    assert_frame_equal(engine.select(ref.columns), ref, check_dtypes=False, rel_tol=1e-9, abs_tol=1e-9)


def aggs(names: tuple[str, ...]) -> dict[str, Any]:
    return {n: AGGREGATES[n][0] for n in names}
