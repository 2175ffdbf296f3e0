"""Evaluation as streams: AUC-PR and precision@k per day, drift alarms.

Fraud is rare, so the measures are about the top of the ranking: AUC-PR (average precision)
and precision@k (of the k highest scores of a day, how many were fraud: what a review team of
k cases a day would catch). :func:`daily_metrics` computes them per event-time day from scored
events and the labels known at a time; :class:`Evaluator` does it continuously from the
decision and label topics and writes one metrics record per day (once the day's labels have
matured) to a topic, plus drift alarms.

Drift: :class:`DriftMonitor` feeds the champion's per-event error on newly labelled events to
ADWIN (river) — it fires when the mean error of a recent window differs from the older one —
and compares each day's score distribution with a reference by the population stability index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from everstream.errors import ConfigError
from everstream.log.contract import Log, TopicSpec

DAY_MS = 86_400_000


def auc_pr(y: np.ndarray, score: np.ndarray) -> float | None:
    """Average precision (area under the precision-recall curve); None without a positive."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y).astype(int)
    if len(y) == 0 or y.sum() == 0:
        return None
    return float(average_precision_score(y, np.asarray(score, dtype=np.float64)))


def precision_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float | None:
    """Share of fraud among the ``k`` highest scores (ties broken by order); None for no events."""
    if k <= 0:
        raise ConfigError(f"precision_at_k(k={k}): k must be positive")
    if len(y) == 0:
        return None
    top = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[:k]
    return float(np.asarray(y)[top].mean())


