"""A seeded market-surveillance simulator: order events per symbol with injected manipulation.

Events ``ts, symbol, account, firm, order_id, event (new/cancel/fill), side, price, qty, venue,
bid, ask`` (the NBBO as of the event). Background traffic is clean *by construction* for the
ready patterns: orders are small (at most 1,000 shares) and rest at the touch, and no two
events share a millisecond. Injected cases (their own accounts): spoofing (large order at the
touch, opposite order, its fill, cancel of the first), layering (three orders at levels away
from the touch, an opposite execution, the three cancelled) and wash/cross trades (opposite
fills of one firm with the same size, price and venue in the same millisecond).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from everstream.finance.payments import BASE_MS, Simulated

SCHEMA = {"ts": pl.Int64, "symbol": pl.String, "account": pl.String, "firm": pl.String, "order_id": pl.Int64,
          "event": pl.String, "side": pl.String, "price": pl.Float64, "qty": pl.Int64, "venue": pl.String,
          "bid": pl.Float64, "ask": pl.Float64}


def order_events(events: int = 20_000, *, symbols: int = 20, accounts: int = 200, cases: int = 5, seed: int = 7,
                 disorder_ms: int = 500) -> Simulated:
    """Background order flow plus ``cases`` injections of each kind; cases: ``kind, account, symbol, firm``."""
    rng = np.random.default_rng(seed)
    n_new = events // 2
    ts = BASE_MS + np.arange(events, dtype=np.int64) * 50  # distinct milliseconds, 20 events/s
    sym = rng.integers(0, symbols, size=n_new)
    mid = 100 + rng.normal(0, 0.02, size=(symbols,)).cumsum()
    side = np.where(rng.random(n_new) < 0.5, "B", "S")
    acct = rng.integers(0, accounts, size=n_new)
    rows: list[dict[str, Any]] = []
    order_id = 0
    i_new = 0
    pending: list[tuple[int, dict[str, Any]]] = []  # (slot due, cancel/fill row)
    for slot, t in enumerate(ts):
        if pending and pending[0][0] <= slot:
            _, row = pending.pop(0)
            row = dict(row, ts=int(t))
            rows.append(row)
        elif i_new < n_new:
            s = int(sym[i_new])
            bid = round(float(mid[s]) - 0.01, 2)
            ask = round(float(mid[s]) + 0.01, 2)
            sd = str(side[i_new])
            a = int(acct[i_new])
            order_id += 1
            row = {"ts": int(t), "symbol": f"S{s:03d}", "account": f"A{a:04d}", "firm": f"F{a % 20:02d}",
                   "order_id": order_id, "event": "new", "side": sd, "price": bid if sd == "B" else ask,
                   "qty": int(rng.integers(1, 11)) * 100, "venue": "XNAS" if a % 2 else "ARCX", "bid": bid, "ask": ask}
            rows.append(row)
            follow = "fill" if rng.random() < 0.4 else "cancel"
            pending.append((slot + int(rng.integers(5, 40)), dict(row, event=follow)))
            pending.sort(key=lambda x: x[0])
            i_new += 1
    df = pl.DataFrame(rows, schema=SCHEMA)
    injected, found = _inject(rng, int(ts[-1]), cases, order_id + 1)
    df = pl.concat([df, pl.DataFrame(injected, schema=SCHEMA)]).sort("ts", maintain_order=True)
    arrival = df["ts"].to_numpy() + rng.uniform(0, disorder_ms, size=df.height)
    df = df[np.argsort(arrival, kind="stable")].with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    return Simulated(df, pl.DataFrame(found))


def _inject(rng: np.random.Generator, end: int, cases: int, next_id: int) -> tuple[list[dict[str, Any]],
                                                                                   list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    oid = next_id

    def ev(t: int, sym: str, acct: str, firm: str, order: int, kind: str, side: str, price: float, qty: int,
           bid: float, ask: float, venue: str = "XNAS") -> None:
        rows.append({"ts": t + 1, "symbol": sym, "account": acct, "firm": firm, "order_id": order, "event": kind,
                     "side": side, "price": price, "qty": qty, "venue": venue, "bid": bid, "ask": ask})

    for k in range(cases):
        sym = f"S{int(rng.integers(0, 20)):03d}"
        bid, ask = 99.99, 100.01
        # spoofing: large sell at the ask, a buy on the other side, its fill, the sell cancelled
        t0 = BASE_MS + int(rng.integers(0, end - BASE_MS - 60_000)) // 50 * 50 + 25  # between background ms
        acct, firm = f"SPOOF{k}", "FX1"
        ev(t0, sym, acct, firm, oid, "new", "S", ask, 20_000, bid, ask)
        ev(t0 + 1_000, sym, acct, firm, oid + 1, "new", "B", ask, 300, bid, ask)
        ev(t0 + 2_000, sym, acct, firm, oid + 1, "fill", "B", ask, 300, bid, ask)
        ev(t0 + 3_000, sym, acct, firm, oid, "cancel", "S", ask, 20_000, bid, ask)
        found.append({"kind": "spoofing", "account": acct, "symbol": sym, "firm": firm})
        oid += 2
        # layering: three buys below the bid, an opposite (sell) execution, the three cancelled
        t0 = BASE_MS + int(rng.integers(0, end - BASE_MS - 60_000)) // 50 * 50 + 25
        acct = f"LAYER{k}"
        for j in range(3):
            ev(t0 + 200 * j, sym, acct, firm, oid + j, "new", "B", round(bid - 0.01 * (j + 1), 2), 1_000, bid, ask)
        ev(t0 + 1_000, sym, acct, firm, oid + 3, "new", "S", bid, 500, bid, ask)
        ev(t0 + 1_500, sym, acct, firm, oid + 3, "fill", "S", bid, 500, bid, ask)
        for j in range(3):
            ev(t0 + 2_000 + 100 * j, sym, acct, firm, oid + j, "cancel", "B", round(bid - 0.01 * (j + 1), 2),
               1_000, bid, ask)
        found.append({"kind": "layering", "account": acct, "symbol": sym, "firm": firm})
        oid += 4
        # wash (k even: one account) / cross (odd: two accounts of one firm) in the same millisecond
        t0 = BASE_MS + int(rng.integers(0, end - BASE_MS - 60_000)) // 50 * 50 + 25
        wfirm = f"WF{k}"
        ev(t0, sym, f"WASH{k}", wfirm, oid, "fill", "B", 100.0, 700, bid, ask, "ARCX")
        ev(t0, sym, f"WASH{k}" if k % 2 == 0 else f"CROSS{k}", wfirm, oid + 1, "fill", "S", 100.0, 700, bid, ask,
           "ARCX")
        found.append({"kind": "wash_trade", "account": f"WASH{k}", "symbol": sym, "firm": wfirm})
        oid += 2
    return rows, found
