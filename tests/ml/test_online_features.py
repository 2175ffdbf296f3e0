"""On-arrival fraud features (one step, no watermark wait): equal to a plain-NumPy reference under disorder,
the same for any batching (replay == live), no leakage from events that arrive later, state restored
exactly-once, bad input named."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from enginetools import produce
from hypothesis import given, settings
from hypothesis import strategies as st
from online_reference import reference
from polars.testing import assert_frame_equal

import everstream as es
import everstream.engine.online as online
from everstream.engine.operators import Ctx
from everstream.engine.testing import read_topic
from everstream.errors import PlanError, StepError
from everstream.log import Log
from everstream.ml import FEATURES, payment_features, simulate
from everstream.ml.features import ONLINE_PARTS

COLS = [f for f in FEATURES if f != "amount"]


def _disordered(seed: int = 5, per_day: int = 200, disorder_ms: int = 30 * 60_000) -> pl.DataFrame:
    """Payments arriving out of event-time order by up to ``disorder_ms`` (fraud bursts included)."""
    data = simulate(days=2, transactions_per_day=per_day, cards=20, merchants=10, fraud_cases_per_day=3,
                    seed=seed).features_input()
    rng = np.random.default_rng(seed)
    arrival = data.get_column("ts").to_numpy() + rng.integers(0, disorder_ms + 1, data.height)
    return data[np.argsort(arrival, kind="stable")]


def _op() -> online.OnlineFeaturesOp:
    spec = online.OnlineSpec(ONLINE_PARTS, tuple(COLS), 3_600_000, frozenset(("txn_id", "ts")))
    step = online.OnlineStep(step_id="features.online", inputs=(), pattern=spec, by=(), timeouts=False)

    class Services:
        app_name = "test"

    return online.OnlineFeaturesOp(step, Services(), spec)  # type: ignore[arg-type]


def _run_op(data: pl.DataFrame, cuts: list[int]) -> pl.DataFrame:
    op = _op()
    frame = data.with_columns(pl.col("ts").alias("_event_time"))
    out = []
    for a, b in zip([0, *cuts], [*cuts, data.height], strict=True):
        if b > a:
            got = op.process(frame.slice(a, b - a), Ctx("pay", 0))
            assert got is not None
            out.append(got)
    return pl.concat(out).select("txn_id", *COLS)


def _app(names: Callable[[str], str], topic: str, out: str, app: str = "features") -> es.App:
    a = es.App(names(app))
    payment_features(a.stream(topic).with_watermark("ts")).to(out)
    return a


def test_engine_features_equal_the_arrival_reference_and_live_equals_replay(
        log: Log, names: Callable[[str], str]) -> None:
    """Disordered input (30 min): the step's output equals the reference that recomputes each event from the
    events that arrived before it with time <= its own; replay (one batch) and live (chunks of 23) agree."""
    data = _disordered()
    hist, live = names("hist"), names("live")
    produce(log, hist, data, key="card", time_field=None)
    _app(names, hist, names("replay")).run(log, until_idle=True)
    replay = read_topic(log, names("replay")).select("txn_id", *COLS).sort("txn_id")
    ref = reference(data).sort("txn_id")
    assert_frame_equal(replay, ref, check_dtypes=False, rel_tol=1e-6, abs_tol=1e-6)

    produce(log, live, data.head(0), key="card", time_field=None)
    with _app(names, live, names("live-out"), "features-live").runner(log) as runner:
        for start in range(0, data.height, 23):
            produce(log, live, data.slice(start, 23), key="card", time_field=None)
            runner.catch_up()
        runner.finish()
    got = read_topic(log, names("live-out")).select("txn_id", *COLS).sort("txn_id")
    assert_frame_equal(got, replay, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert got.schema == replay.schema


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=12), st.integers(0, 2), st.sampled_from([1, 4, 64, 2048]),
       st.sampled_from([8, 64, 1 << 20]))
def test_any_batching_and_any_merge_schedule_give_the_same_features(
        cuts: list[int], seed: int, l0_rows: int, run_max: int) -> None:
    """Property: the features depend on the arrival order only (batch boundaries and the state's L0 size,
    run merges, run size cap and prune schedule do not matter), and equal the plain reference."""
    data = _disordered(seed, per_day=120)
    old = online._L0_ROWS, online._RUN_MAX
    online._L0_ROWS, online._RUN_MAX = l0_rows, run_max
    try:
        got = _run_op(data, sorted({c for c in cuts if c < data.height}))
    finally:
        online._L0_ROWS, online._RUN_MAX = old
    assert_frame_equal(got.sort("txn_id"), reference(data).sort("txn_id"), check_dtypes=False,
                       rel_tol=1e-6, abs_tol=1e-6)


def test_no_leakage_later_arrivals_change_nothing_already_emitted() -> None:
    """Events arriving later (even with earlier event times, huge amounts, the same cards) never change the
    features of events that arrived before them, and an event never counts one from its future."""
    data = _disordered(seed=9)
    k = data.height // 2
    first = _run_op(data.head(k), [])
    rng = np.random.default_rng(3)
    noise = data.head(k).with_columns((pl.col("txn_id") + 10_000).alias("txn_id"), pl.col("amount") * 1000,
                                      (pl.col("ts") - pl.Series(rng.integers(0, 3_600_000, k))).alias("ts"))
    both = _run_op(pl.concat([data.head(k), noise]), [k // 3])
    assert_frame_equal(both.head(k), first)
    # the very first arrival of each card has nothing before it, whatever comes later
    firsts = data.with_row_index("arrival").group_by("card").agg(pl.col("txn_id").sort_by("arrival").first())
    mine = both.join(firsts, on="txn_id")
    assert mine.height and (mine.get_column("card_n_24h") == 1).all()
    assert mine.get_column("card_since_last_s").null_count() == mine.height


def test_exactly_once_restart_restores_the_feature_state(log: Log, names: Callable[[str], str]) -> None:
    """A runner stopped half way (exactly-once) and a new one resuming give the uninterrupted output."""
    data = _disordered(seed=2)
    topic, out = names("pay"), names("feat")
    produce(log, topic, data.head(0), key="card", time_field=None)
    app = _app(names, topic, out)
    half = data.height // 2
    with app.runner(log, guarantee="exactly_once", commit_interval=0.0) as runner:
        produce(log, topic, data.head(half), key="card", time_field=None)
        runner.catch_up()
        runner.commit()
    with app.runner(log, guarantee="exactly_once", commit_interval=0.0) as runner:
        produce(log, topic, data.slice(half), key="card", time_field=None)
        runner.catch_up()
        runner.commit()
    got = read_topic(log, out).select("txn_id", *COLS).sort("txn_id")
    assert got.height == data.height  # nothing twice, nothing lost
    assert_frame_equal(got, reference(data).sort("txn_id"), check_dtypes=False, rel_tol=1e-6, abs_tol=1e-6)


def test_bad_input_and_bad_specs_are_named() -> None:
    op = _op()
    bad = _disordered().drop("merchant").with_columns(pl.col("ts").alias("_event_time"))
    with pytest.raises(StepError, match=r"lack columns \['merchant'\]"):
        op.process(bad, Ctx("pay", 0))
    with pytest.raises(PlanError, match="time_since_last"):
        online.Family(("card",), {"m": es.rolling_mean("amount", "1h")})
    app = es.App("x")
    with pytest.raises(PlanError, match="needs event time"):
        online.online_features(app.stream("pay"), ONLINE_PARTS)
    with pytest.raises(PlanError, match="made twice"):
        online.online_features(app.stream("pay2").with_watermark("ts"), [*ONLINE_PARTS, ONLINE_PARTS[0]])


def test_in_order_input_gives_the_watermark_pipelines_features(log: Log, names: Callable[[str], str]) -> None:
    """On input in event-time order the one on-arrival step equals the six watermark-driven rolling steps
    (``mode="watermark"``, the engine's Stream.rolling): two implementations, one definition."""
    data = simulate(days=2, transactions_per_day=1_500, cards=150, merchants=60, fraud_cases_per_day=6,
                    seed=8).features_input()
    topic = names("pay")
    produce(log, topic, data, key="card", chunk=700)
    outs = {}
    for mode in ("arrival", "watermark"):
        app = es.App(names(f"f-{mode}"))
        payment_features(app.stream(topic).with_watermark("ts"), mode=mode).to(names(f"out-{mode}"))  # type: ignore[arg-type]
        app.run(log, until_idle=True)
        outs[mode] = read_topic(log, names(f"out-{mode}")).select("txn_id", *COLS).sort("txn_id")
    assert outs["arrival"].height == data.height
    assert_frame_equal(outs["arrival"], outs["watermark"], rel_tol=1e-6, abs_tol=1e-6)
    with pytest.raises(es.errors.ConfigError, match="mode="):
        payment_features(es.App("y").stream("p").with_watermark("ts"), mode="later")  # type: ignore[arg-type]
