"""Plain-NumPy reference of the fraud features with on-arrival semantics, one event at a time.

For the event that arrived i-th: the events that arrived before it (or are it) with event time
``<= its own`` are its past; every feature is recomputed from that past with plain filters, no
state, no sorting tricks. Slow (quadratic): for a few hundred events in tests.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from everstream.ml.features import FEATURES, NEW_AFTER_MS

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def reference(data: pl.DataFrame) -> pl.DataFrame:
    """``txn_id`` and :data:`FEATURES` (without amount) of every event of ``data`` (rows in arrival order)."""
    ts = data.get_column("ts").to_numpy()
    amount = data.get_column("amount").to_numpy().astype(np.float64)
    card = np.asarray(data.get_column("card").to_list(), dtype=object)
    merchant = np.asarray(data.get_column("merchant").to_list(), dtype=object)
    device = np.asarray(data.get_column("device").to_list(), dtype=object)
    n = len(ts)
    new_m = np.zeros(n, np.int64)
    new_d = np.zeros(n, np.int64)
    rows = []
    for i in range(n):
        past = (np.arange(n) <= i) & (ts <= ts[i])
        before = past & (np.arange(n) != i)
        t = ts[i]

        def last(mask: np.ndarray) -> float | None:
            return float(ts[mask].max()) if mask.any() else None

        pm = last(before & (card == card[i]) & (merchant == merchant[i]))
        pd_ = last(before & (card == card[i]) & (device == device[i]))
        new_m[i] = int(pm is None or t - pm > NEW_AFTER_MS)
        new_d[i] = int(pd_ is None or t - pd_ > NEW_AFTER_MS)
        c, m, d = past & (card == card[i]), past & (merchant == merchant[i]), past & (device == device[i])

        def within(mask: np.ndarray, over: int, t: int = int(t)) -> np.ndarray:
            return np.asarray(mask & (ts > t - over))

        others = within(c, 7 * DAY) & (np.arange(n) != i)
        a = amount[others]
        std = float(np.std(a, ddof=1)) if len(a) >= 2 else 0.0
        z = (amount[i] - a.mean()) / std if len(a) >= 2 and std > 1e-9 else 0.0
        prev = last(before & (card == card[i]))
        rows.append({
            "txn_id": int(data.get_column("txn_id")[i]),
            "card_n_10m": int(within(c, 10 * MIN).sum()), "card_n_1h": int(within(c, HOUR).sum()),
            "card_n_24h": int(within(c, DAY).sum()), "card_sum_1h": float(amount[within(c, HOUR)].sum()),
            "card_sum_24h": float(amount[within(c, DAY)].sum()),
            "card_since_last_s": None if prev is None else (t - prev) / 1000.0,
            "card_amount_z": float(z), "card_new_merchant": int(new_m[i]), "card_new_device": int(new_d[i]),
            "card_new_merchants_24h": int(new_m[within(c, DAY)].sum()),
            "merchant_n_1h": int(within(m, HOUR).sum()), "merchant_n_24h": int(within(m, DAY).sum()),
            "merchant_sum_1h": float(amount[within(m, HOUR)].sum()),
            "merchant_new_cards_1h": int(new_m[within(m, HOUR)].sum()),
            "device_n_1h": int(within(d, HOUR).sum()), "device_n_24h": int(within(d, DAY).sum()),
            "device_sum_24h": float(amount[within(d, DAY)].sum()),
            "device_new_cards_24h": int(new_d[within(d, DAY)].sum()),
        })
    cols = [f for f in FEATURES if f != "amount"]
    return pl.DataFrame(rows).select("txn_id", *cols)
