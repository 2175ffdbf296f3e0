"""Stream-stream joins bounded by time: the interval join and the window join.

**Interval join** (an order and its executions within ``[t + lower, t + upper]``): both sides are
kept in columnar state. Each cycle, the new left rows are joined with the whole right state and
the whole left state with the new right rows (one equi-join on the keys each, filtered on the
interval), so every pair is found exactly once, as soon as both rows are in. A left row leaves the
state once the right watermark passes ``t + upper`` (no partner can still come), a right row once
the left watermark passes ``t - lower``; for ``left``/``right``/``full`` joins the rows that never
matched are emitted then, with nulls for the other side. Pairs carry the later of the two event
times.

**Window join**: rows of both sides are assigned to their tumbling/hopping windows; when the
watermark of both sides passes a window's end, its rows are joined on (key, window) and dropped.
Output: the keys, ``window_start``, ``window_end``, then both sides' columns; event time
``window_end - 1 ms``.

Column names follow Polars' ``join``: the keys once, right columns that clash with a left column
get the suffix (``_right``).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from everstream.engine import plan as p
from everstream.engine import windows as w
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.join_base import OFF, SEQ, SRC, JoinOperator, SideWatermarks, suffixed
from everstream.engine.operators import INTERNAL, Ctx, Services
from everstream.engine.state import Snapshot
from everstream.engine.stream import WINDOW_END, WINDOW_START
from everstream.errors import StepError

HIT = "_jhit"
RT, RSEQ, RSRC, ROFF, RHIT = "_jrt", "_jrseq", "_jrsrc", "_jroff", "_jrhit"
_RIGHT_PRIVATE = {EVENT_TIME: RT, SEQ: RSEQ, SRC: RSRC, OFF: ROFF, HIT: RHIT}
_PRIVATE = frozenset([*INTERNAL, SEQ, SRC, OFF, HIT, *_RIGHT_PRIVATE.values()])


def _concat(frames: list[pl.DataFrame | None]) -> pl.DataFrame | None:
    got = [f for f in frames if f is not None and f.height]
    if not got:
        return None
    return got[0] if len(got) == 1 else pl.concat(got, how="diagonal_relaxed")


class _TwoSided(JoinOperator):
    """Shared by the interval and window joins: remembers each side's user columns for naming, and their
    types for the null columns of rows without a partner."""

    def __init__(self, step: p.Join, services: Services, side_watermarks: SideWatermarks) -> None:
        super().__init__(step, services, side_watermarks, step.spec.by, ((), ()))
        self.columns: tuple[dict[str, None], dict[str, None]] = ({}, {})
        self.dtypes: tuple[dict[str, pl.DataType], dict[str, pl.DataType]] = ({}, {})  # in memory only

    def admit(self, df: pl.DataFrame, ctx: Ctx, side: int) -> pl.DataFrame | None:
        got = super().admit(df, ctx, side)
        if got is not None:
            users = [c for c in got.columns if c not in _PRIVATE]
            self.columns[side].update(dict.fromkeys(users))
            self.dtypes[side].update({c: got.schema[c] for c in users})
        return got

    def dtype(self, side: int, column: str) -> pl.DataType:
        """A user column's type on ``side``: from the held rows, else the last admitted ones, else Null
        (after a restore, until the side sends rows again)."""
        st = self.state[side]
        if st is not None and column in st.schema:
            return st.schema[column]
        return self.dtypes[side].get(column, pl.Null())

    def nulls_for(self, side: int, present: list[str]) -> list[pl.Expr]:
        """Typed null columns for ``side``'s user columns (output names) that a row without a partner on
        that side lacks, so every output batch has every column (a select after the join finds them)."""
        names = self.right_names() if side == 1 else {c: c for c in self.columns[0] if c not in self.by}
        return [pl.lit(None, dtype=self.dtype(side, c)).alias(n) for c, n in names.items() if n not in present]

    def right_names(self) -> dict[str, str]:
        """Right user column -> output name (keys dropped, clashes with left columns suffixed)."""
        return suffixed(list(self.columns[0]), list(self.columns[1]), self.by, self.step.spec.suffix)

    def join(self, left: pl.DataFrame, right: pl.DataFrame, on: list[str], how: str = "inner") -> pl.DataFrame:
        try:
            return left.join(right.rename(_RIGHT_PRIVATE, strict=False), on=on, how=how,  # type: ignore[arg-type]
                             suffix=self.step.spec.suffix, maintain_order="left")
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise StepError(f"the join failed: {type(e).__name__}: {e}", step_id=self.step.step_id,
                            fix="check that key columns have one type on both sides") from e

    def users(self, df: pl.DataFrame) -> list[str]:
        return [c for c in df.columns if c not in _PRIVATE]

    # checkpoints: both sides' held rows (``state``, set by the subclasses) and the user columns seen
    state: list[pl.DataFrame | None]

    def state_frames(self) -> dict[str, pl.DataFrame | None]:
        return {"left": self.state[0], "right": self.state[1]}

    def state_values(self) -> dict[str, Any]:
        return {"columns": [list(self.columns[0]), list(self.columns[1])]}

    def restore_frames(self, snap: Snapshot) -> None:
        self.state = [snap.frame("left"), snap.frame("right")]
        left, right = snap.values["columns"]
        self.columns = (dict.fromkeys(left), dict.fromkeys(right))


class IntervalJoinOp(_TwoSided):
    """Interval join (inner, left, right, full); see the module docstring."""

    def __init__(self, step: p.Join, services: Services, side_watermarks: SideWatermarks) -> None:
        super().__init__(step, services, side_watermarks)
        spec = step.spec
        self.lower, self.upper, self.how = spec.lower_ms, spec.upper_ms, spec.how
        self.state: list[pl.DataFrame | None] = [None, None]

    def advance(self, watermark: int) -> pl.DataFrame | None:
        previous = self.update_watermarks()
        wl, wr = self.wm
        new = [self.take(0), self.take(1)]
        new = [None if f is None else f.with_columns(pl.lit(False).alias(HIT)) for f in new]
        pairs: list[pl.DataFrame] = []
        if new[0] is not None and self.state[1] is not None:
            pairs.append(self._pairs(new[0], self.state[1]))
        self.state[0] = _concat([self.state[0], new[0]])
        if new[1] is not None and self.state[0] is not None:
            pairs.append(self._pairs(self.state[0], new[1]))
        self.state[1] = _concat([self.state[1], new[1]])
        found = _concat(list(pairs))
        out: list[pl.DataFrame | None] = []
        if found is not None:
            self._mark(found)
            out.append(found.select(*self.users(found), pl.max_horizontal(EVENT_TIME, RT).alias(EVENT_TIME)))
        out.append(self._evict(0, pl.col(EVENT_TIME) + self.upper < wr, self.how in ("left", "full")))
        out.append(self._evict(1, pl.col(EVENT_TIME) - self.lower < wl, self.how in ("right", "full")))
        self.metrics.state_rows = sum(f.height for f in self.state if f is not None)
        result = _concat(out)
        return None if result is None else self.finish_output(result, previous)

    def _pairs(self, left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
        j = self.join(left, right, self.by)
        rt, lt = pl.col(RT), pl.col(EVENT_TIME)
        return j.filter((rt >= lt + self.lower) & (rt <= lt + self.upper))

    def _mark(self, pairs: pl.DataFrame) -> None:
        for side, seq, outer in ((0, SEQ, ("left", "full")), (1, RSEQ, ("right", "full"))):
            st = self.state[side]
            if self.how in outer and st is not None:
                hit = pairs.get_column(seq).unique()
                self.state[side] = st.with_columns(pl.col(HIT) | pl.col(SEQ).is_in(hit.implode()))

    def _evict(self, side: int, done: pl.Expr, emit: bool) -> pl.DataFrame | None:
        st = self.state[side]
        if st is None:
            return None
        mask = st.select(done).to_series()
        if not mask.any():
            return None
        gone, self.state[side] = st.filter(mask), st.filter(~mask)
        if not emit:
            return None
        gone = gone.filter(~pl.col(HIT))
        if gone.is_empty():
            return None
        if side == 0:
            users = self.users(gone)
            return gone.select(*users, *self.nulls_for(1, users), EVENT_TIME)
        names = self.right_names()
        renamed = [names.get(c, c) for c in self.users(gone)]
        return gone.select(*[pl.col(c).alias(n) for c, n in zip(self.users(gone), renamed, strict=True)],
                           *self.nulls_for(0, renamed), EVENT_TIME)

    def held(self) -> list[pl.DataFrame]:
        return [f for f in self.state if f is not None]


class WindowJoinOp(_TwoSided):
    """Window join (inner, left); see the module docstring."""

    def __init__(self, step: p.Join, services: Services, side_watermarks: SideWatermarks) -> None:
        super().__init__(step, services, side_watermarks)
        self.window = step.spec.window
        self.how = step.spec.how
        self.state: list[pl.DataFrame | None] = [None, None]

    def late_mask(self, df: pl.DataFrame, side: int) -> pl.Series:
        """Late only when every window of the row has been joined already."""
        return df.select(w.last_end(self.window, pl.col(EVENT_TIME)) <= self.watermark).to_series()

    def admit(self, df: pl.DataFrame, ctx: Ctx, side: int) -> pl.DataFrame | None:
        got = super().admit(df, ctx, side)
        if got is None:
            return None
        got = w.assign(self.window, got, EVENT_TIME)
        return got.filter(pl.col(w.WE) > self.watermark)

    def advance(self, watermark: int) -> pl.DataFrame | None:
        previous = self.update_watermarks()
        wm = self.watermark
        fired: list[pl.DataFrame | None] = []
        for side in (0, 1):
            st = _concat([self.state[side], self.take(side)])
            if st is None:
                self.state[side] = None
                fired.append(None)
                continue
            due = st.get_column(w.WE) <= wm
            fired.append(st.filter(due))
            self.state[side] = st.filter(~due)
        self.metrics.state_rows = sum(f.height for f in self.state if f is not None)
        left, right = fired
        if left is None or left.is_empty() or (self.how == "inner" and (right is None or right.is_empty())):
            return None
        if right is None or right.is_empty():  # a left join: the right columns as nulls
            right = pl.DataFrame(schema={**{k: left.schema[k] for k in self.by}, w.WS: pl.Int64(), w.WE: pl.Int64(),
                                         **{c: self.dtype(1, c) for c in self.columns[1] if c not in self.by}})
        j = self.join(left, right, [*self.by, w.WS, w.WE], how=self.how)
        self.metrics.windows_fired += j.select(w.WS, w.WE).n_unique()
        dtype = pl.Datetime("ms", "UTC")
        rest = [c for c in self.users(j) if c not in self.by and c not in (w.WS, w.WE)]
        out = j.select(*self.by, pl.col(w.WS).cast(dtype).alias(WINDOW_START),
                       pl.col(w.WE).cast(dtype).alias(WINDOW_END), *rest, (pl.col(w.WE) - 1).alias(EVENT_TIME))
        return self.finish_output(out, previous)

    def held(self) -> list[pl.DataFrame]:
        return [f for f in self.state if f is not None]
