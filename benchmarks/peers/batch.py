"""Polars and DuckDB batch runners (the vectorized lower bound): whole Parquet file, one query.

W4 reads the quotes from ``--extra quotes=PATH``. W5 (CEP) has no SQL reference; both runners compute
the rows of everstream's plain-Python reference (``queries._w5_reference``) in everstream's output
shape (``small``/``large`` lists of the matched events).

    python benchmarks/peers/batch.py polars --suite finance --query w2 --input X.parquet --output out.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import NotExpressible, Runner, extra, main

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


def p_q15(p: Path) -> pa.Table:
    price = pl.col("price")
    ranks = {"1": price < 10_000, "2": (price >= 10_000) & (price < 1_000_000), "3": price >= 1_000_000}
    aggs: dict[str, pl.Expr] = {"total_bids": pl.len(), "total_bidders": pl.col("bidder").n_unique(),
                                "total_auctions": pl.col("auction").n_unique()}
    for r, cond in ranks.items():
        aggs |= {f"rank{r}_bids": cond.sum(), f"rank{r}_bidders": pl.col("bidder").filter(cond).n_unique(),
                 f"rank{r}_auctions": pl.col("auction").filter(cond).n_unique()}
    return (_bid(p).with_columns(day=pl.col("date_time").dt.strftime("%Y-%m-%d")).group_by("day").agg(**aggs)
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


# ------------------------------------------------------------------------------ W4, W5 (finance)

def p_w4(p: Path) -> pa.Table:
    """As-of join: each trade with the latest quote of its symbol at or before it (ties on ts: the
    last to arrive, i.e. the highest ``seq``; quotes sorted by (ts, seq), join_asof takes the last)."""
    trades = pl.read_parquet(p, columns=["seq", "ts", "symbol", "price"]).sort("ts")
    quotes = pl.read_parquet(extra("quotes"), columns=["seq", "ts", "symbol", "bid", "ask"]).sort("ts", "seq")
    return trades.join_asof(quotes.drop("seq"), on="ts", by="symbol", strategy="backward",
                            check_sortedness=False).to_arrow()


#: W5 (card testing): amounts below SMALL, then one above LARGE, at least COUNT smalls less than WITHIN_MS before it
SMALL, LARGE, COUNT, WITHIN_MS = 2.0, 500.0, 3, 600_000
_EVENT = ("seq", "ts", "card", "amount", "merchant")


def _w5_alerts(card: list[str], cs: list[int], bw: list[int]) -> tuple[list[bool], list[int]]:
    """The after-match chain of W5 over its candidate large amounts, in (card, ts, seq) order.

    ``cs``: smalls of the card before the large amount; ``bw``: smalls at least 10 minutes before it.
    A large amount alerts when at least ``COUNT`` smalls lie after the card's previous alert and
    inside the window (skip past last event: an alert consumes its smalls). Which larges alert
    depends on the earlier alerts of the same card, so this one step is sequential; it runs over the
    candidates only (``cs - bw >= COUNT``: a few per 10,000 events). The reference's other condition
    (the last small comes after the previous large) follows: a large right after another large sees a
    subset of that one's smalls, which either alerted (consuming them) or had too few. Returns (alert,
    lo): the smalls of an alert are the card's smalls number ``lo + 1 .. cs``."""
    alert, lo_out = [], []
    prev, last = None, 0
    for c, n, b in zip(card, cs, bw, strict=True):
        if c != prev:
            prev, last = c, 0
        lo = max(b, last)
        ok = n - lo >= COUNT
        if ok:
            last = n
        alert.append(ok)
        lo_out.append(lo)
    return alert, lo_out


