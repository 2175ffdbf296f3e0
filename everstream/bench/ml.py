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
import pyarrow as pa

from everstream.bench.host import host_reference


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

    result: dict[str, Any] = {"bench": "ml", "days": days, "per_day": per_day, "drift_day": drift_day,
                              **host_reference()}  # how fast the host runs now (compare other days' runs by it)
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

        # ---- scoring throughput through the engine (features topic -> score -> decisions topic): on one core
        # (the figure: a child process pinned to one CPU), and here, with the machine's cores
        result["score_events_per_s"] = _score_on_one_core(Path(tmp) / "data")
        result["score_events_per_s_all_cores"] = _score_throughput(log, "decisions-all-cores")
        scorer = registry.scorer("fraud")
        frame = feats.drop("is_fraud")
        scorer(frame.head(1000))
        t0 = time.perf_counter()
        scorer(frame)
        result["score_step_events_per_s"] = round(frame.height / (time.perf_counter() - t0))

        champion = registry.load("fraud")
        log.close()

        # ---- live latency: payments -> features -> score -> decisions, at `rate` per second, on a fresh log
        # fsync'd (the default durability), then relaxed, and the passthrough floor on the fsync'd log
        runs = {}
        for label, durability, pipeline, tick in (
                ("fsync", "fsync", "score", 0.0005), ("relaxed", "relaxed", "score", 0.0005),
                ("passthrough_fsync", "fsync", "passthrough", 0.0005), ("fsync_producer_5ms", "fsync", "score", 0.005)):
            runs[label] = _latency(Path(tmp) / f"live-{label}", durability, champion, rate, latency_s, per_day,
                                   pipeline, producer_tick_s=tick)
        result["score_latency_p50_ms"] = runs["fsync"]["p50_ms"]
        result["score_latency_p99_ms"] = runs["fsync"]["p99_ms"]
        result["score_latency_log_to_log_p50_ms"] = runs["fsync"]["log_to_log_p50_ms"]
        result["score_latency_log_to_log_p99_ms"] = runs["fsync"]["log_to_log_p99_ms"]
        result["score_latency_relaxed_p99_ms"] = runs["relaxed"]["p99_ms"]
        result["passthrough_latency_p99_ms"] = runs["passthrough_fsync"]["p99_ms"]
        result["score_latency_log_to_log_p99_ms_producer_5ms"] = runs["fsync_producer_5ms"]["log_to_log_p99_ms"]
        result["latency_rate_per_s"] = rate
        result["latency"] = runs
        result |= _step_costs(champion)

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


def _score_throughput(log: Any, output: str) -> int:
    """Events per second of ``features`` -> score (the promoted model) -> ``output``, the engine run until idle."""
    import everstream as es
    from everstream.ml import ModelRegistry

    registry = ModelRegistry(log, "ml-models")
    try:
        # one-time work before the timer, as the peers' runners import their libraries before theirs: importing
        # LightGBM (~1.4 s here in a fresh process) and building the champion's booster; the step loads it again
        registry.load("fraud")
        app = es.App(f"ml-score-{output}")  # its own consumer group: every feature row from the start
        app.stream("features").score(registry, "fraud").to(output)
        t0 = time.perf_counter()
        got = app.run(log, until_idle=True)
        return round(got.events_in / (time.perf_counter() - t0))
    finally:
        registry.close()


