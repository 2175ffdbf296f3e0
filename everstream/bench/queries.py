"""The benchmark queries: finance workloads W1–W5 and Nexmark q0–q23, each as an everstream
pipeline (when the engine can express it) plus its DuckDB batch reference.

Finance input: the topic / table ``trades`` (``seq, ts, trade_id, symbol, price, qty, account,
side``). Nexmark input: the topic / table ``nexmark``, one wide row per event (``event_type``
0/1/2, ``date_time``, then ``p_*``, ``a_*``, ``b_*`` fields); the reference's views ``person``,
``auction`` and ``bid`` are the entities with Flink's column names, as in nexmark's ``ddl_views.sql``.
The join queries (q3, q4, q8, q20) split the one stream the same way inside their builders, behind
one watermark, and are checked against the regular (unbounded) joins of Flink's SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from everstream.engine import KeyedProcess, ProcessContext, Stream, hopping, session, tumbling
from everstream.engine import count as es_count
from everstream.engine import count_distinct as es_count_distinct
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
    #: a plain-Python reference over the input Parquet files (by table name), instead of ``reference_sql``
    reference_fn: Callable[[dict[str, Path]], pl.DataFrame] | None = None

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


def _w4(trades: Stream) -> Stream:
    quotes = trades.app.stream("quotes").with_watermark("ts", max_delay=FINANCE_DELAY)
    return (trades.with_watermark("ts", max_delay=FINANCE_DELAY).join_asof(quotes, on="ts", by="symbol")
            .select("seq", "ts", "symbol", "price", "bid", "ask"))


def _w5(cards: Stream) -> Stream:
    from everstream.finance.patterns import card_testing

    # timeouts=False: the peers report matches only, not the ~2 % of partial matches that time out
    return cards.with_watermark("ts", max_delay=FINANCE_DELAY).match(card_testing(), by="card", name="card_testing",
                                                                      timeouts=False)


def _w5_norm(df: pl.DataFrame) -> pl.DataFrame:
    return df.select("card", "match_start", "match_end", n_small=pl.col("small").list.len(),
                     large_amount=pl.col("large").list.first().struct.field("amount"))


def _w5_reference(tables: dict[str, Path]) -> pl.DataFrame:
    """Card testing by a direct scan of each card's events in (ts, seq) order, independent of the NFA.

    With skip-past-last-event, each large amount (> 500) ends at most one alert: its smalls are the
    run from the earliest small after the previous alert and less than 10 minutes before it, up to
    the last small before it (that small must come after the previous large amount), if at least 3.
    """
    df = pl.read_parquet(tables["cards"]).with_columns(pl.col("ts").dt.epoch("ms").alias("t"))
    cand = df.filter((pl.col("amount") < 2) | (pl.col("amount") > 500)).sort("card", "t", "seq")
    rows = []
    cards, ts, amounts = cand["card"].to_list(), cand["t"].to_list(), cand["amount"].to_list()
    i = 0
    while i < len(cards):
        j = i
        while j < len(cards) and cards[j] == cards[i]:
            j += 1
        smalls: list[int] = []  # indices of smalls after the last alert
        last_large = -1
        for k in range(i, j):
            if amounts[k] < 2:
                smalls.append(k)
                continue
            ok = [s for s in smalls if ts[k] - ts[s] < 600_000]
            if ok and ok[-1] > last_large and len(ok) >= 3:
                rows.append((cards[k], ts[ok[0]], ts[k], len(ok), amounts[k]))
                smalls = []
            last_large = k
        i = j
    return pl.DataFrame(rows, schema={"card": pl.String, "match_start": pl.Int64, "match_end": pl.Int64,
                                      "n_small": pl.Int64, "large_amount": pl.Float64}, orient="row")


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
        Query("finance", "w4", "as-of join trades x quotes (prevailing quote per symbol)", _w4,
              """SELECT t.seq, t.ts, t.symbol, t.price, q.bid, q.ask
                 FROM trades t ASOF LEFT JOIN (
                     SELECT * FROM quotes QUALIFY row_number() OVER (PARTITION BY symbol, ts ORDER BY seq DESC) = 1
                 ) q ON t.symbol = q.symbol AND t.ts >= q.ts""",
              exact=("seq", "ts", "symbol", "price", "bid", "ask"), tables=("trades", "quotes"),
              notes="quotes (0.5 per trade, input topic 'quotes') also out of order by up to 2 s; of quotes with "
                    "the same symbol and time the last to arrive counts (Polars join_asof on arrival order)"),
        Query("finance", "w5", "card testing (>= 3 amounts < 2.00 then one > 500.00 within 10 min)", _w5,
              exact=("card", "match_start", "match_end", "n_small", "large_amount"), tables=("cards",),
              normalize=_w5_norm, reference_fn=_w5_reference,
              notes="es.finance card_testing pattern (skip past last event) over bench.data.cards(); checked "
                    "against a plain-Python scan per card (no SQL engine here has MATCH_RECOGNIZE)"),
    ]
}


# ---------------------------------------------------------------------------------------- nexmark

BID_VIEW = """CREATE VIEW bid AS SELECT b_auction AS auction, b_bidder AS bidder, b_price AS price,
    b_channel AS channel, b_url AS url, date_time, b_extra AS extra, seq FROM nexmark WHERE event_type = 2;
