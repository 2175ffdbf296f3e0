"""``everstream demo``: the platform end to end on one machine, with a live web console.

What runs, all in one process on the embedded log (or Kafka with ``--broker``):

- **capture**: a seeded, rate-controlled trade simulator writes ``trades`` (keyed by symbol), after
  backfilling the last ``history_minutes`` of trading so the pipelines replay history, then go live;
  every ``inject_every`` seconds it slips in a known fat-finger trade (a notional far above the
  desk's limit) so the surveillance path has cases to find;
- **pipelines** (engine apps, each its own consumer group fanned out from the same topics):
  ``bars`` (1-minute OHLCV + VWAP per symbol with early firing every second -> ``bars_1m``),
  ``positions`` (intraday net quantity and exposure per account -> ``positions``),
  ``surveillance`` (trades over the notional limit -> ``alerts``), ``fraud`` on payments (card
  testing by CEP, and fraud scoring: on-arrival features + a LightGBM model -> ``fraud_decisions``,
  a decision record per payment with score, model version and reason codes, in the topic browser;
  not turned into alerts: the model is trained on the ML simulator, whose merchants see far less
  traffic than the demo feed's, so its scores run high here and would flood the alerts list);
- **model**: at first start a LightGBM fraud model is trained on a backfill of the payments
  simulator (:func:`everstream.ml.simulate`, labels as known from its chargebacks) and promoted
  in the registry topic ``models``; a restart on the same data reuses the champion;
- **control plane**: REST API with OpenAPI (``/docs``), Prometheus ``/metrics``, and the web
  console at ``/`` (throughput, latency and lag per pipeline, bars chart, alerts, topic browser),
  bound to 127.0.0.1 unless told otherwise.

``run_demo`` returns the summary printed at the end: events captured, alerts by type, the
injected cases and whether each was alerted, and per-pipeline p99 latencies.
"""

from __future__ import annotations

import os
import threading
import time
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from rich.console import Console
from rich.live import Live
from rich.table import Table

from everstream.finance.simulator import TRADE_SCHEMA, TradeSimulator
from everstream.log.contract import TopicSpec
from everstream.log.open import open_log

TRADES, BARS, POSITIONS, ALERTS = "trades", "bars_1m", "positions", "alerts"
PAYMENTS, ACCOUNT_EVENTS, ORDERS, FRAUD_FEATURES = "payments", "account_events", "orders", "fraud_features"
#: Scoring decisions (score, model version, reason codes) of every payment, and the model registry topic.
FRAUD_DECISIONS, MODELS = "fraud_decisions", "models"

#: How much of each replayed simulator's hour lies in the past at start (replayed at once).
FEED_HISTORY = "40m"
#: A trade above this notional raises a ``large_trade`` alert.
LARGE_NOTIONAL = 5_000_000.0
#: Injected fat-finger trades use this account prefix so the summary can check each was alerted.
INJECTED_ACCOUNT = "FATFINGER-"


@dataclass
class Injected:
    """A case the demo planted: the alert it must raise, by key."""

    alert_type: str
    key: str
    at_ms: int


def _alert(alert_type: str, key: pl.Expr, score: pl.Expr, detail: pl.Expr) -> list[pl.Expr]:
    """The columns of an alert row (one schema for every pipeline writing ``alerts``)."""
    return [pl.lit(alert_type).alias("alert_type"), key.cast(pl.String).alias("key"),
            pl.col("ts"), score.cast(pl.Float64).alias("score"), detail.alias("detail")]


def _match_alert(alert_type: str, keys: list[str]) -> list[pl.Expr]:
    """A CEP match row as an alert: the key columns joined by '/', the match's end time, its size."""
    key = pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator="/")
    return [pl.lit(alert_type).alias("alert_type"), key.alias("key"), pl.col("match_end").alias("ts"),
            pl.lit(None, dtype=pl.Float64).alias("score"),
            pl.format("{} pattern from {} to {}", pl.lit(alert_type), pl.col("match_start"),
                      pl.col("match_end")).alias("detail")]