def daily_metrics(scored: pl.DataFrame, labels: pl.DataFrame, *, as_of: int | None = None, k: int = 50,
                  score: str = "score") -> pl.DataFrame:
    """Per event-time day of ``scored`` (``txn_id``, ``ts``, ``score``): events, frauds known, AUC-PR and
    precision@k against ``labels`` (``txn_id``, ``ts`` arrival, ``label``) that arrived by ``as_of``
    (default: all)."""
    for c in ("txn_id", "ts", score):
        if c not in scored.columns:
            raise ConfigError(f"daily_metrics: scored events need column {c!r} (got {scored.columns})")
    lab = labels.rename({"ts": "label_ts"}) if "label_ts" not in labels.columns else labels
    if as_of is not None:
        lab = lab.filter(pl.col("label_ts") <= as_of)
    frame = (scored.select("txn_id", "ts", score)
             .join(lab.select("txn_id", "label").unique("txn_id"), on="txn_id", how="left")
             .with_columns(pl.col("label").fill_null(0).cast(pl.Int8), (pl.col("ts") // DAY_MS * DAY_MS).alias("day"))
             .sort("day"))
    rows: list[dict[str, Any]] = []
    for (day,), part in frame.group_by("day", maintain_order=True):
        y, s = part.get_column("label").to_numpy(), part.get_column(score).to_numpy()
        rows.append({"day": int(day), "events": part.height, "frauds": int(y.sum()),  # type: ignore[call-overload]
                     "auc_pr": auc_pr(y, s), "precision_at_k": precision_at_k(y, s, k), "k": k})
    schema = {"day": pl.Int64, "events": pl.Int64, "frauds": pl.Int64, "auc_pr": pl.Float64,
              "precision_at_k": pl.Float64, "k": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (quantile bins of the reference)."""
    if len(reference) == 0 or len(current) == 0:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0
    r = np.histogram(np.clip(reference, edges[0], edges[-1]), edges)[0] / len(reference)
    c = np.histogram(np.clip(current, edges[0], edges[-1]), edges)[0] / len(current)
    r, c = np.clip(r, 1e-6, None), np.clip(c, 1e-6, None)
    return float(np.sum((c - r) * np.log(c / r)))


@dataclass
class DriftAlarm:
    """A drift alarm: which detector fired, at what event time, with its details."""

    at_ms: int
    detector: str
    detail: dict[str, Any] = field(default_factory=dict)


class DriftMonitor:
    """ADWIN on the model's error rate over labelled events (river), and PSI of daily score distributions.

    ``update(labels, scores, times)`` feeds newly labelled events (in the order they became
    known); an alarm is recorded when ADWIN detects a change in the mean error. The error fed is
    the miss on confirmed fraud, ``1 - score`` of each positive label: with fraud under 1 %, the
    error over all events barely moves when fraudsters change tactics, the miss rate on fraud does.
    """

    def __init__(self, delta: float = 0.002, psi_threshold: float = 0.25) -> None:
        from river.drift import ADWIN

        self._adwin_cls = ADWIN
        self.delta = delta
        self.adwin = ADWIN(delta=delta)
        self.psi_threshold = psi_threshold
        self.alarms: list[DriftAlarm] = []
        self._reference: np.ndarray | None = None

    def update(self, labels: np.ndarray, scores: np.ndarray, times: np.ndarray) -> list[DriftAlarm]:
        """Feed labelled events; returns the alarms they raised."""
        pos = np.asarray(labels) == 1
        err, times = 1.0 - np.asarray(scores)[pos], np.asarray(times)[pos]
        new: list[DriftAlarm] = []
        adwin = self.adwin
        for e, t in zip(err.tolist(), np.asarray(times).tolist(), strict=True):
            adwin.update(e)
            if adwin.drift_detected:
                new.append(DriftAlarm(int(t), "adwin_error", {"mean_error": adwin.estimation, "width": adwin.width}))
        self.alarms += new
        return new

    def reset(self) -> None:
        """Start over after a retraining (the new champion's error is a new series)."""
        self.adwin = self._adwin_cls(delta=self.delta)

    def score_shift(self, day_ms: int, scores: np.ndarray) -> DriftAlarm | None:
        """Compare a day's scores with the first day seen (the reference); an alarm over the PSI threshold."""
        if self._reference is None:
            self._reference = np.asarray(scores)
            return None
        value = psi(self._reference, np.asarray(scores))
        if value > self.psi_threshold:
            alarm = DriftAlarm(day_ms, "psi_score", {"psi": value})
            self.alarms.append(alarm)
            return alarm
        return None


class Evaluator:
    """Continuous evaluation: reads scored decisions and labels from the log, writes per-day metrics.

    A day's record (``day``, ``events``, ``frauds``, ``auc_pr``, ``precision_at_k``, ``model_version``s)
    goes to ``metrics_topic`` once event time (the newest label or decision) has passed the day's
    end plus ``maturity_ms``, so the figures use the labels a team would have by then.
    Alarms go to ``alarms_topic``.
    """

    def __init__(self, log: Log, decisions_topic: str, labels_topic: str, *, metrics_topic: str,
                 alarms_topic: str, maturity_ms: int = 7 * DAY_MS, k: int = 50) -> None:
        from everstream.ml.labels import LabelStore

        self.log, self.k, self.maturity_ms = log, k, maturity_ms
        self.metrics_topic, self.alarms_topic = metrics_topic, alarms_topic
        for t in (metrics_topic, alarms_topic):
            log.create_topic(TopicSpec(t, 1), exist_ok=True)
        self.store = LabelStore()
        self.store.follow(log, decisions_topic, labels_topic)
        self.monitor = DriftMonitor()
        self.done: set[int] = set()
        self._now = 0

    def step(self, timeout: float = 0.05) -> pl.DataFrame:
        """Read what arrived; emit metrics of days now mature; returns the records written."""
        self.store.poll(timeout)
        snaps, labels = self.store.snapshots, self.store.labels
        if snaps.is_empty():
            return pl.DataFrame()
        newest = max(int(snaps.get_column("ts").max() or 0),  # type: ignore[arg-type]
                     int(labels.get_column("label_ts").max() or 0) if labels.height else 0)  # type: ignore[arg-type]
        self._now = max(self._now, newest)
        fresh = self.store.newly_labelled(self._now, maturity_ms=self.maturity_ms)
        alarms = self.monitor.update(fresh.get_column("label").to_numpy(), fresh.get_column("score").to_numpy(),
                                     fresh.get_column("ts").to_numpy()) if fresh.height and "score" in fresh.columns \
            else []
        due_before = self._now - self.maturity_ms
        days = snaps.filter(pl.col("ts") < due_before - due_before % DAY_MS)
        out = pl.DataFrame()
        if days.height:
            lab = labels.rename({"label_ts": "ts"})
            metrics = daily_metrics(days, lab, as_of=self._now, k=self.k).filter(~pl.col("day").is_in(list(self.done)))
            if metrics.height:
                versions = (days.with_columns((pl.col("ts") // DAY_MS * DAY_MS).alias("day"))
                            .group_by("day").agg(pl.col("model_version").unique().sort().alias("model_versions"))
                            if "model_version" in days.columns else None)
                out = metrics.join(versions, on="day", how="left") if versions is not None else metrics
                with self.log.producer() as producer:
                    producer.send_batch(self.metrics_topic, out, timestamp="day")
                    producer.flush()
                self.done |= set(metrics.get_column("day").to_list())
        if alarms:
            with self.log.producer() as producer:
                producer.send_batch(self.alarms_topic, pl.DataFrame(
                    [{"at_ms": a.at_ms, "detector": a.detector, "detail": json.dumps(a.detail)} for a in alarms]),
                    timestamp="at_ms")
                producer.flush()
        return out

    def close(self) -> None:
        self.store.close()


__all__ = ["DriftAlarm", "DriftMonitor", "Evaluator", "auc_pr", "daily_metrics", "precision_at_k", "psi"]
