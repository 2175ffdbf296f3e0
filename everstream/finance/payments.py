"""A seeded payments simulator: card authorizations and account events with injected fraud cases.

Card authorizations come from the benchmark generator (:func:`everstream.bench.data.cards`:
cards, merchants, amounts, injected card-testing bursts). Account events (logins with a device
flag, credential changes, new payees, transfers) are generated here with injected account
takeovers. The background is clean *by construction*: accounts that log in from new devices
never change credentials, so no background account completes the takeover sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Simulated:
    """Events in arrival order and the injected cases (key columns -> values, with ``ts`` of the last event)."""

    events: pl.DataFrame
    cases: pl.DataFrame


def card_authorizations(events: int, *, seed: int = 7, cards: int = 50_000, disorder_ms: int = 2_000) -> Simulated:
    """``ts, card, amount, merchant`` (+ ``seq``) with injected card-testing bursts; cases: ``card``."""
    from everstream.bench.data import cards as generate

    table, injected = generate(events, seed=seed, cards_n=cards, disorder_ms=disorder_ms)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return Simulated(df, pl.DataFrame({"card": injected}, schema={"card": pl.String}))


def account_events(accounts: int = 2_000, *, takeovers: int = 10, seed: int = 7, span_s: float = 86_400.0,
                   disorder_ms: int = 2_000) -> Simulated:
    """``ts, account, event, new_device, amount`` with ``takeovers`` injected account takeovers
    (new-device login, credential change, new payee, large transfer, 1–10 minutes apart, with
    ordinary events interleaved); cases: ``account``."""
    rng = np.random.default_rng(seed)
    span = span_s * 1000
    n = accounts * 12
    acct = rng.integers(0, accounts, size=n)
    ts = BASE_MS + rng.uniform(0, span, size=n)
    kind = rng.choice(["login", "transfer", "add_payee", "credential_change", "balance"], size=n,
                      p=[0.45, 0.3, 0.05, 0.05, 0.15])
    roaming = acct % 10 == 0  # these log in from new devices now and then, and never change credentials
    kind = np.where(roaming & (kind == "credential_change"), "balance", kind)
    new_device = (kind == "login") & roaming & (rng.random(n) < 0.3)
    amount = np.where(kind == "transfer", np.round(rng.lognormal(5.5, 1.5, size=n), 2), 0.0)
    frames = [pl.DataFrame({"ts": ts.astype(np.int64), "account": [f"ACC{a:06d}" for a in acct],
                            "event": kind, "new_device": new_device, "amount": amount})]
    cases = []
    for k in range(takeovers):
        name = f"ATO{k:04d}"
        t0 = BASE_MS + rng.uniform(0, span - 3_600_000)
        gaps = np.cumsum(rng.uniform(60_000, 600_000, size=4))
        t = (t0 + np.r_[0, gaps[:3]]).astype(np.int64)
        steps = ["login", "credential_change", "add_payee", "transfer"]
        noise_t = (t0 + rng.uniform(0, gaps[2], size=3)).astype(np.int64)
        frames.append(pl.DataFrame({
            "ts": np.r_[t, noise_t], "account": [name] * 7,
            "event": [*steps, "balance", "login", "transfer"],
            "new_device": [True, False, False, False, False, False, False],
            "amount": [0.0, 0.0, 0.0, float(np.round(rng.uniform(6_000, 50_000), 2)), 0.0, 0.0,
                       float(np.round(rng.uniform(10, 200), 2))],
        }))
        cases.append({"account": name, "ts": int(t[-1])})
    df = pl.concat(frames).sort("ts")
    arrival = df["ts"].to_numpy() + rng.uniform(0, disorder_ms, size=df.height)
    df = df[np.argsort(arrival, kind="stable")].with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    return Simulated(df, pl.DataFrame(cases, schema={"account": pl.String, "ts": pl.Int64}))
