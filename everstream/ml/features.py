"""Fraud features built from the engine's own steps: one pipeline for training (replay) and serving (live).

:func:`payment_features` appends the feature steps to a stream of payments
(``txn_id, ts, card, merchant, device, amount``, event time declared on ``ts``). Every feature
is an engine rolling feature (:mod:`everstream.engine.features`) or a column expression over
them, so the features of an event only cover the key's events with event time up to its own
(``(t - over, t]``): point-in-time correct by construction, and the same whether the pipeline
replays a year of history or runs live (the engine releases events in event-time order once the
watermark passes them, whatever the batching).

Features (per transaction):

- card velocity: payments and amounts over 10 minutes, 1 hour and 24 hours, time since the
  card's previous payment;
- ``card_amount_z``: the amount's z-score against the card's other payments of the last 7 days;
- ``card_new_merchant`` / ``card_new_device``: the card had not used this merchant / device in
  the 30 days before; ``card_new_merchants_24h``: the distinct merchants of the last 24 hours the
  card had not used in the 30 days before each (each merchant is new at most once per 30 days,
  so the rolling sum of the flag counts distinct merchants);
- merchant velocity: payments and amounts over 1 hour and 24 hours, ``merchant_new_cards_1h``
  (distinct cards new to the merchant in the last hour);
- device velocity: payments and amounts over 1 hour and 24 hours, ``device_new_cards_24h``
  (distinct cards using the device for the first time in 30 days).

Two ways to run the same definitions (``mode=``):

- ``"arrival"`` (default, serving grade): ONE on-arrival step
  (:func:`everstream.engine.online.online_features`) computes every feature the moment the
  event arrives, from the events with event time ``<= its own`` that arrived before it (or
  with it): no watermark wait, no future leakage, and replaying the log in arrival order gives
  the same features as live, whatever the batching. Use it for scoring and for training (the
  same step on history): training/serving skew is impossible by construction.
- ``"watermark"``: the engine's :meth:`Stream.rolling` steps, which wait for the watermark and
  then see every event up to the event's time whatever the arrival order (complete under
  disorder, at the cost of waiting ``max_delay`` and six steps). For in-order input both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from everstream.engine.features import rolling_count, rolling_sum, time_since_last
from everstream.engine.online import Derive, Family, online_features
from everstream.errors import ConfigError

if TYPE_CHECKING:
    from everstream.engine.stream import Stream

#: Columns a payments stream must carry.
PAYMENT_COLUMNS = ("txn_id", "ts", "card", "merchant", "device", "amount")

#: The model's inputs, in order (what :func:`payment_features` adds, plus the amount itself).
FEATURES = (
    "amount",
    "card_n_10m", "card_n_1h", "card_n_24h", "card_sum_1h", "card_sum_24h", "card_since_last_s",
    "card_amount_z", "card_new_merchant", "card_new_device", "card_new_merchants_24h",
    "merchant_n_1h", "merchant_n_24h", "merchant_sum_1h", "merchant_new_cards_1h",
    "device_n_1h", "device_n_24h", "device_sum_24h", "device_new_cards_24h",
)

NEW_AFTER_MS = 30 * 86_400_000  # a merchant/device unused by the card for this long counts as new again
_HELPERS = ("aux_amount_sq", "aux_cm_gap", "aux_cd_gap", "aux_n_7d", "aux_sum_7d", "aux_sq_7d")


def payment_features(payments: Stream, *, name: str = "features",
                     mode: Literal["arrival", "watermark"] = "arrival", max_delay: str = "1h") -> Stream:
    """Append the feature steps (see the module doc) to ``payments``; returns the stream with
    :data:`PAYMENT_COLUMNS` and :data:`FEATURES` of every event.

    ``payments`` must have event time declared (``.with_watermark("ts", ...)``). Step ids start
    with ``name`` so two feature pipelines can live in one app. ``mode="arrival"`` (default) is
    the one-step on-arrival pipeline (``max_delay``: how far behind the newest event time an
    event may arrive and still find its whole window in state); ``"watermark"`` the rolling steps.
    """
    if not name or not isinstance(name, str):
        raise ConfigError(f"payment_features(name={name!r}): give a step id prefix such as 'features'")
    if mode == "arrival":
        return online_features(payments, ONLINE_PARTS, outputs=[c for c in FEATURES if c != "amount"],
                               keep=PAYMENT_COLUMNS, max_delay=max_delay, name=f"{name}.online")
    if mode != "watermark":
        raise ConfigError(f"payment_features(mode={mode!r}): use 'arrival' (serving grade) or 'watermark'")
    amount = pl.col("amount").cast(pl.Float64)
    s = payments.with_columns(aux_amount_sq=amount * amount, name=f"{name}.prepare")
    s = s.rolling(by=("card", "merchant"), aux_cm_gap=time_since_last(), name=f"{name}.card_merchant")
    s = s.rolling(by=("card", "device"), aux_cd_gap=time_since_last(), name=f"{name}.card_device")
    s = s.with_columns(
        card_new_merchant=_is_new("aux_cm_gap"), card_new_device=_is_new("aux_cd_gap"), name=f"{name}.novelty")
    s = s.rolling(
        by="card", name=f"{name}.card",
        card_n_10m=rolling_count("10m"), card_n_1h=rolling_count("1h"), card_n_24h=rolling_count("24h"),
        card_sum_1h=rolling_sum("amount", "1h"), card_sum_24h=rolling_sum("amount", "24h"),
        card_new_merchants_24h=rolling_sum("card_new_merchant", "24h"),
        aux_n_7d=rolling_count("7d"), aux_sum_7d=rolling_sum("amount", "7d"),
        aux_sq_7d=rolling_sum("aux_amount_sq", "7d"),
        card_since_last_s=time_since_last(),
    )
    s = s.rolling(
        by="merchant", name=f"{name}.merchant",
        merchant_n_1h=rolling_count("1h"), merchant_n_24h=rolling_count("24h"),
        merchant_sum_1h=rolling_sum("amount", "1h"), merchant_new_cards_1h=rolling_sum("card_new_merchant", "1h"),
    )
    s = s.rolling(
        by="device", name=f"{name}.device",
        device_n_1h=rolling_count("1h"), device_n_24h=rolling_count("24h"),
        device_sum_24h=rolling_sum("amount", "24h"), device_new_cards_24h=rolling_sum("card_new_device", "24h"),
    )
    return s.with_columns(*finish_exprs(), name=f"{name}.finish").select(
        *[c for c in PAYMENT_COLUMNS], *[c for c in FEATURES if c != "amount"], name=f"{name}.select")


def _is_new(gap: str) -> pl.Expr:
    return (pl.col(gap).is_null() | (pl.col(gap) > NEW_AFTER_MS)).cast(pl.Int64)


def finish_exprs() -> list[pl.Expr]:
    """Derived features from the rolling helpers: the amount z-score against the card's *other*
    payments of the last 7 days (0 when fewer than two), time since last in seconds."""
    n = pl.col("aux_n_7d") - 1
    amount = pl.col("amount").cast(pl.Float64)
    s = pl.col("aux_sum_7d") - amount
    sq = pl.col("aux_sq_7d") - amount * amount
    mean = s / n
    var = (sq - n * mean * mean) / (n - 1)
    std = var.clip(lower_bound=0.0).sqrt()
    z = pl.when((n >= 2) & (std > 1e-9)).then((amount - mean) / std).otherwise(0.0)
    return [
        z.alias("card_amount_z"),
        (pl.col("card_since_last_s").cast(pl.Float64) / 1000.0).alias("card_since_last_s"),
    ]


def _novelty(c: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    amount = np.asarray(c["amount"], np.float64)
    with np.errstate(invalid="ignore"):
        return {"card_new_merchant": (np.isnan(c["aux_cm_gap"]) | (c["aux_cm_gap"] > NEW_AFTER_MS)).astype(np.int64),
                "card_new_device": (np.isnan(c["aux_cd_gap"]) | (c["aux_cd_gap"] > NEW_AFTER_MS)).astype(np.int64),
                "aux_amount_sq": amount * amount}


def _finish(c: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """:func:`finish_exprs` in NumPy: the z-score against the card's other payments of 7 days, seconds since last."""
    amount = np.asarray(c["amount"], np.float64)
    n = c["aux_n_7d"].astype(np.float64) - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c["aux_sum_7d"] - amount) / n
        var = ((c["aux_sq_7d"] - amount * amount) - n * mean * mean) / (n - 1)
        std = np.sqrt(np.clip(var, 0.0, None))
        ok = (n >= 2) & (std > 1e-9)
        z = np.where(ok, (amount - mean) / np.where(ok, std, 1.0), 0.0)
    return {"card_amount_z": z, "card_since_last_s": c["aux_card_gap"] / 1000.0}


