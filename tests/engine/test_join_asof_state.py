"""As-of join state kept as pieces (``everstream.engine.join_asof``), and the join state's fingerprint.

- ``stable_order`` (the packed sort) against NumPy's stable argsort, ties and wide spans included.
- The right rows (:class:`SortedPieces`) against a plain reference: every row ever added, sorted by
  time with ties in arrival order, less what pruning replaced; counts and heads by plain Python.
- The operator with tiny pieces (many of them, merged and split at every cycle) against Polars
  ``join_asof``, by re-running the poll-by-poll property of ``test_joins`` with ``PIECE_ROWS`` = 3.
- A replay where one input runs far ahead: the pieces the cycle does not need are left as they are
  (the same objects: not copied), and the result equals Polars.
- Restarting an exactly-once app whose steps after a join read other columns is refused (the held rows
  lack them): ``StateIncompatibleError`` naming the step, never rows with silent nulls; an unchanged app
  restores.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
import test_joins
from enginetools import produce, trades
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import everstream as es
from everstream.engine import join_asof
from everstream.engine import plan as p
from everstream.engine.join_asof import RT, SortedPieces, stable_order
from everstream.engine.joins import AsofJoinOp, AsofSpec
from everstream.engine.operators import Ctx
from everstream.engine.testing import FakeServices, read_topic
from everstream.engine.time import MAX_TIME
from everstream.errors import StateIncompatibleError
from everstream.log import Log


def _services() -> FakeServices:
    """An in-process runtime for driving the operator: late rows and dead letters collected, not raised."""
    return FakeServices("asof-state-test", late="keep", dead="keep")


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), piece_rows=st.sampled_from([1, 2, 5, 64]), adds=st.integers(1, 25))
def test_sorted_pieces_match_a_sorted_frame(seed: int, piece_rows: int, adds: int) -> None:
    """Adds of out-of-order rows (ties included), heads, counts and head replacements: the pieces always
    hold the reference's rows in the reference's order (time, then arrival), each piece sorted and
    every piece at or before the next."""
    rng = np.random.default_rng(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(join_asof, "PIECE_ROWS", piece_rows)
        pieces = SortedPieces(RT)
        ref = pl.DataFrame(schema={RT: pl.Int64, "arrival": pl.Int64})
        arrived, clock = 0, 0
        for _ in range(adds):
            n = int(rng.integers(1, 30))
            clock += int(rng.integers(0, 20))
            t = clock + rng.integers(-15, 5, n)  # out of order, overlapping what came before, ties
            new = pl.DataFrame({RT: t.astype(np.int64), "arrival": np.arange(arrived, arrived + n, dtype=np.int64)})
            arrived += n
            pieces.add(new)
            ref = pl.concat([ref, new]).sort(RT, "arrival")
            if rng.random() < 0.3 and ref.height:  # prune-like: the first k rows replaced by some of them
                k = int(rng.integers(0, ref.height + 1))
                keep = ref.head(k).filter(pl.col("arrival") % 3 == 0)
                pieces.replace_head(k, keep)
                ref = pl.concat([keep, ref.slice(k)])
            got = pieces.frame()
            assert got is not None
            assert_frame_equal(got, ref)
            assert pieces.height == ref.height == sum(f.height for f in pieces.frames)
            for a, b in zip(pieces.frames, pieces.frames[1:], strict=False):
                assert a[RT][-1] <= b[RT][0]
            assert pieces.lows == [int(f[RT].min()) for f in pieces.frames]  # type: ignore[arg-type]
            times = ref[RT].to_list()
            for probe in {times[0] - 1, times[-1] + 1, *rng.choice(times, 3).tolist()}:
                assert pieces.count_before(probe, "left") == sum(x < probe for x in times)
                assert pieces.count_before(probe, "right") == sum(x <= probe for x in times)
            n_head = int(rng.integers(0, ref.height + 1))
            head = pieces.head(n_head)
            assert (head is None) == (n_head == 0)
            if head is not None:
                assert_frame_equal(head, ref.head(n_head))


@settings(max_examples=150, deadline=None)
@given(times=st.lists(st.integers(-(1 << 62), 1 << 62), max_size=60), span=st.sampled_from([3, 1000, 1 << 45, 0]))
def test_stable_order_is_numpys_stable_argsort(times: list[int], span: int) -> None:
    """Packed (time, position) sort and its fallback for wide spans: NumPy's stable argsort, ties in order."""
    t = np.array(times, dtype=np.int64) % span if span else np.array(times, dtype=np.int64)
    got = stable_order(pl.Series(t, dtype=pl.Int64)).to_numpy()
    assert got.tolist() == np.argsort(t, kind="stable").tolist()


