"""Bad input and failing user code: dead letters with reasons, or an error that says where and what to do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from enginetools import produce, trades

import everstream as es
from everstream.engine.testing import read_topic
from everstream.errors import EverstreamError, StepError, UserFunctionError
from everstream.log import Log, TopicSpec


def _send_rows(log: Log, topic: str, rows: list[dict[str, Any]]) -> None:
    log.create_topic(TopicSpec(topic, 1), exist_ok=True)
    with log.producer() as producer:
        for r in rows:
            producer.send(topic, r, key=str(r.get("symbol")))
        producer.flush()


def test_events_without_time_or_with_bad_time_go_to_dead_letters(log: Log, names: Callable[[str], str]) -> None:
    """Missing or unparsable event times: dead letters naming the step and field, the rest is processed."""
    topic, out = names("trades"), names("out")
    rows = [
        {"ts": "2026-01-01T00:00:01Z", "symbol": "A", "qty": 1},
        {"ts": "yesterday-ish", "symbol": "A", "qty": 2},
        {"ts": None, "symbol": "B", "qty": 3},
        {"ts": "2026-01-01T00:00:02Z", "symbol": "B", "qty": 4},
    ]
    _send_rows(log, topic, rows)
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts").window(es.tumbling("1m"), by="symbol").agg(q=es.sum("qty")).to(out)
    result = app.run(log, until_idle=True)
    assert result.dead_letters == 2
    dlq = read_topic(log, es.engine.dead_letter_topic_of(app.name))
    assert dlq.height == 2
    assert dlq["source_offset"].to_list() == [1, 2]
    assert all(f"step '{topic}.watermark'" in e and "'ts'" in e for e in dlq["error"].to_list())
    assert b"yesterday-ish" in dlq["raw"][0]
    assert read_topic(log, out).sort("symbol")["q"].to_list() == [1, 4]


def test_batch_without_the_time_field_goes_to_dead_letters(log: Log, names: Callable[[str], str]) -> None:
    """Records that have no time field at all become dead letters; the app goes on."""
    topic, out = names("trades"), names("out")
    _send_rows(log, topic, [{"symbol": "A", "qty": 1}, {"symbol": "B", "qty": 2}])
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts").window(es.tumbling("1m"), by="symbol").agg(q=es.sum("qty")).to(out)
    result = app.run(log, until_idle=True)
    assert result.dead_letters == 2
    dlq = read_topic(log, es.engine.dead_letter_topic_of(app.name))
    assert "has no time field 'ts'" in dlq["error"][0]


def _boom(event: dict[str, Any]) -> dict[str, Any]:
    if event["qty"] == 700:
        raise ValueError(f"cannot price {event['symbol']}")
    return {**event, "notional": event["price"] * event["qty"]}


def test_user_function_error_stops_the_app_and_says_where(log: Log, names: Callable[[str], str]) -> None:
    """A raising map stops the app: the error names step, topic, partition, offset, key and file:line."""
    data = trades(50, seed=1).with_columns(pl.when(pl.int_range(pl.len()) == 17).then(700)
                                           .otherwise(pl.col("qty").clip(upper_bound=600)).alias("qty"))
    topic, out = names("trades"), names("out")
    produce(log, topic, data)
    app = es.App(names("market"))
    app.stream(topic).map(_boom, name="price").to(out)
    with pytest.raises(UserFunctionError) as info:
        app.run(log, until_idle=True)
    e = info.value
    assert isinstance(e, EverstreamError)
    assert (e.step_id, e.topic, e.partition, e.offset) == ("price", topic, 0, 17)
    assert e.key == data["symbol"][17].encode()
    assert "test_errors.py" in e.location and "_boom" in e.location
    text = str(e)
    for part in ("step 'price'", f"topic '{topic}'", "partition 0", "offset 17", "ValueError",
                 "cannot price", "on_error='dead_letter'"):
        assert part in text
    # nothing was committed past the failing event: a fixed app resumes before it
    with log.consumer(app.name) as c:
        committed = c.committed(topic, 0)
    assert committed is None or committed <= 17


def test_dead_letter_policy_sends_failing_events_on(log: Log, names: Callable[[str], str]) -> None:
    """on_error='dead_letter': the failing event and its traceback go to <app>.dlq; the rest flows."""
    data = trades(50, seed=1).with_columns(pl.when(pl.int_range(pl.len()) == 17).then(700)
                                           .otherwise(pl.col("qty").clip(upper_bound=600)).alias("qty"))
    topic, out = names("trades"), names("out")
    produce(log, topic, data)
    app = es.App(names("market"))
    app.stream(topic).map(_boom, name="price", on_error="dead_letter").to(out)
    result = app.run(log, until_idle=True)
    assert result.dead_letters == 1
    assert result.metrics["price"]["dead_letters"] == 1
    assert read_topic(log, out).height == 49
    dlq = read_topic(log, es.engine.dead_letter_topic_of(app.name))
    assert dlq["source_offset"].to_list() == [17]
    assert "Traceback" in dlq["error"][0] and "cannot price" in dlq["error"][0]
    assert b'"qty": 700' in dlq["raw"][0]


def test_map_batches_error_names_the_batch(log: Log, names: Callable[[str], str]) -> None:
    """A raising map_batches stops the app naming the step, partition and first offset of the batch."""
    topic = names("trades")
    produce(log, topic, trades(20))

    def enrich(df: pl.DataFrame) -> pl.DataFrame:
        raise RuntimeError("reference data unavailable")

    app = es.App(names("market"))
    app.stream(topic).map_batches(enrich, name="enrich").to(names("out"))
    with pytest.raises(UserFunctionError, match=r"step 'enrich'.*partition 0, offset 0.*reference data"):
        app.run(log, until_idle=True)


def test_map_batches_dead_letter_policy(log: Log, names: Callable[[str], str]) -> None:
    """map_batches with on_error='dead_letter' sends the batch's events to <app>.dlq."""
    topic = names("trades")
    produce(log, topic, trades(20))
    app = es.App(names("market"))
    app.stream(topic).map_batches(lambda df: df.select(pl.col("nope")), on_error="dead_letter").to(names("out"))
    result = app.run(log, until_idle=True)
    assert result.dead_letters == 20


