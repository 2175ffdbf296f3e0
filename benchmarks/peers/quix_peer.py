"""Quix Streams runner (run with benchmarks/.venv-peers/bin/python): finance W1–W3 on the real Kafka broker.

Input: the untimed ``prepare`` step produces the Parquet rows to a fresh one-partition topic on the
broker at ``$EVERSTREAM_BENCH_KAFKA`` (default 127.0.0.1:9092) as JSON values (Quix's default
serializer), with the Kafka message timestamp = the trade's event time and the key = the query's
grouping column (symbol for W1/W2, account for W3), so no repartition topic is needed. Then an
end-of-input marker with an event time one day later: with ``final(closing_strategy="partition")``
Quix windows close when the partition's event time passes ``end + grace`` (the default, "key",
closes a key's windows only on that key's next message, so a replay's last windows never close),
and a Kafka topic has no end, so the marker plays the part of the final watermark a bounded Flink
source emits. It has its own key, is not counted and never reaches the result.

Timed: an ``Application`` (fresh consumer group, ``auto_offset_reset="earliest"``, Quix's defaults
otherwise: at-least-once, RocksDB state with changelog topics) reads the topic from the start,
runs the query and stops itself after the marker; ``seconds`` is Kafka -> result in memory.
Windows use ``grace_ms=2000`` (the data's disorder bound); late events are counted (``on_late``)
and would make the result wrong.

W4: the trades and the quotes go to two one-partition topics keyed by symbol (timestamp = event
time) and are joined with Quix's ``join_asof(how="left")``: a trade looks up the latest quote of its
symbol with timestamp <= its own *among the quotes processed so far*; a quote that arrives after the
trade (2 s disorder, and two topics consumed side by side) is missed. Quix has no watermark or
buffering to wait for it, so this measures Quix's as-of join as documented, and the check reports
where it differs from the reference. W5 is not expressible (see ``w5``).

Nexmark q0–q2: each event is produced as a JSON object of its entity's fields (``event_type``,
``date_time`` and the non-null ``p_*``/``a_*``/``b_*`` columns, as a Kafka source would carry it),
no key, timestamp = event time; the stateless queries filter the bids and map them.
Topics created by a run (input, changelogs) are deleted when it ends.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from _common import NotExpressible, Runner, extra, main

BROKER = os.environ.get("EVERSTREAM_BENCH_KAFKA", "127.0.0.1:9092")
RUN_ID = f"esbench-quix-{uuid.uuid4().hex[:10]}"
END = "__end_of_input__"
KEYS = {"w1": "symbol", "w2": "symbol", "w3": "account", "w4": "symbol"}


class _Run:
    """What ``prepare`` hands to the timed runner."""

    topic: str = ""
    quotes: str = ""
    late: int = 0


def _cleanup() -> None:
    admin = AdminClient({"bootstrap.servers": BROKER})
    mine = [t for t in admin.list_topics(timeout=10).topics if RUN_ID in t]
    if mine:
        for f in admin.delete_topics(mine, operation_timeout=30).values():
            try:
                f.result()
            except Exception as e:
                print(f"quix peer: could not delete a topic of this run: {e}", file=sys.stderr)


def _produce(producer: Producer, topic: str, parquet: Path, key_col: str | None, time_col: str) -> int:
    """Every row of ``parquet`` as a JSON message (nulls left out, timestamps as epoch ms); the last event time."""
    last = 0
    for batch in pq.ParquetFile(parquet).iter_batches(50_000):
        cols = {n: (c.cast(pa.timestamp("ms")).cast(pa.int64()) if pa.types.is_timestamp(c.type) else c).to_pylist()
                for n, c in zip(batch.schema.names, batch.columns, strict=True)}
        names = list(cols)
        for values in zip(*cols.values(), strict=True):
            row = {n: v for n, v in zip(names, values, strict=True) if v is not None}
            key = str(row[key_col]).encode() if key_col else None
            while True:
                try:
                    producer.produce(topic, json.dumps(row).encode(), key, timestamp=row[time_col])
                    break
                except BufferError:
                    producer.poll(0.05)
            last = max(last, row[time_col])
        producer.poll(0)
    return last


def _topic(admin: AdminClient, name: str) -> str:
    topic = f"{RUN_ID}-{name}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    return topic


def prepare(suite: str, query: str, parquet: Path) -> Path:
    """Untimed: produce the rows to a new topic (JSON values, event-time timestamps), then the marker."""
    if (suite, query) not in RUNNERS or query == "w5":
        return parquet  # the runner table says "no runner" / w5 says why not
    admin = AdminClient({"bootstrap.servers": BROKER})
    atexit.register(_cleanup)
    producer = Producer({"bootstrap.servers": BROKER, "linger.ms": 20, "batch.size": 1_000_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000})
    topic = _topic(admin, query)
    time_col = "ts" if suite == "finance" else "date_time"
    if query == "w4":  # quotes first: a trade can only find what the quote topic already holds
        _Run.quotes = _topic(admin, "quotes")
        _produce(producer, _Run.quotes, extra("quotes"), "symbol", "ts")
    last = _produce(producer, topic, parquet, KEYS.get(query), time_col)
    end_ts = last + 86_400_000  # numeric fields so the marker passes the aggregations (own key)
    marker: dict[str, Any] = {END: True, "seq": -1, "ts": end_ts, "symbol": END, "account": END, "price": 0.0,
                              "qty": 0, "event_type": -1, "date_time": end_ts}
    producer.produce(topic, json.dumps(marker).encode(), END.encode(), timestamp=end_ts)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"quix peer: {left} messages to topic {topic!r} at {BROKER} not delivered in 120 s: "
                           "is the broker up?")
    _Run.topic = topic
    return parquet


def _app(state_dir: str) -> Any:
    from quixstreams import Application

    return Application(broker_address=BROKER, consumer_group=f"{_Run.topic}-g", auto_offset_reset="earliest",
                       state_dir=state_dir, loglevel="WARNING")


def _late(*args: Any, **kwargs: Any) -> bool:
    _Run.late += 1
    return False  # do not log each one


def _run(build: Any) -> list[dict[str, Any]]:
    """Build the dataframe with ``build(sdf, out)``, run until the end marker has been processed."""
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="esbench-quix-state-") as state:
        app = _app(state)
        sdf = app.dataframe(app.topic(_Run.topic, value_deserializer="json", key_deserializer="str"))

        def stop_at_end(value: dict[str, Any]) -> None:
            if END in value:
                app.stop()

        sdf = sdf.update(stop_at_end)
        build(sdf, out)
        app.run()
    if _Run.late:
        print(f"quix peer: {_Run.late} late events dropped by windows", file=sys.stderr)
    return out


def _table(rows: list[dict[str, Any]], names: list[str]) -> pa.Table:
    return pa.table({n: [r[n] for r in rows] for n in names})


def w1(p: Path) -> pa.Table:
    def build(sdf: Any, out: list[dict[str, Any]]) -> None:
        sdf = sdf.filter(lambda v: END not in v and v["price"] * v["qty"] > 100_000)
        sdf = sdf.apply(lambda v: {"ts": v["ts"], "symbol": v["symbol"], "notional": v["price"] * v["qty"]})
        sdf.update(out.append)

    return _table(_run(build), ["ts", "symbol", "notional"])


def w2(p: Path) -> pa.Table:
    from quixstreams.dataframe.windows import Earliest, Latest, Max, Min, Sum

    def build(sdf: Any, out: list[dict[str, Any]]) -> None:
        sdf = sdf.apply(lambda v: {**v, "pv": v["price"] * v["qty"]})
        w = (sdf.tumbling_window(60_000, grace_ms=2_000, on_late=_late)
             .agg(open=Earliest("price"), high=Max("price"), low=Min("price"), close=Latest("price"),
                  volume=Sum("qty"), pv=Sum("pv")).final(closing_strategy="partition"))
        w = w.apply(lambda v, key, ts, headers: {**v, "symbol": key}, metadata=True)
        w.filter(lambda v: v["symbol"] != END).update(out.append)

    rows = _run(build)
    for r in rows:
        r["window_start"], r["window_end"], r["vwap"] = r["start"], r["end"], r["pv"] / r["volume"]
    return _table(rows, ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume", "vwap"])


def w3(p: Path) -> pa.Table:
    from quixstreams.dataframe.windows import Count, Sum

    def build(sdf: Any, out: list[dict[str, Any]]) -> None:
        sdf = sdf.apply(lambda v: {"notional": v["price"] * v["qty"]})
        w = (sdf.hopping_window(300_000, 60_000, grace_ms=2_000, on_late=_late)
             .agg(cnt=Count(), sum_notional=Sum("notional")).final(closing_strategy="partition"))
        w = w.apply(lambda v, key, ts, headers: {**v, "account": key}, metadata=True)
        w.filter(lambda v: v["account"] != END).update(out.append)

    rows = _run(build)
    for r in rows:
        r["window_start"], r["window_end"] = r["start"], r["end"]
    return _table(rows, ["account", "window_start", "window_end", "cnt", "sum_notional"])


def w4(p: Path) -> pa.Table:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="esbench-quix-state-") as state:
        app = _app(state)
        trades = app.dataframe(app.topic(_Run.topic, value_deserializer="json", key_deserializer="str"))
        quotes = app.dataframe(app.topic(_Run.quotes, value_deserializer="json", key_deserializer="str"))
        quotes = quotes.apply(lambda v: {"bid": v["bid"], "ask": v["ask"]})

        def stop_at_end(value: dict[str, Any]) -> None:
            if END in value:
                app.stop()

        trades = trades.update(stop_at_end).filter(lambda v: END not in v)
        trades = trades.apply(lambda v: {"seq": v["seq"], "ts": v["ts"], "symbol": v["symbol"], "price": v["price"]})
        joined = trades.join_asof(quotes, how="left", on_merge="keep-left")
        joined.update(out.append)
        app.run()
    return pa.Table.from_pylist(
        [{"seq": r["seq"], "ts": r["ts"], "symbol": r["symbol"], "price": r["price"], "bid": r.get("bid"),
          "ask": r.get("ask")} for r in out],
        schema=pa.schema([("seq", pa.int64()), ("ts", pa.int64()), ("symbol", pa.string()), ("price", pa.float64()),
                          ("bid", pa.float64()), ("ask", pa.float64())]))


def w5(p: Path) -> pa.Table:
    raise NotExpressible(
        "Quix Streams has no pattern (CEP) operator, and a hand-written stateful apply cannot give the pattern's "
        "event-time semantics: out-of-order events (2 s) must wait per card until later events pass them, and "
        "Quix offers no per-key timers and no end-of-input hook to release what still waits (State is reachable "
        "only from the key's own next message)")


_BID_OUT = ["auction", "bidder", "price", "channel", "url", "date_time", "extra"]


def _bid(v: dict[str, Any]) -> dict[str, Any]:
    return {"auction": v["b_auction"], "bidder": v["b_bidder"], "price": v["b_price"], "channel": v["b_channel"],
            "url": v["b_url"], "date_time": v["date_time"], "extra": v["b_extra"]}


def q0(p: Path) -> pa.Table:
    def build(sdf: Any, out: list[dict[str, Any]]) -> None:
        sdf.filter(lambda v: v["event_type"] == 2).apply(_bid).update(out.append)

    return _table(_run(build), _BID_OUT)


def q1(p: Path) -> pa.Table:
    def build(sdf: Any, out: list[dict[str, Any]]) -> None:
        sdf = sdf.filter(lambda v: v["event_type"] == 2).apply(_bid)
        sdf.apply(lambda v: {**v, "price": v["price"] * 0.908}).update(out.append)

    return _table(_run(build), _BID_OUT)


def q2(p: Path) -> pa.Table:
    def build(sdf: Any, out: list[dict[str, Any]]) -> None:
        sdf = sdf.filter(lambda v: v["event_type"] == 2 and v["b_auction"] % 123 == 0)
        sdf.apply(lambda v: {"auction": v["b_auction"], "price": v["b_price"]}).update(out.append)

    return _table(_run(build), ["auction", "price"])


RUNNERS: dict[tuple[str, str], Runner] = {("finance", "w1"): w1, ("finance", "w2"): w2, ("finance", "w3"): w3,
                                          ("finance", "w4"): w4, ("finance", "w5"): w5,
                                          ("nexmark", "q0"): q0, ("nexmark", "q1"): q1, ("nexmark", "q2"): q2}

if __name__ == "__main__":
    from importlib.metadata import version

    main("quixstreams", version("quixstreams"), RUNNERS, prepare=prepare)
