"""The plan: stable step ids, immutability, and definition errors that say what to do."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

import everstream as es
from everstream.errors import ConfigError, PlanError


def _define() -> es.App:
    app = es.App("market")
    trades = app.stream("trades").with_watermark("ts", max_delay="2s", idle_timeout="5s")
    big = trades.filter(pl.col("qty") > 100)
    big.window(es.tumbling("1m"), by="symbol").agg(high=es.max("price")).to("bars_1m")
    big.window(es.hopping("5m", every="1m"), by="account").agg(n=es.count()).to("activity")
    trades.map(lambda e: e).to("copy")
    return app


def test_step_ids_are_derived_from_the_graph_and_stable() -> None:
    """Default ids follow the graph (a watermark adds no segment); defining the app again gives the same ids."""
    ids = [s.step_id for s in _define().plan]
    assert ids == ["trades", "trades.watermark", "trades.filter", "trades.filter.window", "to.bars_1m",
                   "trades.filter.window2", "to.activity", "trades.map", "to.copy"]
    assert ids == [s.step_id for s in _define().plan]


def test_plan_is_immutable_and_describable() -> None:
    """The plan is frozen; describe() lists every step with its inputs."""
    plan = _define().plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.steps = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.steps[0].step_id = "x"  # type: ignore[misc]
    text = plan.describe()
    assert "trades.filter.window <- trades.filter  window(tumbling(60000 ms), by=['symbol'], high=max(price))" in text
    assert plan.children("trades.filter") == ("trades.filter.window", "trades.filter.window2")


def test_names_override_ids_and_must_be_unique() -> None:
    """name= sets a step id; a duplicate or an unusable id is a PlanError."""
    app = es.App("market")
    s = app.stream("trades", name="in")
    s.filter(pl.col("qty") > 1, name="big")
    with pytest.raises(PlanError, match="used twice"):
        s.filter(pl.col("qty") > 2, name="big")
    with pytest.raises(PlanError, match="invalid step id"):
        s.filter(pl.col("qty") > 2, name="has space")


def test_window_needs_event_time() -> None:
    """A window on a stream without a watermark explains how to declare one."""
    app = es.App("market")
    with pytest.raises(PlanError, match=r"with_watermark\('ts'"):
        app.stream("trades").window(es.tumbling("1m"), by="symbol").agg(n=es.count())


def test_agg_checks_its_arguments() -> None:
    """Aggregates must be es.* aggregates with names that do not clash."""
    trades = es.App("market").stream("trades").with_watermark("ts")
    with pytest.raises(PlanError, match="not an aggregate"):
        trades.window(es.tumbling("1m")).agg(n=len)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="clashes"):
        trades.window(es.tumbling("1m"), by="symbol").agg(symbol=es.count())
    with pytest.raises(PlanError, match="at least one"):
        trades.window(es.tumbling("1m")).agg()
    with pytest.raises(PlanError, match="once"):
        trades.with_watermark("ts")


def test_window_definitions_validate() -> None:
    """Window sizes must be positive; hopping every must not exceed size; errors are ConfigErrors (ValueError)."""
    assert es.hopping("5m", every="1m").size_ms == 300_000
    with pytest.raises(ConfigError, match="longer than size"):
        es.hopping("1m", every="5m")
    with pytest.raises(ValueError):
        es.tumbling("0s")
    with pytest.raises(ConfigError):
        es.session("soon")


def test_public_names() -> None:
    """The engine's public names are re-exported from the package root."""
    for name in ("App", "tumbling", "hopping", "session", "count", "sum", "min", "max", "mean", "first", "last",
                 "vwap", "var", "std", "count_distinct", "custom"):
        assert name in es.__all__ and getattr(es, name) is getattr(es.engine, name)


def test_app_without_inputs() -> None:
    """Running or planning an app without inputs says to add one."""
    with pytest.raises(PlanError, match="no input"):
        _ = es.App("empty").plan
    with pytest.raises(PlanError, match="App name"):
        es.App("bad name")


def test_required_columns_for_projection_pushdown() -> None:
    """The runtime reads only what the plan uses: window keys and inputs, filter columns; all for sinks/maps."""
    app = es.App("market")
    trades = app.stream("trades").with_watermark("ts")
    trades.filter(pl.col("qty") > 100).window(es.tumbling("1m"), by="symbol").agg(
        high=es.max("price"), vwap=es.vwap("price", "qty"))
    assert app.plan.required_columns("trades") == {"ts", "qty", "symbol", "price"}
    trades.select("symbol", notional=pl.col("price") * pl.col("qty")).to("out")
    assert app.plan.required_columns("trades") == {"ts", "qty", "symbol", "price"}
    trades.to("copy")
    assert app.plan.required_columns("trades") is None
