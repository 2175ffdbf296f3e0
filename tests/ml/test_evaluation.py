"""Evaluation streams (per-day AUC-PR / precision@k records, drift alarms), PSI and the river forest model,
each against plain-Python or scikit-learn references."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from enginetools import produce
from sklearn.metrics import average_precision_score

from everstream.engine.testing import read_topic
from everstream.log import Log
from everstream.ml import FEATURES, DriftMonitor, Evaluator, RiverModel, model_from_bytes
from everstream.ml.evaluation import psi

DAY = 86_400_000
BASE = 1_767_225_600_000


def _psi_reference(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """PSI by hand: decile edges of the reference, shares per bin (floored at 1e-6), sum (c - r) ln(c / r)."""
    edges = sorted(set(np.quantile(ref, [i / bins for i in range(bins + 1)]).tolist()))
    total = 0.0
    for k in range(len(edges) - 1):
        lo, hi = edges[k], edges[k + 1]
        last = k == len(edges) - 2

        def share(x: np.ndarray, lo: float = lo, hi: float = hi, last: bool = last) -> float:
            x = np.clip(x, edges[0], edges[-1])
            inside = (x >= lo) & ((x <= hi) if last else (x < hi))
            return max(float(inside.mean()), 1e-6)

        r, c = share(ref), share(cur)
        total += (c - r) * np.log(c / r)
    return total


def test_psi_matches_a_hand_computation_and_flags_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    same = rng.normal(0, 1, 5000)
    shifted = rng.normal(1.0, 1, 5000)
    assert psi(ref, same) == pytest.approx(_psi_reference(ref, same), rel=1e-9)
    assert psi(ref, shifted) == pytest.approx(_psi_reference(ref, shifted), rel=1e-9)
    assert psi(ref, same) < 0.05 < 0.25 < psi(ref, shifted)
    assert psi(ref, np.zeros(0)) == 0.0 and psi(np.ones(100), np.ones(10)) == 0.0  # degenerate: no bins
    monitor = DriftMonitor(psi_threshold=0.25)
    assert monitor.score_shift(0, ref) is None  # the first day is the reference
    assert monitor.score_shift(DAY, same) is None
    alarm = monitor.score_shift(2 * DAY, shifted)
    assert alarm is not None and alarm.detector == "psi_score" and alarm.detail["psi"] > 0.25


def _decisions(days: int, per_day: int, seed: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Scored events over ``days`` and their labels (arriving 2 days later); the model's scores separate fraud
    well for the first half of the days and not at all after (a drift the miss rate shows)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    ts = BASE + np.sort(rng.integers(0, days * DAY, n))
    fraud = rng.random(n) < 0.05
    late = ts >= BASE + (days // 2) * DAY
    score = np.where(fraud & ~late, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.5, n))
    decisions = pl.DataFrame({"txn_id": np.arange(n), "ts": ts, "score": score,
                              "model_version": np.where(late, 2, 1)})
    labels = pl.DataFrame({"txn_id": np.flatnonzero(fraud), "ts": ts[fraud] + 2 * DAY,
                           "label": np.ones(int(fraud.sum()), np.int8)})
    return decisions, labels.sort("ts")


def test_evaluator_writes_daily_metrics_equal_to_sklearn_and_a_drift_alarm(
        log: Log, names: Callable[[str], str]) -> None:
    """Decisions and delayed labels on topics -> one metrics record per matured day (AUC-PR and precision@k as
    scikit-learn / plain Python compute them from the labels known then), and an ADWIN alarm after the drift."""
    decisions, labels = _decisions(days=8, per_day=400)
    dec_t, lab_t, met_t, al_t = names("decisions"), names("labels"), names("metrics"), names("alarms")
    produce(log, dec_t, decisions, key=None, time_field="ts")
    produce(log, lab_t, labels, key=None, time_field="ts")
    ev = Evaluator(log, dec_t, lab_t, metrics_topic=met_t, alarms_topic=al_t, maturity_ms=2 * DAY + 1, k=20)
    for _ in range(200):  # take in both topics first (on Kafka fetches arrive over several polls, and a day's
        ev.store.poll(0.05)  # record is written once, with the labels known at that moment)
        if ev.store.snapshots.height == decisions.height and ev.store.labels.height == labels.height:
            break
    ev.step(0.05)
    ev.close()
    metrics = read_topic(log, met_t).sort("day")
    now = int(labels.get_column("ts").max())  # the newest label: the evaluator's clock
    due = now - (2 * DAY + 1)
    want_days = sorted({int(t) // DAY * DAY for t in decisions.get_column("ts").to_list() if t < due - due % DAY})
    assert metrics.get_column("day").to_list() == want_days
    known = set(labels.filter(pl.col("ts") <= now).get_column("txn_id").to_list())
    for row in metrics.iter_rows(named=True):
        day = decisions.filter((pl.col("ts") // DAY * DAY) == row["day"])
        y = np.array([t in known for t in day.get_column("txn_id").to_list()], dtype=int)
        s = day.get_column("score").to_numpy()
        assert row["events"] == day.height and row["frauds"] == y.sum()
        assert row["auc_pr"] == pytest.approx(average_precision_score(y, s))
        top = np.argsort(-s, kind="stable")[:20]
        assert row["precision_at_k"] == pytest.approx(y[top].mean())
        assert row["model_versions"] == sorted(set(day.get_column("model_version").to_list()))
    early = metrics.filter(pl.col("day") < BASE + 4 * DAY).get_column("auc_pr").to_numpy()
    drifted = metrics.filter(pl.col("day") >= BASE + 4 * DAY).get_column("auc_pr").to_numpy()
    assert early.min() > 0.9 and drifted.max() < 0.5
    alarms = read_topic(log, al_t)
    assert alarms.height >= 1 and set(alarms.get_column("detector")) == {"adwin_error"}
    first = int(alarms.get_column("at_ms").min())  # type: ignore[arg-type]
    assert first >= BASE + 4 * DAY  # no alarm before the drift
    assert "mean_error" in json.loads(alarms.get_column("detail")[0])


def test_river_forest_learns_online_and_travels_as_bytes() -> None:
    rng = np.random.default_rng(4)
    x = rng.gamma(1.0, 2.0, size=(1500, len(FEATURES)))
    y = (x[:, FEATURES.index("card_n_10m")] > 4).astype(int)
    model = RiverModel(FEATURES, kind="forest", seed=3)
    assert np.allclose(model.predict(x[:5]), 0.0)  # knows nothing yet
    model.learn(x[:1000], y[:1000])
    p = model.predict(x[1000:])
    assert model.learned == 1000 and ((p >= 0) & (p <= 1)).all()
    acc = ((p >= 0.5) == y[1000:]).mean()
    assert acc > 0.9 > y[1000:].mean()  # learned the rule, better than always-0
    again = model_from_bytes(model.to_bytes())
    assert np.allclose(again.predict(x[1000:1100]), p[:100])
    assert not model.contributions(x[:3]).any()  # the forest gives no reason codes
    with pytest.raises(ValueError, match="use 'logreg' or 'forest'"):
        RiverModel(FEATURES, kind="svm")
