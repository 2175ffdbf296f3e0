"""The match operator's batch paths: the common one (no late row: candidates buffered column by column,
released in event-time order when evaluating lazily) and the general one (late rows), and its commit
offsets with one input. Expected matches are worked out by hand from the pattern's definition."""

from __future__ import annotations

import polars as pl
import pytest

from everstream.cep.operator import MatchOp
from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import WATERMARK, Ctx
from everstream.engine.ordered import OrderedOp
from everstream.engine.testing import FakeServices
from everstream.finance.patterns import card_testing
from everstream.log.contract import OFFSET_COL, PARTITION_COL, TOPIC_COL

# (card, event time ms, amount, watermark the row arrives with); offsets are the row numbers
BATCHES = [
    [("c1", 1_000, 1.0, 0), ("c1", 2_000, 1.5, 0), ("c2", 1_500, 1.0, 0), ("c1", 3_000, 1.2, 0),
     ("c3", 2_500, 50.0, 0)],
    # c2's 500 ms small arrives after the watermark passed 3 000: late (had it counted, c2's burst
    # would have four smalls); c1's large ends c1's burst
    [("c2", 500, 1.0, 3_000), ("c1", 4_000, 900.0, 3_000), ("c2", 3_200, 1.1, 3_000)],
    [("c2", 5_000, 1.3, 4_000), ("c2", 6_000, 800.0, 4_000), ("c3", 6_500, 1.0, 4_000)],
]
WANT = [("c1", [1_000, 2_000, 3_000], 4_000), ("c2", [1_500, 3_200, 5_000], 6_000)]


def _frames() -> list[pl.DataFrame]:
    out, offset = [], 0
    for rows in BATCHES:
        df = pl.DataFrame(rows, schema={"card": pl.String, "ts": pl.Int64, "amount": pl.Float64, WATERMARK: pl.Int64},
                          orient="row")
        out.append(df.with_columns(
            pl.col("ts").alias(EVENT_TIME), pl.lit("cards").cast(pl.Categorical).alias(TOPIC_COL),
            pl.lit(0, dtype=pl.Int32).alias(PARTITION_COL),
            pl.int_range(offset, offset + df.height, dtype=pl.Int64).alias(OFFSET_COL)))
        offset += df.height
    return out


def _op(lazy: bool) -> tuple[MatchOp, FakeServices]:
    services = FakeServices(late="keep", dead="fail")
    step = p.Match("m", ("cards",), pattern=card_testing(within="10s"), by=("card",), timeouts=False)
    op = MatchOp(step, services, lazy=lazy)
    assert (op.parked is not None) == lazy
    return op, services


@pytest.mark.parametrize("lazy", [True, False])
def test_late_rows_go_whole_to_the_late_topic_and_take_no_part(lazy: bool) -> None:
    op, services = _op(lazy)
    outs = []
    for df in _frames():
        op.process(df, Ctx("cards", 0))
        got = op.advance(int(df[EVENT_TIME].max()))  # type: ignore[arg-type]
        if got is not None:
            outs.append(got)
    got = op.advance(1 << 62)
    if got is not None:
        outs.append(got)
    out = pl.concat(outs)
    assert [(r["card"], [e["ts"] for e in r["small"]], r["large"][0]["ts"]) for r in out.iter_rows(named=True)] == WANT
    late = pl.concat(services.late_frames)
    assert late.select("card", "ts", OFFSET_COL, PARTITION_COL).rows() == [("c2", 500, 5, 0)]
    assert TOPIC_COL in late.columns  # the whole row, as it came


@pytest.mark.parametrize("lazy", [True, False])
def test_commit_offset_with_one_input_is_the_oldest_row_held(lazy: bool) -> None:
    """The one-input shortcut gives the base class's answer (a group-by over every held row): the first
    c1 small (offset 0) until c1's large matched, then no later than c2's first small (offset 2, still
    needed; the store keeps a contiguous range of rows, which may start a little earlier)."""
    op, _ = _op(lazy)
    first, second, _third = _frames()
    op.process(first, Ctx("cards", 0))
    assert op.held_offsets() == OrderedOp.held_offsets(op) == {("cards", 0): 0}  # all still buffered
    op.advance(3_500)
    assert op.held_offsets() == OrderedOp.held_offsets(op) == {("cards", 0): 0}
    op.process(second, Ctx("cards", 0))
    op.advance(4_500)
    held = op.held_offsets()
    assert held == OrderedOp.held_offsets(op) and 0 < held[("cards", 0)] <= 2