def test_bad_expression_names_step_and_columns(log: Log, names: Callable[[str], str]) -> None:
    """A filter on a column the stream lacks stops with the step, position and the columns there are."""
    topic = names("trades")
    produce(log, topic, trades(10))
    app = es.App(names("market"))
    app.stream(topic).filter(pl.col("prize") > 1, name="cheap").to(names("out"))
    with pytest.raises(StepError, match=r"step 'cheap'.*offset 0.*'price'"):
        app.run(log, until_idle=True)


def test_map_must_return_a_dict(log: Log, names: Callable[[str], str]) -> None:
    """A map returning a non-dict is a user-function error that says what to return."""
    topic = names("trades")
    produce(log, topic, trades(5))
    app = es.App(names("market"))
    app.stream(topic).map(lambda e: 42, name="m").to(names("out"))  # type: ignore[arg-type,return-value]
    with pytest.raises(UserFunctionError, match="must return a dict"):
        app.run(log, until_idle=True)


def test_window_on_missing_column(log: Log, names: Callable[[str], str]) -> None:
    """Aggregating a column the stream lacks names the columns."""
    topic = names("trades")
    produce(log, topic, trades(10))
    app = es.App(names("market"))
    app.stream(topic).with_watermark("ts").window(es.tumbling("1s"), by="sym").agg(n=es.count()).to(names("o"))
    with pytest.raises(StepError, match=r"\['sym'\] are not in the stream"):
        app.run(log, until_idle=True)


def test_unknown_input_topic(log: Log, names: Callable[[str], str]) -> None:
    """Starting an app on a missing topic says how to create it."""
    app = es.App(names("market"))
    app.stream(names("nothing")).to(names("out"))
    with pytest.raises(EverstreamError, match="everstream topics create"):
        app.run(log, until_idle=True)
