"""``everstream bench ml``: fresh-data fraud models on the payments simulator, end to end.

1. Simulate ``days`` of payments with concept drift at ``drift_day``; compute the features with
   the engine (:func:`everstream.ml.payment_features`) by replaying the history.
2. Walk event time day by day: retrain LightGBM (first, every ``retrain_days``, or when ADWIN
   on the miss rate of confirmed fraud fires) from labels known at that time, champion/challenger
   through the model registry topic; score the day with the champion, the rules-only baseline
   and an online river logistic regression learning from the label stream; AUC-PR per day.
3. Throughput: an engine app reads the feature topic, ``.score(registry)``, writes decisions.
4. Latency: live payments at ``rate`` per second through features + scoring; event sent to the
   log -> decision read from the log, p50/p99.
5. LightGBM retraining time on 1 M feature rows (the run's rows repeated when fewer).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl


def run(*, days: int = 20, per_day: int = 25_000, drift_day: int = 10, retrain_days: int = 2,
        maturity_days: int = 4, rate: int = 5_000, latency_s: float = 5.0, retrain_rows: int = 1_000_000,
        seed: int = 7, plot: Path | None = Path("ml_auc_pr.png")) -> dict[str, Any]:
    import everstream as es
    from everstream.engine.testing import read_topic
    from everstream.log import EmbeddedLog, TopicSpec
    from everstream.ml import (
        DriftMonitor,
        LabelStore,
        ModelRegistry,
        Retrainer,
        RiverModel,
        RulesModel,
        auc_pr,
        feature_matrix,
        payment_features,
        simulate,
        train_lightgbm,
    )
    from everstream.ml.features import FEATURES
    from everstream.ml.simulation import DAY_MS

    result: dict[str, Any] = {"bench": "ml", "days": days, "per_day": per_day, "drift_day": drift_day}
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedLog(Path(tmp) / "data", durability="relaxed")
        pay = simulate(days=days, transactions_per_day=per_day, drift_day=drift_day, seed=seed,
                       cards=max(2_000, per_day // 3))
        log.create_topic(TopicSpec("payments", 1))
        with log.producer() as producer:
            producer.send_batch("payments", pay.features_input(), key="card", timestamp="ts")
            producer.flush()
        app = es.App("ml-features")
        payment_features(app.stream("payments").with_watermark("ts")).to("features")
        t0 = time.perf_counter()
        app.run(log, until_idle=True)
        result["feature_replay_events_per_s"] = round(pay.transactions.height / (time.perf_counter() - t0))
        feats = read_topic(log, "features").join(pay.transactions.select("txn_id", "is_fraud"), on="txn_id")
        result["events"] = feats.height

        # ---- day by day in event time
        store = LabelStore()
        store.add_snapshots(feats.drop("is_fraud"))
        store.add_labels(pay.chargebacks)
        registry = ModelRegistry(log, "ml-models")
        maturity = maturity_days * DAY_MS
        retrainer = Retrainer(registry, "fraud", window_ms=7 * DAY_MS, every_ms=retrain_days * DAY_MS,
                              maturity_ms=maturity)
        rules, online, monitor = RulesModel(), RiverModel(FEATURES), DriftMonitor()
        daily: list[dict[str, Any]] = []
        start = pay.config.start_ms
        drift_seen = False
        for d in range(maturity_days + 1, days):
            as_of = start + d * DAY_MS
            report = retrainer.maybe_retrain(store, as_of, drift=drift_seen)
            drift_seen = False
            if registry.champion("fraud") is None:
                continue
            model = registry.load("fraud")
            day = feats.filter((pl.col("ts") >= as_of) & (pl.col("ts") < as_of + DAY_MS))
            x = feature_matrix(day, FEATURES).to_numpy()
            y = day.get_column("is_fraud").to_numpy()
            daily.append({"day": d, "auc_pr_model": auc_pr(y, model.predict(x)),
                          "auc_pr_rules": auc_pr(y, rules.predict(feature_matrix(day, rules.features).to_numpy())),
                          "auc_pr_online": auc_pr(y, online.predict(x)),
                          "version": registry.champion("fraud").version,  # type: ignore[union-attr]
                          "retrained": None if report is None else report.trigger,
                          "promoted": bool(report and report.promoted)})
            fresh = store.newly_labelled(as_of + DAY_MS, maturity_ms=maturity)  # labels known by the day's end
            if fresh.height:
                fx = feature_matrix(fresh, FEATURES).to_numpy()
                drift_seen = bool(monitor.update(fresh.get_column("label").to_numpy(), model.predict(fx),
                                                 np.full(fresh.height, as_of + DAY_MS)))
                online.learn(fx, fresh.get_column("label").to_numpy())
        result["daily"] = daily
        _quality(result, daily, drift_day)
        result["retrainings"] = len(retrainer.reports)
        result["promotions"] = sum(r.promoted for r in retrainer.reports)
        result["drift_alarms"] = len(monitor.alarms)

        # ---- scoring throughput through the engine (features topic -> score -> decisions topic)
        score_app = es.App("ml-score")
        score_app.stream("features").score(registry, "fraud").to("decisions")
        t0 = time.perf_counter()
        run_result = score_app.run(log, until_idle=True)
        secs = time.perf_counter() - t0
        result["score_events_per_s"] = round(run_result.events_in / secs)
        scorer = registry.scorer("fraud")
        frame = feats.drop("is_fraud")
        scorer(frame.head(1000))
        t0 = time.perf_counter()
        scorer(frame)
        result["score_step_events_per_s"] = round(frame.height / (time.perf_counter() - t0))

        # ---- live latency: payments -> features -> score -> decisions, at `rate` per second
        result |= _latency(log, registry, rate, latency_s, per_day)
        log.close()

    # ---- LightGBM retraining on 1 M rows
    reps = -(-retrain_rows // feats.height)
    big = pl.concat([feats] * reps).head(retrain_rows)
    x, y = feature_matrix(big, FEATURES).to_numpy(), big.get_column("is_fraud").to_numpy().astype(int)
    t0 = time.perf_counter()
    train_lightgbm(x, y, FEATURES)
    result["retrain_seconds_1m_rows"] = round(time.perf_counter() - t0, 2)
    result["retrain_rows"] = len(y)
    if plot is not None:
        result["plot"] = _plot(daily, drift_day, plot)
    return result


def _quality(result: dict[str, Any], daily: list[dict[str, Any]], drift_day: int) -> None:
    def mean(key: str, rows: list[dict[str, Any]]) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    result["auc_pr_model"] = mean("auc_pr_model", daily)
    result["auc_pr_rules"] = mean("auc_pr_rules", daily)
    result["auc_pr_online"] = mean("auc_pr_online", daily)
    before = [r for r in daily if r["day"] < drift_day]
    after = [r for r in daily if r["day"] >= drift_day]
    result["auc_pr_model_before_drift"] = mean("auc_pr_model", before)
    result["auc_pr_model_min_after_drift"] = min((r["auc_pr_model"] for r in after if r["auc_pr_model"]),
                                                 default=None)
    result["auc_pr_model_last_day"] = daily[-1]["auc_pr_model"] if daily else None
    recovered = [r["day"] for r in after if r["auc_pr_model"] and result["auc_pr_model_before_drift"]
                 and r["auc_pr_model"] >= 0.8 * result["auc_pr_model_before_drift"]]
    result["recovered_day"] = recovered[0] if recovered else None


def _latency(log: Any, registry: Any, rate: int, seconds: float, per_day: int) -> dict[str, Any]:
    """Live: send payments stamped with the wall clock, read decisions, event sent -> decision read."""
    import everstream as es
    from everstream.log import TopicSpec
    from everstream.ml import payment_features, simulate

    sample = simulate(days=1, transactions_per_day=max(per_day, int(rate * seconds) + 1), seed=11).features_input()
    n = int(rate * seconds)
    sample = sample.head(n).with_columns(pl.int_range(0, n, dtype=pl.Int64).alias("txn_id"))
    log.create_topic(TopicSpec("live-payments", 1), exist_ok=True)
    app = es.App("ml-live")
    payment_features(app.stream("live-payments").with_watermark("ts")).score(registry, "fraud").to("live-decisions")
    runner = app.runner(log, start="earliest", commit_interval=0.1, poll_timeout=0.001)
    sent = np.zeros(n)
    got = np.full(n, np.nan)
    consumer = log.consumer(start="earliest")
    log.create_topic(TopicSpec("live-decisions", 1), exist_ok=True)
    consumer.assign([("live-decisions", 0)])
    thread = threading.Thread(target=runner.run, kwargs={"duration": seconds + 3.0}, daemon=True)
    thread.start()
    chunk = max(1, rate // 1000)  # one small batch per millisecond
    with log.producer(linger_ms=0.0) as producer:
        t_start = time.perf_counter()
        i = 0
        while i < n:
            due = t_start + i / rate
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            part = sample.slice(i, chunk).with_columns(pl.lit(int(time.time() * 1000), dtype=pl.Int64).alias("ts"))
            sent[i:i + part.height] = time.perf_counter()
            producer.send_batch("live-payments", part, key="card", timestamp="ts")
            producer.flush()
            i += part.height
            for b in consumer.poll(0.0):
                ids = b.column("txn_id").to_numpy()
                got[ids] = time.perf_counter()
        deadline = time.perf_counter() + 3.0
        while np.isnan(got[: n - chunk]).any() and time.perf_counter() < deadline:
            for b in consumer.poll(0.01):
                got[b.column("txn_id").to_numpy()] = time.perf_counter()
    runner.stop()
    thread.join()
    runner.close()
    consumer.close()
    lat = (got - sent)[~np.isnan(got)] * 1000.0
    return {"score_latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "score_latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
            "latency_rate_per_s": rate, "latency_events_scored": len(lat), "latency_events_sent": n}


def _plot(daily: list[dict[str, Any]], drift_day: int, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    days = [r["day"] for r in daily]
    for key, label in (("auc_pr_model", "LightGBM (retrained)"), ("auc_pr_online", "river logistic (online)"),
                       ("auc_pr_rules", "rules only")):
        ax.plot(days, [r[key] if r[key] is not None else np.nan for r in daily], marker="o", label=label)
    ax.axvline(drift_day, color="grey", linestyle="--", label="fraud tactics change")
    for r in daily:
        if r["promoted"]:
            ax.axvline(r["day"], color="green", alpha=0.2)
    ax.set_xlabel("day (event time)")
    ax.set_ylabel("AUC-PR")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left")
    ax.set_title("everstream bench ml: AUC-PR per day (green: a new champion promoted)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


__all__ = ["run"]