@dataclass
class Feed:
    """A simulator replayed against the wall clock into ``topic``, with the cases it plants."""

    topic: str
    key: str
    replay: Any
    cases: list[Injected]


def build_feeds(seed: int) -> list[Feed]:
    """Payments (card authorizations, account events) and market order flow, one simulated hour each,
    ``FEED_HISTORY`` of it in the past; each planted case with the time its pattern completes."""
    from everstream.bench.data import cards
    from everstream.finance import market, payments
    from everstream.finance.replay import LiveReplay

    table, card_cases = cards(100_000, seed=seed, cards_n=20_000, span_s=3_600.0, disorder_ms=1_000)
    auths = pl.from_arrow(table)
    assert isinstance(auths, pl.DataFrame)
    auths = auths.drop("seq")
    pay = LiveReplay(auths, FEED_HISTORY)
    big = auths.filter(pl.col("amount") > 500).group_by("card").agg(pl.col("ts").max().dt.epoch("ms"))
    ends = dict(big.iter_rows())
    pay_cases = [Injected("card_testing", c, pay.shifted(int(ends[c]))) for c in card_cases if c in ends]

    acct = payments.account_events(2_000, takeovers=8, seed=seed, span_s=3_600.0, disorder_ms=1_000)
    acc = LiveReplay(acct.events, FEED_HISTORY)
    acc_cases = [Injected("account_takeover", a, acc.shifted(t)) for a, t in acct.cases.iter_rows()]

    orders = market.order_events(72_000, cases=3, seed=seed, disorder_ms=500)
    mkt = LiveReplay(orders.events, FEED_HISTORY)
    last = orders.events.group_by("account").agg(pl.col("ts").max().dt.epoch("ms"))
    last_ts = dict(last.iter_rows())
    mkt_cases = []
    for kind, account, symbol, firm in orders.cases.select("kind", "account", "symbol", "firm").iter_rows():
        key = f"{symbol}/{firm}" if kind == "wash_trade" else f"{account}/{symbol}"
        mkt_cases.append(Injected(kind, key, mkt.shifted(int(last_ts[account]))))
    return [Feed(PAYMENTS, "card", pay, pay_cases), Feed(ACCOUNT_EVENTS, "account", acc, acc_cases),
            Feed(ORDERS, "symbol", mkt, mkt_cases)]