def _score_on_one_core(data_dir: Path) -> int:
    """:func:`_score_throughput` in a child process pinned to one CPU before anything starts a thread, so the
    engine's threads and Polars', Arrow's and LightGBM's pools all share that core."""
    import os
    import subprocess
    import sys

    cpu = min(os.sched_getaffinity(0))
    code = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\n"
            "from everstream.bench.ml import _score_throughput\n"
            "from everstream.log import EmbeddedLog\n"
            "log = EmbeddedLog(sys.argv[2], durability='relaxed')\n"
            "print(_score_throughput(log, 'decisions-one-core'))\n"
            "log.close()\n")
    done = subprocess.run([sys.executable, "-c", code, str(cpu), str(data_dir)], capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench ml: the one-core scoring run failed: {done.stderr[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1])


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


def _latency(data_dir: Path, durability: str, model: Any, rate: int, seconds: float, per_day: int,
             pipeline: str = "score", warmup_s: float = 1.0, producer_tick_s: float = 0.0005) -> dict[str, Any]:
    """Live: payments stamped with the wall clock at ``rate`` per second -> features -> score -> decisions, in
    three roles like ``benchmarks/latency_bench.py``: the engine in its own process, a producer thread and a
    reader here. Latency = decision readable - payment handed to the producer; ``log_to_log_*`` = decision
    readable - payment readable in the log (the issue's "event in log -> score in log": the three hops after
    ``producer_to_log``). "Readable" = the partition's end offset, which a consumer's next fetch sees, has
    passed the record (watched every 0.25 ms; offsets are mapped to ``txn_id`` from the topics afterwards).
    ``pipeline="passthrough"``: the same hops with a trivial step (the floor). The first ``warmup_s`` of
    events are left out (first calls into LightGBM, NumPy, SQLite). ``producer_tick_s``: the producer sends
    what is due every tick (0.5 ms: a commit every 0.5 ms, about 2.5 payments each; 5 ms: a gateway batching
    like Kafka's default ``linger.ms``).

    ``hops`` splits the figure per event (p50/p99, ms; one system-wide monotonic clock in both processes):
    ``producer_to_log`` (handed to the producer -> readable: group commit, the SQLite write lock, fsync),
    ``log_to_engine`` (-> the engine's poll returned it: its wake-up, or the cycle it was busy with),
    ``engine_cycle`` (-> its decision handed to the engine's producer: features, scoring, Arrow conversion)
    and ``engine_to_reader`` (-> the decision readable: the output commit, write lock and fsync)."""
    import multiprocessing as mp

    from everstream.log import EmbeddedLog, TopicSpec
    from everstream.ml import ModelRegistry, simulate

    n = int(rate * (seconds + warmup_s))
    # a card and merchant population of a payment network's size: at 5,000 payments a second a 20k-card
    # simulator would have every card pay every few seconds (velocity features far outside training)
    sample = simulate(days=1, transactions_per_day=max(per_day, n + 1), seed=11, cards=1_000_000,
                      merchants=100_000).features_input()
    sample = sample.head(n).with_columns(pl.int_range(0, n, dtype=pl.Int64).alias("txn_id"))
    log = EmbeddedLog(data_dir, durability=durability)  # type: ignore[arg-type]
    log.create_topic(TopicSpec("live-payments", 1), exist_ok=True)
    log.create_topic(TopicSpec("live-decisions", 1), exist_ok=True)
    registry = ModelRegistry(log, "ml-models")
    registry.promote("fraud", registry.register("fraud", model).version)
    registry.close()
    ctx = mp.get_context("spawn")
    ready, stats = ctx.Event(), ctx.Queue()
    engine = ctx.Process(target=_live_engine, args=(str(data_dir), durability, pipeline, seconds + warmup_s + 3.0,
                                                    ready, stats), daemon=True)
    engine.start()
    if not ready.wait(120):
        engine.kill()
        raise RuntimeError("bench ml: the live engine process did not start within 120 s")
    sent = np.zeros(n)
    done = threading.Event()

    # the load generator's own work kept small (it shares this 2-core machine with the engine): the payments
    # as one Arrow table made up front; each send slices it and stamps the wall clock into "ts"
    table = sample.to_arrow()
    ts_at = table.schema.get_field_index("ts")

    def produce() -> None:
        with log.producer(linger_ms=0.0) as producer:
            t_start = time.monotonic()
            i = 0
            while i < n:
                due = min(n, int((time.monotonic() - t_start) * rate) + 1)  # all events due by now
                if due > i:
                    part = table.slice(i, due - i)
                    part = part.set_column(ts_at, "ts", pa.array(np.full(due - i, int(time.time() * 1000))))
                    sent[i:due] = time.monotonic()
                    producer.send_batch("live-payments", part, key="card", timestamp="ts")  # no flush: group commit
                    i = due
                time.sleep(producer_tick_s)
            producer.flush()
        done.set()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    # the reader: when each offset of both topics became readable, by watching the partitions' end offsets
    # (what a consumer's next fetch would see; every 0.25 ms, ~10 us when nothing was committed). It does not
    # decode the records: a decoding reader of both topics took ~0.5 of a core here, on the machine the
    # engine runs on. Offsets are mapped to transactions from the topics' contents after the run.
    readable = {"live-payments": np.full(n, np.nan), "live-decisions": np.full(2 * n, np.nan)}
    ends = dict.fromkeys(readable, 0)
    deadline = None
    version = -1
    while True:
        v = log.data_version()
        if v != version:
            version, now = v, time.monotonic()
            for name, at in readable.items():
                end = min(log.describe_topic(name).partitions[0].end_offset, len(at))
                if end > ends[name]:
                    at[ends[name]:end] = now
                    ends[name] = end
        if done.is_set():
            deadline = deadline or time.monotonic() + 3.0
            if ends["live-decisions"] >= n or time.monotonic() > deadline:
                break
        time.sleep(0.00025)
    thread.join()
    visible = _by_txn(log, "live-payments", readable["live-payments"], n)  # the payment readable in the log
    got = _by_txn(log, "live-decisions", readable["live-decisions"], n)  # its decision readable
    engine.join(timeout=30)
    cycle = stats.get(timeout=30) if engine.exitcode == 0 or not stats.empty() else {}
    log.close()
    skip = int(rate * warmup_s)
    lat = ((got - sent)[skip:])
    lat = lat[~np.isnan(lat)] * 1000.0

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q)), 2) if len(lat) else None

    polled, handed = np.full(n, np.nan), np.full(n, np.nan)
    for lo, hi, t_poll, t_out in cycle.pop("timeline", ()):
        polled[lo:hi + 1], handed[lo:hi + 1] = t_poll, t_out
    hops = {name: _percentiles((b - a)[skip:]) for name, a, b in (
        ("producer_to_log", sent, visible), ("log_to_engine", visible, polled), ("engine_cycle", polled, handed),
        ("engine_to_reader", handed, got))}
    in_log = _percentiles((got - visible)[skip:]) or {}  # the "event in log -> score in log"
    return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": pct(100), "rate_per_s": rate,
            "log_to_log_p50_ms": in_log.get("p50_ms"), "log_to_log_p99_ms": in_log.get("p99_ms"),
            "events_measured": len(lat), "events_sent": n - skip, "durability": durability, "pipeline": pipeline,
            "hops": hops, **cycle}


