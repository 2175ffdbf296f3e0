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
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import WATERMARK, Ctx
from everstream.engine.time import MAX_TIME

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
def patterns(draw: st.DrawFn) -> tuple[es.cep.Pattern, list[RStage], int | None, tuple[str, str | None]]:
    n_pos = draw(st.integers(1, 3))
    spec: list[dict[str, Any]] = []
    for i in range(n_pos):
        if i > 0 and draw(st.integers(0, 4)) == 0:
            spec.append({"neg": True, "contig": draw(st.sampled_from(["strict", "relaxed"])),
                         "cond": draw(st.sampled_from(sorted(CONDS))),
                         "mfn": draw(st.sampled_from([None, None, None, *sorted(MATCH_CONDS)]))})
        s: dict[str, Any] = {"neg": False, "contig": draw(st.sampled_from(["strict", "relaxed", "any"])),
                             "cond": draw(st.sampled_from(sorted(CONDS))),
                             "or": draw(st.sampled_from([None, None, *sorted(CONDS)])),
                             "fn": draw(st.integers(0, 5)) == 0,
                             "mfn": draw(st.sampled_from([None, None, None, None, *sorted(MATCH_CONDS)])),
                             "quant": draw(st.sampled_from(QUANT)),
                             "optional": draw(st.integers(0, 4)) == 0,
                             "inner": draw(st.sampled_from(["strict", "relaxed", "any"])),
                             "until": draw(st.sampled_from([None, None, None, *sorted(CONDS)])),
                             "greedy": draw(st.integers(0, 3)) == 0}
        spec.append(s)
    within = draw(st.sampled_from([None, None, 3, 6]))
    if within is not None and draw(st.integers(0, 2)) == 0:  # not_followed_by at the end (needs within)
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
    if within is not None:  # timed-out partial matches (the side output)
        assert sorted(_got(gone, _stage_names(pat))) == _expected_timeouts(ref, df, within, skip), \
            f"time-outs of pattern {pat.describe()}\nevents {df.to_dicts()}"


class _Services:
    app_name = "t"

    def __init__(self) -> None:
        self.side: list[pl.DataFrame] = []
        self.late_rows: list[pl.DataFrame] = []

    def dead_letters(self, letters: list[Any]) -> None:
        raise AssertionError(letters)

    def late(self, step: p.Step, df: pl.DataFrame) -> None:
        self.late_rows.append(df)

    def side_output(self, topic: str, df: pl.DataFrame) -> None:
        self.side.append(df)

    def now_ms(self) -> int:
        return 0

    def clock(self) -> float:
        return 0.0


def run_operator(pat: es.cep.Pattern, df: pl.DataFrame, *, delay: int, seed: int, chunk: int = 3,
                 by: tuple[str, ...] = ("key",)) -> tuple[pl.DataFrame, _Services]:
    """The streaming operator over ``df`` arriving out of order by at most ``delay`` ms, in chunks."""
    rnd = random.Random(seed)
    order = sorted(range(df.height), key=lambda i: df["ts"][i] + rnd.uniform(0, delay))
    arrived = df[order].with_columns(pl.col("ts").alias(EVENT_TIME))
    seen = -MAX_TIME
    wms = []
    for t in arrived["ts"].to_list():
        wms.append(seen - delay)
        seen = max(seen, t)
    arrived = arrived.with_columns(pl.Series(WATERMARK, wms, dtype=pl.Int64))
    services = _Services()
    step = p.Match("m", ("src",), pattern=pat, by=by, timeouts=True)
    op = MatchOp(step, services)  # type: ignore[arg-type]
    outs = []
    seen = -MAX_TIME
    for start in range(0, arrived.height, chunk):
        part = arrived.slice(start, chunk)
        op.process(part, Ctx("in", 0))
        seen = max(seen, int(part["ts"].max()))  # type: ignore[arg-type]
        got = op.advance(seen - delay)
        if got is not None:
            outs.append(got)
    got = op.advance(MAX_TIME)
    if got is not None:
        outs.append(got)
    assert not services.late_rows
    return (pl.concat(outs) if outs else pl.DataFrame()), services


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(), event_lists(), st.integers(0, 4), st.integers(0, 1000), st.integers(1, 5))
def test_out_of_order_within_the_bound_equals_in_order(case: Any, df: pl.DataFrame, delay: int, seed: int,
                                                       chunk: int) -> None:
    pat, ref, within, skip = case
    want = _expected(ref, df, within, skip)
    out, services = run_operator(pat, df, delay=delay, seed=seed, chunk=chunk)
    got = _got(out, _stage_names(pat)) if out.height else []
    # per key, the operator emits in the reference's order; keys interleave by release
    for key in ("k1", "k2"):
        assert [g for g in got if g[0] == key] == [w for w in want if w[0] == key], pat.describe()
    # time-outs (partial matches closed by a later event or by the watermark) equal those of find
    _, gone = es.cep.find(pat, df, by="key", time="ts", timeouts=True)
    side = pl.concat(services.side) if services.side else gone.clear()
    assert sorted(_got(side, _stage_names(pat))) == sorted(_got(gone, _stage_names(pat))), pat.describe()


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
