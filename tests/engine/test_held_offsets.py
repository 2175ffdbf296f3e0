"""oldest_held with its per-frame cache equals a plain scan, across calls that replace, drop and add frames;
so does a join's held_offsets (one-input frames summarized without a group-by)."""

from __future__ import annotations

import random

import numpy as np
import polars as pl

from everstream.engine import plan as p
from everstream.engine.join_base import OFF, SRC
from everstream.engine.joins import AsofJoinOp, AsofSpec
from everstream.engine.operators import Ctx, HeldCache, oldest_held
from everstream.engine.testing import FakeServices
from everstream.log.contract import OFFSET_COL

SOURCES: dict[tuple[str | None, int | None], int] = {("a", 0): 0, ("a", 1): 1, ("b", 0): 2, (None, None): 3}


def _frame(rng: random.Random, n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "src": [rng.choice([0, 1, 2, 3, None]) for _ in range(n)],
        "off": [rng.choice([rng.randrange(10_000), None]) for _ in range(n)],
    }, schema={"src": pl.Int32, "off": pl.Int64})


def _plain(frames: list[pl.DataFrame]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    names = {i: tp for tp, i in SOURCES.items()}
    for f in frames:
        for s, o in f.iter_rows():
            if s is None or o is None:
                continue
            topic, part = names[s]
            if topic is not None and part is not None:
                out[(topic, part)] = min(o, out.get((topic, part), o))
    return out


def test_cached_equals_plain_scan_over_many_calls() -> None:
    rng = random.Random(7)
    cache: HeldCache = {}
    frames = [_frame(rng, rng.randrange(0, 40)) for _ in range(5)]
    for _ in range(300):
        op = rng.random()
        if op < 0.3 and frames:  # replaced by a filtered copy (a new object)
            j = rng.randrange(len(frames))
            frames[j] = frames[j].filter(pl.col("off").is_null() | (pl.col("off") > rng.randrange(10_000)))
        elif op < 0.5 and frames:
            frames.pop(rng.randrange(len(frames)))
        elif op < 0.8:
            frames.append(_frame(rng, rng.randrange(0, 40)))
        expected = _plain(frames)
        assert oldest_held(frames, "src", "off", SOURCES, cache) == expected
        assert oldest_held(frames, "src", "off", SOURCES) == expected
        assert len(cache) <= len(frames)  # entries of frames no longer held are dropped


def test_join_held_offsets_equal_a_plain_scan() -> None:
    """A join's held offsets (its one-input frames summarized without a group-by) equal a plain scan of the
    rows it holds, cycle after cycle: left rows from two partitions (small pieces merged across them, so
    some frames hold both), right rows from one, and some batches without input offsets."""
    rng = np.random.default_rng(11)
    spec = AsofSpec(("key",), "ts", "ts", "backward", True, None)
    wm = [-(1 << 62), -(1 << 62)]
    op = AsofJoinOp(p.Join("asof", ("l", "r"), spec=spec), FakeServices("held-test", late="keep", dead="keep"),
                    lambda: (wm[0], wm[1]))
    offsets = {("t", 0): 0, ("t", 1): 0, ("q", 0): 0}
    clock = 0
    checked = 0
    for cycle in range(60):
        clock += 40
        for topic, part, parent in (("t", 0, "l"), ("t", 1, "l"), ("q", 0, "r")):
            n = int(rng.integers(0, 30))
            if not n:
                continue
            ts = clock + rng.integers(-30, 10, n)
            df = pl.DataFrame({"key": rng.integers(0, 4, n), "ts": ts, "v": rng.integers(0, 99, n)}).with_columns(
                pl.col("ts").alias("_event_time"), pl.lit(0, dtype=pl.Int64).alias("_watermark"))
            if rng.random() < 0.8:  # else rows without input offsets (fired results upstream)
                start = offsets[(topic, part)]
                df = df.with_columns(pl.int_range(start, start + n, dtype=pl.Int64).alias(OFFSET_COL))
                offsets[(topic, part)] += n
            op.process(df, Ctx(topic, part, parent))
        wm = [clock - 60, clock - 60 if cycle % 7 else clock - 300]  # the right side lags now and then
        op.advance(min(wm))
        names = {i: tp for tp, i in op.sources.items()}
        want: dict[tuple[str, int], int] = {}
        for f in [*op.held(), *op.incoming[0], *op.incoming[1]]:
            for s, o in f.select(SRC, OFF).iter_rows():
                if o is not None:
                    want[names[s]] = min(o, want.get(names[s], o))
        assert op.held_offsets() == want
        checked += bool(want)
    assert checked > 30