def p_w5(p: Path) -> pa.Table:
    """Card testing (everstream's ``card_testing``: skip past last event), same rows as the plain-Python
    reference ``_w5_reference``: per large amount, the smalls after the card's previous alert and less
    than 10 minutes before it; at least 3 -> one alert with those smalls.

    Vectorized: small/large rows only, the running small count per card (``cs``) and, by an as-of
    join, the count of smalls 10 minutes or more before each large (``bw``); then the after-match
    chain over the few candidates (:func:`_w5_alerts`) and the matched events as list columns."""
    amount = pl.col("amount")
    df = (pl.read_parquet(p, columns=list(_EVENT)).filter((amount < SMALL) | (amount > LARGE))
          .with_columns(t=MS, small=amount < SMALL).sort("card", "t", "seq")
          .with_columns(cs=pl.col("small").cast(pl.Int64).cum_sum().over("card")))
    smalls = df.filter("small")
    # number of the last small at or before each time (ties: the highest number)
    last_no = smalls.group_by("card", "t").agg(no=pl.col("cs").max()).sort("t")
    larges = (df.filter(~pl.col("small")).with_columns(edge=pl.col("t") - WITHIN_MS).sort("edge")
              .join_asof(last_no.rename({"t": "edge"}), on="edge", by="card", strategy="backward",
                         check_sortedness=False)
              .with_columns(bw=pl.col("no").fill_null(0)))
    cand = larges.filter(pl.col("cs") - pl.col("bw") >= COUNT).sort("card", "t", "seq")
    alert, lo = _w5_alerts(cand["card"].to_list(), cand["cs"].to_list(), cand["bw"].to_list())
    hits = cand.with_columns(alert=pl.Series(alert, dtype=pl.Boolean), lo=pl.Series(lo, dtype=pl.Int64)
                             ).filter("alert").with_row_index("m")
    ev = pl.struct(*_EVENT)
    got = (hits.select("m", "card", "lo", "cs").join(smalls.select("card", no="cs", ev=ev), on="card")
           .filter((pl.col("no") > pl.col("lo")) & (pl.col("no") <= pl.col("cs")))
           .sort("m", "no").group_by("m", maintain_order=True)
           .agg(small=pl.col("ev"), match_start=pl.col("ev").first().struct.field("ts")))
    out = hits.select("m", "card", match_end="ts", large=pl.concat_list(ev)).join(got, on="m").sort("m")
    return out.select("card", "match_start", "match_end", "small", "large").to_arrow()


# -------------------------------------------------------------------- Nexmark joins (q3, q4, q8, q20)

def _entity(p: Path, kind: int, prefix: str, cols: dict[str, str]) -> pl.DataFrame:
    """Persons (0), auctions (1) or bids (2) of the wide table, with Flink's column names."""
    src = ["event_type", "date_time", *(f"{prefix}{c}" for c in cols)]
    return (pl.read_parquet(p, columns=src).filter(pl.col("event_type") == kind)
            .select("date_time", *(pl.col(f"{prefix}{c}").alias(n) for c, n in cols.items())))


_AUCTION = {"id": "id", "item_name": "item_name", "description": "description", "initial_bid": "initial_bid",
            "reserve": "reserve", "expires": "expires", "seller": "seller", "category": "category",
            "extra": "extra"}


def p_q3(p: Path) -> pa.Table:
    auctions = _entity(p, 1, "a_", {"id": "id", "seller": "seller", "category": "category"})
    persons = _entity(p, 0, "p_", {"id": "pid", "name": "name", "city": "city", "state": "state"})
    return (auctions.filter(pl.col("category") == 10)
            .join(persons.filter(pl.col("state").is_in(["OR", "ID", "CA"])), left_on="seller", right_on="pid")
            .select("name", "city", "state", "id")).to_arrow()


def p_q4(p: Path) -> pa.Table:
    auctions = _entity(p, 1, "a_", {"id": "id", "category": "category", "expires": "expires"})
    bids = _entity(p, 2, "b_", {"auction": "id", "price": "price"}).rename({"date_time": "bid_time"})
    finals = (auctions.join(bids, on="id")
              .filter(pl.col("bid_time").is_between(pl.col("date_time"), pl.col("expires")))
              .group_by("id", "category").agg(final=pl.col("price").max()))
    return finals.group_by("category").agg(final=pl.col("final").mean(), auctions=pl.len()).to_arrow()


def p_q8(p: Path) -> pa.Table:
    win = T // 10_000 * 10_000
    persons = _entity(p, 0, "p_", {"id": "id", "name": "name"}).select("id", "name", starttime=win).unique()
    sellers = _entity(p, 1, "a_", {"seller": "id"}).select("id", starttime=win).unique()
    return persons.join(sellers, on=["id", "starttime"]).select("id", "name", "starttime").to_arrow()


def p_q20(p: Path) -> pa.Table:
    auctions = _entity(p, 1, "a_", _AUCTION).filter(pl.col("category") == 10).rename(
        {"id": "auction", "date_time": "date_time_auction", "extra": "extra_auction"})
    bids = _entity(p, 2, "b_", {c: c for c in ("auction", "bidder", "price", "channel", "url", "extra")})
    return bids.join(auctions, on="auction").select(
        "auction", "bidder", "price", "channel", "url", "date_time", "extra", "item_name", "description",
        "initial_bid", "reserve", "date_time_auction", "expires", "seller", "category", "extra_auction").to_arrow()


