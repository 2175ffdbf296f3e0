"""Bytewax runner (run with benchmarks/.venv-peers/bin/python): finance W1–W5, Nexmark q0–q4, q8, q20.

Input: our own partitioned source over the Parquet file (Arrow batches of 4096 -> tuples; Bytewax
has no Parquet connector). Windows use ``EventClock`` with a frozen ``now_getter`` so the watermark
follows event time only (the default lets wall-clock time push the watermark past a fast replay
and drops data as late). One worker (``run_main``).

W4 and W5 have no Bytewax operator (no as-of join, no pattern matcher): they are keyed ``stateful``
logic written as a careful Bytewax user would. W4 buffers each symbol's trades until that symbol's
quotes have passed the trade's time by the 2 s disorder bound (then no earlier quote can still come),
keeps the quotes sorted by (ts, seq) and prunes those no future trade can need. W5 drops amounts
between 2.00 and 500.00 with ``op.filter``, then per card reorders by (ts, seq) behind the card's own
watermark (``_common.EventTimeBuffer``) and runs ``_common.CardMatcher`` (the reference's semantics).

Nexmark joins read all events of the file (not only the entity types a query needs) and split them
with ``op.filter``. q3 and q20 are regular joins: ``op.join(insert_mode="product", emit_mode="final")``
holds both sides and emits every pair at end of input, which a bounded replay allows (Bytewax's
``running`` mode re-emits the whole product on each update, ``complete`` drops the state after the
first pair). q4 joins the same way, keeps bids within [auction time, expires], then ``reduce_final``
(max per auction) and ``fold_final`` (average per category): results only at end of input. q8 is
``join_window`` over 10 s tumbling event-time windows (``insert_mode="first"``: one row per person and
window). A live feed would need hand-written state with expiry for q3/q4/q20.
"""

from __future__ import annotations

import bisect
import heapq
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax
import bytewax.operators as op
import bytewax.operators.windowing as win
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulLogic
from bytewax.testing import TestingSink, run_main

sys.path.insert(0, str(Path(__file__).parent))
from _common import DISORDER_MS, Alert, CardMatcher, EventTimeBuffer, Runner, extra, main, w5_table

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FROZEN = datetime(2000, 1, 1, tzinfo=UTC)


class _Part(StatefulSourcePartition[tuple[Any, ...], None]):
    def __init__(self, path: Path, cols: list[str], where: tuple[str, int] | None) -> None:
        read = cols if where is None or where[0] in cols else [*cols, where[0]]
        self._it = pq.ParquetFile(path).iter_batches(4096, columns=read)
        self._cols, self._where = cols, where

    def next_batch(self) -> list[tuple[Any, ...]]:
        b = next(self._it)  # StopIteration ends the input
        if self._where is not None:
            b = b.filter(pc.equal(b.column(self._where[0]), self._where[1]))
        arrays = [b.column(c).cast(pa.int64()) if pa.types.is_timestamp(b.column(c).type) else b.column(c)
                  for c in self._cols]
        return list(zip(*[a.to_pylist() for a in arrays], strict=True))

    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[tuple[Any, ...], None]):
    def __init__(self, path: Path, cols: list[str], where: tuple[str, int] | None = None) -> None:
        self._args = (path, cols, where)

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(*self._args)


def _clock(ts_index: int) -> win.EventClock[Any]:
    return win.EventClock(lambda r: EPOCH + timedelta(milliseconds=r[ts_index]),
                          wait_for_system_duration=timedelta(seconds=2),
                          now_getter=lambda: FROZEN, to_system_utc=lambda dt: None)


def _collect(flow: Dataflow, stream: Any, names: list[str]) -> pa.Table:
    out: list[tuple[Any, ...]] = []
    op.output("out", stream, TestingSink(out))
    run_main(flow)
    return pa.table({n: [r[i] for r in out] for i, n in enumerate(names)})


def w1(p: Path) -> pa.Table:
    flow = Dataflow("w1")
    s = op.input("in", flow, _Source(p, ["ts", "symbol", "price", "qty"]))
    s = op.filter_map("f", s, lambda r: (r[0], r[1], r[2] * r[3]) if r[2] * r[3] > 100_000 else None)
    return _collect(flow, s, ["ts", "symbol", "notional"])


