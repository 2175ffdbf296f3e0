"""oldest_held with its per-frame cache equals a plain scan, across calls that replace, drop and add frames."""

from __future__ import annotations

import random

import polars as pl

from everstream.engine.operators import HeldCache, oldest_held

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