def p_q12(p: Path) -> pa.Table:
    raise NotExpressible("processing-time windows have no meaning in a batch query")


POLARS: dict[tuple[str, str], Runner] = {("finance", f.__name__[2:]): f for f in (p_w1, p_w2, p_w3, p_w4, p_w5)}
POLARS.update({("nexmark", f.__name__[2:]): f for f in (p_q0, p_q1, p_q2, p_q3, p_q4, p_q5, p_q7, p_q8, p_q11,
                                                         p_q12, p_q14, p_q15, p_q17, p_q20, p_q21,
                                                         p_q22)})

#: W5 in DuckDB (everstream's reference for W5 is plain Python, not SQL). Window functions give each
#: large amount its running small count ``cs`` and the smalls 10 minutes or more before it ``bw``
#: (RANGE ... 600000 PRECEDING); a recursive CTE walks each card's candidates (cs - bw >= 3) in order
#: carrying the small count of the card's last alert (skip past last event); the smalls numbered
#: ``lo + 1 .. cs`` of each alert are gathered into a list, as everstream's ``small`` column.
W5_SQL = f"""
WITH RECURSIVE c AS (
  SELECT seq, ts, card, amount, merchant, epoch_ms(ts) AS t, amount < {SMALL} AS small
  FROM cards WHERE amount < {SMALL} OR amount > {LARGE}),
n AS (
  SELECT *, sum(small::INTEGER) OVER (PARTITION BY card ORDER BY t, seq ROWS UNBOUNDED PRECEDING) AS cs,
         coalesce(sum(small::INTEGER) OVER (PARTITION BY card ORDER BY t
                  RANGE BETWEEN UNBOUNDED PRECEDING AND {WITHIN_MS} PRECEDING), 0) AS bw
  FROM c),
cand AS (
  SELECT *, row_number() OVER (PARTITION BY card ORDER BY t, seq) AS rn
  FROM n WHERE NOT small AND cs - bw >= {COUNT}),
r AS (
  SELECT card, rn, seq, bw AS lo, cs AS last_cs, true AS alert FROM cand WHERE rn = 1
  UNION ALL
  SELECT c.card, c.rn, c.seq, greatest(c.bw, r.last_cs),
         CASE WHEN c.cs - greatest(c.bw, r.last_cs) >= {COUNT} THEN c.cs ELSE r.last_cs END,
         c.cs - greatest(c.bw, r.last_cs) >= {COUNT}
  FROM r JOIN cand c ON c.card = r.card AND c.rn = r.rn + 1),
a AS (
  SELECT cand.*, r.lo FROM r JOIN cand USING (card, rn) WHERE r.alert)
SELECT a.card, min(s.ts) AS match_start, a.ts AS match_end,
       list({{'seq': s.seq, 'ts': s.ts, 'card': s.card, 'amount': s.amount, 'merchant': s.merchant}}
            ORDER BY s.cs) AS small,
       [{{'seq': a.seq, 'ts': a.ts, 'card': a.card, 'amount': a.amount, 'merchant': a.merchant}}] AS large
FROM a JOIN n s ON s.card = a.card AND s.small AND s.cs > a.lo AND s.cs <= a.cs
GROUP BY a.card, a.seq, a.ts, a.amount, a.merchant"""


def duckdb_runner(suite: str, query: str) -> Runner | None:
    """DuckDB: load the input tables (``--input`` and each ``--extra``), then the query's reference SQL
    (W5, whose reference is plain Python: :data:`W5_SQL`)."""
    from everstream.bench.queries import get

    q = get(suite, query)
    if q.build is None:
        return None
    text = W5_SQL if (suite, query) == ("finance", "w5") else q.reference_sql

    def run(p: Path) -> pa.Table:
        if query == "q12":
            raise NotExpressible("processing-time windows have no meaning in a batch query")
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        for name in q.tables:  # the first is --input, the others --extra NAME=PATH (W4: quotes)
            path = p if name == q.tables[0] else extra(name)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{path.as_posix()}')")
        *setup, sql = [s for s in text.split(";") if s.strip()]
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
