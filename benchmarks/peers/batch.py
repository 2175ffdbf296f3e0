"""Polars and DuckDB batch runners (the vectorized lower bound): whole Parquet file, one query.

    python benchmarks/peers/batch.py polars --suite finance --query w2 --input X.parquet --output out.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import NotExpressible, Runner, main

MS = pl.col("ts").dt.epoch("ms")
T = pl.col("date_time").dt.epoch("ms")


def _trades(p: Path) -> pl.DataFrame:
    return pl.read_parquet(p)


def _bid(p: Path) -> pl.DataFrame:
    return pl.read_parquet(p, columns=["event_type", "date_time", "seq", "b_auction", "b_bidder", "b_price",
                                       "b_channel", "b_url", "b_extra"]).filter(pl.col("event_type") == 2).select(
        "seq", "date_time", auction="b_auction", bidder="b_bidder", price="b_price", channel="b_channel",
        url="b_url", extra="b_extra")


def p_w1(p: Path) -> pa.Table:
    n = pl.col("price") * pl.col("qty")
    return _trades(p).filter(n > 100_000).select("ts", "symbol", notional=n).to_arrow()


def p_w2(p: Path) -> pa.Table:
    df = _trades(p).with_columns(window_start=MS // 60_000 * 60_000)
    return (df.sort("ts", "seq").group_by("symbol", "window_start")
            .agg(open=pl.col("price").first(), high=pl.col("price").max(), low=pl.col("price").min(),
                 close=pl.col("price").last(), volume=pl.col("qty").sum(),
                 vwap=(pl.col("price") * pl.col("qty")).sum() / pl.col("qty").sum())
            .with_columns(window_end=pl.col("window_start") + 60_000)).to_arrow()


def p_w3(p: Path) -> pa.Table:
    df = _trades(p).select("account", MS.alias("t"), notional=pl.col("price") * pl.col("qty"))
    df = df.with_columns(k=pl.int_ranges(0, 5)).explode("k")
    return (df.with_columns(window_start=pl.col("t") // 60_000 * 60_000 - pl.col("k") * 60_000)
            .group_by("account", "window_start").agg(cnt=pl.len(), sum_notional=pl.col("notional").sum())
            .with_columns(window_end=pl.col("window_start") + 300_000)).to_arrow()


def p_q0(p: Path) -> pa.Table:
    return _bid(p).drop("seq").to_arrow()


def p_q1(p: Path) -> pa.Table:
    return _bid(p).drop("seq").with_columns(price=pl.col("price") * 0.908).to_arrow()


def p_q2(p: Path) -> pa.Table:
    return _bid(p).filter(pl.col("auction") % 123 == 0).select("auction", "price").to_arrow()


def p_q5(p: Path) -> pa.Table:
    df = _bid(p).select("auction", t=T).with_columns(k=pl.int_ranges(0, 5)).explode("k")
    c = (df.with_columns(window_start=pl.col("t") // 2000 * 2000 - pl.col("k") * 2000)
         .group_by("auction", "window_start").agg(num=pl.len()))
    c = c.with_columns(maxn=pl.col("num").max().over("window_start")).filter(pl.col("num") >= pl.col("maxn"))
    return c.select("auction", "num", "window_start", window_end=pl.col("window_start") + 10_000).to_arrow()


def p_q7(p: Path) -> pa.Table:
    df = _bid(p).with_columns(win=T // 10_000)
    df = df.filter(pl.col("price") == pl.col("price").max().over("win"))
    return df.select("auction", "price", "bidder", "date_time", "extra").to_arrow()


def p_q11(p: Path) -> pa.Table:
    df = _bid(p).select("bidder", "seq", t=T).sort("bidder", "t", "seq")
    gap = pl.col("t") - pl.col("t").shift(1).over("bidder")
    df = df.with_columns(sid=(gap.is_null() | (gap > 10_000)).cast(pl.Int64).cum_sum().over("bidder"))
    return (df.group_by("bidder", "sid").agg(window_start=pl.col("t").min(), window_end=pl.col("t").max() + 10_000,
                                             bid_count=pl.len()).drop("sid")).to_arrow()


def p_q14(p: Path) -> pa.Table:
    h = pl.col("date_time").dt.hour()
    price = pl.col("price") * 0.908
    return (_bid(p).filter((price > 1_000_000) & (price < 50_000_000))
            .select("auction", "bidder", price=price,
                    bid_time_type=pl.when(h.is_between(8, 18)).then(pl.lit("dayTime"))
                    .when((h <= 6) | (h >= 20)).then(pl.lit("nightTime")).otherwise(pl.lit("otherTime")),
                    date_time="date_time", extra="extra", c_counts=pl.col("extra").str.count_matches("c", literal=True))
            ).to_arrow()


def p_q17(p: Path) -> pa.Table:
    price = pl.col("price")
    return (_bid(p).with_columns(window_start=T // 86_400_000 * 86_400_000)
            .group_by("auction", "window_start")
            .agg(total_bids=pl.len(), rank1_bids=(price < 10_000).sum(),
                 rank2_bids=((price >= 10_000) & (price < 1_000_000)).sum(), rank3_bids=(price >= 1_000_000).sum(),
                 min_price=price.min(), max_price=price.max(), avg_price=price.mean(), sum_price=price.sum())
            ).to_arrow()


def p_q21(p: Path) -> pa.Table:
    ch = pl.col("channel").str.to_lowercase()
    cid = (pl.when(ch == "apple").then(pl.lit("0")).when(ch == "google").then(pl.lit("1"))
           .when(ch == "facebook").then(pl.lit("2")).when(ch == "baidu").then(pl.lit("3"))
           .otherwise(pl.col("url").str.extract(r"(&|^)channel_id=([^&]*)", 2)))
    return (_bid(p).select("auction", "bidder", "price", "channel", channel_id=cid)
            .filter(pl.col("channel_id").is_not_null())).to_arrow()


def p_q22(p: Path) -> pa.Table:
    parts = pl.col("url").str.split("/")
    return _bid(p).select("auction", "bidder", "price", "channel", dir1=parts.list.get(3, null_on_oob=True),
                          dir2=parts.list.get(4, null_on_oob=True), dir3=parts.list.get(5, null_on_oob=True)
                          ).to_arrow()


def p_q12(p: Path) -> pa.Table:
    raise NotExpressible("processing-time windows have no meaning in a batch query")


POLARS: dict[tuple[str, str], Runner] = {("finance", "w1"): p_w1, ("finance", "w2"): p_w2, ("finance", "w3"): p_w3}
POLARS.update({("nexmark", f.__name__[2:]): f for f in (p_q0, p_q1, p_q2, p_q5, p_q7, p_q11, p_q12, p_q14, p_q17,
                                                         p_q21, p_q22)})


def duckdb_runner(suite: str, query: str) -> Runner | None:
    """DuckDB: load the file into a table, then the reference SQL of the query."""
    from everstream.bench.queries import get

    q = get(suite, query)
    if q.build is None:
        return None

    def run(p: Path) -> pa.Table:
        if query == "q12":
            raise NotExpressible("processing-time windows have no meaning in a batch query")
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE TABLE {q.tables[0]} AS SELECT * FROM read_parquet('{p.as_posix()}')")
        *setup, sql = [s for s in q.reference_sql.split(";") if s.strip()]
        for s in setup:
            con.execute(s)
        return con.sql(sql).to_arrow_table()

    return run


if __name__ == "__main__":
    engine = sys.argv.pop(1)
    if engine == "polars":
        main("polars", pl.__version__, POLARS)
    else:
        from everstream.bench.queries import SUITES

        runners = {(s, n): r for s, qs in SUITES.items() for n in qs if (r := duckdb_runner(s, n)) is not None}
        main("duckdb", duckdb.__version__, runners)
