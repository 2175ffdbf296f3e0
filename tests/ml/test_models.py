"""Registry, delayed labels, hot-swap scoring under load, evaluation and retraining."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from enginetools import produce

import everstream as es
from everstream.engine.testing import read_topic
from everstream.errors import ModelError, RegistryError, UserFunctionError
from everstream.log import Log
from everstream.ml import (
    FEATURES,
    LabelStore,
    ModelRegistry,
    Retrainer,
    RiverModel,
    RulesModel,
    auc_pr,
    daily_metrics,
    feature_matrix,
    model_from_bytes,
    precision_at_k,
    train_lightgbm,
)

DAY = 86_400_000


def _frame(n: int, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pl.DataFrame({f: rng.gamma(1.0, 2.0, n) for f in FEATURES})
    y = (rng.random(n) < 0.02 + 0.5 * (df.get_column("card_n_10m").to_numpy() > 6)).astype(int)
    return df.with_columns(pl.int_range(0, n, dtype=pl.Int64).alias("txn_id"),
                           (pl.int_range(0, n, dtype=pl.Int64) * 1000).alias("ts")), y


def _model(seed: int = 0, rounds: int = 20) -> object:
    df, y = _frame(3000, seed)
    return train_lightgbm(feature_matrix(df).to_numpy(), y, FEATURES, rounds=rounds)


def test_registry_versions_promotion_and_reload(log: Log, names: Callable[[str], str]) -> None:
    topic = names("models")
    reg = ModelRegistry(log, topic)
    with pytest.raises(RegistryError, match="no promoted version"):
        reg.load("fraud")
    m = _model()
    v1 = reg.register("fraud", m, train_start_ms=0, train_end_ms=DAY, metrics={"auc_pr": 0.5})  # type: ignore[arg-type]
    v2 = reg.register("fraud", RulesModel())
    assert (v1.version, v2.version) == (1, 2)
    reg.promote("fraud", 1, reason="first")
    with pytest.raises(RegistryError, match=r"cannot promote .fraud. version 9"):
        reg.promote("fraud", 9)
    other = ModelRegistry(log, topic)  # another process reads the topic from the start
    champ = other.champion("fraud")
    assert champ is not None and champ.version == 1 and champ.features == FEATURES
    assert champ.metrics == {"auc_pr": 0.5} and champ.train_end_ms == DAY
    x = feature_matrix(_frame(50, 9)[0]).to_numpy()
    assert np.allclose(other.load("fraud").predict(x), m.predict(x))  # type: ignore[attr-defined]
    reg.promote("fraud", 2)
    assert other.refresh() is True and other.champion("fraud").version == 2  # type: ignore[union-attr]
    assert log.describe_topic(topic).spec.compact
    with pytest.raises(ModelError):
        model_from_bytes(b"not a model")


def test_training_never_sees_a_label_before_it_arrived() -> None:
    """Labels arriving after the training time are not used; immature unlabelled events are left out."""
    snaps = pl.DataFrame({"txn_id": [1, 2, 3, 4], "ts": [0, 10, 20, 95], "x": [1.0, 2.0, 3.0, 4.0]})
    labels = pl.DataFrame({"txn_id": [1, 2, 4], "ts": [50, 150, 99], "label": [1, 1, 1]})
    store = LabelStore()
    store.add_snapshots(snaps)
    store.add_labels(labels)
    at100 = store.training_set(100, maturity_ms=30)
    assert dict(zip(at100["txn_id"], at100["label"], strict=True)) == {1: 1, 2: 0, 3: 0, 4: 1}
    assert (at100.get_column("label_ts").drop_nulls() <= 100).all()
    at60 = store.training_set(60, maturity_ms=30)  # txn 4 not yet happened, txn 2's label not yet arrived
    assert dict(zip(at60["txn_id"], at60["label"], strict=True)) == {1: 1, 2: 0, 3: 0}
    assert store.training_set(200, maturity_ms=0).get_column("label").to_list() == [1, 1, 0, 1]
    first = store.newly_labelled(60, maturity_ms=30)  # txn 1 (charged back at 50); 1..3 matured by 30
    assert dict(zip(first["txn_id"], first["label"], strict=True)) == {1: 1, 2: 0, 3: 0}
    again = store.newly_labelled(200, maturity_ms=30)
    assert dict(zip(again["txn_id"], again["label"], strict=True)) == {2: 1, 4: 1}
    with pytest.raises(ValueError, match="missing"):
        store.add_labels(pl.DataFrame({"txn_id": [1]}))


def test_hot_swap_under_load_scores_every_event_once(log: Log, names: Callable[[str], str]) -> None:
    """A new version promoted while events stream in: every event scored exactly once, versions switch
    once and never back, and each score equals its version's prediction."""
    reg = ModelRegistry(log, names("models"))
    m1, m2 = _model(1), _model(2, rounds=5)
    reg.promote("fraud", reg.register("fraud", m1).version)  # type: ignore[arg-type]
    topic, out = names("feats"), names("decisions")
    data, _ = _frame(6000, 3)
    produce(log, topic, data.head(0), key=None, time_field=None)
    app = es.App(names("score"))
    app.stream(topic).score(reg, "fraud", refresh_s=0.0).to(out)
    runner = app.runner(log, commit_interval=0.05)
    done = threading.Event()

    def feed() -> None:
        for i, start in enumerate(range(0, data.height, 200)):
            produce(log, topic, data.slice(start, 200), key=None, time_field=None)
            if i == 12:  # promote once the runner has scored events with version 1 (Kafka fetches lag)
                deadline = time.monotonic() + 30
                while runner.result().events_in < 1000 and time.monotonic() < deadline:
                    time.sleep(0.01)
                reg.promote("fraud", reg.register("fraud", m2).version)  # type: ignore[arg-type]
            time.sleep(0.01)
        done.set()

    t = threading.Thread(target=feed)
    t.start()
    while not done.is_set():
        runner.cycle(0.01)
    t.join()
    runner.catch_up()
    runner.commit()
    runner.close()
    got = read_topic(log, out).sort("txn_id")
    assert got.get_column("txn_id").to_list() == list(range(data.height))  # none lost, none twice
    versions = got.sort("_offset" if "_offset" in got.columns else "txn_id").get_column("model_version").to_numpy()
    assert set(versions.tolist()) == {1, 2} and (np.diff(versions) >= 0).all()
    x = feature_matrix(got).to_numpy()
    want = np.where(got.get_column("model_version").to_numpy() == 1, m1.predict(x), m2.predict(x))  # type: ignore[attr-defined]
    assert np.allclose(got.get_column("score").to_numpy(), want)
    flagged = got.filter(pl.col("score") >= 0.5)
    assert flagged.height and all(0 < len(r) <= 3 and set(r) <= set(FEATURES) for r in flagged["reasons"])
    assert (got.get_column("score_latency_ms") >= 0).all()