#: The on-arrival pipeline: pair novelty first, then per card, merchant and device (the flags summed), then
#: the derived z-score. Same definitions as the watermark steps of :func:`payment_features`.
ONLINE_PARTS = (
    Family(("card", "merchant"), {"aux_cm_gap": time_since_last()}),
    Family(("card", "device"), {"aux_cd_gap": time_since_last()}),
    Derive(("card_new_merchant", "card_new_device", "aux_amount_sq"), _novelty, "novelty"),
    Family(("card",), {
        "card_n_10m": rolling_count("10m"), "card_n_1h": rolling_count("1h"), "card_n_24h": rolling_count("24h"),
        "card_sum_1h": rolling_sum("amount", "1h"), "card_sum_24h": rolling_sum("amount", "24h"),
        "card_new_merchants_24h": rolling_sum("card_new_merchant", "24h"),
        "aux_n_7d": rolling_count("7d"), "aux_sum_7d": rolling_sum("amount", "7d"),
        "aux_sq_7d": rolling_sum("aux_amount_sq", "7d"), "aux_card_gap": time_since_last()}),
    Family(("merchant",), {
        "merchant_n_1h": rolling_count("1h"), "merchant_n_24h": rolling_count("24h"),
        "merchant_sum_1h": rolling_sum("amount", "1h"),
        "merchant_new_cards_1h": rolling_sum("card_new_merchant", "1h")}),
    Family(("device",), {
        "device_n_1h": rolling_count("1h"), "device_n_24h": rolling_count("24h"),
        "device_sum_24h": rolling_sum("amount", "24h"), "device_new_cards_24h": rolling_sum("card_new_device", "24h")}),
    Derive(("card_amount_z", "card_since_last_s"), _finish, "finish"),
)


