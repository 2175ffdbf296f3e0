"""The benchmark queries: finance workloads W1–W5 and Nexmark q0–q23, each as an everstream
pipeline (when the engine can express it) plus its DuckDB batch reference.

Finance input: the topic / table ``trades`` (``seq, ts, trade_id, symbol, price, qty, account,
side``). Nexmark input: the topic / table ``nexmark``, one wide row per event (``event_type``
0/1/2, ``date_time``, then ``p_*``, ``a_*``, ``b_*`` fields); the reference's view ``bid`` is
the bids with Flink's column names, as in nexmark's ``ddl_views.sql``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from everstream.engine import KeyedProcess, ProcessContext, Stream, hopping, session, tumbling
from everstream.engine import count as es_count
from everstream.engine import first as es_first
from everstream.engine import last as es_last
from everstream.engine import max as es_max
from everstream.engine import mean as es_mean
from everstream.engine import min as es_min
from everstream.engine import sum as es_sum
from everstream.engine import vwap as es_vwap
from everstream.errors import ConfigError

#: Bounded disorder of the generated data is 2 s; finance watermarks allow exactly that,
#: Nexmark's DDL declares ``WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND``.
FINANCE_DELAY = "2s"
NEXMARK_DELAY = "4s"


@dataclass(frozen=True)
class Query:
    """One benchmark query. ``build`` is None when everstream cannot express it yet (``reason``)."""

    suite: str
    name: str
    title: str
    build: Callable[[Stream], Stream] | None
    reference_sql: str = ""
    exact: tuple[str, ...] = ()
    approx: tuple[str, ...] = ()
    reason: str = ""
    #: post-processing of the engine's (or a peer's) output before the comparison
    normalize: Callable[[pl.DataFrame], pl.DataFrame] | None = None
    notes: str = ""
    tables: tuple[str, ...] = field(default=("trades",))

    @property
    def expressible(self) -> bool:
        return self.build is not None


# ---------------------------------------------------------------------------------------- finance

_NOTIONAL = pl.col("price") * pl.col("qty")


def _w1(trades: Stream) -> Stream:
    return trades.filter(_NOTIONAL > 100_000).select("ts", "symbol", notional=_NOTIONAL)


def _w2(trades: Stream) -> Stream:
    return trades.with_watermark("ts", max_delay=FINANCE_DELAY).window(tumbling("1m"), by="symbol").agg(
        open=es_first("price"), high=es_max("price"), low=es_min("price"), close=es_last("price"),
        volume=es_sum("qty"), vwap=es_vwap("price", "qty"),
    )


def _w3(trades: Stream) -> Stream:
    return (trades.with_watermark("ts", max_delay=FINANCE_DELAY)
            .with_columns(notional=_NOTIONAL)
            .window(hopping("5m", every="1m"), by="account")
            .agg(cnt=es_count(), sum_notional=es_sum("notional")))


FINANCE: dict[str, Query] = {
    q.name: q
    for q in [
        Query("finance", "w1", "filter-project (notional > 100,000)", _w1,
              "SELECT ts, symbol, price * qty AS notional FROM trades WHERE price * qty > 100000",
              exact=("ts", "symbol"), approx=("notional",)),
        Query("finance", "w2", "1-minute OHLCV + VWAP per symbol", _w2,
              """SELECT symbol, epoch_ms(ts) // 60000 * 60000 AS window_start,
                        epoch_ms(ts) // 60000 * 60000 + 60000 AS window_end,
                        first(price ORDER BY ts, seq) AS open, max(price) AS high, min(price) AS low,
                        last(price ORDER BY ts, seq) AS close, sum(qty) AS volume,
                        sum(price * qty) / sum(qty) AS vwap
                 FROM trades GROUP BY ALL""",
              exact=("symbol", "window_start", "window_end", "open", "high", "low", "close", "volume"),
              approx=("vwap",)),
        Query("finance", "w3", "5-minute windows sliding by 1 minute per account", _w3,
              """SELECT account, ws AS window_start, ws + 300000 AS window_end, count(*) AS cnt,
                        sum(price * qty) AS sum_notional
                 FROM (SELECT *, epoch_ms(ts) // 60000 * 60000 - k * 60000 AS ws FROM trades, range(5) r(k))
                 GROUP BY ALL""",
              exact=("account", "window_start", "window_end", "cnt"), approx=("sum_notional",)),
        Query("finance", "w4", "as-of join trades x quotes", None,
              reason="not yet expressible: the engine has no as-of / stream-table join yet"),
        Query("finance", "w5", "card testing (>= 3 amounts < 2.00 then one > 500.00 within 10 min)", None,
              reason="not yet expressible: CEP (pattern API / NFA) has not landed; a keyed process "
                     "function could hand-code it, which is not the declarative pattern the workload measures"),
    ]
}


# ---------------------------------------------------------------------------------------- nexmark

BID_VIEW = """CREATE VIEW bid AS SELECT b_auction AS auction, b_bidder AS bidder, b_price AS price,
    b_channel AS channel, b_url AS url, date_time, b_extra AS extra, seq FROM nexmark WHERE event_type = 2;
"""


def _bids(events: Stream, *, timed: bool = True) -> Stream:
    s = events.with_watermark("date_time", max_delay=NEXMARK_DELAY) if timed else events
    return s.filter(pl.col("event_type") == 2).select(
        auction=pl.col("b_auction"), bidder=pl.col("b_bidder"), price=pl.col("b_price"),
        channel=pl.col("b_channel"), url=pl.col("b_url"), date_time=pl.col("date_time"), extra=pl.col("b_extra"),
    )


def _q0(ev: Stream) -> Stream:
    return _bids(ev, timed=False)


def _q1(ev: Stream) -> Stream:
    return _bids(ev, timed=False).with_columns(price=pl.col("price") * 0.908)


def _q2(ev: Stream) -> Stream:
    return (ev.filter((pl.col("event_type") == 2) & (pl.col("b_auction") % 123 == 0))
            .select(auction=pl.col("b_auction"), price=pl.col("b_price")))


class _HotItems(KeyedProcess):
    """q5's second stage: per hop window, the auctions whose count is the window's maximum."""

    def process(self, event: dict[str, Any], ctx: ProcessContext) -> None:
        rows = ctx.state.setdefault("rows", [])
        if not rows:
            ctx.timer(ctx.time)
        rows.append((event["auction"], event["num"], event["window_start"], event["window_end"]))

    def on_timer(self, at: int, ctx: ProcessContext) -> list[dict[str, Any]]:
        rows = ctx.state.pop("rows", [])
        top = max((r[1] for r in rows), default=0)
        return [{"auction": a, "num": n, "window_start": s, "window_end": e} for a, n, s, e in rows if n >= top]


def _q5(ev: Stream) -> Stream:
    counts = _bids(ev).window(hopping("10s", every="2s"), by="auction").agg(num=es_count())
    return counts.key_by("window_start").process(_HotItems)


class _MaxBids(KeyedProcess):
    """q7: keep the bids at the running maximum price of a 10 s window; emit them when it closes."""

    def process(self, event: dict[str, Any], ctx: ProcessContext) -> None:
        st = ctx.state
        price = event["price"]
        best = st.get("max")
        if best is None:
            ctx.timer(int(event["win"]) * 10_000 + 9_999)
        if best is None or price > best:
            st["max"], st["rows"] = price, [event]
        elif price == best:
            st["rows"].append(event)

    def on_timer(self, at: int, ctx: ProcessContext) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = ctx.state.pop("rows", [])
        ctx.state.clear()
        return [{k: r[k] for k in ("auction", "price", "bidder", "date_time", "extra")} for r in rows]


def _q7(ev: Stream) -> Stream:
    bids = _bids(ev).with_columns(win=pl.col("date_time").dt.epoch("ms") // 10_000)
    return bids.key_by("win").process(_MaxBids)


def _q11(ev: Stream) -> Stream:
    return _bids(ev).window(session("10s"), by="bidder").agg(bid_count=es_count())


def _q12(ev: Stream) -> Stream:
    return _bids(ev, timed=False).window(tumbling("10s"), by="bidder", time="processing").agg(bid_count=es_count())


def _q12_norm(df: pl.DataFrame) -> pl.DataFrame:
    return df.group_by("bidder").agg(bid_count=pl.col("bid_count").sum())


def _q14(ev: Stream) -> Stream:
    hour = pl.col("date_time").dt.hour()
    return (_bids(ev, timed=False)
            .filter((pl.col("price") * 0.908 > 1_000_000) & (pl.col("price") * 0.908 < 50_000_000))
            .select("auction", "bidder", price=pl.col("price") * 0.908,
                    bid_time_type=pl.when(hour.is_between(8, 18)).then(pl.lit("dayTime"))
                    .when((hour <= 6) | (hour >= 20)).then(pl.lit("nightTime")).otherwise(pl.lit("otherTime")),
                    date_time=pl.col("date_time"), extra=pl.col("extra"),
                    c_counts=pl.col("extra").str.count_matches("c", literal=True)))


def _q17(ev: Stream) -> Stream:
    price = pl.col("price")
    return (_bids(ev)
            .with_columns(r1=(price < 10_000).cast(pl.Int64),
                          r2=((price >= 10_000) & (price < 1_000_000)).cast(pl.Int64),
                          r3=(price >= 1_000_000).cast(pl.Int64))
            .window(tumbling("1d"), by="auction")
            .agg(total_bids=es_count(), rank1_bids=es_sum("r1"), rank2_bids=es_sum("r2"), rank3_bids=es_sum("r3"),
                 min_price=es_min("price"), max_price=es_max("price"), avg_price=es_mean("price"),
                 sum_price=es_sum("price")))


_CHANNEL_RE = r"(&|^)channel_id=([^&]*)"


def _q21(ev: Stream) -> Stream:
    ch = pl.col("channel").str.to_lowercase()
    cid = (pl.when(ch == "apple").then(pl.lit("0")).when(ch == "google").then(pl.lit("1"))
           .when(ch == "facebook").then(pl.lit("2")).when(ch == "baidu").then(pl.lit("3"))
           .otherwise(pl.col("url").str.extract(_CHANNEL_RE, 2)))
    return (_bids(ev, timed=False).select("auction", "bidder", "price", "channel", channel_id=cid)
            .filter(pl.col("channel_id").is_not_null()))


def _q22(ev: Stream) -> Stream:
    parts = pl.col("url").str.split("/")
    return _bids(ev, timed=False).select(
        "auction", "bidder", "price", "channel",
        dir1=parts.list.get(3, null_on_oob=True), dir2=parts.list.get(4, null_on_oob=True),
        dir3=parts.list.get(5, null_on_oob=True))


_JOIN = "not yet expressible: needs a stream-stream join (joins have not landed in the engine)"
_NX = ("nexmark",)


def _nq(name: str, title: str, build: Callable[[Stream], Stream] | None, sql: str = "", exact: tuple[str, ...] = (),
        approx: tuple[str, ...] = (), reason: str = "", **kw: Any) -> Query:
    return Query("nexmark", name, title, build, BID_VIEW + sql if sql else "", exact, approx, reason,
                 tables=_NX, **kw)


NEXMARK: dict[str, Query] = {
    q.name: q
    for q in [
        _nq("q0", "pass-through", _q0,
            "SELECT auction, bidder, price, channel, url, date_time, extra FROM bid",
            exact=("auction", "bidder", "price", "channel", "url", "date_time", "extra")),
        _nq("q1", "currency conversion", _q1,
            "SELECT auction, bidder, price * 0.908 AS price, channel, url, date_time, extra FROM bid",
            exact=("auction", "bidder", "channel", "url", "date_time", "extra"), approx=("price",),
            notes="price as DOUBLE (Flink: DECIMAL(23,3))"),
        _nq("q2", "selection (auction % 123 = 0)", _q2,
            "SELECT auction, price FROM bid WHERE auction % 123 = 0", exact=("auction", "price")),
        _nq("q3", "local item suggestion", None, reason=_JOIN + " (auction x person)"),
        _nq("q4", "average price per category", None, reason=_JOIN + " and an updating aggregate over its result"),
        _nq("q5", "hot items (HOP 10 s / 2 s)", _q5,
            """, c AS (SELECT auction, ws, count(*) AS num FROM (
                    SELECT auction, epoch_ms(date_time) // 2000 * 2000 - k * 2000 AS ws FROM bid, range(5) r(k))
                  GROUP BY ALL),
               m AS (SELECT ws, max(num) AS maxn FROM c GROUP BY ws)
               SELECT c.auction, c.num, c.ws AS window_start, c.ws + 10000 AS window_end
               FROM c JOIN m USING (ws) WHERE c.num >= m.maxn""".replace(", c AS", "WITH c AS", 1),
            exact=("auction", "num", "window_start", "window_end"),
            notes="window count per auction, then the per-window maximum in a keyed process function "
                  "(per window-result row, not per event)"),
        _nq("q6", "average selling price by seller", None,
            reason="not yet expressible: needs a join of auctions and bids (also absent from Flink SQL)"),
        _nq("q7", "highest bid per 10 s window", _q7,
            """SELECT b.auction, b.price, b.bidder, b.date_time, b.extra FROM bid b JOIN (
                 SELECT epoch_ms(date_time) // 10000 AS win, max(price) AS maxprice FROM bid GROUP BY 1) w
               ON epoch_ms(b.date_time) // 10000 = w.win AND b.price = w.maxprice""",
            exact=("auction", "price", "bidder", "date_time", "extra"),
            notes="no window-join-back operator: a keyed process function per bid (per-event Python); "
                  "a bid belongs to its own half-open window (Flink's BETWEEN is closed at both ends)"),
        _nq("q8", "monitor new users", None, reason="not yet expressible: needs a window join (person x auction)"),
        _nq("q9", "winning bids", None, reason=_JOIN + " and Top-1 with retractions"),
        _nq("q10", "log to file system", None,
            reason="not implemented: needs a partitioned file sink (connectors have not landed)"),
        _nq("q11", "user sessions (gap 10 s)", _q11,
            """, o AS (SELECT bidder, epoch_ms(date_time) AS t, seq FROM bid),
               g AS (SELECT *, t - lag(t) OVER (PARTITION BY bidder ORDER BY t, seq) AS gap FROM o),
               s AS (SELECT *, sum(CASE WHEN gap IS NULL OR gap > 10000 THEN 1 ELSE 0 END)
                     OVER (PARTITION BY bidder ORDER BY t, seq ROWS UNBOUNDED PRECEDING) AS sid FROM g)
               SELECT bidder, min(t) AS window_start, max(t) + 10000 AS window_end, count(*) AS bid_count
               FROM s GROUP BY bidder, sid""".replace(", o AS", "WITH o AS", 1),
            exact=("bidder", "window_start", "window_end", "bid_count")),
        _nq("q12", "processing-time windows (10 s)", _q12,
            "SELECT bidder, count(*) AS bid_count FROM bid GROUP BY bidder",
            exact=("bidder", "bid_count"), normalize=_q12_norm,
            notes="window bounds depend on the wall clock: the check sums each bidder's counts over "
                  "windows (nothing lost or counted twice)"),
        _nq("q13", "bounded side-input join", None, reason="not yet expressible: needs a lookup / temporal join"),
        _nq("q14", "calculation (filter, CASE, count_char)", _q14,
            """SELECT auction, bidder, 0.908 * price AS price,
                      CASE WHEN hour(date_time) BETWEEN 8 AND 18 THEN 'dayTime'
                           WHEN hour(date_time) <= 6 OR hour(date_time) >= 20 THEN 'nightTime'
                           ELSE 'otherTime' END AS bid_time_type,
                      date_time, extra, length(extra) - length(replace(extra, 'c', '')) AS c_counts
               FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000""",
            exact=("auction", "bidder", "bid_time_type", "date_time", "extra", "c_counts"), approx=("price",)),
        _nq("q15", "bidding statistics report", None,
            reason="not yet: per-day COUNT DISTINCT with FILTER is expressible with count_distinct over "
                   "masked columns but not written yet"),
        _nq("q16", "channel statistics report", None, reason="not yet: as q15, per channel"),
        _nq("q17", "auction statistics report (per auction and day)", _q17,
            """SELECT auction, epoch_ms(date_time) // 86400000 * 86400000 AS window_start,
                      count(*) AS total_bids, count(*) FILTER (WHERE price < 10000) AS rank1_bids,
                      count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
                      count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
                      min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price,
                      sum(price) AS sum_price
               FROM bid GROUP BY ALL""",
            exact=("auction", "window_start", "total_bids", "rank1_bids", "rank2_bids", "rank3_bids",
                   "min_price", "max_price", "sum_price"), approx=("avg_price",),
            notes="Flink's unbounded GROUP BY (auction, day) as a 1-day tumbling window: the same final rows, "
                  "emitted once per day instead of as an updating changelog"),
        _nq("q18", "find last bid", None,
            reason="not yet expressible: deduplication with retractions needs an updating-table sink"),
        _nq("q19", "auction top-10 price", None,
            reason="not yet expressible: Top-N with retractions needs an updating-table sink"),
        _nq("q20", "expand bid with auction", None, reason=_JOIN + " (bid x auction)"),
        _nq("q21", "add channel id (CASE + regex)", _q21,
            f"""SELECT * FROM (SELECT auction, bidder, price, channel,
                      CASE lower(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' WHEN 'facebook' THEN '2'
                           WHEN 'baidu' THEN '3'
                           ELSE nullif(regexp_extract(url, '{_CHANNEL_RE}', 2), '') END AS channel_id
                    FROM bid) WHERE channel_id IS NOT NULL""",
            exact=("auction", "bidder", "price", "channel", "channel_id")),
        _nq("q22", "URL directories (SPLIT_INDEX)", _q22,
            """SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1,
                      split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bid""",
            exact=("auction", "bidder", "price", "channel", "dir1", "dir2", "dir3")),
        _nq("q23", "multi-way join", None, reason=_JOIN + " (bid x person x auction)"),
    ]
}

SUITES: dict[str, dict[str, Query]] = {"finance": FINANCE, "nexmark": NEXMARK}


def get(suite: str, name: str) -> Query:
    """The query ``name`` of ``suite`` (``finance``: w1..w5, ``nexmark``: q0..q23)."""
    queries = SUITES.get(suite)
    if queries is None:
        raise ConfigError(f"unknown benchmark suite {suite!r}: use one of {sorted(SUITES)}")
    q = queries.get(name.lower())
    if q is None:
        raise ConfigError(f"unknown {suite} query {name!r}: use one of {', '.join(queries)}")
    return q