def w2(p: Path) -> pa.Table:
    flow = Dataflow("w2")
    s = op.input("in", flow, _Source(p, ["ts", "seq", "symbol", "price", "qty"]))
    keyed = op.key_on("key", s, lambda r: r[2])

    def fold(st: list[Any], r: tuple[Any, ...]) -> list[Any]:
        k = (r[0], r[1])
        if st[0] is None or k < st[0]:
            st[0], st[1] = k, r[3]
        if st[2] is None or k > st[2]:
            st[2], st[3] = k, r[3]
        st[4] = max(st[4], r[3])
        st[5] = min(st[5], r[3])
        st[6] += r[4]
        st[7] += r[3] * r[4]
        return st

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        raise NotImplementedError("tumbling windows never merge")

    w = win.fold_window("w", keyed, _clock(0), win.TumblingWindower(timedelta(minutes=1), EPOCH),
                        lambda: [None, 0.0, None, 0.0, float("-inf"), float("inf"), 0, 0.0], fold, merge)
    rows = op.map("fmt", w.down, lambda kv: (kv[0], kv[1][0] * 60_000, kv[1][0] * 60_000 + 60_000, kv[1][1][1],
                                             kv[1][1][4], kv[1][1][5], kv[1][1][3], kv[1][1][6],
                                             kv[1][1][7] / kv[1][1][6]))
    return _collect(flow, rows, ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume",
                                 "vwap"])


def w3(p: Path) -> pa.Table:
    flow = Dataflow("w3")
    s = op.input("in", flow, _Source(p, ["ts", "account", "price", "qty"]))
    keyed = op.key_on("key", s, lambda r: r[1])

    def fold(st: list[Any], r: tuple[Any, ...]) -> list[Any]:
        st[0] += 1
        st[1] += r[2] * r[3]
        return st

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        raise NotImplementedError("sliding windows never merge")

    windower = win.SlidingWindower(timedelta(minutes=5), timedelta(minutes=1), EPOCH)
    w = win.fold_window("w", keyed, _clock(0), windower, lambda: [0, 0.0], fold, merge)
    rows = op.map("fmt", w.down, lambda kv: (kv[0], kv[1][0] * 60_000, kv[1][0] * 60_000 + 300_000,
                                             kv[1][1][0], kv[1][1][1]))
    return _collect(flow, rows, ["account", "window_start", "window_end", "cnt", "sum_notional"])


_INF = float("inf")


