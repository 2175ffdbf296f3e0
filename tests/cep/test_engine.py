"""The match step in the engine, on both logs: ready patterns end to end, timeouts, bad input."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest
from enginetools import produce

import everstream as es
from everstream.engine.testing import read_topic
from everstream.errors import PlanError
from everstream.finance import patterns, payments
from everstream.log import Log

BASE = 1_767_225_600_000


def _run(log: Log, app: es.App) -> None:
    with app.runner(log, poll_timeout=0.01) as r:
        r.catch_up()
        r.finish()


def test_card_testing_end_to_end_equals_batch_find(log: Log, names: Callable[[str], str]) -> None:
    """Out-of-order authorizations (2 s disorder, 2 s watermark): every injected card, nothing else,
    and the same rows (events included) as es.cep.find over the whole frame."""
    sim = payments.card_authorizations(20_000, seed=3, cards=2_000)
    src, out = names("auths"), names("alerts")
    produce(log, src, sim.events.drop("seq"), partitions=2, key="card", chunk=4_000)
    app = es.App(names("cep"))
    app.stream(src).with_watermark("ts", max_delay="2s").match(
        patterns.card_testing(), by="card", name="card_testing").to(out)
    _run(log, app)
    got = read_topic(log, out)
    assert sorted(got["card"].to_list()) == sim.cases["card"].to_list()
    want = es.cep.find(patterns.card_testing(), sim.events.drop("seq"), by="card", time="ts")
    assert isinstance(want, pl.DataFrame)
    key = ["card", "match_start"]
    g = got.with_columns(pl.col("match_start", "match_end").dt.epoch("ms")).sort(key)
    w = want.with_columns(pl.col("match_start", "match_end").dt.epoch("ms")).sort(key)
    assert g.select("card", "match_start", "match_end").equals(w.select("card", "match_start", "match_end"))
    small = g["small"].to_list()
    assert all(len(s) >= 3 and all(e["amount"] < 2 for e in s) for s in small)
    assert [[e["amount"] for e in s] for s in small] == [[e["amount"] for e in s] for s in w["small"].to_list()]
    assert all(len(b) == 1 and b[0]["amount"] > 500 for b in g["large"].to_list())


def test_timed_out_partial_matches_go_to_the_side_topic(log: Log, names: Callable[[str], str]) -> None:
    df = pl.DataFrame({
        "ts": [BASE + s * 1000 for s in (0, 10, 20, 30, 1000, 2000, 2001)],
        "card": ["c1", "c1", "c1", "c2", "c2", "c2", "c2"],
        "amount": [1.0, 1.0, 900.0, 1.0, 1.5, 1.2, 700.0],
    })
    src, out = names("auths"), names("alerts")
    produce(log, src, df, key="card")
    app = es.App(names("cep"))
    pat = es.pattern("small").where(pl.col("amount") < 2).times(2).next("big").where(pl.col("amount") > 500) \
        .within("1m").after_match("skip_past_last_event")
    app.stream(src).with_watermark("ts").match(pat, by="card", name="m", timeouts=names("timeouts")).to(out)
    _run(log, app)
    got = read_topic(log, out)
    assert got.select("card").to_series().to_list() == ["c1"]
    assert [e["amount"] for e in got["small"][0]] == [1.0, 1.0]
    timed = read_topic(log, names("timeouts"))
    # c2: 1.0 at 30 s starts a partial that times out (next small 970 s later); 1.5 and 1.2 are 1000 s apart
    assert sorted(timed["card"].to_list()) == ["c2", "c2", "c2"]
    assert set(timed.columns) >= {"card", "pattern", "match_start", "timed_out_at", "small", "big"}


def test_a_condition_on_a_missing_column_is_a_plan_error(log: Log, names: Callable[[str], str]) -> None:
    df = pl.DataFrame({"ts": [BASE, BASE + 1], "card": ["a", "a"], "amount": [1.0, 2.0]})
    src = names("auths")
    produce(log, src, df, key="card")
    app = es.App(names("cep"))
    pat = es.pattern("small").where(pl.col("amont") < 2).followed_by("big").where(pl.col("amount") > 5)
    app.stream(src).with_watermark("ts").match(pat, by="card", name="m").to(names("out"))
    with pytest.raises(PlanError, match=r"step 'm'.*\['amont'\].*amount"):
        _run(log, app)


def test_bad_patterns_are_plan_errors() -> None:
    app = es.App("bad")
    s = app.stream("auths")
    timed = s.with_watermark("ts")
    with pytest.raises(PlanError, match="no stage"):
        es.cep.Pattern().where(pl.col("x") > 1)
    with pytest.raises(PlanError, match="at least one stage"):
        timed.match(es.cep.Pattern(), by="card")
    with pytest.raises(PlanError, match="takes a pattern"):
        timed.match("small -> big", by="card")
    with pytest.raises(PlanError, match="needs event time"):
        s.match(es.pattern("a").where(pl.col("x") > 1), by="card")
    with pytest.raises(PlanError, match="no time bound"):
        es.pattern("a").followed_by("b").not_followed_by("c").where(pl.col("x") > 1).check()
    with pytest.raises(PlanError, match="used twice"):
        es.pattern("a").followed_by("a")
    with pytest.raises(PlanError, match="clash"):
        timed.match(es.pattern("card").where(pl.col("x") > 1), by="card")
    with pytest.raises(PlanError, match="loops only"):
        es.pattern("a").greedy().followed_by("b").check()
    with pytest.raises(PlanError, match="condition"):
        es.pattern("a").where(42)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="times"):
        es.pattern("a").times(0)
    with pytest.raises(PlanError, match="no positive stage"):
        es.pattern("a").followed_by("b").after_match(es.cep.skip_to_last("zz")).check()


def test_python_condition_errors_name_the_step(log: Log, names: Callable[[str], str]) -> None:
    df = pl.DataFrame({"ts": [BASE, BASE + 1], "card": ["a", "a"], "amount": [1.0, 2.0]})
    src = names("auths")
    produce(log, src, df, key="card")
    app = es.App(names("cep"))
    pat = es.pattern("a").where(lambda e: e["nope"] > 1).followed_by("b")
    app.stream(src).with_watermark("ts").match(pat, by="card", name="m").to(names("out"))
    with pytest.raises(es.EverstreamError, match=r"step 'm'.*KeyError"):
        _run(log, app)


def test_lazy_card_testing_across_crashes_equals_eager_find(log: Log, names: Callable[[str], str]) -> None:
    """W5's setting (no time-out topic: lazy per-key evaluation, parked rows in the snapshots) on dense
    authorizations across 3 crashes with exactly-once: the matches of the eager es.cep.find."""
    from test_exactly_once_joins_cep import CARD_TESTING, _matches, card_auths, run_with_crashes

    from everstream.cep.operator import MatchOp
    from everstream.engine import plan as p
    from everstream.engine.testing import FakeServices

    step = p.Match("card_testing", ("src",), pattern=CARD_TESTING, by=("card",), timeouts=False)
    assert MatchOp(step, FakeServices()).parked is not None  # the engine builds this operator: lazy
    df = card_auths(3000, seed=25)
    src, out = names("auths"), names("alerts")
    app = es.App(names("cep-lazy"))
    app.stream(src).with_watermark("ts", max_delay="2s").match(CARD_TESTING, by="card", name="card_testing",
                                                                timeouts=False).to(out)
    assert run_with_crashes(log, app, [[(src, piece, "card")] for piece in _split(df, 4)]) > 0
    want = es.cep.find(CARD_TESTING, df, by="card", time="ts", lazy=False)
    assert isinstance(want, pl.DataFrame) and want.height > 10
    assert _matches(read_topic(log, out)) == _matches(want)


def _split(df: pl.DataFrame, n: int) -> list[pl.DataFrame]:
    size = -(-df.height // n)
    return [df.slice(i * size, size) for i in range(n)]


def test_a_condition_failing_on_the_data_is_a_plan_error_naming_where() -> None:
    """The vectorized pre-filter (lazy and eager alike) on a column of the wrong type: a PlanError naming
    the step, topic and partition and the fix, not a crash deep in Polars."""
    from everstream.cep.operator import MatchOp
    from everstream.engine import plan as p
    from everstream.engine.aggregates import EVENT_TIME
    from everstream.engine.operators import Ctx
    from everstream.engine.testing import FakeServices

    df = pl.DataFrame({"ts": [BASE, BASE + 1], "card": ["a", "a"], "amount": ["1.0", "x"]})
    for timeouts in (False, True):
        op = MatchOp(p.Match("m", ("src",), pattern=patterns.card_testing(), by=("card",), timeouts=timeouts),
                     FakeServices())
        assert (op.parked is not None) == (not timeouts)
        with pytest.raises(PlanError, match=r"step 'm'.*failed on the data.*types.*topic 'auths', partition 1"):
            op.process(df.with_columns(pl.col("ts").alias(EVENT_TIME)), Ctx("auths", 1))
