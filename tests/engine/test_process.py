"""Keyed process functions with state and timers, against a plain-Python reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from enginetools import produce, trades

import everstream as es
from everstream.engine.testing import read_topic
from everstream.errors import PlanError, UserFunctionError
from everstream.log import Log

IDLE_MS = 5000


class IdleAlert(es.KeyedProcess):
    """Counts a key's events and reports when it has been quiet for 5 s (event-time timers)."""

    def process(self, event: dict[str, Any], ctx: es.engine.ProcessContext) -> dict[str, Any]:
        st = ctx.state
        st["n"] = st.get("n", 0) + 1
        st["last"] = ctx.time
        ctx.timer(ctx.time + IDLE_MS)
        return {"symbol": ctx.key, "at": ctx.time, "n": st["n"], "kind": "event"}

    def on_timer(self, at: int, ctx: es.engine.ProcessContext) -> dict[str, Any] | None:
        if ctx.state["last"] + IDLE_MS == at:
            return {"symbol": ctx.key, "at": at, "n": ctx.state["n"], "kind": "idle"}
        return None


def reference(data: pl.DataFrame) -> list[tuple[str, int, int, str]]:
    out = []
    for (sym,), g in data.sort("ts").group_by("symbol"):
        ts = g["ts"].to_list()
        for i, t in enumerate(ts):
            out.append((str(sym), t, i + 1, "event"))
            if i + 1 == len(ts) or ts[i + 1] > t + IDLE_MS:
                out.append((str(sym), t + IDLE_MS, i + 1, "idle"))
    return sorted(out)


def test_process_function_with_event_time_timers(log: Log, names: Callable[[str], str]) -> None:
    """State per key and timers firing on the watermark, out-of-order input: the plain-Python answer."""
    data = trades(1200, seed=41, symbols=3, gap_ms=1500, disorder_ms=2000)
    topic, out = names("trades"), names("out")
    produce(log, topic, data, partitions=2, chunk=200)
    app = es.App(names("idle"))
    app.stream(topic).with_watermark("ts", max_delay="2s").key_by("symbol").process(IdleAlert).to(out)
    result = app.run(log, until_idle=True)
    assert result.late_events == 0
    got = read_topic(log, out)
    assert sorted(got.select("symbol", "at", "n", "kind").rows()) == reference(data)
    assert any(k == "idle" for *_, k in reference(data)[:-3])  # timers fired mid-stream, not only at the end


def test_process_function_errors_name_the_event(log: Log, names: Callable[[str], str]) -> None:
    """A raising function stops the app naming step, key, event time and file:line; or dead-letters."""
    data = trades(100, seed=43, symbols=2)
    topic = names("trades")
    produce(log, topic, data, partitions=1)
    bad_ts = int(data["ts"][40])

    def check(event: dict[str, Any], ctx: es.engine.ProcessContext) -> dict[str, Any]:
        if ctx.time == bad_ts:
            raise ValueError("suspicious")
        return {"symbol": event["symbol"]}

    app = es.App(names("p"))
    app.stream(topic).with_watermark("ts").key_by("symbol").process(check, name="chk").to(names("out"))
    with pytest.raises(UserFunctionError, match=rf"step 'chk'.*key '{data['symbol'][40]}'.*event time {bad_ts}.*"
                                                r"test_process.py:\d+") as info:
        app.run(log, until_idle=True)
    assert info.value.offset == 40 and info.value.topic == topic

    app2 = es.App(names("p2"))
    out = names("out")
    app2.stream(topic).with_watermark("ts").key_by("symbol").process(check, on_error="dead_letter").to(out)
    result = app2.run(log, until_idle=True)
    assert result.dead_letters == 1 and read_topic(log, out).height == 99
    dlq = read_topic(log, es.engine.dead_letter_topic_of(app2.name))
    assert dlq["source_offset"].to_list() == [40] and "suspicious" in dlq["error"][0]


def test_process_bad_definitions() -> None:
    app = es.App("bad")
    with pytest.raises(PlanError, match="needs event time"):
        app.stream("t").key_by("card").process(lambda e, c: None)
    with pytest.raises(PlanError, match="column names"):
        app.stream("t").key_by()
    with pytest.raises(PlanError, match="function or a KeyedProcess"):
        app.stream("t").with_watermark("ts").key_by("card").process(42)