def _by_txn(log: Any, topic: str, at_offset: np.ndarray, n: int) -> np.ndarray:
    """``at_offset`` (a time per offset of ``topic``) per ``txn_id`` (0..n-1), from the topic's records: the
    first record of each transaction counts (NaN: never readable)."""
    out = np.full(n, np.nan)
    consumer = log.consumer(start="earliest")
    consumer.assign([(topic, 0)])
    end = log.describe_topic(topic).partitions[0].end_offset
    pos, deadline = 0, time.monotonic() + 60.0
    while pos < end and time.monotonic() < deadline:
        for b in consumer.poll(0.5):
            off = b.column("_offset").to_numpy()
            pos = max(pos, int(off[-1]) + 1)
            seen = off < len(at_offset)
            off, txn = off[seen], b.column("txn_id").to_numpy()[seen]
            txn, first_in_batch = np.unique(txn, return_index=True)  # offsets ascend: the first record
            off = off[first_in_batch]
            new = np.isnan(out[txn])
            out[txn[new]] = at_offset[off[new]]
    consumer.close()
    return out


def _percentiles(seconds: np.ndarray) -> dict[str, float] | None:
    ms = seconds[~np.isnan(seconds)] * 1000.0
    if not len(ms):
        return None
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def _step_costs(model: Any, batch: int = 5, batches: int = 2000, warm: int = 20_000) -> dict[str, Any]:
    """The engine work per live micro-batch, without the log: the on-arrival feature step and the scoring
    step on ``batch``-event batches (5 events = one 1 ms poll at 5,000/s), after ``warm`` events of state.
    Separates our compute from the log hops and the runtime in the end-to-end figure."""
    from everstream.engine.aggregates import EVENT_TIME
    from everstream.engine.online import OnlineFeaturesOp, OnlineSpec, OnlineStep
    from everstream.engine.operators import Ctx
    from everstream.ml import simulate
    from everstream.ml.features import FEATURES, ONLINE_PARTS, PAYMENT_COLUMNS
    from everstream.ml.scoring import Scorer

    n = warm + batch * batches
    pay = simulate(days=1, transactions_per_day=n, seed=12, cards=1_000_000, merchants=100_000).features_input()
    now = int(time.time() * 1000)
    pay = pay.head(n).with_columns((now + pl.int_range(0, n, dtype=pl.Int64) // 5).alias("ts"))
    pay = pay.with_columns(pl.col("ts").alias(EVENT_TIME))
    outs = tuple(c for c in FEATURES if c != "amount")
    spec = OnlineSpec(ONLINE_PARTS, outs, 3_600_000, frozenset(PAYMENT_COLUMNS))

    class _Bench:
        app_name = "bench"

    op = OnlineFeaturesOp(OnlineStep(step_id="features.online", inputs=(), pattern=spec, by=(), timeouts=False),
                          _Bench(), spec)  # type: ignore[arg-type]

    class _Fixed:  # the champion, without a registry round trip
        topic = "-"

        def refresh(self) -> bool:
            return False

        def champion(self, name: str) -> Any:
            return type("V", (), {"version": 1})()

        def load(self, name: str, version: int) -> Any:
            return model

    scorer = Scorer(_Fixed(), "fraud")  # type: ignore[arg-type]
    ctx = Ctx("live-payments", 0)
    scorer(op.process(pay.head(warm), ctx))  # type: ignore[arg-type]
    feat, score = np.zeros(batches), np.zeros(batches)
    for b in range(batches):
        part = pay.slice(warm + b * batch, batch)
        t0 = time.perf_counter()
        f = op.process(part, ctx)
        t1 = time.perf_counter()
        scorer(f)  # type: ignore[arg-type]
        feat[b], score[b] = t1 - t0, time.perf_counter() - t1
    ms = {"features": feat * 1000, "score": score * 1000, "both": (feat + score) * 1000}
    return {f"step_{k}_{q}_ms": round(float(np.percentile(v, p)), 3)
            for k, v in ms.items() for q, p in (("p50", 50), ("p99", 99))} | {"step_batch_events": batch}


def _live_engine(data_dir: str, durability: str, pipeline: str, duration: float, ready: Any, stats: Any) -> None:
    """The engine process of :func:`_latency`: features + score (or a passthrough) from the live topic."""
    import everstream as es
    from everstream.log import EmbeddedLog
    from everstream.ml import ModelRegistry, payment_features

    log = EmbeddedLog(data_dir, durability=durability)  # type: ignore[arg-type]
    app = es.App(f"ml-live-{pipeline}")
    source = app.stream("live-payments").with_watermark("ts")
    if pipeline == "passthrough":
        source.select("txn_id", "ts").to("live-decisions")
    else:
        registry = ModelRegistry(log, "ml-models")
        scored = payment_features(source).score(registry, "fraud")
        scored.to("live-decisions")
        scorer = app.step(scored.step_id).fn  # type: ignore[attr-defined]
        model = registry.load("fraud")  # warm up: import LightGBM, load the champion, first predictions
        scorer(pl.DataFrame({f: [1.0] for f in model.features}))
    # commit_interval=0: the runtime's low-latency mode (at-least-once: outputs never wait for a commit)
    with app.runner(log, start="earliest", commit_interval=0.0, poll_timeout=0.001) as runner:
        timeline = _trace(runner)
        ready.set()
        runner.run(duration=duration)
        m = runner.metrics()
        h = runner.cycle_latency
        steps = {sid: v.get("latency", {}) for sid, v in m.items() if "online" in sid or "score" in sid}
        stats.put({"engine_cycle_p50_ms": _q(h, 0.5), "engine_cycle_p99_ms": _q(h, 0.99), "engine_steps": steps,
                   "timeline": timeline})
    log.close()


def _trace(runner: Any) -> list[tuple[int, int, float, float]]:
    """Per cycle that polled payments: (first offset, last offset, poll returned, outputs handed to the
    producer), on ``time.monotonic`` (system-wide). Wraps the runner's consumer poll and producer send."""
    timeline: list[tuple[int, int, float, float]] = []
    polled: list[tuple[int, int, float]] = []
    poll, send = runner.consumer.poll, runner.producer.send_batch

    def traced_poll(*args: Any, **kwargs: Any) -> Any:
        out = poll(*args, **kwargs)
        offs = [b.column("_offset") for b in out if b.num_rows]
        if offs:
            polled.append((min(int(o[0].as_py()) for o in offs), max(int(o[-1].as_py()) for o in offs),
                           time.monotonic()))
        return out

    def traced_send(topic: str, *args: Any, **kwargs: Any) -> Any:
        got = send(topic, *args, **kwargs)
        if topic == "live-decisions":
            now = time.monotonic()
            timeline.extend((lo, hi, t, now) for lo, hi, t in polled)
            polled.clear()
        return got

    runner.consumer.poll, runner.producer.send_batch = traced_poll, traced_send
    return timeline


def _q(h: Any, q: float) -> float | None:
    try:
        return round(float(h.quantile(q)), 3)
    except Exception:
        return None


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
