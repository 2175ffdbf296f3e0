"""Helpers for testing pipelines: read a whole topic as a Polars DataFrame; drive an operator in-process
(:class:`FakeServices`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import polars as pl
import pyarrow as pa

from everstream.errors import StepError
from everstream.log.contract import META_COLUMNS, Log

if TYPE_CHECKING:
    from everstream.engine import plan as p
    from everstream.log.records import DeadLetter


def read_topic(log: Log, topic: str, *, meta: bool = False, timeout: float = 0.2) -> pl.DataFrame:
    """Every record of ``topic`` now (all partitions, from the start), user columns only unless ``meta``."""
    info = log.describe_topic(topic)
    ends = {p.partition: p.end_offset for p in info.partitions}
    batches: list[pa.RecordBatch] = []
    with log.consumer(start="earliest") as consumer:
        consumer.assign([(topic, p) for p in ends])
        while any(consumer.position(topic, p) < end for p, end in ends.items()):
            got = consumer.poll(timeout)
            if not got and all(consumer.position(topic, p) >= end for p, end in ends.items()):
                break
            batches.extend(got)
    if not batches:
        return pl.DataFrame()
    frames = [pl.from_arrow(b) for b in batches]
    df = pl.concat([f for f in frames if isinstance(f, pl.DataFrame)], how="diagonal_relaxed")
    return df if meta else df.select([c for c in df.columns if c not in META_COLUMNS])


Policy = Literal["keep", "fail"]


class FakeServices:
    """What an operator needs from the runtime (:class:`~everstream.engine.operators.Services`), in-process,
    so tests and benchmarks drive operators (``process`` / ``advance`` / snapshots) without a log or runtime.

    ``late`` and ``dead`` say what happens to late rows and dead letters: ``"keep"`` collects them
    (``late_frames`` and ``late_rows``; ``letters``), ``"fail"`` raises :class:`StepError` at once (a test or
    benchmark whose data must have none). Side outputs (time-outs, ...) are collected in ``side``, in order,
    and by topic in ``side_by_topic``. Processing time is frozen at ``now`` (epoch ms); the monotonic clock
    at 0.0.
    """

    def __init__(self, app_name: str = "test", *, late: Policy = "keep", dead: Policy = "fail", now: int = 0) -> None:
        for what, v in (("late", late), ("dead", dead)):
            if v not in ("keep", "fail"):
                raise ValueError(f"FakeServices({what}={v!r}): use 'keep' (collect them) or 'fail' (raise)")
        self.app_name = app_name
        self.late_policy: Policy = late
        self.dead_policy: Policy = dead
        self.now = now
        self.late_frames: list[pl.DataFrame] = []
        self.letters: list[DeadLetter] = []
        self.side: list[pl.DataFrame] = []
        self.side_by_topic: dict[str, list[pl.DataFrame]] = {}

    @property
    def late_rows(self) -> int:
        """Late rows received so far (policy ``keep``)."""
        return sum(f.height for f in self.late_frames)

    def late(self, step: p.Step, df: pl.DataFrame) -> None:
        if self.late_policy == "fail":
            raise StepError(f"{df.height} late rows (event time behind the watermark), e.g. {df.head(3).to_dicts()}",
                            step_id=step.step_id,
                            fix="this test or benchmark expects none: check the watermarks it advances with, or "
                                "build FakeServices(late='keep') to collect them")
        self.late_frames.append(df)

    def dead_letters(self, letters: list[DeadLetter]) -> None:
        if self.dead_policy == "fail":
            first = letters[0] if letters else None
            raise StepError(f"{len(letters)} dead letters, first: {first!r}", step_id="?",
                            topic=None if first is None else first.source_topic,
                            partition=None if first is None else first.source_partition,
                            offset=None if first is None else first.source_offset,
                            fix="this test or benchmark expects none: fix its input, or build "
                                "FakeServices(dead='keep') to collect them")
        self.letters.extend(letters)

    def side_output(self, topic: str, df: pl.DataFrame) -> None:
        self.side.append(df)
        self.side_by_topic.setdefault(topic, []).append(df)

    def now_ms(self) -> int:
        return self.now

    def clock(self) -> float:
        return 0.0