"""
PERSON_VIEW = """CREATE VIEW person AS SELECT p_id AS id, p_name AS name, p_email AS email_address,
    p_credit_card AS credit_card, p_city AS city, p_state AS state, date_time, p_extra AS extra, seq
    FROM nexmark WHERE event_type = 0;
"""
AUCTION_VIEW = """CREATE VIEW auction AS SELECT a_id AS id, a_item_name AS item_name, a_description AS description,
    a_initial_bid AS initial_bid, a_reserve AS reserve, date_time, a_expires AS expires, a_seller AS seller,
    a_category AS category, a_extra AS extra, seq FROM nexmark WHERE event_type = 1;
"""
#: The reference's views: ``bid``, ``person`` and ``auction`` with Flink's column names (snake case).
NEXMARK_VIEWS = BID_VIEW + PERSON_VIEW + AUCTION_VIEW

#: Time bound of the auction joins (q4, q20), where Flink joins without one (a regular join keeps
#: every row forever). In the generated data an auction and everything that refers to it lie within
#: a fraction of a second of event time: bids go to the ~100 auctions in flight (about 0.17 s old at
#: 10,000 events/s) or up to 10 ids ahead (``AUCTION_ID_LEAD``: created up to 15 ms *after* the bid),
#: and an auction runs for at most two "horizons" (0.33 s). 10 s leaves a 30-fold margin; the checks
#: against DuckDB's unbounded joins (and ``tests/bench``) confirm that nothing falls outside it.
NEXMARK_JOIN_BOUND = "10s"


def _bids(events: Stream, *, timed: bool = True) -> Stream:
    s = events.with_watermark("date_time", max_delay=NEXMARK_DELAY) if timed else events
    return s.filter(pl.col("event_type") == 2).select(
        auction=pl.col("b_auction"), bidder=pl.col("b_bidder"), price=pl.col("b_price"),
        channel=pl.col("b_channel"), url=pl.col("b_url"), date_time=pl.col("date_time"), extra=pl.col("b_extra"),
    )


def _persons(events: Stream) -> Stream:
    """The Person events of a (watermarked) Nexmark stream, with Flink's column names."""
    return events.filter(pl.col("event_type") == 0).select(
        pl.col("p_name").alias("name"),  # not name=: that keyword is select()'s step name
        id=pl.col("p_id"), email_address=pl.col("p_email"),
        credit_card=pl.col("p_credit_card"), city=pl.col("p_city"), state=pl.col("p_state"),
        date_time=pl.col("date_time"), extra=pl.col("p_extra"),
    )


def _auctions(events: Stream) -> Stream:
    """The Auction events of a (watermarked) Nexmark stream, with Flink's column names."""
    return events.filter(pl.col("event_type") == 1).select(
        id=pl.col("a_id"), item_name=pl.col("a_item_name"), description=pl.col("a_description"),
        initial_bid=pl.col("a_initial_bid"), reserve=pl.col("a_reserve"), date_time=pl.col("date_time"),
        expires=pl.col("a_expires"), seller=pl.col("a_seller"), category=pl.col("a_category"),
        extra=pl.col("a_extra"),
    )


def _q0(ev: Stream) -> Stream:
    return _bids(ev, timed=False)


def _q1(ev: Stream) -> Stream:
    return _bids(ev, timed=False).with_columns(price=pl.col("price") * 0.908)


def _q2(ev: Stream) -> Stream:
    return (ev.filter((pl.col("event_type") == 2) & (pl.col("b_auction") % 123 == 0))
            .select(auction=pl.col("b_auction"), price=pl.col("b_price")))


