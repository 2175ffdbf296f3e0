"""Stateless steps and per-event Python: screen payments, enrich them, send failures to dead letters.

    python examples/payments.py
"""

from typing import Any

import polars as pl

import everstream as es

HIGH_RISK = {"XX", "YY"}


def screen(payment: dict[str, Any]) -> dict[str, Any]:
    """Per-event logic (a Python function on a dict); raises on data it cannot handle."""
    if payment["country"] is None:
        raise ValueError("payment without a country")
    return {**payment, "high_risk": payment["country"] in HIGH_RISK}


app = es.App("payments")
payments = app.stream("payments").with_watermark("ts", max_delay="1s")
screened = (
    payments.filter(pl.col("amount") > 0)
    .with_columns(amount_eur=pl.col("amount") * pl.col("fx"))
    .map(screen, on_error="dead_letter")  # bad events go to payments.dlq with the traceback
)
screened.filter(pl.col("high_risk")).to("payments.review")
screened.window(es.hopping("10m", every="1m"), by="account").agg(
    spent=es.sum("amount_eur"), n=es.count(), largest=es.max("amount_eur"), countries=es.count_distinct("country")
).to("payments.velocity")

if __name__ == "__main__":
    import numpy as np

    from everstream.engine.testing import read_topic

    log = es.open_log()
    log.create_topic(es.TopicSpec("payments", partitions=2), exist_ok=True)
    rng = np.random.default_rng(1)
    n = 5_000
    countries = rng.choice(["DE", "FR", "XX", "GB", "YY"], size=n).astype(object)
    countries[rng.choice(n, size=3, replace=False)] = None
    df = pl.DataFrame({
        "ts": 1_767_225_600_000 + np.sort(rng.integers(0, 3_600_000, size=n)),
        "account": [f"acct{i}" for i in rng.integers(0, 50, size=n)],
        "amount": np.round(rng.lognormal(4, 1, size=n), 2),
        "fx": np.full(n, 0.92),
        "country": countries.tolist(),
    })
    with log.producer() as producer:
        producer.send_batch("payments", df, key="account", timestamp="ts")
    result = app.run(log, until_idle=True)
    print(result.to_dict())
    print("for review:", read_topic(log, "payments.review").height,
          "velocity rows:", read_topic(log, "payments.velocity").height,
          "dead letters:", read_topic(log, "payments.dlq").height)
    log.close()
