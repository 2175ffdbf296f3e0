"""What every two-input join operator shares: sides, per-side watermarks, admission, commit positions.

A join step has two parents (left first). The runtime tells the operator which parent a batch
came from (``ctx.parent``) and gives it each side's watermark (the minimum over that side's
event-time sources, less the allowed lateness of windows upstream of it) through a callable, so
the operator can decide per row whether its answer is final. Rows are *admitted* once:
required columns checked (batches without them go to the dead-letter topic), key columns cast to
one dtype (rows whose key does not convert are dead-lettered), rows older than their side's
watermark sent to ``<app>.<step_id>.late`` (the state they would need may be gone), and tagged
with an arrival number and their input position, so the committed offset never passes a row the
join still holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import (
    INTERNAL,
    WATERMARK,
    Ctx,
    HeldCache,
    Operator,
    Services,
    dead_letters_of,
    first_offset,
    oldest_held,
    user_columns,
)
from everstream.engine.state import Snapshot, fingerprint
from everstream.engine.time import MAX_TIME
from everstream.errors import EngineError, StepError
from everstream.log.contract import OFFSET_COL

#: Per-side private columns of join state: arrival number, input index, input offset.
SEQ, SRC, OFF = "_jseq", "_jsrc", "_joff"
_META = frozenset(INTERNAL)

SideWatermarks = Callable[[], tuple[int, int]]


class JoinOperator(Operator):
    """Base of the stateful two-input joins (as-of, stream-table, interval, window).

    Subclasses buffer admitted rows in ``process`` and answer in ``advance(watermark)``, once per
    runtime cycle; ``self.wm`` holds each side's watermark as of the last ``advance``.
    """

    step: p.Join

    def __init__(self, step: p.Join, services: Services, side_watermarks: SideWatermarks,
                 by: Sequence[str], needs: tuple[Sequence[str], Sequence[str]]) -> None:
        super().__init__(step, services)
        if len(step.inputs) != 2:
            raise EngineError(f"step {step.step_id!r}: a stream join needs two inputs, got {list(step.inputs)}")
        self.left_id, self.right_id = step.inputs
        self.side_watermarks = side_watermarks
        self.by = list(by)
        self.needs = (list(dict.fromkeys([*by, *needs[0]])), list(dict.fromkeys([*by, *needs[1]])))
        self.wm = [-MAX_TIME, -MAX_TIME]
        self.watermark = -MAX_TIME  # min of the sides (shown in metrics)
        self.seq = 0
        self.sources: dict[tuple[str | None, int | None], int] = {}
        self.key_types: dict[str, pl.DataType] = {}
        self._held_cache: HeldCache = {}  # per state frame: its oldest offsets (see oldest_held)
        self.incoming: tuple[list[pl.DataFrame], list[pl.DataFrame]] = ([], [])
        #: The user columns its inputs carry (``Plan.required_columns`` of the join; None: all), set by
        #: ``join_operator``: held rows have only these, so they are part of the state's fingerprint.
        self.projection: frozenset[str] | None = None

    # ------------------------------------------------------------------ admission

    def side_of(self, ctx: Ctx) -> int:
        if ctx.parent == self.left_id:
            return 0
        if ctx.parent == self.right_id:
            return 1
        raise EngineError(
            f"step {self.step.step_id!r}: a batch from {ctx.parent!r}, which is neither input "
            f"({self.left_id!r}, {self.right_id!r}); the runtime must set Ctx.parent for joins")

    def process(self, df: pl.DataFrame, ctx: Ctx) -> pl.DataFrame | None:
        side = self.side_of(ctx)
        got = self.admit(df, ctx, side)
        if got is not None and got.height:
            self.incoming[side].append(got)
        return None

    def admit(self, df: pl.DataFrame, ctx: Ctx, side: int) -> pl.DataFrame | None:
        """Checked, key-typed, on-time rows of one side with arrival number and input position."""
        name = ("left", "right")[side]
        missing = [c for c in self.needs[side] if c not in df.columns]
        if missing:
            self.dead(ctx, df, f"the {name} input has no column(s) {missing} the join needs "
                               f"(columns: {user_columns(df)}); fix the producer or the join's by=/on=")
            return None
        if EVENT_TIME not in df.columns:
            raise StepError(
                f"the {name} input has no event time", step_id=self.step.step_id, topic=ctx.topic,
                partition=ctx.partition, offset=first_offset(df),
                fix="declare with_watermark(...) on both inputs, and keep _event_time in map_batches")
        df = self.cast_keys(df, ctx, name)
        if df is None:
            return None
        if any(df.get_column(c).null_count() for c in self.by):  # counted without a pass over the rows
            nokey = df.select(pl.any_horizontal(pl.col(self.by).is_null())).to_series()
            if nokey.any():  # a missing column in one of a poll's batches arrives as nulls
                self.dead(ctx, df.filter(nokey), f"the {name} input's row has no key {self.by} (null or missing); "
                                                 "every joined row needs its key")
                df = df.filter(~nokey)
                if df.is_empty():
                    return None
        late = self.late_mask(df, side)
        if late.any():
            rows = df.filter(late)
            self.metrics.late_events += rows.height
            self.services.late(self.step, rows)
            df = df.filter(~late)
        if df.is_empty():
            return None
        src = self.sources.setdefault((ctx.topic, ctx.partition), len(self.sources))
        off = df.get_column(OFFSET_COL) if OFFSET_COL in df.columns else pl.lit(None, dtype=pl.Int64)
        users = [c for c in df.columns if c not in _META]
        out = df.select(
            *users, pl.col(EVENT_TIME),
            pl.int_range(self.seq, self.seq + df.height, dtype=pl.Int64).alias(SEQ),
            pl.lit(src, dtype=pl.Int32).alias(SRC),
            (off if isinstance(off, pl.Expr) else pl.col(OFFSET_COL)).cast(pl.Int64).alias(OFF),
        )
        self.seq += df.height
        return out

    def late_mask(self, df: pl.DataFrame, side: int) -> pl.Series:
        """Rows older than their side's watermark: the state they would need may be gone."""
        return df.get_column(EVENT_TIME) < self.wm[side]

    def cast_keys(self, df: pl.DataFrame, ctx: Ctx, name: str) -> pl.DataFrame | None:
        """Key columns in the dtype the first batch (of either side) set; rows that do not convert are
        dead-lettered (an int key on one side and a string key on the other would never match)."""
        bad: pl.Series | None = None
        casts = []
        for c in self.by:
            dt = df.schema[c]
            want = self.key_types.setdefault(c, dt)
            if dt == want:
                continue
            cast = df.get_column(c).cast(want, strict=False)
            lost = cast.is_null() & df.get_column(c).is_not_null()
            bad = lost if bad is None else bad | lost
            casts.append(cast)
        if casts:
            df = df.with_columns(casts)
        if bad is not None and bad.any():
            self.dead(ctx, df.filter(bad), f"the {name} input's key {self.by} does not convert to "
                                           f"{[str(self.key_types[c]) for c in self.by]} (the type the "
                                           "join saw first); send keys of one type on both sides")
            df = df.filter(~bad)
        return df if df.height else None

    def dead(self, ctx: Ctx, df: pl.DataFrame, reason: str) -> None:
        self.metrics.dead_letters += df.height
        self.services.dead_letters(dead_letters_of(ctx, self.step.step_id, df, reason))

    # ------------------------------------------------------------------ time and state

    def take(self, side: int) -> pl.DataFrame | None:
        """The rows admitted on ``side`` since the last call, as one frame."""
        frames = self.incoming[side]
        if not frames:
            return None
        out = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
        frames.clear()
        return out

    def update_watermarks(self) -> int:
        """Read each side's watermark (monotonic); returns the previous combined watermark."""
        left, right = self.side_watermarks()
        self.wm = [max(self.wm[0], left), max(self.wm[1], right)]
        previous, self.watermark = self.watermark, max(self.watermark, min(self.wm))
        return previous

    def advance(self, watermark: int) -> pl.DataFrame | None:
        """Answer what the side watermarks (not ``watermark``, their minimum) make final; prune state."""
        raise NotImplementedError

    def held(self) -> list[pl.DataFrame]:
        """State frames holding input rows (with ``_jsrc``/``_joff``)."""
        return []

    def held_offsets(self) -> dict[tuple[str, int], int]:
        """Per input (topic, partition): the oldest offset of a row the join still holds."""
        return oldest_held([*self.held(), *self.incoming[0], *self.incoming[1]], SRC, OFF, self.sources,
                           self._held_cache)

    # ------------------------------------------------------------------ checkpoints (exactly-once)

    def state_fingerprint(self) -> str:
        """The join's kind and definition (keys, time columns, bounds or window, how) and the columns its
        inputs carry (projection pushdown): what decides the columns of its state and what a held row means.
        A restarted app whose later steps read more columns has another fingerprint, so its restore is
        refused (``StateIncompatibleError``) instead of restoring held rows that lack those columns."""
        spec = self.step.spec
        parts: tuple[object, ...] = ("join", type(self).__name__, spec.kind, spec.describe())
        if self.projection is not None:
            parts += ("columns", tuple(sorted(self.projection)))
        return fingerprint(*parts)

    def snapshot_state(self) -> Snapshot:
        """Everything a restarted join needs, columnar: the rows it holds (subclass frames, plus rows admitted
        but not yet advanced), side watermarks, the arrival counter, the input sources (``_jsrc`` indexes
        them) and the key dtypes the first batch fixed (as an empty table's schema)."""
        frames: dict[str, pl.DataFrame | None] = {
            "incoming_left": _joined(self.incoming[0]), "incoming_right": _joined(self.incoming[1]),
            **self.state_frames()}
        tables = {"key_types": pl.DataFrame(schema=self.key_types).to_arrow()}
        tables |= {name: f.to_arrow() for name, f in frames.items() if f is not None}
        values: dict[str, Any] = {
            "wm": [int(x) for x in self.wm], "watermark": int(self.watermark), "seq": int(self.seq),
            "sources": [[t, q, i] for (t, q), i in self.sources.items()], **self.state_values()}
        return Snapshot(tables=tables, values=values)

    def restore_state(self, snap: Snapshot) -> None:
        """The inverse of :meth:`snapshot_state`, on a freshly built operator."""
        v = snap.values
        self.wm = [int(x) for x in v["wm"]]
        self.watermark, self.seq = int(v["watermark"]), int(v["seq"])
        self.sources = {(t, q): int(i) for t, q, i in v["sources"]}
        kt = snap.frame("key_types")
        self.key_types = {} if kt is None else dict(kt.schema)
        self.incoming = tuple([f] if (f := snap.frame(n)) is not None and f.height else []  # type: ignore[assignment]
                              for n in ("incoming_left", "incoming_right"))
        self.restore_frames(snap)
        self.metrics.state_rows = sum(f.height for f in self.held())

    def state_frames(self) -> dict[str, pl.DataFrame | None]:
        """The subclass's state frames by name (snapshot tables)."""
        return {}

    def state_values(self) -> dict[str, Any]:
        """The subclass's JSON scalars."""
        return {}

    def restore_frames(self, snap: Snapshot) -> None:
        """The subclass's part of :meth:`restore_state` (frames and scalars)."""
        return None

    def finish_output(self, out: pl.DataFrame, previous: int) -> pl.DataFrame:
        """Output rows: user columns, then the event time and the watermark they were emitted under."""
        return out.with_columns(pl.lit(max(previous, -MAX_TIME), dtype=pl.Int64).alias(WATERMARK))


def _joined(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def suffixed(left: Sequence[str], right: Sequence[str], skip: Sequence[str], suffix: str) -> dict[str, str]:
    """Right column -> output name as Polars names join outputs: ``skip`` dropped, clashes suffixed."""
    taken = set(left)
    out: dict[str, str] = {}
    for c in right:
        if c in skip:
            continue
        out[c] = f"{c}{suffix}" if c in taken else c
    return out