def _q3(ev: Stream) -> Stream:
    """Auctions of category 10 with their seller, if the seller lives in OR, ID or CA.

    Flink's regular join keeps both sides forever; here the persons are a keyed changelog table and
    each auction looks up its seller as of the auction's time (``join_table``). A person is created
    before any auction that names them as seller (the generator picks sellers among the persons
    generated so far), so that is the regular join's answer, with state for the persons only.
    """
    ev = ev.with_watermark("date_time", max_delay=NEXMARK_DELAY)
    sellers = (_persons(ev).filter(pl.col("state").is_in(["OR", "ID", "CA"]))
               .select("name", "city", "state", "date_time", seller=pl.col("id")))
    auctions = _auctions(ev).filter(pl.col("category") == 10).select("id", "seller", "date_time")
    return auctions.join_table(sellers, by="seller", how="inner").select("name", "city", "state", "id")


class _CategoryAverage(KeyedProcess):
    """q4's outer aggregate, updating: per category, the average of the closed auctions' final
    prices so far, emitted again each time an auction closes (an upsert stream keyed by category,
    as Flink's changelog; the last row per category is the answer once every auction has closed)."""

    def process(self, event: dict[str, Any], ctx: ProcessContext) -> dict[str, Any]:
        st = ctx.state
        st["sum"] = st.get("sum", 0) + event["max_price"]
        st["n"] = st.get("n", 0) + 1
        return {"category": event["category"], "final": st["sum"] / st["n"], "auctions": st["n"]}


def _q4(ev: Stream) -> Stream:
    """Average closing price per category: the highest bid of each auction within
    [auction.date_time, auction.expires], then the mean of those per category.

    The auction x bid join is an interval join (bids up to ``NEXMARK_JOIN_BOUND`` after the auction,
    then ``date_time <= expires``); each auction's pairs fall into one session window (its bids are
    less than the bound apart), which fires with the auction's final maximum once the watermark has
    passed its last bid by the bound, i.e. after the auction closed. Those finals, one per auction,
    feed the updating per-category average (:class:`_CategoryAverage`).
    """
    ev = ev.with_watermark("date_time", max_delay=NEXMARK_DELAY)
    auctions = _auctions(ev).select("id", "category", "expires", "date_time")
    bids = _bids(ev, timed=False).select("price", "date_time", id=pl.col("auction"))
    pairs = (auctions.join_interval(bids, by="id", lower="0s", upper=NEXMARK_JOIN_BOUND, suffix="_bid")
             .filter(pl.col("date_time_bid") <= pl.col("expires")))
    finals = pairs.window(session(NEXMARK_JOIN_BOUND), by=("id", "category")).agg(max_price=es_max("price"))
    return finals.key_by("category").process(_CategoryAverage)


def _q4_norm(df: pl.DataFrame) -> pl.DataFrame:
    """The upsert stream's current value: each category's last emitted row."""
    return df.group_by("category", maintain_order=True).last()


def _q5(ev: Stream) -> Stream:
    """Bids per auction per HOP(10 s, 2 s) window, then the auctions at each window's maximum count: a
    Window Top-1 with ties over the counts (their event time is window end - 1 ms, so the 2 s tumbling
    window of the top step holds exactly one hop window's results)."""
    counts = _bids(ev).window(hopping("10s", every="2s"), by="auction").agg(num=es_count())
    return counts.window(tumbling("2s")).top(1, "num", window_columns=False)


def _q7(ev: Stream) -> Stream:
    """The bids at the highest price of each 10 s window: a Window Top-1 with ties (SQL RANK() = 1)."""
    return (_bids(ev).window(tumbling("10s")).top(1, "price", window_columns=False)
            .select("auction", "price", "bidder", "date_time", "extra"))


def _q8(ev: Stream) -> Stream:
    """Persons who registered and created an auction in the same 10 s tumbling window.

    A window join of persons and auctions (by person id = seller), then one row per person and
    window (Flink groups each side by window before joining; a person may open several auctions).
    """
    ev = ev.with_watermark("date_time", max_delay=NEXMARK_DELAY)
    persons = _persons(ev).select("id", "name", "date_time")
    sellers = _auctions(ev).select("date_time", id=pl.col("seller"))
    pairs = persons.join_window(sellers, tumbling("10s"), by="id", suffix="_auction").select("id", "name")
    return (pairs.window(tumbling("10s"), by=("id", "name")).agg(auctions=es_count())
            .select("id", "name", starttime=pl.col("window_start")))


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