class _Asof(StatefulLogic[tuple[Any, ...], tuple[Any, ...], None]):
    """One symbol's backward as-of join: trade ``(0, seq, ts, price)``, quote ``(1, seq, ts, bid, ask)``.

    A trade is final once this symbol's highest quote time exceeds its time by more than the disorder
    bound (a later quote has ``ts >= max - 2 s > trade ts``), or at end of input. Quotes stay sorted by
    (ts, seq): the match is the last key <= (trade ts, +inf), i.e. the latest quote at or before the
    trade, of equal times the last to arrive. Quotes older than the one a future trade could need (a
    later trade has ``ts >= this symbol's max trade time - 2 s``) are pruned every 256 inserts."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, float]] = []  # (ts, seq) sorted
        self.vals: list[tuple[float, float]] = []  # (bid, ask)
        self.max_q: int | None = None
        self.max_t: int | None = None
        self.pending: list[tuple[int, int, float]] = []  # heap of (ts, seq, price)
        self.inserts = 0

    def _match(self, seq: int, ts: int, price: float) -> tuple[Any, ...]:
        j = bisect.bisect_right(self.keys, (ts, _INF)) - 1
        bid, ask = self.vals[j] if j >= 0 else (None, None)
        return (seq, ts, price, bid, ask)  # the symbol is the key

    def on_item(self, value: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], bool]:
        if value[0] == 0:
            _, seq, ts, price = value
            if self.max_t is None or ts > self.max_t:
                self.max_t = ts
            if self.max_q is not None and ts < self.max_q - DISORDER_MS:
                return [self._match(seq, ts, price)], StatefulLogic.RETAIN
            heapq.heappush(self.pending, (ts, seq, price))
            return [], StatefulLogic.RETAIN
        _, seq, ts, bid, ask = value
        key = (ts, seq)
        if not self.keys or key > self.keys[-1]:
            self.keys.append(key)
            self.vals.append((bid, ask))
        else:
            j = bisect.bisect_right(self.keys, key)
            self.keys.insert(j, key)
            self.vals.insert(j, (bid, ask))
        out: list[tuple[Any, ...]] = []
        if self.max_q is None or ts > self.max_q:
            self.max_q = ts
            limit = ts - DISORDER_MS
            while self.pending and self.pending[0][0] < limit:
                t, sq, price = heapq.heappop(self.pending)
                out.append(self._match(sq, t, price))
        self.inserts += 1
        if self.inserts % 256 == 0 and self.max_t is not None:
            low = self.max_t - DISORDER_MS
            if self.pending:
                low = min(low, self.pending[0][0])
            j = bisect.bisect_right(self.keys, (low, _INF)) - 1  # the quote a trade at `low` needs
            if j > 0:
                del self.keys[:j]
                del self.vals[:j]
        return out, StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[Any, ...]], bool]:
        out = [self._match(sq, t, price) for t, sq, price in sorted(self.pending)]
        self.pending = []
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> None:
        return None  # no recovery configured in a benchmark run


def w4(p: Path) -> pa.Table:
    flow = Dataflow("w4")
    trades = op.input("trades", flow, _Source(p, ["seq", "ts", "symbol", "price"]))
    quotes = op.input("quotes", flow, _Source(extra("quotes"), ["seq", "ts", "symbol", "bid", "ask"]))
    kt = op.map("kt", trades, lambda r: (r[2], (0, r[0], r[1], r[3])))
    kq = op.map("kq", quotes, lambda r: (r[2], (1, r[0], r[1], r[3], r[4])))
    joined = op.stateful("asof", op.merge("both", kt, kq), lambda resume: _Asof())
    rows = op.map("row", joined, lambda kv: (kv[1][0], kv[1][1], kv[0], *kv[1][2:]))
    return _collect(flow, rows, ["seq", "ts", "symbol", "price", "bid", "ask"])


class _Cards(StatefulLogic[tuple[Any, ...], Alert, None]):
    """One card: reorder its candidates by (ts, seq) behind its watermark, then match."""

    def __init__(self) -> None:
        self.buf, self.matcher = EventTimeBuffer(), CardMatcher("")

    def _feed(self, ready: list[tuple[int, int, Any]]) -> list[Alert]:
        out = []
        for ts, _, amount in ready:
            alert = self.matcher.feed(ts, amount)
            if alert is not None:
                out.append(alert)
        return out

    def on_item(self, value: tuple[Any, ...]) -> tuple[list[Alert], bool]:
        seq, ts, card, amount = value
        self.matcher.card = card
        return self._feed(self.buf.push(ts, seq, amount)), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Alert], bool]:
        return self._feed(self.buf.drain()), StatefulLogic.RETAIN

    def snapshot(self) -> None:
        return None


def w5(p: Path) -> pa.Table:
    flow = Dataflow("w5")
    s = op.input("in", flow, _Source(p, ["seq", "ts", "card", "amount"]))
    s = op.filter("candidates", s, lambda r: r[3] < 2.0 or r[3] > 500.0)
    alerts = op.stateful("match", op.key_on("card", s, lambda r: r[2]), lambda resume: _Cards())
    out: list[Alert] = []
    op.output("out", op.map("val", alerts, lambda kv: kv[1]), TestingSink(out))
    run_main(flow)
    return w5_table(out)


_BID = ["date_time", "b_auction", "b_bidder", "b_price", "b_channel", "b_url", "b_extra"]


def q0(p: Path) -> pa.Table:
    flow = Dataflow("q0")
    s = op.input("in", flow, _Source(p, _BID, ("event_type", 2)))
    s = op.map("m", s, lambda r: (r[1], r[2], r[3], r[4], r[5], r[0], r[6]))
    return _collect(flow, s, ["auction", "bidder", "price", "channel", "url", "date_time", "extra"])


def q1(p: Path) -> pa.Table:
    flow = Dataflow("q1")
    s = op.input("in", flow, _Source(p, _BID, ("event_type", 2)))
    s = op.map("m", s, lambda r: (r[1], r[2], r[3] * 0.908, r[4], r[5], r[0], r[6]))
    return _collect(flow, s, ["auction", "bidder", "price", "channel", "url", "date_time", "extra"])


def q2(p: Path) -> pa.Table:
    flow = Dataflow("q2")
    s = op.input("in", flow, _Source(p, ["b_auction", "b_price"], ("event_type", 2)))
    s = op.filter("f", s, lambda r: r[0] % 123 == 0)
    return _collect(flow, s, ["auction", "price"])


# Nexmark joins: every event of the file becomes a tuple of the columns the query reads
_P, _A, _B = 0, 1, 2  # event_type


def _events(flow: Dataflow, p: Path, cols: list[str]) -> Any:
    return op.input("in", flow, _Source(p, ["event_type", "date_time", *cols]))


def _pairs(joined: Any) -> Any:
    """Rows of a ``product``/``final`` join where both sides are present (the regular inner join)."""
    return op.filter_map("inner", joined, lambda kv: kv[1] if None not in kv[1] else None)


def q3(p: Path) -> pa.Table:
    flow = Dataflow("q3")
    ev = _events(flow, p, ["p_id", "p_name", "p_city", "p_state", "a_id", "a_seller", "a_category"])
    persons = op.filter("persons", ev, lambda r: r[0] == _P and r[5] in ("OR", "ID", "CA"))
    auctions = op.filter("auctions", ev, lambda r: r[0] == _A and r[8] == 10)
    j = op.join("join", op.key_on("by_id", persons, lambda r: str(r[2])),
                op.key_on("by_seller", auctions, lambda r: str(r[7])), insert_mode="product", emit_mode="final")
    rows = op.map("row", _pairs(j), lambda pa_: (pa_[0][3], pa_[0][4], pa_[0][5], pa_[1][6]))
    return _collect(flow, rows, ["name", "city", "state", "id"])


def q4(p: Path) -> pa.Table:
    flow = Dataflow("q4")
    ev = _events(flow, p, ["a_id", "a_expires", "a_category", "b_auction", "b_price"])
    auctions = op.key_on("a", op.filter("auctions", ev, lambda r: r[0] == _A), lambda r: str(r[2]))
    bids = op.key_on("b", op.filter("bids", ev, lambda r: r[0] == _B), lambda r: str(r[5]))
    j = op.join("join", auctions, bids, insert_mode="product", emit_mode="final")
    # per auction id (the join's key): (category, price) of each bid within [auction time, expires]
    won = op.filter_map_value("in_time", j, lambda ab: (ab[0][4], ab[1][6])
                              if None not in ab and ab[0][1] <= ab[1][1] <= ab[0][3] else None)
    finals = op.reduce_final("max", won, lambda a, b: a if a[1] >= b[1] else b)
    by_cat = op.key_on("cat", op.map("v", finals, lambda kv: kv[1]), lambda v: str(v[0]))
    avg = op.fold_final("avg", by_cat, lambda: [0, 0, 0], _q4_fold)
    rows = op.map("row", avg, lambda kv: (kv[1][0], kv[1][1] / kv[1][2], kv[1][2]))
    return _collect(flow, rows, ["category", "final", "auctions"])


def _q4_fold(st: list[Any], v: tuple[int, int]) -> list[Any]:
    st[0], st[1], st[2] = v[0], st[1] + v[1], st[2] + 1
    return st


def q8(p: Path) -> pa.Table:
    flow = Dataflow("q8")
    ev = _events(flow, p, ["p_id", "p_name", "a_seller"])
    persons = op.key_on("by_id", op.filter("persons", ev, lambda r: r[0] == _P), lambda r: str(r[2]))
    auctions = op.key_on("by_seller", op.filter("auctions", ev, lambda r: r[0] == _A), lambda r: str(r[4]))
    clock = win.EventClock(lambda r: EPOCH + timedelta(milliseconds=r[1]),
                           wait_for_system_duration=timedelta(seconds=4),  # Nexmark's watermark delay
                           now_getter=lambda: FROZEN, to_system_utc=lambda dt: None)
    j = win.join_window("join", clock, win.TumblingWindower(timedelta(seconds=10), EPOCH), persons, auctions,
                        insert_mode="first", emit_mode="final")
    rows = op.filter_map("inner", j.down, lambda kv: (kv[1][1][0][2], kv[1][1][0][3], kv[1][0] * 10_000)
                         if None not in kv[1][1] else None)
    return _collect(flow, rows, ["id", "name", "starttime"])


_Q20_A = ["a_id", "a_item_name", "a_description", "a_initial_bid", "a_reserve", "a_expires", "a_seller",
          "a_category", "a_extra"]
_Q20_B = ["b_auction", "b_bidder", "b_price", "b_channel", "b_url", "b_extra"]


def q20(p: Path) -> pa.Table:
    flow = Dataflow("q20")
    ev = _events(flow, p, [*_Q20_A, *_Q20_B])
    auctions = op.filter("auctions", ev, lambda r: r[0] == _A and r[9] == 10)
    bids = op.filter("bids", ev, lambda r: r[0] == _B)
    j = op.join("join", op.key_on("b", bids, lambda r: str(r[11])), op.key_on("a", auctions, lambda r: str(r[2])),
                insert_mode="product", emit_mode="final")
    # bid: auction, bidder, price, channel, url, date_time, extra; auction: item_name .. extra
    rows = op.map("row", _pairs(j), lambda ba: (*ba[0][11:16], ba[0][1], ba[0][16], *ba[1][3:7], ba[1][1],
                                                *ba[1][7:11]))
    return _collect(flow, rows, ["auction", "bidder", "price", "channel", "url", "date_time", "extra", "item_name",
                                 "description", "initial_bid", "reserve", "date_time_auction", "expires", "seller",
                                 "category", "extra_auction"])


RUNNERS: dict[tuple[str, str], Runner] = {
    ("finance", "w1"): w1, ("finance", "w2"): w2, ("finance", "w3"): w3, ("finance", "w4"): w4, ("finance", "w5"): w5,
    ("nexmark", "q0"): q0, ("nexmark", "q1"): q1, ("nexmark", "q2"): q2, ("nexmark", "q3"): q3, ("nexmark", "q4"): q4,
    ("nexmark", "q8"): q8, ("nexmark", "q20"): q20,
}

if __name__ == "__main__":
    main("bytewax", getattr(bytewax, "__version__", "0.21"), RUNNERS)
