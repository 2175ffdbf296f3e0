"""Pathway runner (run with benchmarks/.venv-peers/bin/python): finance W1–W3 and the Nexmark queries
Pathway expresses. One worker (Pathway's default).

Input: Pathway has no Parquet connector (``pw.debug.table_from_parquet`` goes through pandas and
per-row Python, about 8x slower than its Rust CSV reader), so the untimed ``prepare`` step writes a
CSV copy with a header next to the Parquet file (``<name>.pathway.csv``, cached; timestamps as
epoch milliseconds) and the timed run reads it with ``pw.io.csv.read(mode="static")``. The schema
names only the columns a query needs (Pathway maps CSV columns by header), which is its projection.

Event time: windows are ``windowby`` over the epoch-ms column with
``common_behavior(cutoff=2 s)`` for finance (the data's disorder bound: a window still takes events
up to 2 s of event time after its end, later ones would be dropped) and ``cutoff=4 s`` for Nexmark
(its DDL's watermark). Static mode feeds the whole file as one batch, so nothing is late here and
the results are final: the figures measure per-event operator cost, not watermark latency.

Results: ``pw.debug.table_to_pandas`` (the final state of the table, retractions applied).

W4: ``pw.temporal.asof_join`` (backward, by symbol, LEFT: trades without a prior quote keep null
bid/ask). Its match is the right row with the greatest time <= the left row's time, equal times
included; of quotes with equal (symbol, ts) it may take any, so they are first reduced to the last to
arrive (greatest seq) by a ``groupby``, the reference's rule. W5 is not expressible (see ``w5``).
Nexmark joins: q3 and q20 are Pathway's regular ``join`` (as Flink's SQL), q4 the regular join
auction x bid, the ``date_time`` bound as a filter, then two ``groupby``s; q8 ``windowby`` (10 s
tumbling) on each side, then a join on (id = seller, window start).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pathway as pw
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from _common import NotExpressible, Runner, extra, main

FINANCE_CUTOFF = 2_000
NEXMARK_CUTOFF = 4_000


def to_csv(parquet: Path) -> Path:
    """CSV copy of ``parquet`` with a header (cached beside it); timestamps as epoch ms, nulls empty."""
    csv = parquet.with_suffix(".pathway.csv")
    if csv.exists() and csv.stat().st_mtime >= parquet.stat().st_mtime:
        return csv
    tmp = csv.with_suffix(".tmp")
    f = pq.ParquetFile(parquet)
    with pa.OSFile(str(tmp), "wb") as sink:
        writer = None
        for b in f.iter_batches(100_000):
            cols = [c.cast(pa.timestamp("ms")).cast(pa.int64()) if pa.types.is_timestamp(c.type) else c
                    for c in b.columns]
            batch = pa.record_batch(cols, names=b.schema.names)
            if writer is None:
                writer = pacsv.CSVWriter(sink, batch.schema, write_options=pacsv.WriteOptions(quoting_style="none"))
            writer.write_batch(batch)
        if writer is not None:
            writer.close()
    tmp.replace(csv)
    return csv


def prepare(suite: str, query: str, parquet: Path) -> Path:
    if (suite, query) == ("finance", "w4"):
        to_csv(extra("quotes"))  # the runner reads it beside the Parquet file
    return to_csv(parquet)


def _result(t: pw.Table, rename: dict[str, str] | None = None) -> pa.Table:
    """The final state of ``t``; ``rename``: output names Pathway reserves (``id`` is the row key)."""
    df = pw.debug.table_to_pandas(t, include_id=False)
    out = pa.Table.from_pandas(df, preserve_index=False)
    return out.rename_columns([(rename or {}).get(n, n) for n in out.column_names])


# ------------------------------------------------------------------------------------------ finance

class Trades(pw.Schema):  # type: ignore[misc]  # pathway is typed Any outside its venv
    seq: int
    ts: int
    symbol: str
    price: float
    qty: int
    account: str


def _trades(p: Path) -> pw.Table:
    return pw.io.csv.read(p, schema=Trades, mode="static")


def _fin_behavior() -> Any:
    return pw.temporal.common_behavior(cutoff=FINANCE_CUTOFF)


def w1(p: Path) -> pa.Table:
    t = _trades(p)
    r = t.select(ts=t.ts, symbol=t.symbol, notional=t.price * t.qty)
    return _result(r.filter(r.notional > 100_000))


def w2(p: Path) -> pa.Table:
    t = _trades(p)
    # open/close by event time, ties to the earliest arrival: min/max of the (ts, seq, price) tuple
    t = t.with_columns(k=pw.make_tuple(t.ts, t.seq, t.price), pq=t.price * t.qty)
    w = t.windowby(t.ts, window=pw.temporal.tumbling(duration=60_000), instance=t.symbol,
                   behavior=_fin_behavior()).reduce(
        symbol=pw.this._pw_instance, window_start=pw.this._pw_window_start, window_end=pw.this._pw_window_end,
        first=pw.reducers.min(pw.this.k), high=pw.reducers.max(pw.this.price), low=pw.reducers.min(pw.this.price),
        last=pw.reducers.max(pw.this.k), volume=pw.reducers.sum(pw.this.qty), pv=pw.reducers.sum(pw.this.pq))
    r = w.select(pw.this.symbol, pw.this.window_start, pw.this.window_end, open=pw.this.first[2],
                 high=pw.this.high, low=pw.this.low, close=pw.this.last[2], volume=pw.this.volume,
                 vwap=pw.this.pv / pw.this.volume)
    return _result(r)


def w3(p: Path) -> pa.Table:
    t = _trades(p)
    t = t.with_columns(notional=t.price * t.qty)
    w = t.windowby(t.ts, window=pw.temporal.sliding(hop=60_000, duration=300_000), instance=t.account,
                   behavior=_fin_behavior()).reduce(
        account=pw.this._pw_instance, window_start=pw.this._pw_window_start, window_end=pw.this._pw_window_end,
        cnt=pw.reducers.count(), sum_notional=pw.reducers.sum(pw.this.notional))
    return _result(w)


class Quotes(pw.Schema):  # type: ignore[misc]
    seq: int
    ts: int
    symbol: str
    bid: float
    ask: float


def w4(p: Path) -> pa.Table:
    t = _trades(p)
    q = pw.io.csv.read(to_csv(extra("quotes")), schema=Quotes, mode="static")
    # of quotes with the same symbol and time, the last to arrive counts (max seq)
    q = q.with_columns(k=pw.make_tuple(q.seq, q.bid, q.ask))
    q = q.groupby(q.symbol, q.ts).reduce(q.symbol, q.ts, last=pw.reducers.max(q.k))
    q = q.select(q.symbol, q.ts, bid=pw.this.last[1], ask=pw.this.last[2])
    j = pw.temporal.asof_join(t, q, t.ts, q.ts, t.symbol == q.symbol, how=pw.JoinMode.LEFT,
                              direction=pw.temporal.Direction.BACKWARD)
    return _result(j.select(seq=t.seq, ts=t.ts, symbol=t.symbol, price=t.price, bid=q.bid, ask=q.ask))


def w5(p: Path) -> pa.Table:
    raise NotExpressible(
        "Pathway has no sequence-pattern (CEP) operator: its relational form (interval_join of larges with the "
        "smalls 10 min before, then groupby/count) finds every large with >= 3 smalls, not the pattern's one "
        "alert per burst with skip-past-last-event (the smalls consumed by an alert, the last small after the "
        "previous large); a per-card Python function over collected tuples would be plain Python, not Pathway")


# ------------------------------------------------------------------------------------------ nexmark

class Events(pw.Schema):  # type: ignore[misc]
    event_type: int
    date_time: int
    b_auction: int | None
    b_bidder: int | None
    b_price: int | None
    b_channel: str | None
    b_url: str | None
    b_extra: str | None


def _bids(p: Path) -> pw.Table:
    ev = pw.io.csv.read(p, schema=Events, mode="static")
    ev = ev.filter(ev.event_type == 2)
    return ev.select(auction=pw.unwrap(ev.b_auction), bidder=pw.unwrap(ev.b_bidder), price=pw.unwrap(ev.b_price),
                     channel=pw.unwrap(ev.b_channel), url=pw.unwrap(ev.b_url), date_time=ev.date_time,
                     extra=pw.unwrap(ev.b_extra))


def _nx_behavior() -> Any:
    return pw.temporal.common_behavior(cutoff=NEXMARK_CUTOFF)


def q0(p: Path) -> pa.Table:
    return _result(_bids(p))


def q1(p: Path) -> pa.Table:
    b = _bids(p)
    return _result(b.with_columns(price=b.price * 0.908))


def q2(p: Path) -> pa.Table:
    b = _bids(p)
    return _result(b.filter(b.auction % 123 == 0).select(pw.this.auction, pw.this.price))


def q5(p: Path) -> pa.Table:
    b = _bids(p)
    c = b.windowby(b.date_time, window=pw.temporal.sliding(hop=2_000, duration=10_000), instance=b.auction,
                   behavior=_nx_behavior()).reduce(
        auction=pw.this._pw_instance, window_start=pw.this._pw_window_start, window_end=pw.this._pw_window_end,
        num=pw.reducers.count())
    m = c.groupby(c.window_start).reduce(ws=c.window_start, maxn=pw.reducers.max(c.num))
    j = c.join(m, c.window_start == m.ws).select(c.auction, c.num, c.window_start, c.window_end, m.maxn)
    return _result(j.filter(j.num >= j.maxn).without(pw.this.maxn))


def q7(p: Path) -> pa.Table:
    b = _bids(p)
    w = b.windowby(b.date_time, window=pw.temporal.tumbling(duration=10_000), behavior=_nx_behavior()).reduce(
        ws=pw.this._pw_window_start, maxprice=pw.reducers.max(pw.this.price))
    b = b.with_columns(ws=b.date_time // 10_000 * 10_000)
    j = b.join(w, b.ws == w.ws, b.price == w.maxprice)
    return _result(j.select(b.auction, b.price, b.bidder, b.date_time, b.extra))


def q11(p: Path) -> pa.Table:
    b = _bids(p)
    # a session continues while the next bid comes at most 10 s after the previous one (our reference)
    w = b.windowby(b.date_time, window=pw.temporal.session(predicate=lambda a, c: abs(a - c) <= 10_000),
                   instance=b.bidder, behavior=_nx_behavior()).reduce(
        bidder=pw.this._pw_instance, first=pw.reducers.min(pw.this.date_time),
        last=pw.reducers.max(pw.this.date_time), bid_count=pw.reducers.count())
    return _result(w.select(w.bidder, window_start=w.first, window_end=w.last + 10_000, bid_count=w.bid_count))


def q12(p: Path) -> pa.Table:
    raise NotExpressible("Pathway has no processing-time windows (windowby takes a time column); a static "
                         "replay has a single processing time")


def q14(p: Path) -> pa.Table:
    b = _bids(p)
    hour = (b.date_time // 3_600_000) % 24
    price = b.price * 0.908
    r = b.select(
        b.auction, b.bidder, price=price,
        bid_time_type=pw.if_else((hour >= 8) & (hour <= 18), "dayTime",
                                 pw.if_else((hour <= 6) | (hour >= 20), "nightTime", "otherTime")),
        date_time=b.date_time, extra=b.extra, c_counts=b.extra.str.count("c"))
    return _result(r.filter((pw.this.price > 1_000_000) & (pw.this.price < 50_000_000)))


def q17(p: Path) -> pa.Table:
    b = _bids(p)
    b = b.with_columns(window_start=b.date_time // 86_400_000 * 86_400_000,
                       r1=pw.if_else(b.price < 10_000, 1, 0),
                       r2=pw.if_else((b.price >= 10_000) & (b.price < 1_000_000), 1, 0),
                       r3=pw.if_else(b.price >= 1_000_000, 1, 0))
    g = b.groupby(b.auction, b.window_start).reduce(
        b.auction, b.window_start, total_bids=pw.reducers.count(), rank1_bids=pw.reducers.sum(b.r1),
        rank2_bids=pw.reducers.sum(b.r2), rank3_bids=pw.reducers.sum(b.r3), min_price=pw.reducers.min(b.price),
        max_price=pw.reducers.max(b.price), avg_price=pw.reducers.avg(b.price), sum_price=pw.reducers.sum(b.price))
    return _result(g)


_CHANNEL = re.compile(r"(&|^)channel_id=([^&]*)")
_HOT = {"apple": "0", "google": "1", "facebook": "2", "baidu": "3"}


def _channel_id(channel: str, url: str) -> str | None:
    hot = _HOT.get(channel.lower())
    if hot is not None:
        return hot
    m = _CHANNEL.search(url)
    return m.group(2) or None if m else None


def q21(p: Path) -> pa.Table:
    # Pathway's expressions have no regex: the channel id is a Python UDF (pw.apply), per bid
    b = _bids(p)
    r = b.select(b.auction, b.bidder, b.price, b.channel, channel_id=pw.apply(_channel_id, b.channel, b.url))
    r = r.filter(r.channel_id.is_not_none())
    return _result(r.with_columns(channel_id=pw.unwrap(pw.this.channel_id)))


def _dir(url: str, i: int) -> str | None:
    parts = url.split("/")
    return parts[i] if i < len(parts) else None


def q22(p: Path) -> pa.Table:
    # no split in Pathway's string namespace: Python UDFs (pw.apply), per bid
    b = _bids(p)
    return _result(b.select(b.auction, b.bidder, b.price, b.channel,
                            dir1=pw.apply(_dir, b.url, 3), dir2=pw.apply(_dir, b.url, 4),
                            dir3=pw.apply(_dir, b.url, 5)))


class Entities(pw.Schema):  # type: ignore[misc]
    """The person and auction columns of the wide Nexmark rows (the joins); bids via ``Events``."""

    event_type: int
    date_time: int
    p_id: int | None
    p_name: str | None
    p_city: str | None
    p_state: str | None
    a_id: int | None
    a_item_name: str | None
    a_description: str | None
    a_initial_bid: int | None
    a_reserve: int | None
    a_expires: int | None
    a_seller: int | None
    a_category: int | None
    a_extra: str | None


class JoinEvents(Events, Entities):  # type: ignore[misc]
    pass


def _entities(p: Path) -> tuple[pw.Table, pw.Table, pw.Table]:
    """persons, auctions, bids of one read of the file, with Flink's column names (but ``pid``/``aid`` for
    ``id``: Pathway reserves that name for its row keys)."""
    ev = pw.io.csv.read(p, schema=JoinEvents, mode="static")
    pe = ev.filter(ev.event_type == 0)
    persons = pe.select(pid=pw.unwrap(pe.p_id), name=pw.unwrap(pe.p_name), city=pw.unwrap(pe.p_city),
                        state=pw.unwrap(pe.p_state), date_time=pe.date_time)
    au = ev.filter(ev.event_type == 1)
    auctions = au.select(aid=pw.unwrap(au.a_id), item_name=pw.unwrap(au.a_item_name),
                         description=pw.unwrap(au.a_description), initial_bid=pw.unwrap(au.a_initial_bid),
                         reserve=pw.unwrap(au.a_reserve), date_time=au.date_time, expires=pw.unwrap(au.a_expires),
                         seller=pw.unwrap(au.a_seller), category=pw.unwrap(au.a_category),
                         extra=pw.unwrap(au.a_extra))
    bi = ev.filter(ev.event_type == 2)
    bids = bi.select(auction=pw.unwrap(bi.b_auction), bidder=pw.unwrap(bi.b_bidder), price=pw.unwrap(bi.b_price),
                     channel=pw.unwrap(bi.b_channel), url=pw.unwrap(bi.b_url), date_time=bi.date_time,
                     extra=pw.unwrap(bi.b_extra))
    return persons, auctions, bids


def q3(p: Path) -> pa.Table:
    persons, auctions, _ = _entities(p)
    st = persons.state
    persons = persons.filter((st == "OR") | (st == "ID") | (st == "CA"))
    auctions = auctions.filter(auctions.category == 10)
    j = auctions.join(persons, auctions.seller == persons.pid)
    return _result(j.select(persons.name, persons.city, persons.state, aid=auctions.aid), {"aid": "id"})


def q4(p: Path) -> pa.Table:
    _, auctions, bids = _entities(p)
    j = auctions.join(bids, auctions.aid == bids.auction).select(
        aid=auctions.aid, category=auctions.category, price=bids.price, start=auctions.date_time,
        expires=auctions.expires, at=bids.date_time)
    j = j.filter((j.at >= j.start) & (j.at <= j.expires))
    finals = j.groupby(j.aid, j.category).reduce(j.category, final=pw.reducers.max(j.price))
    return _result(finals.groupby(finals.category).reduce(
        finals.category, final=pw.reducers.avg(finals.final), auctions=pw.reducers.count()))


def q8(p: Path) -> pa.Table:
    persons, auctions, _ = _entities(p)
    ten = pw.temporal.tumbling(duration=10_000)
    pw_ = persons.windowby(persons.date_time, window=ten, instance=persons.pid, behavior=_nx_behavior()).reduce(
        pid=pw.this._pw_instance, name=pw.reducers.any(pw.this.name), starttime=pw.this._pw_window_start)
    aw = auctions.windowby(auctions.date_time, window=ten, instance=auctions.seller,
                           behavior=_nx_behavior()).reduce(seller=pw.this._pw_instance,
                                                           starttime=pw.this._pw_window_start)
    j = pw_.join(aw, pw_.pid == aw.seller, pw_.starttime == aw.starttime)
    return _result(j.select(pw_.pid, pw_.name, pw_.starttime), {"pid": "id"})


def q20(p: Path) -> pa.Table:
    _, auctions, bids = _entities(p)
    a = auctions.filter(auctions.category == 10)
    j = bids.join(a, bids.auction == a.aid)
    return _result(j.select(bids.auction, bids.bidder, bids.price, bids.channel, bids.url, bids.date_time,
                            bids.extra, a.item_name, a.description, a.initial_bid, a.reserve,
                            date_time_auction=a.date_time, expires=a.expires, seller=a.seller, category=a.category,
                            extra_auction=a.extra))


RUNNERS: dict[tuple[str, str], Runner] = {("finance", "w1"): w1, ("finance", "w2"): w2, ("finance", "w3"): w3,
                                          ("finance", "w4"): w4, ("finance", "w5"): w5}
RUNNERS.update({("nexmark", f.__name__): f for f in (q0, q1, q2, q3, q4, q5, q7, q8, q11, q12, q14, q17, q20, q21,
                                                     q22)})

if __name__ == "__main__":
    main("pathway", pw.__version__, RUNNERS, prepare=prepare)