def _q15(ev: Stream) -> Stream:
    """Per day: bids, distinct bidders and distinct auctions, overall and per price rank. SQL's
    ``COUNT(DISTINCT x) FILTER (WHERE rank)`` is a distinct count over x masked to null outside the rank."""
    price = pl.col("price")
    ranks = {"1": price < 10_000, "2": (price >= 10_000) & (price < 1_000_000), "3": price >= 1_000_000}
    masked = {f"{c}{r}": pl.when(cond).then(pl.col(c)) for r, cond in ranks.items() for c in ("bidder", "auction")}
    aggs: dict[str, Any] = {"total_bids": es_count(), "total_bidders": es_count_distinct("bidder"),
                            "total_auctions": es_count_distinct("auction")}
    for r in ranks:
        aggs |= {f"rank{r}_bids": es_sum(f"r{r}"), f"rank{r}_bidders": es_count_distinct(f"bidder{r}"),
                 f"rank{r}_auctions": es_count_distinct(f"auction{r}")}
    return (_bids(ev).with_columns(**{f"r{r}": cond.cast(pl.Int64) for r, cond in ranks.items()}, **masked)
            .window(tumbling("1d")).agg(**aggs)
            .select(pl.col("window_start").dt.strftime("%Y-%m-%d").alias("day"), *aggs))


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


def _q20(ev: Stream) -> Stream:
    """Bids on auctions of category 10, each with its auction's columns.

    Flink's regular join keeps both sides forever. Bids may name an auction created up to 15 ms
    later (``AUCTION_ID_LEAD``), so a stream-table join as of the bid's time would miss about 4 % of
    the pairs; an interval join (auction within ``NEXMARK_JOIN_BOUND`` of the bid, either way) finds
    them all, with bounded state.
    """
    ev = ev.with_watermark("date_time", max_delay=NEXMARK_DELAY)
    auctions = (_auctions(ev).filter(pl.col("category") == 10)
                .select("item_name", "description", "initial_bid", "reserve", "date_time", "expires", "seller",
                        "category", "extra", auction=pl.col("id")))
    bound = NEXMARK_JOIN_BOUND
    pairs = _bids(ev, timed=False).join_interval(auctions, by="auction", lower=f"-{bound}", upper=bound,
                                                  suffix="_auction")
    return pairs.select("auction", "bidder", "price", "channel", "url", "date_time", "extra", "item_name",
                        "description", "initial_bid", "reserve", "date_time_auction", "expires", "seller",
                        "category", "extra_auction")


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


_RETRACT = "not yet expressible: needs an updating-table sink (retractions)"
_NX = ("nexmark",)


