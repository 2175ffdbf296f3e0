"""Retraining on fresh data: on a schedule or on drift, champion/challenger before promotion.

:class:`Retrainer` trains a LightGBM challenger on the labelled window ending at ``as_of``
(labels as known then, :meth:`LabelStore.training_set`), holding out the most recent matured
``holdout_ms`` of the window (events old enough that both classes are known): the challenger is
fitted on the rest, and both it and the current champion are scored on the held-out events.
The champion may have trained on some fraud of the hold-out (labelled before its own training),
which favours it slightly: a challenger must be clearly better, never a fluke. The challenger is
registered either way (with its metrics) and promoted only if its AUC-PR on the hold-out beats
the champion's by ``min_gain`` (or there is no champion). Retraining is due every ``every_ms``
of event time, or at once when the caller reports drift (ADWIN on the error rate, :class:`everstream.ml.DriftMonitor`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from everstream.errors import ConfigError
from everstream.ml.evaluation import auc_pr
from everstream.ml.features import FEATURES, feature_matrix
from everstream.ml.labels import LabelStore
from everstream.ml.models import train_lightgbm
from everstream.ml.registry import ModelRegistry


@dataclass
class TrainingReport:
    """What one retraining did."""

    as_of: int
    trigger: str
    version: int
    rows: int
    frauds: int
    seconds: float
    challenger_auc_pr: float | None
    champion_auc_pr: float | None
    promoted: bool
    champion_version: int | None
    details: dict[str, Any] = field(default_factory=dict)


class Retrainer:
    """Retrains model ``name`` from a :class:`LabelStore` and promotes it through a :class:`ModelRegistry`."""

    def __init__(self, registry: ModelRegistry, name: str = "fraud", *, window_ms: int, every_ms: int,
                 maturity_ms: int, holdout_ms: int = 86_400_000, min_gain: float = 0.0,
                 features: tuple[str, ...] = FEATURES, rounds: int = 150, threads: int = 1) -> None:
        if window_ms <= 0 or every_ms <= 0:
            raise ConfigError(f"Retrainer: window_ms ({window_ms}) and every_ms ({every_ms}) must be positive")
        if not 0 < holdout_ms < window_ms:
            raise ConfigError(f"Retrainer(holdout_ms={holdout_ms}): give a span shorter than the window, e.g. a day")
        self.registry, self.name = registry, name
        self.window_ms, self.every_ms, self.maturity_ms = window_ms, every_ms, maturity_ms
        self.holdout_ms, self.min_gain, self.features = holdout_ms, min_gain, features
        self.rounds, self.threads = rounds, threads
        self.last_ms: int | None = None
        self.reports: list[TrainingReport] = []

    def due(self, as_of: int, drift: bool = False) -> str | None:
        """Why a retraining is due at ``as_of`` ("first", "schedule", "drift"), or None."""
        if self.last_ms is None:
            return "first"
        if drift:
            return "drift"
        if as_of - self.last_ms >= self.every_ms:
            return "schedule"
        return None

    def maybe_retrain(self, store: LabelStore, as_of: int, *, drift: bool = False) -> TrainingReport | None:
        trigger = self.due(as_of, drift)
        return None if trigger is None else self.retrain(store, as_of, trigger)

    def retrain(self, store: LabelStore, as_of: int, trigger: str = "manual") -> TrainingReport | None:
        """Train a challenger at ``as_of``; returns its report (None when the window has no fraud label yet)."""
        data = store.training_set(as_of, window_ms=self.window_ms, maturity_ms=self.maturity_ms)
        if data.height < 100 or data.get_column("label").sum() < 5:
            return None
        late = data.filter(pl.col("label_ts").is_not_null() & (pl.col("label_ts") > as_of))
        if late.height:  # a bug upstream, never a silent leak
            raise ConfigError(f"training set at {as_of} holds {late.height} labels that arrived later")
        # hold out the most recent *matured* events (both classes known); train on everything else,
        # including fraud labelled since (the newest fraud patterns)
        # (a fixed span just before maturity: negatives there are newer than any the champion trained on)
        end = as_of - self.maturity_ms
        in_hold = (pl.col("ts") > end - self.holdout_ms) & (pl.col("ts") <= end)
        train, hold = data.filter(~in_hold), data.filter(in_hold)
        y_train = train.get_column("label").to_numpy()
        y_hold = hold.get_column("label").to_numpy()
        if len(np.unique(y_train)) < 2 or y_hold.sum() == 0:  # too early: labels of one class only
            return None
        t0 = time.perf_counter()
        model = train_lightgbm(feature_matrix(train, self.features).to_numpy(), y_train, self.features,
                               rounds=self.rounds, threads=self.threads)
        seconds = time.perf_counter() - t0
        challenger = auc_pr(y_hold, model.predict(feature_matrix(hold, self.features).to_numpy()))
        champ = self.registry.champion(self.name)
        champion = None
        if champ is not None:
            cm = self.registry.load(self.name, champ.version)
            champion = auc_pr(y_hold, cm.predict(feature_matrix(hold, cm.features).to_numpy()))
        start = int(data.get_column("ts").min() or 0)
        metrics = {"auc_pr_holdout": challenger, "champion_auc_pr_holdout": champion, "rows": data.height,
                   "frauds": int(data.get_column("label").sum()), "trigger": trigger, "train_seconds": seconds}
        mv = self.registry.register(self.name, model, train_start_ms=start, train_end_ms=as_of, metrics=metrics)
        promote = champ is None or (challenger is not None and (champion is None or
                                                                challenger >= champion + self.min_gain))
        if promote:
            self.registry.promote(self.name, mv.version, reason=f"{trigger}: holdout AUC-PR {challenger} vs "
                                                                f"champion {champion}")
        self.last_ms = as_of
        report = TrainingReport(as_of, trigger, mv.version, data.height, int(np.sum(y_train) + np.sum(y_hold)),
                                seconds, challenger, champion, promote,
                                mv.version if promote else (champ.version if champ else None))
        self.reports.append(report)
        return report


__all__ = ["Retrainer", "TrainingReport"]