def test_scoring_without_a_promoted_model_fails_clearly(log: Log, names: Callable[[str], str]) -> None:
    reg = ModelRegistry(log, names("models"))
    topic = names("feats")
    produce(log, topic, _frame(10)[0], key=None, time_field=None)
    app = es.App(names("score"))
    app.stream(topic).score(reg, "fraud").to(names("out"))
    with pytest.raises(UserFunctionError, match="no promoted version of model 'fraud'"):
        app.run(log, until_idle=True)
    with pytest.raises(es.errors.PlanError, match="model registry"):
        app.stream(topic).score(object())


def test_metrics_against_plain_python() -> None:
    y = np.array([0, 1, 0, 1, 0, 0])
    s = np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.3])
    # average precision by hand: ranks 1 (hit, p=1), 2 (miss), 3 (hit, p=2/3) -> (1 + 2/3) / 2
    assert auc_pr(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert precision_at_k(y, s, 2) == 0.5 and auc_pr(np.zeros(3), s[:3]) is None
    scored = pl.DataFrame({"txn_id": [1, 2, 3, 4], "ts": [0, 1, DAY, DAY + 1], "score": [0.9, 0.1, 0.2, 0.8]})
    labels = pl.DataFrame({"txn_id": [1, 4], "ts": [5, 10 * DAY], "label": [1, 1]})
    m = daily_metrics(scored, labels, as_of=2 * DAY, k=1)
    assert m.get_column("frauds").to_list() == [1, 0] and m.get_column("auc_pr").to_list() == [1.0, None]


def test_retrainer_promotes_a_better_challenger_and_models_beat_rules(log: Log, names: Callable[[str], str]) -> None:
    from everstream.ml import simulate

    pay = simulate(days=6, transactions_per_day=4000, cards=1500, merchants=300, fraud_cases_per_day=15, seed=4)
    topic, out = names("pay"), names("feat")
    produce(log, topic, pay.features_input(), key="card")
    app = es.App(names("f"))
    es.ml.payment_features(app.stream(topic).with_watermark("ts")).to(out)
    app.run(log, until_idle=True)
    feats = read_topic(log, out)
    store = LabelStore()
    store.add_snapshots(feats)
    store.add_labels(pay.chargebacks)
    reg = ModelRegistry(log, names("models"))
    rt = Retrainer(reg, window_ms=5 * DAY, every_ms=DAY, maturity_ms=DAY, rounds=40)
    start = pay.config.start_ms
    report = rt.maybe_retrain(store, start + 5 * DAY)
    assert report is not None and report.promoted and report.trigger == "first"
    assert rt.maybe_retrain(store, start + 5 * DAY) is None  # not due
    day = feats.filter(pl.col("ts") >= start + 5 * DAY).join(pay.transactions.select("txn_id", "is_fraud"),
                                                               on="txn_id")
    y = day.get_column("is_fraud").to_numpy()
    model = reg.load("fraud")
    rules = RulesModel()
    model_ap = auc_pr(y, model.predict(feature_matrix(day, model.features).to_numpy()))
    rules_ap = auc_pr(y, rules.predict(feature_matrix(day, rules.features).to_numpy()))
    assert model_ap is not None and rules_ap is not None and model_ap > rules_ap
    online = RiverModel(FEATURES)
    lab = store.newly_labelled(start + 5 * DAY, maturity_ms=DAY)
    online.learn(feature_matrix(lab).to_numpy(), lab.get_column("label").to_numpy())
    assert online.learned == lab.height
    online_ap = auc_pr(y, online.predict(feature_matrix(day).to_numpy()))
    assert online_ap is not None and online_ap > float(y.mean())  # better than chance