def _nq(name: str, title: str, build: Callable[[Stream], Stream] | None, sql: str = "", exact: tuple[str, ...] = (),
        approx: tuple[str, ...] = (), reason: str = "", **kw: Any) -> Query:
    return Query("nexmark", name, title, build, NEXMARK_VIEWS + sql if sql else "", exact, approx, reason,
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
        _nq("q3", "local item suggestion (auction x person)", _q3,
            """SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id
               WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA')""",
            exact=("name", "city", "state", "id"),
            notes="stream-table join (join_table): each auction looks up its seller in the person changelog as "
                  "of the auction's time; persons exist before their auctions, so this is the regular join's "
                  "answer (Flink: unbounded regular join)"),
        _nq("q4", "average price per category (auction x bid)", _q4,
            """SELECT category, avg(final) AS final, count(*) AS auctions FROM (
                 SELECT a.id, a.category, max(b.price) AS final FROM auction a JOIN bid b
                   ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
                 GROUP BY a.id, a.category)
               GROUP BY category""",
            exact=("category", "auctions"), approx=("final",), normalize=_q4_norm,
            notes=f"interval join (bids up to {NEXMARK_JOIN_BOUND} after the auction, then <= expires), each "
                  "auction's maximum from a session window once it closed, then an updating per-category "
                  "average (keyed process, per auction); the check takes each category's last row, the answer "
                  "once every auction has closed; 'auctions' (count) added for the check; avg as DOUBLE "
                  "(Flink: BIGINT)"),
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
            reason="not yet expressible: the average over each seller's last 10 closed auctions needs a "
                   "ROWS-bounded aggregate over an updating join result (also absent from Flink SQL)"),
        _nq("q7", "highest bid per 10 s window", _q7,
            """SELECT b.auction, b.price, b.bidder, b.date_time, b.extra FROM bid b JOIN (
                 SELECT epoch_ms(date_time) // 10000 AS win, max(price) AS maxprice FROM bid GROUP BY 1) w
               ON epoch_ms(b.date_time) // 10000 = w.win AND b.price = w.maxprice""",
            exact=("auction", "price", "bidder", "date_time", "extra"),
            notes="no window-join-back operator: a keyed process function per bid (per-event Python); "
                  "a bid belongs to its own half-open window (Flink's BETWEEN is closed at both ends)"),
        _nq("q8", "monitor new users (person x auction, 10 s windows)", _q8,
            """SELECT p.id, p.name, p.starttime FROM (
                 SELECT id, name, epoch_ms(date_time) // 10000 * 10000 AS starttime FROM person GROUP BY ALL) p
               JOIN (SELECT seller, epoch_ms(date_time) // 10000 * 10000 AS starttime FROM auction GROUP BY ALL) a
               ON p.id = a.seller AND p.starttime = a.starttime""",
            exact=("id", "name", "starttime"),
            notes="window join (join_window, tumbling 10 s, person id = seller), then one row per person and "
                  "window by a 10 s window count"),
        _nq("q9", "winning bids", None,
            reason="not yet written: the final Top-1 bid per auction after it closes could follow q4's plan "
                   "(interval join + session window); Flink's updating Top-1 needs retractions"),
        _nq("q10", "log to file system", None,
            reason="not implemented: needs a partitioned file sink (everstream.connectors has file sources only)"),
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
        _nq("q13", "bounded side-input join", None,
            reason="not yet written: join_lookup (ParquetLookup) can express it; the side-input file "
                   "(value per auction % 10000) is not generated yet"),
        _nq("q14", "calculation (filter, CASE, count_char)", _q14,
            """SELECT auction, bidder, 0.908 * price AS price,
                      CASE WHEN hour(date_time) BETWEEN 8 AND 18 THEN 'dayTime'
                           WHEN hour(date_time) <= 6 OR hour(date_time) >= 20 THEN 'nightTime'
                           ELSE 'otherTime' END AS bid_time_type,
                      date_time, extra, length(extra) - length(replace(extra, 'c', '')) AS c_counts
               FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000""",
            exact=("auction", "bidder", "bid_time_type", "date_time", "extra", "c_counts"), approx=("price",)),
        _nq("q15", "bidding statistics report (per day)", _q15,
            """SELECT strftime(date_time, '%Y-%m-%d') AS day, count(*) AS total_bids,
                      count(*) FILTER (WHERE price < 10000) AS rank1_bids,
                      count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
                      count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
                      count(DISTINCT bidder) AS total_bidders,
                      count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
                      count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
                      count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
                      count(DISTINCT auction) AS total_auctions,
                      count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
                      count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
                      count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions
               FROM bid GROUP BY ALL""",
            exact=("day", "total_bids", "rank1_bids", "rank2_bids", "rank3_bids", "total_bidders", "rank1_bidders",
                   "rank2_bidders", "rank3_bidders", "total_auctions", "rank1_auctions", "rank2_auctions",
                   "rank3_auctions"),
            notes="Flink's unbounded GROUP BY day as a 1-day tumbling window: the same final rows, emitted once "
                  "per day instead of as an updating changelog"),
        _nq("q16", "channel statistics report", None,
            reason="not yet written: as q15 per channel, plus per-minute-of-day maxima (expressible)"),
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
        _nq("q18", "find last bid", None, reason=_RETRACT + " for deduplication (last bid per bidder, auction)"),
        _nq("q19", "auction top-10 price", None, reason=_RETRACT + " for Top-N (10 highest bids per auction)"),
        _nq("q20", "expand bid with auction (category 10)", _q20,
            """SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time, b.extra, a.item_name,
                      a.description, a.initial_bid, a.reserve, a.date_time AS date_time_auction, a.expires,
                      a.seller, a.category, a.extra AS extra_auction
               FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10""",
            exact=("auction", "bidder", "price", "channel", "url", "date_time", "extra", "item_name",
                   "description", "initial_bid", "reserve", "date_time_auction", "expires", "seller", "category",
                   "extra_auction"),
            notes=f"interval join (auction within {NEXMARK_JOIN_BOUND} of the bid, either way): a bid can name an "
                  "auction created up to 15 ms later (AUCTION_ID_LEAD), which a stream-table join as of the "
                  "bid's time would miss (Flink: unbounded regular join)"),
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
        _nq("q23", "multi-way join", None,
            reason="not yet written: bid x person x auction on the bidder (regular joins on a non-time key; the "
                   "hot bidder can be a person not yet created, so join_table is not the regular join's answer)"),
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
