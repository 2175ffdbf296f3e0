"""Every pattern operator against the brute-force reference on random sequences (hypothesis).

A random pattern is built twice from the same choices: as an ``es.pattern`` with Polars (or
Python-function) conditions, and as plain-Python stages for ``brute.matches``. The NFA (through
``es.cep.find`` and through the streaming operator fed out-of-order batches) must emit exactly the
reference's matches, in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from brute import RStage, matches, timed_out
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import everstream as es
from everstream.cep.operator import MatchOp
from everstream.engine import plan as p
from everstream.engine import state
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import WATERMARK, Ctx
from everstream.engine.testing import FakeServices
from everstream.engine.time import MAX_TIME
from everstream.finance.patterns import card_testing

CONDS: dict[str, tuple[pl.Expr, Callable[[dict[str, Any]], bool]]] = {
    "a": (pl.col("v") == "a", lambda e: e["v"] == "a"),
    "b": (pl.col("v") == "b", lambda e: e["v"] == "b"),
    "c": (pl.col("v") == "c", lambda e: e["v"] == "c"),
    "big": (pl.col("n") >= 2, lambda e: e["n"] >= 2),
    "not_c": (pl.col("v") != "c", lambda e: e["v"] != "c"),
}
QUANT = ["one", "times2", "times1_2", "one_or_more", "times2_more"]


def _first(m: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    return next((evs[0] for evs in m.values() if evs), None)


#: conditions that look at the partial match (callables only): ANDed to a stage's condition
MATCH_CONDS: dict[str, Callable[[dict[str, Any], dict[str, list[dict[str, Any]]]], bool]] = {
    # the event's v equals the match's first event's v (any v when nothing is taken yet)
    "like_first": lambda e, m: (f := _first(m)) is None or e["v"] == f["v"],
    # the event's n is at least the number of events taken so far, minus one
    "n_ge_taken": lambda e, m: e["n"] >= sum(len(v) for v in m.values()) - 1,
}


Pred = Callable[[dict[str, Any]], bool]


def _either(a: Pred, b: Pred) -> Pred:
    return lambda e: a(e) or b(e)


def _both(a: Pred, b: Callable[[dict[str, Any], dict[str, list[dict[str, Any]]]], bool]) -> Callable[..., bool]:
    return lambda e, m: a(e) and b(e, m)


@st.composite
def patterns(draw: st.DrawFn, lazy_only: bool = False
             ) -> tuple[es.cep.Pattern, list[RStage], int | None, tuple[str, str | None]]:
    """A random pattern and its reference stages. ``lazy_only``: only patterns lazy per-key evaluation
    applies to (a time bound; no strict contiguity, not_next, Python condition or trailing negation)."""
    contigs = ["relaxed", "any"] if lazy_only else ["strict", "relaxed", "any"]
    mfns: list[str | None] = [None] if lazy_only else [None, None, None, *sorted(MATCH_CONDS)]
    n_pos = draw(st.integers(1, 3))
    spec: list[dict[str, Any]] = []
    for i in range(n_pos):
        if i > 0 and draw(st.integers(0, 4)) == 0:
            neg_contigs = ["relaxed"] if lazy_only else ["strict", "relaxed"]
            spec.append({"neg": True, "contig": draw(st.sampled_from(neg_contigs)),
                         "cond": draw(st.sampled_from(sorted(CONDS))),
                         "mfn": draw(st.sampled_from(mfns))})
        s: dict[str, Any] = {"neg": False, "contig": draw(st.sampled_from(contigs)),
                             "cond": draw(st.sampled_from(sorted(CONDS))),
                             "or": draw(st.sampled_from([None, None, *sorted(CONDS)])),
                             "fn": not lazy_only and draw(st.integers(0, 5)) == 0,
                             "mfn": draw(st.sampled_from([None, *mfns])),
                             "quant": draw(st.sampled_from(QUANT)),
                             "optional": draw(st.integers(0, 4)) == 0,
                             "inner": draw(st.sampled_from(contigs)),
                             "until": draw(st.sampled_from([None, None, None, *sorted(CONDS)])),
                             "greedy": draw(st.integers(0, 3)) == 0}
        spec.append(s)
    within = draw(st.sampled_from([3, 6] if lazy_only else [None, None, 3, 6]))
    # not_followed_by at the end (needs within)
    if within is not None and not lazy_only and draw(st.integers(0, 2)) == 0:
        for _ in range(draw(st.integers(1, 2))):
            spec.append({"neg": True, "contig": "relaxed", "cond": draw(st.sampled_from(sorted(CONDS))),
                         "mfn": draw(st.sampled_from([None, None, None, *sorted(MATCH_CONDS)]))})
    skip_kind = draw(st.sampled_from(["no_skip", "skip_to_next", "skip_past_last_event", "skip_to_first",
                                      "skip_to_last"]))
    # legalize: no negative after an optional stage; greedy needs a mandatory stage after it
    positives = [s for s in spec if not s["neg"]]
    if all(s["optional"] for s in positives):
        positives[-1]["optional"] = False
    for i, s in enumerate(spec):
        if s["neg"] and spec[i - 1].get("optional"):
            spec[i - 1]["optional"] = False
    names = [f"s{i}" for i in range(len(spec))]
    pos_names = [nm for nm, s in zip(names, spec, strict=True) if not s["neg"]]
    skip_stage = draw(st.sampled_from(pos_names)) if skip_kind in ("skip_to_first", "skip_to_last") else None
    if skip_kind == "skip_to_first" and skip_stage == pos_names[0]:
        skip_kind, skip_stage = "skip_to_next", None

    pat: es.cep.Pattern | None = None
    ref: list[RStage] = []
    for idx, (nm, s) in enumerate(zip(names, spec, strict=True)):
        expr, fn = CONDS[s["cond"]]
        if pat is None:
            pat = es.pattern(nm)
        elif s["neg"]:
            pat = pat.not_next(nm) if s["contig"] == "strict" else pat.not_followed_by(nm)
        else:
            pat = {"strict": pat.next, "relaxed": pat.followed_by, "any": pat.followed_by_any}[s["contig"]](nm)
        mfn = MATCH_CONDS[s["mfn"]] if s["mfn"] else None
        if s["neg"]:
            pat = pat.where(expr)
            neg: Callable[..., bool] = fn
            if mfn is not None:
                pat, neg = pat.where(mfn), _both(fn, mfn)
            ref.append(RStage(nm, neg, negative=True, contig=s["contig"]))
            continue
        cond: Callable[..., bool] = fn
        pat = pat.where((lambda e, m, _f=fn: _f(e)) if s["fn"] else expr)
        if s["or"] is not None:
            e2, f2 = CONDS[s["or"]]
            pat = pat.or_where(e2)
            cond = _either(fn, f2)
        if mfn is not None:
            pat, cond = pat.where(mfn), _both(cond, mfn)
        lo, hi = {"one": (1, 1), "times2": (2, 2), "times1_2": (1, 2), "one_or_more": (1, None),
                  "times2_more": (2, None)}[s["quant"]]
        if (lo, hi) != (1, 1):
            pat = pat.times(lo, hi)
        loops = hi is None or hi > 1
        r = RStage(nm, cond, contig=s["contig"] if idx else "relaxed", min=lo, max=hi)
        if s["optional"]:
            pat, r.optional = pat.optional(), True
        if loops:
            if s["inner"] == "strict":
                pat = pat.consecutive()
            elif s["inner"] == "any":
                pat = pat.allow_combinations()
            r.inner = s["inner"]
            if s["until"] is not None:
                ue, uf = CONDS[s["until"]]
                pat, r.until = pat.until(ue), uf
            later = [t for t in spec[idx + 1:] if not t["neg"]]
            if s["greedy"] and any(not t["optional"] for t in later):
                pat, r.greedy = pat.greedy(), True
        ref.append(r)
    assert pat is not None
    if within is not None:
        pat = pat.within(within / 1000)  # seconds -> ms; event times are 1, 2, ... ms
    skip: es.cep.AfterMatch = (es.cep.skip_to_first(skip_stage) if skip_kind == "skip_to_first" and skip_stage
                               else es.cep.skip_to_last(skip_stage) if skip_kind == "skip_to_last" and skip_stage
                               else es.cep.AfterMatch(skip_kind))  # type: ignore[arg-type]
    return pat.after_match(skip), ref, within, (skip_kind, skip_stage)


@st.composite
def event_lists(draw: st.DrawFn) -> pl.DataFrame:
    rows = []
    for key in ("k1", "k2"):
        n = draw(st.integers(0, 8))
        t = 0
        for i in range(n):
            t += draw(st.integers(1, 2))
            rows.append({"key": key, "ts": t, "i": i, "v": draw(st.sampled_from("abc")), "n": draw(st.integers(0, 3))})
    return pl.DataFrame(rows, schema={"key": pl.String, "ts": pl.Int64, "i": pl.Int64, "v": pl.String,
                                      "n": pl.Int64})


def _expected(ref: list[RStage], df: pl.DataFrame, within: int | None,
              skip: tuple[str, str | None]) -> list[tuple[str, int, int, tuple[tuple[int, str], ...]]]:
    out = []
    for key in ("k1", "k2"):
        evs = df.filter(pl.col("key") == key).sort("ts").to_dicts()
        out += [(key, *m) for m in matches(ref, evs, within=within, skip=skip)]
    return out


def _got(found: pl.DataFrame, stages: list[str]) -> list[tuple[str, int, int, tuple[tuple[int, str], ...]]]:
    out = []
    for row in found.iter_rows(named=True):
        pairs = sorted((e["i"], s) for s in stages for e in row[s])
        out.append((row["key"], pairs[0][0], pairs[-1][0], tuple(pairs)))
    return out


def _stage_names(pat: es.cep.Pattern) -> list[str]:
    return [s.name for s in pat.stages if not s.negative]


def _expected_timeouts(ref: list[RStage], df: pl.DataFrame, within: int,
                       skip: tuple[str, str | None]) -> list[tuple[str, int, int, tuple[tuple[int, str], ...]]]:
    out = []
    for key in ("k1", "k2"):
        evs = df.filter(pl.col("key") == key).sort("ts").to_dicts()
        out += [(key, *m) for m in timed_out(ref, evs, within=within, skip=skip)]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(), event_lists())
def test_find_equals_brute_force(case: Any, df: pl.DataFrame) -> None:
    pat, ref, within, skip = case
    want = _expected(ref, df, within, skip)
    found, gone = es.cep.find(pat, df, by="key", time="ts", timeouts=True)
    got = _got(found, _stage_names(pat))
    assert got == want, f"pattern {pat.describe()}\nevents {df.to_dicts()}"
    # without time-outs, lazy per-key evaluation (where it applies) and eager feeding find the same
    for lazy in (True, False):
        alone = es.cep.find(pat, df, by="key", time="ts", lazy=lazy)
        assert isinstance(alone, pl.DataFrame)
        assert _got(alone, _stage_names(pat)) == want, f"lazy={lazy} pattern {pat.describe()}\nevents {df.to_dicts()}"
    if within is not None:  # timed-out partial matches (the side output)
        assert sorted(_got(gone, _stage_names(pat))) == _expected_timeouts(ref, df, within, skip), \
            f"time-outs of pattern {pat.describe()}\nevents {df.to_dicts()}"


def arrival(df: pl.DataFrame, *, delay: int, seed: int) -> pl.DataFrame:
    """``df`` in a random arrival order, each row at most ``delay`` ms late, with event time and the
    watermark each row arrives with (the largest event time before it, minus ``delay``)."""
    rnd = random.Random(seed)
    order = sorted(range(df.height), key=lambda i: df["ts"][i] + rnd.uniform(0, delay))
    arrived = df[order].with_columns(pl.col("ts").alias(EVENT_TIME))
    seen = -MAX_TIME
    wms = []
    for t in arrived["ts"].to_list():
        wms.append(seen - delay)
        seen = max(seen, t)
    return arrived.with_columns(pl.Series(WATERMARK, wms, dtype=pl.Int64))


def drive(make: Callable[[], MatchOp], arrived: pl.DataFrame, *, delay: int, chunk: int,
          cut: int | None = None, restore: Callable[[], MatchOp] | None = None,
          parked_at: list[int] | None = None) -> tuple[pl.DataFrame, MatchOp]:
    """Push ``arrived`` through an operator in chunks, advancing to the largest event time seen minus
    ``delay`` after each; before chunk number ``cut``, snapshot it (encoded and decoded, as a changelog
    would) and continue on a fresh operator from ``restore`` (default ``make``) restored from it.
    ``parked_at`` collects the chunk numbers before which the operator held parked rows."""
    op = make()
    outs = []
    seen = -MAX_TIME
    for i, start in enumerate(range(0, arrived.height, chunk)):
        if parked_at is not None and op.parked is not None and op.parked.height:
            parked_at.append(i)
        if i == cut:
            snap = state.decode(state.encode(op.snapshot_state()))
            fresh = (restore or make)()
            fresh.restore_state(snap)
            fresh.services = op.services
            op = fresh
        part = arrived.slice(start, chunk)
        op.process(part, Ctx("in", 0))
        seen = max(seen, int(part["ts"].max()))  # type: ignore[arg-type]
        got = op.advance(seen - delay)
        if got is not None:
            outs.append(got)
    got = op.advance(MAX_TIME)
    if got is not None:
        outs.append(got)
    return (pl.concat(outs) if outs else pl.DataFrame()), op


def run_operator(pat: es.cep.Pattern, df: pl.DataFrame, *, delay: int, seed: int, chunk: int = 3,
                 by: tuple[str, ...] = ("key",), timeouts: bool = True,
                 lazy: bool = True) -> tuple[pl.DataFrame, FakeServices]:
    """The streaming operator over ``df`` arriving out of order by at most ``delay`` ms, in chunks.
    (With ``timeouts``, the step has a time-out side output, so it always evaluates eagerly.)"""
    services = FakeServices(late="keep", dead="fail")
    step = p.Match("m", ("src",), pattern=pat, by=by, timeouts=timeouts)

    def make() -> MatchOp:
        return MatchOp(step, services, lazy=lazy)

    assert (make().parked is not None) == (lazy and not timeouts and make().compiled.lazy_ending_bits() is not None)
    out, _ = drive(make, arrival(df, delay=delay, seed=seed), delay=delay, chunk=chunk)
    assert not services.late_rows
    return out, services


@pytest.mark.parametrize("path", ["eager", "lazy"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(), event_lists(), st.integers(0, 4), st.integers(0, 1000), st.integers(1, 5))
def test_out_of_order_within_the_bound_equals_in_order(path: str, case: Any, df: pl.DataFrame, delay: int, seed: int,
                                                       chunk: int) -> None:
    """eager: the step reports time-outs (always eager); lazy: it does not (lazy where the pattern allows)."""
    pat, ref, within, skip = case
    want = _expected(ref, df, within, skip)
    out, services = run_operator(pat, df, delay=delay, seed=seed, chunk=chunk, timeouts=path == "eager")
    got = _got(out, _stage_names(pat)) if out.height else []
    # per key, the operator emits in the reference's order; keys interleave by release
    for key in ("k1", "k2"):
        assert [g for g in got if g[0] == key] == [w for w in want if w[0] == key], pat.describe()
    if path == "lazy":
        assert not services.side
        return
    # time-outs (partial matches closed by a later event or by the watermark) equal those of find
    _, gone = es.cep.find(pat, df, by="key", time="ts", timeouts=True)
    side = pl.concat(services.side) if services.side else gone.clear()
    assert sorted(_got(side, _stage_names(pat))) == sorted(_got(gone, _stage_names(pat))), pat.describe()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(lazy_only=True), event_lists(), st.integers(0, 4), st.integers(0, 1000), st.integers(1, 4),
       st.integers(0, 6), st.booleans())
def test_lazy_equals_eager_with_restore(case: Any, df: pl.DataFrame, delay: int, seed: int, chunk: int, cut: int,
                                        into_eager: bool) -> None:
    """Lazy per-key evaluation emits exactly what eager feeding emits — same rows, same order, same
    batches — on random patterns it applies to and out-of-order arrival; also when its state is
    snapshotted before chunk ``cut`` and restored (exactly-once restart) into a lazy operator, or into an
    eager one (which feeds the parked rows to its NFA on restore); and so at every chunk before which
    rows were parked (alternately into lazy and eager operators)."""
    pat, ref, within, skip = case
    arrived = arrival(df, delay=delay, seed=seed)
    step = p.Match("m", ("src",), pattern=pat, by=("key",), timeouts=False)

    def make(lazy: bool) -> Callable[[], MatchOp]:
        return lambda: MatchOp(step, FakeServices(late="fail", dead="fail"), lazy=lazy)

    assert make(True)().parked is not None and make(False)().parked is None
    eager, _ = drive(make(False), arrived, delay=delay, chunk=chunk)
    parked_at: list[int] = []
    lazy, op = drive(make(True), arrived, delay=delay, chunk=chunk, parked_at=parked_at)
    assert lazy.equals(eager), f"pattern {pat.describe()}\nevents {df.to_dicts()}"
    assert op.parked is not None and op.parked.height == 0 and not op.matcher.state  # all aged out at the end
    for i, at in enumerate([cut, *parked_at]):
        into = into_eager if i == 0 else bool(i % 2)
        restored, _ = drive(make(True), arrived, delay=delay, chunk=chunk, cut=at, restore=make(not into))
        assert restored.equals(eager), f"restored before chunk {at} (into eager: {into}): {pat.describe()}"
    want = _expected(ref, df, within, skip)  # and both equal the reference
    got = _got(eager, _stage_names(pat)) if eager.height else []
    assert sorted(got) == sorted(want), pat.describe()


def test_lazy_parks_rows_until_an_ending_row_and_drops_them_after_the_time_bound() -> None:
    """Card testing: small amounts wait, columnar, outside the NFA; a large one feeds its card's smalls to
    the NFA; a small is kept while a later large one could still be within the time bound of it (the
    boundary: 12.4 s - 2.401 s < 10 s), and dropped once none can."""
    rows = [("c1", 1_000, 1.0), ("c1", 2_000, 1.5), ("c2", 2_401, 1.0), ("c1", 3_000, 1.2),  # chunk 1
            ("c1", 4_000, 900.0), ("c2", 5_000, 1.0), ("c2", 6_000, 1.9),  # chunk 2
            ("c2", 12_400, 700.0), ("c3", 12_500, 1.0)]  # chunk 3
    df = pl.DataFrame(rows, schema={"card": pl.String, "ts": pl.Int64, "amount": pl.Float64}, orient="row")
    df = df.with_columns(pl.col("ts").alias(EVENT_TIME))
    op = MatchOp(p.Match("m", ("src",), pattern=card_testing(within="10s"), by=("card",), timeouts=False),
                 FakeServices())
    assert op.parked is not None
    op.process(df.slice(0, 4), Ctx("in", 0))
    assert op.advance(3_500) is None
    assert op.parked.height == 4 and not op.matcher.state  # nothing fed: no large amount yet
    op.process(df.slice(4, 3), Ctx("in", 0))
    out = op.advance(12_400)  # releases c1's large amount: its three smalls and it go to the NFA
    assert out is not None and out["card"].to_list() == ["c1"] and out["small"].list.len().to_list() == [3]
    assert op.parked.frame is not None and op.parked.frame[EVENT_TIME].to_list() == [2_401, 5_000, 6_000]  # c2's
    op.process(df.slice(7), Ctx("in", 0))
    out = op.advance(12_600)
    assert out is not None and out["card"].to_list() == ["c2"]
    assert out["small"].list.eval(pl.element().struct.field("ts")).to_list() == [[2_401, 5_000, 6_000]]
    assert op.parked.frame is not None and op.parked.frame["card"].to_list() == ["c3"]
    assert op.store.frame is not None  # the store keeps the parked row (a later match would output it)
    assert op.advance(22_500) is None
    assert op.parked.height == 0 and op.store.frame is None  # 12.5 s + 10 s <= 22.5 s: in no future match


def test_flink_documented_skip_examples() -> None:
    """Flink's documentation example: pattern b+ c (greedy-free, strict loop) over b1 b2 b3 c."""
    df = pl.DataFrame({"key": ["k"] * 4, "ts": [1, 2, 3, 4], "i": [0, 1, 2, 3], "v": ["b", "b", "b", "c"],
                       "n": [0] * 4})
    base = es.pattern("b").where(pl.col("v") == "b").one_or_more().consecutive().greedy() \
        .followed_by("c").where(pl.col("v") == "c")
    want = {
        "no_skip": [(0, 3), (1, 3), (2, 3)],
        "skip_to_next": [(0, 3), (1, 3), (2, 3)],
        "skip_past_last_event": [(0, 3)],
    }
    for kind, expect in want.items():
        found = es.cep.find(base.after_match(kind), df, by="key")
        assert isinstance(found, pl.DataFrame)
        got = [(r[1], r[2]) for r in _got(found, ["b", "c"])]
        assert got == expect, kind
    found = es.cep.find(base.after_match(es.cep.skip_to_last("b")), df, by="key")
    assert isinstance(found, pl.DataFrame)
    assert [(r[1], r[2]) for r in _got(found, ["b", "c"])] == [(0, 3), (2, 3)]


@pytest.mark.parametrize("kind", ["no_skip", "skip_past_last_event"])
def test_relaxed_loop_takes_every_length(kind: str) -> None:
    """Non-greedy relaxed a+ b over a1 x a2 b: a1 b, a1 a2 b, a2 b (no_skip), like Flink."""
    df = pl.DataFrame({"key": ["k"] * 4, "ts": [1, 2, 3, 4], "i": [0, 1, 2, 3], "v": ["a", "c", "a", "b"],
                       "n": [0] * 4})
    pat = es.pattern("a").where(pl.col("v") == "a").one_or_more().followed_by("b").where(pl.col("v") == "b")
    found = es.cep.find(pat.after_match(kind), df, by="key")
    assert isinstance(found, pl.DataFrame)
    got = [r[3] for r in _got(found, ["a", "b"])]
    full = [((0, "a"), (2, "a"), (3, "b")), ((0, "a"), (3, "b")), ((2, "a"), (3, "b"))]
    assert got == (full if kind == "no_skip" else full[:1])