def test_asof_operator_matches_polars_with_tiny_pieces() -> None:
    """The poll-by-poll property of test_joins (every direction, exact/strict, tolerance, left/inner, ties,
    random poll cuts) with pieces of at most 3 rows: the multi-piece paths answer like one frame."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(join_asof, "PIECE_ROWS", 3)
        test_joins.test_asof_operator_matches_polars_poll_by_poll()


def _side(rng: np.random.Generator, n: int, span: int, value: str) -> pl.DataFrame:
    ts = np.sort(rng.integers(0, span, n)).astype(np.int64)
    arrival = np.argsort(ts + rng.uniform(0, 50, n), kind="stable")  # out of order by < 50 ms
    df = pl.DataFrame({"id": np.arange(n, dtype=np.int64), "key": rng.integers(0, 7, n).astype(np.int64),
                       "ts": ts, value: rng.integers(0, 1000, n).astype(np.int64)})[arrival]
    return df.with_columns(pl.col("ts").alias("_event_time"), pl.lit(0, dtype=pl.Int64).alias("_watermark"))


@pytest.mark.parametrize("ahead", ["right", "left"])
def test_one_side_far_ahead_leaves_later_pieces_alone(ahead: str) -> None:
    """A replay where one input is read long before the other (quotes before the trades they answer, or
    trades waiting for a lagging quote feed): each cycle answers from the oldest pieces and leaves the
    later ones as they were (the same frames, not copied); the result equals Polars join_asof."""
    rng = np.random.default_rng(5)
    left, right = _side(rng, 4000, 40_000, "price"), _side(rng, 3000, 40_000, "bid")
    spec = AsofSpec(("key",), "ts", "ts", "backward", True, None)
    wm = [-(1 << 62), -(1 << 62)]
    op = AsofJoinOp(p.Join("asof", ("l", "r"), spec=spec), _services(), lambda: (wm[0], wm[1]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(join_asof, "PIECE_ROWS", 100)
        first, later = (right, left) if ahead == "right" else (left, right)
        first_side, later_side = (1, 0) if ahead == "right" else (0, 1)
        for chunk in range(0, first.height, 500):  # the side ahead arrives whole, in polls of 500 rows
            part = first.slice(chunk, 500)
            op.process(part, Ctx("in", 0, ("l", "r")[first_side]))
            wm[first_side] = int(first.slice(0, chunk + 500)["ts"].max()) - 50  # type: ignore[arg-type]
            op.advance(min(wm))
        held = op.right if ahead == "right" else op.waiting
        assert len(held.frames) >= 5
        outs, untouched = [], 0
        for chunk in range(0, later.height, 400):
            before = list(held.frames)
            part = later.slice(chunk, 400)
            op.process(part, Ctx("in", 0, ("l", "r")[later_side]))
            wm[later_side] = int(later.slice(0, chunk + 400)["ts"].max()) - 50  # type: ignore[arg-type]
            got = op.advance(min(wm))
            if got is not None:
                outs.append(got)
            kept = {id(f) for f in held.frames}
            untouched += sum(id(f) in kept for f in before[len(before) // 2:])  # later pieces: the same objects
        assert untouched > 0, "every cycle rebuilt the pieces the answer did not need"
        wm[0] = wm[1] = MAX_TIME
        got = op.advance(MAX_TIME)
        if got is not None:
            outs.append(got)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = left.drop("_event_time", "_watermark").sort("ts", maintain_order=True).join_asof(
            right.drop("_event_time", "_watermark", "id").sort("ts", maintain_order=True), on="ts", by="key")
    out = pl.concat(outs)
    assert out.height == want.height == left.height
    assert_frame_equal(out.select(want.columns).sort("id"), want.sort("id"), check_dtypes=False)


def test_changed_projection_is_refused(log: Log, names: Callable[[str], str]) -> None:
    """The join holds rows with only the columns the steps after it read (projection pushdown). A restart
    whose later steps read another column would restore held rows without it, so the restore is refused
    with StateIncompatibleError naming the step and what to do; the unchanged app restores and finishes
    equal to Polars join_asof."""
    t = trades(400, seed=41, disorder_ms=1500)
    q = test_joins.quotes(300, seed=42)
    tt, qt, out = names("trades"), names("quotes"), names("out")
    produce(log, tt, t, key="symbol")
    produce(log, qt, q, key="symbol")
    app_name = names("projection")

    def build(columns: tuple[str, ...]) -> es.App:
        app = es.App(app_name)
        left = app.stream(tt).with_watermark("ts", max_delay="1500ms")
        right = app.stream(qt).with_watermark("ts", max_delay="1500ms")
        left.join_asof(right, on="ts", by="symbol", name="enrich").select(*columns).to(out)
        return app

    narrow = ("ts", "symbol", "price", "bid")
    with build(narrow).runner(log, guarantee="exactly_once") as r:
        r.catch_up()
        r.commit()
        held = r.ops["enrich"].state_rows()  # type: ignore[attr-defined]
    assert held > 0  # rows of the last 1.5 s wait for the watermark: state that the restart restores
    with pytest.raises(StateIncompatibleError, match=r"'enrich'.*name="):
        build((*narrow, "qty_right")).runner(log, guarantee="exactly_once")
    with build(narrow).runner(log, guarantee="exactly_once") as r:  # unchanged: restores
        r.catch_up()
        r.finish()
    got = read_topic(log, out)
    want = test_joins.polars_asof(t, q).select(narrow)
    test_joins.same(got, want, ["ts", "symbol"])
