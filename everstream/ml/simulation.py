"""A seeded, labelled payments simulator for fraud models: transactions, fraud cases, delayed chargebacks.

:mod:`everstream.finance.payments` produces unlabelled authorizations for CEP; models need more:
devices, a ground-truth label per transaction, chargebacks that arrive days later in event time,
and a switch that changes how fraudsters behave (concept drift). All vectorized (NumPy), so a
million transactions take about a second.

Background (legitimate) behaviour: each card has a typical amount (log-normal around its own
mean), a handful of favourite merchants and a home device; now and then it shops somewhere new,
pays from a second device or makes a large purchase, so no single signal separates fraud.

Fraud cases (``fraud_type``):

- ``card_testing``: a burst of tiny authorizations at random merchants within minutes, then one
  or two large ones, from a device of a shared fraud pool;
- ``account_takeover``: a few large payments within an hour at merchants new to the card, from a
  pool device;
- ``compromised_merchant``: a merchant whose terminal is compromised runs, over a few hours, many
  cards at above-normal amounts (merchant velocity is the tell).

After ``drift_day`` the fraudsters adapt (``cash_out``): the card's own second device, amounts in
the card's normal range, payments spread over a day at several merchants new to the card. Models
trained before the switch miss most of it until they are retrained on fresh labels.

Labels: a chargeback (``txn_id, ts, label=1``) arrives ``chargeback_days`` after the fraudulent
transaction (log-normal, in event time); a share of fraud is never charged back (label noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from everstream.errors import ConfigError

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the same epoch as everstream.finance.payments
DAY_MS = 86_400_000
FRAUD_TYPES = ("card_testing", "account_takeover", "compromised_merchant", "cash_out")


@dataclass(frozen=True)
class PaymentsConfig:
    """What to simulate. ``fraud_cases_per_day`` counts cases, each of several transactions."""

    days: int = 14
    transactions_per_day: int = 50_000
    cards: int = 20_000
    merchants: int = 2_000
    fraud_cases_per_day: int = 40
    drift_day: int | None = None
    chargeback_rate: float = 0.9
    chargeback_days: float = 3.0
    seed: int = 7
    start_ms: int = BASE_MS

    def __post_init__(self) -> None:
        for name in ("days", "transactions_per_day", "cards", "merchants"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"PaymentsConfig.{name}={getattr(self, name)!r} must be at least 1")
        if self.fraud_cases_per_day < 0:
            raise ConfigError(f"PaymentsConfig.fraud_cases_per_day={self.fraud_cases_per_day} must be >= 0")
        if not 0.0 <= self.chargeback_rate <= 1.0:
            raise ConfigError(f"PaymentsConfig.chargeback_rate={self.chargeback_rate} must be within [0, 1]")
        if self.drift_day is not None and not 0 <= self.drift_day <= self.days:
            raise ConfigError(f"PaymentsConfig.drift_day={self.drift_day} must be within [0, days={self.days}]")


@dataclass(frozen=True)
class Payments:
    """``transactions``: txn_id, ts (epoch ms), card, merchant, device, amount, is_fraud, fraud_type
    (in event-time order; the truth columns are for evaluation, pipelines must not read them).
    ``chargebacks``: txn_id, ts (arrival, epoch ms), label — the delayed label stream."""

    transactions: pl.DataFrame
    chargebacks: pl.DataFrame
    config: PaymentsConfig

    def features_input(self) -> pl.DataFrame:
        """The transactions without the ground truth: what a pipeline is allowed to see."""
        return self.transactions.drop("is_fraud", "fraud_type")


def simulate(config: PaymentsConfig | None = None, **overrides: object) -> Payments:
    """Simulate payments: ``simulate(PaymentsConfig(days=7))`` or ``simulate(days=7, drift_day=4)``."""
    cfg = config or PaymentsConfig()
    if overrides:
        cfg = PaymentsConfig(**{**cfg.__dict__, **overrides})  # type: ignore[arg-type]
    rng = np.random.default_rng(cfg.seed)
    span = cfg.days * DAY_MS
    # card profiles
    activity = rng.gamma(1.5, 1.0, cfg.cards)
    activity /= activity.sum()
    mu = rng.normal(3.6, 0.7, cfg.cards)
    favourites = rng.integers(0, cfg.merchants, size=(cfg.cards, 5))
    popularity = rng.pareto(1.2, cfg.merchants) + 1.0
    popularity /= popularity.sum()

    n = cfg.days * cfg.transactions_per_day
    card = rng.choice(cfg.cards, size=n, p=activity)
    ts = cfg.start_ms + rng.integers(0, span, size=n)
    usual = rng.random(n) < 0.8
    merchant = np.where(usual, favourites[card, rng.integers(0, 5, size=n)],
                        rng.choice(cfg.merchants, size=n, p=popularity))
    dev_roll = rng.random(n)
    device = np.where(dev_roll < 0.95, card, cfg.cards + card)  # home device, else the card's second one
    amount = np.exp(rng.normal(mu[card], 0.6))
    big = rng.random(n) < 0.01  # occasional large legitimate purchases
    amount = np.where(big, amount * rng.uniform(3, 8, size=n), amount)
    parts = [_frame(ts, card, merchant, device, amount, np.zeros(n, bool), np.full(n, "", dtype=object))]

    pool = 2 * cfg.cards + np.arange(60)  # fraud devices, shared across cases
    n_cases = cfg.days * cfg.fraud_cases_per_day
    for k in range(n_cases):
        t0 = int(cfg.start_ms + rng.integers(0, span - 6 * 3_600_000))
        drifted = cfg.drift_day is not None and t0 >= cfg.start_ms + cfg.drift_day * DAY_MS
        c = int(rng.choice(cfg.cards, p=activity))
        if drifted:
            kind = "cash_out"
        else:
            kind = ("card_testing", "account_takeover", "compromised_merchant")[k % 3]
        parts.append(_case(rng, kind, t0, c, mu, pool, cfg))
    tx = pl.concat(parts).sort("ts", maintain_order=True)
    tx = tx.with_row_index("txn_id").with_columns(pl.col("txn_id").cast(pl.Int64))
    tx = tx.select("txn_id", "ts", "card", "merchant", "device", "amount", "is_fraud", "fraud_type")
    fraud = tx.filter(pl.col("is_fraud"))
    charged = rng.random(fraud.height) < cfg.chargeback_rate
    delay = (rng.lognormal(np.log(cfg.chargeback_days * DAY_MS), 0.5, size=fraud.height)).astype(np.int64)
    labels = (fraud.filter(pl.Series(charged))
              .select("txn_id", (pl.col("ts") + pl.Series(delay[charged])).alias("ts"),
                      pl.lit(1, dtype=pl.Int8).alias("label"))
              .sort("ts"))
    return Payments(tx, labels, cfg)


def _frame(ts: np.ndarray, card: np.ndarray, merchant: np.ndarray, device: np.ndarray, amount: np.ndarray,
           fraud: np.ndarray, kind: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({
        "ts": ts.astype(np.int64),
        "card": pl.Series(card.astype(np.int64)).cast(pl.String).str.pad_start(6, "0").str.pad_start(7, "C"),
        "merchant": pl.Series(merchant.astype(np.int64)).cast(pl.String).str.pad_start(5, "0").str.pad_start(6, "M"),
        "device": pl.Series(device.astype(np.int64)).cast(pl.String).str.pad_start(6, "0").str.pad_start(7, "D"),
        "amount": np.round(amount, 2),
        "is_fraud": fraud,
        "fraud_type": pl.Series(kind.astype(str), dtype=pl.String),
    })


def _case(rng: np.random.Generator, kind: str, t0: int, c: int, mu: np.ndarray, pool: np.ndarray,
          cfg: PaymentsConfig) -> pl.DataFrame:
    """The transactions of one fraud case (see the module doc)."""
    if kind == "card_testing":
        k = int(rng.integers(3, 9))
        ts = t0 + np.sort(rng.integers(0, 10 * 60_000, size=k + 2))
        amount = np.r_[rng.uniform(0.5, 3.0, size=k), np.exp(mu[c] + rng.uniform(1.5, 2.5, size=2))]
        cards = np.full(k + 2, c)
        merchants = rng.integers(0, cfg.merchants, size=k + 2)
        devices = np.full(k + 2, rng.choice(pool))
    elif kind == "account_takeover":
        k = int(rng.integers(2, 6))
        ts = t0 + np.sort(rng.integers(0, 3_600_000, size=k))
        amount = np.exp(mu[c] + rng.uniform(1.0, 2.2, size=k))
        cards, merchants = np.full(k, c), rng.integers(0, cfg.merchants, size=k)
        devices = np.full(k, rng.choice(pool))
    elif kind == "compromised_merchant":
        k = int(rng.integers(10, 30))
        ts = t0 + np.sort(rng.integers(0, 4 * 3_600_000, size=k))
        cards = rng.integers(0, cfg.cards, size=k)
        amount = np.exp(mu[cards] + rng.uniform(0.5, 1.5, size=k))
        merchants = np.full(k, rng.integers(0, cfg.merchants))
        devices = cards.copy()
    else:  # cash_out (after the drift switch)
        k = int(rng.integers(4, 9))
        ts = t0 + np.sort(rng.integers(0, 6 * 3_600_000, size=k))
        cards = np.full(k, c)
        amount = np.exp(mu[c] + rng.normal(0.2, 0.4, size=k))
        merchants = rng.integers(0, cfg.merchants, size=k)
        devices = np.full(k, cfg.cards + c)
    return _frame(ts, cards, merchants, devices, amount, np.ones(len(ts), bool), np.full(len(ts), kind, dtype=object))


__all__ = ["BASE_MS", "DAY_MS", "FRAUD_TYPES", "Payments", "PaymentsConfig", "simulate"]