def train_fraud_model(log: Any, seed: int, *, days: int = 4, per_day: int = 12_000) -> Any:
    """The demo's model registry with a champion ``fraud`` model: reused when the registry topic has one,
    else trained now (a few seconds) on ``days`` of the payments simulator, with the labels its chargebacks
    had delivered by the end of the backfill, through the same on-arrival features the live step computes."""
    from everstream.ml import LabelStore, ModelRegistry, feature_matrix, simulate, train_lightgbm
    from everstream.ml.features import FEATURES, compute_features

    registry = ModelRegistry(log, MODELS)
    if registry.champion("fraud") is not None:
        return registry
    pay = simulate(days=days, transactions_per_day=per_day, cards=max(2_000, per_day // 3), seed=seed)
    store = LabelStore()
    store.add_snapshots(compute_features(pay.features_input()))
    store.add_labels(pay.chargebacks)
    end = pay.config.start_ms + days * 86_400_000
    train = store.training_set(end, maturity_ms=86_400_000)
    model = train_lightgbm(feature_matrix(train, FEATURES).to_numpy(), train.get_column("label").to_numpy(),
                           FEATURES, rounds=80)
    version = registry.register("fraud", model, train_start_ms=pay.config.start_ms, train_end_ms=end,
                                metrics={"rows": train.height, "frauds": int(train.get_column("label").sum())})
    registry.promote("fraud", version.version, reason="demo: trained on the simulator's backfill at start")
    return registry


def build_pipelines(registry: Any | None = None) -> dict[str, Any]:
    """The demo's engine apps by name (``name -> (App, description)``); each reads ``trades``.
    With a model ``registry`` the fraud app also scores every payment (see :func:`train_fraud_model`)."""
    import everstream as es

    bars = es.App("demo-bars")
    (bars.stream(TRADES).with_watermark("ts", max_delay="2s", idle_timeout="5s")
     .window(es.tumbling("1m"), by="symbol", early_fire="1s")
     .agg(open=es.first("price"), high=es.max("price"), low=es.min("price"), close=es.last("price"),
          volume=es.sum("qty"), vwap=es.vwap("price", "qty"), trades=es.count())
     .to(BARS))

    positions = es.App("demo-positions")
    sign = pl.when(pl.col("side") == "B").then(1).otherwise(-1)
    (positions.stream(TRADES).with_watermark("ts", max_delay="2s", idle_timeout="5s")
     .with_columns((pl.col("qty") * sign).alias("signed_qty"),
                   (pl.col("price") * pl.col("qty")).alias("notional"),
                   (pl.col("price") * pl.col("qty") * sign).alias("signed_notional"))
     .window(es.tumbling("1d"), by="account", early_fire="1s")
     .agg(net_qty=es.sum("signed_qty"), gross_notional=es.sum("notional"),
          net_notional=es.sum("signed_notional"), trades=es.count())
     .to(POSITIONS))

    surveillance = es.App("demo-surveillance")
    notional = pl.col("price") * pl.col("qty")
    (surveillance.stream(TRADES)
     .filter(notional > LARGE_NOTIONAL)
     .select(*_alert("large_trade", pl.col("account"), notional,
                     pl.format("{} {} {} @ {} (notional over {})", pl.col("side"), pl.col("qty"), pl.col("symbol"),
                               pl.col("price").round(2), pl.lit(f"{LARGE_NOTIONAL:,.0f}"))))
     .to(ALERTS, key="key"))

    from everstream.finance import patterns

    fraud = es.App("demo-fraud")
    pay = fraud.stream(PAYMENTS).with_watermark("ts", max_delay="2s", idle_timeout="5s")
    (pay.match(patterns.card_testing(), by="card", name="card_testing", timeouts=False)
     .select(*_match_alert("card_testing", ["card"])).to(ALERTS, key="key", name="card_testing_alerts"))
    (pay.rolling(by="card", name="card_velocity", n_10m=es.rolling_count("10m"),
                 amount_1h=es.rolling_sum("amount", "1h"), gap_ms=es.time_since_last())
     .select("ts", "card", "merchant", "amount", "n_10m", "amount_1h", "gap_ms")
     .to(FRAUD_FEATURES, key="card"))
    if registry is not None:  # fraud scoring: on-arrival features (no watermark wait), the champion model
        from everstream.ml import payment_features

        ids = pay.with_columns((pl.col("_partition").cast(pl.Int64) * 10**12 + pl.col("_offset")).alias("txn_id"),
                               pl.col("card").alias("device"), name="fraud_inputs")  # the feed has no device
        scored = payment_features(ids, name="fraud_features").score(registry, "fraud", name="fraud_score")
        (scored.select("txn_id", "ts", "card", "merchant", "amount", "score", "model_version",
                       pl.col("reasons").list.join(", ").alias("reasons"), "score_latency_ms")
         .to(FRAUD_DECISIONS, key="card", name="fraud_decisions"))

    takeover = es.App("demo-takeover")
    (takeover.stream(ACCOUNT_EVENTS).with_watermark("ts", max_delay="2s", idle_timeout="5s")
     .match(patterns.account_takeover(), by="account", name="account_takeover", timeouts=False)
     .select(*_match_alert("account_takeover", ["account"])).to(ALERTS, key="key"))

    abuse = es.App("demo-market-abuse")
    orders = abuse.stream(ORDERS).with_watermark("ts", max_delay="1s", idle_timeout="5s")
    for kind in ("spoofing", "layering", "wash_trade"):
        factory, keys = patterns.READY[kind]
        (orders.match(factory(), by=list(keys), name=kind, timeouts=False)
         .select(*_match_alert(kind, list(keys))).to(ALERTS, key="key", name=f"{kind}_alerts"))

    return {
        "fraud": (fraud, "card testing (CEP), card velocity features and fraud scoring (LightGBM) on payments"
                  if registry is not None else "card testing (CEP) and card velocity features on payments"),
        "takeover": (takeover, "account takeover (CEP): new device, credential change, new payee, big transfer"),
        "market_abuse": (abuse, "spoofing, layering and wash trades (CEP) on order flow"),
        "bars": (bars, "1-minute OHLCV + VWAP per symbol, early firing every second"),
        "positions": (positions, "intraday net quantity and exposure per account"),
        "surveillance": (surveillance, f"trades with notional over {LARGE_NOTIONAL:,.0f} -> alerts"),
    }


class _PipelineThread(threading.Thread):
    def __init__(self, name: str, runner: Any, control: Any) -> None:
        super().__init__(daemon=True, name=f"pipeline-{name}")
        self.pipeline, self.runner, self.control = name, runner, control

    def run(self) -> None:
        try:
            self.runner.run()
        except Exception as e:  # shown in the console and the summary: never a silent dead pipeline
            self.control.pipeline_failed(self.pipeline, f"{type(e).__name__}: {e}")


def _fat_finger(sim_batch: pa.RecordBatch, n: int, now_ms: int) -> tuple[pa.RecordBatch, Injected]:
    """One trade of 250,000 lots at the batch's first price, on a marked account."""
    account = f"{INJECTED_ACCOUNT}{n}"
    row = sim_batch.slice(0, 1).to_pylist()[0]
    row.update(ts=now_ms, trade_id=-n, qty=250_000 + n, account=account, side="B",
               price=max(float(row["price"]), 50.0))
    return pa.RecordBatch.from_pylist([row], schema=sim_batch.schema), Injected("large_trade", account, now_ms)


def run_demo(
    data_dir: Path | None,
    broker: str | None,
    duration: float | None,
    rate: int,
    partitions: int,
    seed: int,
    live: bool = True,
    port: int = 8000,
    host: str = "127.0.0.1",
    open_browser: bool = True,
    inject_every: float = 5.0,
    history_minutes: int = 20,
) -> dict[str, Any]:
    from everstream.server.api import Server
    from everstream.server.control import ControlPlane

    data_dir = data_dir or Path(os.environ.get("EVERSTREAM_DATA") or "./everstream-data")
    log = open_log(broker, data_dir)
    console = Console(stderr=True)
    for spec in (TopicSpec(TRADES, partitions, schema=TRADE_SCHEMA), TopicSpec(ALERTS, 1),
                 TopicSpec(BARS, partitions), TopicSpec(POSITIONS, partitions), TopicSpec(PAYMENTS, partitions),
                 TopicSpec(ACCOUNT_EVENTS, partitions), TopicSpec(ORDERS, partitions),
                 TopicSpec(FRAUD_FEATURES, partitions), TopicSpec(FRAUD_DECISIONS, partitions)):
        log.create_topic(spec, exist_ok=True)
    t_model = time.monotonic()
    registry = train_fraud_model(log, seed)
    console.print(f"fraud model: version {registry.champion('fraud').version} ready in "
                  f"{time.monotonic() - t_model:.1f} s")
    control = ControlPlane(log, title="everstream demo")
    capture = control.capture(TRADES, "trade simulator")
    fresh = not sum(p.end_offset for p in log.describe_topic(PAYMENTS).partitions)
    feeds = build_feeds(seed) if fresh else []  # a restart on old data goes on with trades only
    feed_captures = {f.topic: control.capture(f.topic, f"{f.topic} simulator") for f in feeds}
    threads: list[_PipelineThread] = []
    runners = []
    server = Server(control, host=host, port=port)
    injected: list[Injected] = []
    produced = backfilled = 0
    t0 = time.monotonic()
    try:
        for name, (app, description) in build_pipelines(registry).items():
            runner = app.runner(log, start="earliest", poll_timeout=0.05)
            runners.append(runner)
            control.pipeline(name, runner, description)
            threads.append(_PipelineThread(name, runner, control))
        for topic, keep in ((ALERTS, 2000), (BARS, 5000), (POSITIONS, 1000), (FRAUD_DECISIONS, 1000)):
            control.tail(topic, keep)
        control.start()
        server.start()
        console.print(f"everstream demo: console at [bold]{server.url}[/] (API {server.url}docs, metrics "
                      f"{server.url}metrics); data in {data_dir}; Ctrl-C stops")
        if open_browser:
            webbrowser.open(server.url)
        for t in threads:
            t.start()
        sim = TradeSimulator(seed=seed, symbols=100, rate_per_s=100.0,
                             start_ms=int(time.time() * 1000) - history_minutes * 60_000)
        backfilled = _backfill(log, capture, sim, history_minutes)
        with log.producer(linger_ms=5) as producer:
            backfilled += _send_feeds(producer, feeds, feed_captures)  # their history
        sim.resume(int(time.time() * 1000), float(rate))
        chunk = max(rate // 50, 1)  # about 50 writes a second
        t_live = time.monotonic()
        next_inject = t_live + min(inject_every, 2.0)
        last_view = 0.0
        view = Live(console=console, refresh_per_second=2, transient=True) if live else None
        if view is not None:
            view.start()
        try:
            with log.producer(linger_ms=2) as producer:
                while duration is None or time.monotonic() - t0 < duration:
                    now = time.monotonic()
                    due = int((now - t_live) * rate) - produced
                    if due <= 0:
                        time.sleep(0.005)
                        continue
                    batch = sim.next_batch(min(due, chunk * 5))
                    if now >= next_inject:
                        fat, case = _fat_finger(batch, len(injected) + 1, int(time.time() * 1000))
                        batch = pa.Table.from_batches([batch, fat]).combine_chunks().to_batches()[0]
                        injected.append(case)
                        next_inject = now + inject_every
                    producer.send_batch(TRADES, batch, key="symbol", timestamp="ts")
                    produced += batch.num_rows
                    capture.add(batch.num_rows)
                    produced += _send_feeds(producer, feeds, feed_captures)
                    if view is not None and now - last_view >= 0.5:
                        last_view = now
                        view.update(_render(control, server.url))
                producer.flush()
        except KeyboardInterrupt:
            pass
        finally:
            if view is not None:
                view.stop()
        injected += _due_cases(feeds)
        _settle(control, injected, timeout=15.0)
    finally:
        for r in runners:
            r.stop()
        for t in threads:
            t.join(timeout=10)
        control.sample()
        summary = _summary(control, injected, backfilled, produced, time.monotonic() - t0, data_dir, server.url)
        control.stop()
        server.stop()
        for r in runners:
            r.close()
        registry.close()
        log.close()
    _print_summary(console, summary)
    return summary


def _send_feeds(producer: Any, feeds: list[Feed], captures: dict[str, Any]) -> int:
    """Write what each replayed simulator has due now; returns the rows written."""
    n = 0
    for f in feeds:
        rows = f.replay.due()
        if rows.height:
            producer.send_batch(f.topic, rows, key=f.key, timestamp="ts")
            captures[f.topic].add(rows.height)
            n += rows.height
    return n


def _due_cases(feeds: list[Feed], margin_ms: int = 5_000) -> list[Injected]:
    """Planted cases whose last event was released at least ``margin_ms`` (event time) before the end."""
    out = []
    for f in feeds:
        last = f.replay.last_sent_ms()
        out += [c for c in f.cases if last is not None and c.at_ms <= last - margin_ms]
    return out


def _backfill(log: Any, capture: Any, sim: TradeSimulator, minutes: int) -> int:
    """The last ``minutes`` of trading, written at once: the pipelines replay it, then go on live.

    The same graph runs over history and live data (so the bars chart has candles from the start).
    Skipped when the topic already holds data (a restart on the same data directory).
    """
    if minutes <= 0 or sum(p.end_offset for p in log.describe_topic(TRADES).partitions):
        return 0
    n = int(minutes * 60 * sim.rate_per_s)
    with log.producer(linger_ms=5) as producer:
        for start in range(0, n, 20_000):
            batch = sim.next_batch(min(20_000, n - start))
            producer.send_batch(TRADES, batch, key="symbol", timestamp="ts")
            capture.add(batch.num_rows)
        producer.flush()
    return n


def _settle(control: Any, injected: list[Injected], timeout: float) -> None:
    """Let the pipelines catch up with the end of the input (and alert the last injected case)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lags = [p["lag"] for p in control.pipelines() if p["error"] is None]
        keys = {a.get("key") for a in control.alerts(5000)}
        if all(lag == 0 for lag in lags) and all(c.key in keys for c in injected):
            return
        time.sleep(0.1)


def _summary(control: Any, injected: list[Injected], backfilled: int, produced: int, elapsed: float,
             data_dir: Path, url: str) -> dict[str, Any]:
    s = control.summary()
    alerted = {a.get("key") for a in control.alerts(5000)}
    pipes = control.pipelines()
    return {
        "seconds": round(elapsed, 1),
        "backfilled": backfilled,
        "produced": backfilled + produced,
        "events_captured": s["events_captured"],
        "captured": {c["topic"]: c["events"] for c in s["captures"]},
        "capture_rate": round(produced / elapsed) if elapsed else 0,
        "alerts": s["alerts"],
        "injected": [{"alert_type": c.alert_type, "key": c.key, "alerted": c.key in alerted} for c in injected],
        "pipelines": {p["name"]: {"events_in": p["events_in"], "events_out": p["events_out"],
                                  "latency_p50_ms": p["latency_p50_ms"], "latency_p99_ms": p["latency_p99_ms"],
                                  "lag": p["lag"], "error": p["error"]} for p in pipes},
        "console": url,
        "data_dir": str(data_dir),
    }


def _render(control: Any, url: str) -> Table:
    s = control.summary()
    t = Table(title=f"everstream demo — {url} — captured {s['events_captured']:,} "
                    f"({s['capture_rate']:,.0f}/s), alerts {s['alerts_total']:,}")
    for col in ("pipeline", "events in", "rate/s", "out", "p50 ms", "p99 ms", "lag", "status"):
        t.add_column(col)
    for p in control.pipelines():
        t.add_row(p["name"], f"{p['events_in']:,}", f"{p['rate']:,}", f"{p['events_out']:,}",
                  f"{p['latency_p50_ms']:g}", f"{p['latency_p99_ms']:g}", f"{p['lag'] or 0:,}",
                  p["error"] or "running")
    return t


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    found = sum(c["alerted"] for c in s["injected"])
    alerts = ", ".join(f"{k} {v:,}" for k, v in sorted(s["alerts"].items())) or "none"
    p99 = ", ".join(f"{k} {v['latency_p99_ms']:g} ms" for k, v in s["pipelines"].items())
    console.print(f"demo: captured {s['events_captured']:,} events in {s['seconds']}s ({s['capture_rate']:,}/s); "
                  f"alerts: {alerts}; injected cases alerted {found}/{len(s['injected'])}; p99 per poll: {p99}")
    for name, p in s["pipelines"].items():
        if p["error"]:
            console.print(f"[red]pipeline {name} failed: {p['error']}[/]")