def compute_features(payments: pl.DataFrame, *, max_delay: str = "1h") -> pl.DataFrame:
    """The on-arrival features of a frame of payments (rows in arrival order), computed by the very operator
    the ``mode="arrival"`` step runs: for training sets and notebooks without a log, with no skew from the
    streaming step. Returns :data:`PAYMENT_COLUMNS` and :data:`FEATURES`."""
    from everstream.engine.aggregates import EVENT_TIME
    from everstream.engine.online import OnlineFeaturesOp, OnlineSpec, OnlineStep
    from everstream.engine.operators import Ctx
    from everstream.engine.time import duration_ms, event_time_ms

    missing = [c for c in PAYMENT_COLUMNS if c not in payments.columns]
    if missing:
        raise ConfigError(f"compute_features: payments lack columns {missing} (they have {payments.columns})")
    outs = tuple(c for c in FEATURES if c != "amount")
    spec = OnlineSpec(ONLINE_PARTS, outs, duration_ms(max_delay, "max_delay"), frozenset(PAYMENT_COLUMNS))
    step = OnlineStep(step_id="features.online", inputs=(), pattern=spec, by=(), timeouts=False)

    class _Offline:
        app_name = "compute_features"

    op = OnlineFeaturesOp(step, _Offline(), spec)  # type: ignore[arg-type]
    frame = payments.select(PAYMENT_COLUMNS).with_columns(event_time_ms(payments.get_column("ts")).alias(EVENT_TIME))
    out = op.process(frame, Ctx(None, None))
    assert out is not None
    return out.select(*PAYMENT_COLUMNS, *outs)


def feature_matrix(frame: pl.DataFrame, features: tuple[str, ...] | list[str] = FEATURES) -> pl.DataFrame:
    """The model inputs of ``frame`` as Float64 columns in ``features`` order (nulls as NaN, which
    LightGBM and the scorer treat as missing)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ConfigError(f"feature columns {missing} are missing (the frame has {frame.columns}); compute them "
                          "with everstream.ml.payment_features over the payments stream")
    return frame.select([pl.col(f).cast(pl.Float64).fill_null(float("nan")) for f in features])


__all__ = ["FEATURES", "NEW_AFTER_MS", "ONLINE_PARTS", "PAYMENT_COLUMNS", "compute_features", "feature_matrix",
           "finish_exprs",
           "payment_features"]
