"""Fraud velocity features per card, a keyed process function with timers, and a live daily view.

    python examples/fraud.py
"""

from typing import Any

import polars as pl

import everstream as es


class QuietCard(es.KeyedProcess):
    """Flags a card's payment that comes after more than 30 minutes of silence, over 500 EUR."""

    def process(self, event: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
        last = ctx.state.get("last")
        ctx.state["last"] = ctx.time
        if last is not None and ctx.time - last > 30 * 60_000 and event["amount"] > 500:
            return {"card": ctx.key, "amount": event["amount"], "silent_min": (ctx.time - last) // 60_000}
        return None


app = es.App("fraud")
payments = app.stream("card_payments").with_watermark("ts", max_delay="2s")
scored = payments.rolling(
    by="card",
    n_10m=es.rolling_count("10m"), spent_10m=es.rolling_sum("amount", "10m"),
    max_1h=es.rolling_max("amount", "1h"), ewma=es.ewma("amount", half_life="30m"),
    gap_ms=es.time_since_last(),
)
scored.filter((pl.col("n_10m") >= 4) | (pl.col("amount") > 5 * pl.col("ewma"))).to("fraud.review")
payments.key_by("card").process(QuietCard).to("fraud.quiet_cards")
payments.window(es.cumulative("1d", step="1h"), by="merchant", early_fire="1s").agg(
    spent=es.sum("amount"), cards=es.approx_count_distinct("card"), p99=es.quantile("amount", 0.99),
).to("fraud.merchant_today")

if __name__ == "__main__":
    import numpy as np

    from everstream.engine.testing import read_topic

    log = es.open_log()
    log.create_topic(es.TopicSpec("card_payments", partitions=2), exist_ok=True)
    rng = np.random.default_rng(7)
    n = 20_000
    df = pl.DataFrame({
        "ts": 1_767_225_600_000 + np.sort(rng.integers(0, 6 * 3_600_000, size=n)),
        "card": [f"card{i}" for i in rng.integers(0, 400, size=n)],
        "merchant": [f"m{i}" for i in rng.integers(0, 20, size=n)],
        "amount": np.round(rng.lognormal(4, 1.2, size=n), 2),
    })
    with log.producer() as producer:
        producer.send_batch("card_payments", df, key="card", timestamp="ts")
    result = app.run(log, until_idle=True)
    print(result.to_dict())
    print("for review:", read_topic(log, "fraud.review").height,
          "quiet cards:", read_topic(log, "fraud.quiet_cards").height,
          "merchant-day rows:", read_topic(log, "fraud.merchant_today").height)
    log.close()
