"""``not_followed_by`` at the end of a pattern (with ``within``): Flink's semantics.

A match that reaches its last positive stage is *pending*: it completes when its window closes
(the watermark, or a later event of its key, reaches first event time + within) with no forbidden
event seen since its last event. The random-pattern properties against the brute-force reference
(``test_cep_properties.py``) cover the matching itself; these tests pin the timing of emission,
the order of time-outs and emissions, the exactly-once state (pending matches survive snapshots
and crashes) and the engine on both logs against a plain-Python reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from enginetools import BASE_MS, produce
from test_exactly_once_joins_cep import _feed, card_auths, run_with_crashes

import everstream as es
from everstream.cep.operator import MatchOp
from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import WATERMARK, Ctx
from everstream.engine.testing import FakeServices, read_topic
from everstream.errors import PlanError
from everstream.log import Log

#: a large authorization not followed by a small one on the same card within 15 s
UNCHALLENGED = (es.pattern("large").where(pl.col("amount") > 500)
                .not_followed_by("small").where(pl.col("amount") < 2).within("15s"))


def unchallenged_reference(df: pl.DataFrame, within_ms: int = 15_000) -> list[tuple[str, int]]:
    """(card, ts) of each authorization over 500.00 with no authorization under 2.00 on the card after
    it (in (ts, arrival) order) and before ts + within: plain Python over the rows."""
    rows = df.with_row_index("_i").sort("card", "ts", "_i").select("card", "ts", "amount").rows()
    out = []
    for i, (card, ts, amount) in enumerate(rows):
        if amount <= 500:
            continue
        j = i + 1
        killed = False
        while j < len(rows) and rows[j][0] == card and rows[j][1] < ts + within_ms:
            killed = killed or rows[j][2] < 2
            j += 1
        if not killed:
            out.append((card, ts))
    return sorted(out)


def test_a_pending_match_is_emitted_when_the_watermark_closes_its_window() -> None:
    """a b !c within 5 ms: a@1 b@2 c@3 is killed; a@10 b@12 (x@13, c@15 after the window) is emitted
    once the watermark reaches 15, not before, with event time 14 (the window's last instant)."""
    pat = (es.pattern("a").where(pl.col("v") == "a").followed_by("b").where(pl.col("v") == "b")
           .not_followed_by("c").where(pl.col("v") == "c").within(0.005))
    df = pl.DataFrame({"key": ["k"] * 7, "ts": [1, 2, 3, 10, 12, 13, 15], "v": list("abcabxc")})
    op = MatchOp(p.Match("m", ("src",), pattern=pat, by=("key",), timeouts=False),
                 FakeServices(late="keep", dead="fail"))
    op.process(df.head(6).with_columns(pl.col("ts").alias(EVENT_TIME)), Ctx("in", 0))
    assert op.advance(14) is None  # a@10 b@12 released, its window [10, 15) not closed yet
    assert op.matcher.partial_count() >= 1
    out = op.advance(15)
    assert out is not None and out.height == 1
    row = out.row(0, named=True)
    assert [e["ts"] for e in row["a"]] == [10] and [e["ts"] for e in row["b"]] == [12]
    assert row[EVENT_TIME] == 14 and row[WATERMARK] == 14
    assert op.advance(100) is None
    found = es.cep.find(pat, df, by="key", time="ts")
    assert isinstance(found, pl.DataFrame)
    assert found.height == 1 and [e["ts"] for e in found["b"][0]] == [12]
    # a forbidden event inside the window kills it, one at the window's end does not
    late_c = df.with_columns(pl.when(pl.col("ts") == 13).then(pl.lit("c")).otherwise(pl.col("v")).alias("v"))
    assert es.cep.find(pat, late_c, by="key", time="ts").height == 0  # type: ignore[union-attr]
    edge = df.with_columns(pl.when(pl.col("ts") == 15).then(14).otherwise(pl.col("ts")).alias("ts"))
    assert es.cep.find(pat, edge.filter(pl.col("ts") != 13), by="key", time="ts").height == 0  # type: ignore[union-attr]
    assert es.cep.find(pat, df.filter(pl.col("ts") != 13), by="key", time="ts").height == 1  # type: ignore[union-attr]


def test_a_partial_match_times_out_before_a_later_closing_pending_match_prunes_it() -> None:
    """Window-close order: x@1 starts a partial (its b needs an 'a' first) closing at 6; a@2 b@3 is a
    pending match closing at 7 whose skip (past last event) would prune x's partial. The partial
    closes first, so it is a time-out, whether the watermark passes 6 and 7 at once or one by one."""
    pat = (es.pattern("a").where(pl.col("v").is_in(["a", "x"]))
           .followed_by("b").where(pl.col("v") == "b").where(lambda e, m: m["a"][0]["v"] == "a")
           .not_followed_by("c").where(pl.col("v") == "c").within(0.005).after_match("skip_past_last_event"))
    df = pl.DataFrame({"key": ["k"] * 3, "ts": [1, 2, 3], "v": ["x", "a", "b"]})
    found, gone = es.cep.find(pat, df, by="key", time="ts", timeouts=True)
    assert [[e["v"] for e in r] for r in found["a"].to_list()] == [["a"]]
    assert [[e["v"] for e in r] for r in gone["a"].to_list()] == [["x"]]
    for steps in ([100], [6, 100], [5, 6, 7, 100]):
        services = FakeServices(late="keep", dead="fail")
        op = MatchOp(p.Match("m", ("src",), pattern=pat, by=("key",), timeouts=True), services)
        op.process(df.with_columns(pl.col("ts").alias(EVENT_TIME)), Ctx("in", 0))
        out = [o for o in (op.advance(w) for w in steps) if o is not None]
        assert sum(o.height for o in out) == 1, steps
        assert [[e["v"] for e in r] for s in services.side for r in s["a"].to_list()] == [["x"]], steps


def test_a_pattern_may_end_only_in_not_followed_by_with_within() -> None:
    a = es.pattern("a").where(pl.col("x") > 1)
    with pytest.raises(PlanError, match=r"no time bound.*within"):
        a.not_followed_by("c").where(pl.col("x") > 5).check()
    with pytest.raises(PlanError, match=r"ends with not_next stage 'c'"):
        a.not_next("c").where(pl.col("x") > 5).within("1s").check()
    with pytest.raises(PlanError, match=r"ends with not_next stage 'c'"):
        a.not_next("c").where(pl.col("x") > 5).not_followed_by("d").where(pl.col("x") > 6).within("1s").check()
    with pytest.raises(PlanError, match="greedy"):
        a.one_or_more().greedy().not_followed_by("c").where(pl.col("x") > 5).within("1s").check()
    assert a.not_followed_by("c").where(pl.col("x") > 5).within("1s").check().trailing


@pytest.mark.parametrize("pattern", [
    UNCHALLENGED,
    es.pattern("small").where(pl.col("amount") < 2).times(2).followed_by("large").where(pl.col("amount") > 500)
    .not_followed_by("again").where(lambda e, m: e["amount"] > 500).within("90s")
    .after_match("skip_past_last_event"),
], ids=["unchallenged", "two_small_large_then_no_large"])
def test_pending_matches_survive_a_snapshot(pattern: es.cep.Pattern) -> None:
    """Pending matches are exactly-once state: a fresh operator restored mid-stream emits what the
    uninterrupted one emits, in the same order."""
    df = card_auths(2500, seed=41, cards=60, span_ms=300_000).with_columns(pl.col("ts").alias(EVENT_TIME))
    step = p.Match("m", ("src",), pattern=pattern, by=("card",), timeouts="t")
    batches = [(0, df.slice(i, 100)) for i in range(0, df.height, 100)]

    def make() -> Any:
        return MatchOp(step, FakeServices(late="keep", dead="fail"))

    whole, _, _ = _feed(make, batches, None, lag=2000)
    assert whole.height > 10
    held = 0
    for cut in (5, len(batches) // 2, len(batches) - 3):
        got, _, snap = _feed(make, batches, cut, lag=2000)
        assert snap is not None
        held += sum(snap.tables["partials"].column("pending").to_pylist())
        assert got.equals(whole), f"restored at batch {cut}: the matches differ from the uninterrupted run"
    assert held > 0, "no pending match was held at a cut: the test tests little"


def test_unchallenged_large_authorizations_end_to_end(log: Log, names: Callable[[str], str]) -> None:
    """On both logs, out of order (1.5 s disorder, 2 s watermark), across 3 crashes without commit:
    exactly the plain-Python reference's matches, the same rows as es.cep.find."""
    df = card_auths(3000, seed=42, cards=40)
    src, out = names("auths"), names("alerts")
    app = es.App(names("cep-nfb"))
    app.stream(src).with_watermark("ts", max_delay="2s").match(UNCHALLENGED, by="card", name="unchallenged",
                                                                timeouts=False).to(out)
    size = -(-df.height // 4)
    assert run_with_crashes(log, app, [[(src, df.slice(i * size, size), "card")] for i in range(4)]) > 0
    got = read_topic(log, out)
    want = unchallenged_reference(df)
    assert len(want) > 20
    pairs = sorted(zip(got["card"].to_list(), got["match_start"].dt.epoch("ms").to_list(), strict=True))
    assert pairs == want
    assert (got["match_start"] == got["match_end"]).all()
    assert [r[0]["amount"] for r in got["large"].to_list()] == got["large"].list.first().struct.field("amount") \
        .to_list()
    found = es.cep.find(UNCHALLENGED, df, by="card", time="ts")
    assert isinstance(found, pl.DataFrame)
    assert sorted(zip(found["card"].to_list(), found["match_start"].dt.epoch("ms").to_list(), strict=True)) == want


def test_unchallenged_on_one_card_in_order(log: Log, names: Callable[[str], str]) -> None:
    """The last pending match of a stream closes when the source goes idle at the end (final watermark)."""
    ts = [BASE_MS + s * 1000 for s in (0, 10, 20, 200)]
    df = pl.DataFrame({"ts": ts, "card": ["c"] * 4, "amount": [900.0, 1.0, 800.0, 700.0]})
    src, out = names("auths"), names("alerts")
    produce(log, src, df, key="card")
    app = es.App(names("cep-nfb1"))
    app.stream(src).with_watermark("ts").match(UNCHALLENGED, by="card", name="m", timeouts=False).to(out)
    with app.runner(log, poll_timeout=0.01) as r:
        r.catch_up()
        r.finish()
    got = read_topic(log, out)
    assert got["match_start"].dt.epoch("ms").to_list() == [ts[2], ts[3]] == [t for _, t in unchallenged_reference(df)]
