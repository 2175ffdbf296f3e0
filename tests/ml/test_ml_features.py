"""Fraud features: the same from replay and live, point-in-time correct (no leakage), against Polars."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
from enginetools import produce
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine.testing import read_topic
from everstream.log import Log
from everstream.ml import FEATURES, payment_features, simulate

HOUR = 3_600_000


def _payments(seed: int = 3) -> pl.DataFrame:
    return simulate(days=2, transactions_per_day=1_500, cards=150, merchants=60, fraud_cases_per_day=6,
                    seed=seed).features_input()


def _app(names: Callable[[str], str], topic: str, out: str) -> es.App:
    app = es.App(names("features"))
    payment_features(app.stream(topic).with_watermark("ts")).to(out)
    return app


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.select("txn_id", *FEATURES).sort("txn_id")


def test_replay_and_live_give_identical_features(log: Log, names: Callable[[str], str]) -> None:
    """Replay (all history at once) and live (small chunks, the runner catching up after each) agree exactly."""
    data = _payments()
    hist, live = names("hist"), names("live")
    produce(log, hist, data, key="card")
    out_replay, out_live = names("out-replay"), names("out-live")
    replay = _app(names, hist, out_replay)
    replay.run(log, until_idle=True)
    live_app = _app(names, live, out_live)
    produce(log, live, data.head(0), key="card")
    with live_app.runner(log) as runner:
        for start in range(0, data.height, 250):
            produce(log, live, data.slice(start, 250), key="card")
            runner.catch_up()
        runner.finish()
    a = _sorted(read_topic(log, out_replay))
    b = _sorted(read_topic(log, out_live))
    assert a.height == data.height
    assert_frame_equal(a, b)


def _reference(data: pl.DataFrame) -> pl.DataFrame:
    """Plain Polars, one transaction at a time over *only* the events up to its time (ties by arrival)."""
    rows = []
    df = data.with_row_index("arrival")
    for r in df.sample(60, seed=1).iter_rows(named=True):
        t = r["ts"]
        past = df.filter((pl.col("ts") < t) | ((pl.col("ts") == t) & (pl.col("arrival") <= r["arrival"])))
        card = past.filter(pl.col("card") == r["card"])
        merchant = past.filter(pl.col("merchant") == r["merchant"])
        device = past.filter(pl.col("device") == r["device"])
        prev = card.filter(pl.col("arrival") != r["arrival"]).sort("ts", "arrival")
        others = card.filter((pl.col("ts") > t - 7 * 24 * HOUR) & (pl.col("arrival") != r["arrival"]))
        amounts = others.get_column("amount").to_numpy()
        std = float(np.std(amounts, ddof=1)) if len(amounts) >= 2 else 0.0
        z = (r["amount"] - amounts.mean()) / std if len(amounts) >= 2 and std > 1e-9 else 0.0
        rows.append({
            "txn_id": r["txn_id"],
            "card_n_1h": card.filter(pl.col("ts") > t - HOUR).height,
            "card_sum_24h": float(card.filter(pl.col("ts") > t - 24 * HOUR).get_column("amount").sum()),
            "merchant_n_24h": merchant.filter(pl.col("ts") > t - 24 * HOUR).height,
            "device_n_1h": device.filter(pl.col("ts") > t - HOUR).height,
            "card_since_last_s": None if prev.is_empty() else (t - prev.get_column("ts")[-1]) / 1000.0,
            "card_new_merchant": int(card.filter((pl.col("merchant") == r["merchant"])
                                                 & (pl.col("arrival") != r["arrival"])).is_empty()),
            "card_amount_z": z,
        })
    return pl.DataFrame(rows).sort("txn_id")


def test_features_match_a_point_in_time_reference_and_ignore_the_future(log: Log, names: Callable[[str], str]) -> None:
    """No leakage: features equal a reference that only sees events up to each one's time, and adding
    future events (huge amounts, same cards) changes no earlier event's features."""
    data = _payments(seed=5)
    topic = names("pay")
    produce(log, topic, data, key="card")
    out, out2 = names("out"), names("out2")
    _app(names, topic, out).run(log, until_idle=True)
    got = read_topic(log, out).sort("txn_id")
    ref = _reference(data)
    mine = got.join(ref.select("txn_id"), on="txn_id").select(ref.columns).sort("txn_id")
    assert_frame_equal(mine, ref, check_dtypes=False, rel_tol=1e-6, abs_tol=1e-6)

    cut = int(data.get_column("ts").quantile(0.5) or 0)
    future = data.filter(pl.col("ts") > cut).with_columns(
        (pl.col("txn_id") + 1_000_000).alias("txn_id"), pl.col("amount") * 1000)
    topic2 = names("pay2")
    produce(log, topic2, pl.concat([data, future]), key="card")
    _app(names, topic2, out2).run(log, until_idle=True)
    got2 = read_topic(log, out2)
    early = data.filter(pl.col("ts") <= cut).select("txn_id")
    a = _sorted(got.join(early, on="txn_id"))
    b = _sorted(got2.join(early, on="txn_id"))
    assert a.height == early.height
    assert_frame_equal(a, b)
