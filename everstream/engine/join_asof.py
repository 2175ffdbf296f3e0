"""The as-of join operator (and the stream-table join): one Polars ``join_asof`` per cycle over narrow frames.

A left row waits until its answer is final (backward: the right watermark has passed it; forward and
nearest: a right row at or after it is sealed, or the tolerance has passed), then all ready rows of a
cycle are answered at once. The spec and the plan-building side live in :mod:`everstream.engine.joins`.

State is kept as **lists of pieces** (:class:`Pieces`, :class:`SortedPieces`), never as one frame
that grows by concatenation: in a replay one input runs far ahead of the other (quotes before the
trades they answer, or trades waiting for a lagging quote feed), and a frame rebuilt on every cycle
would copy everything held on every cycle. With pieces, a cycle touches only what it changes: new
right rows are merged into the newest piece(s) they overlap (bounded disorder: a small tail), ready
left rows are taken from the pieces old enough to hold any, pruning drops whole old pieces, and small
pieces are merged geometrically so each row is copied O(log n) times at most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.join_base import OFF, SEQ, SRC, JoinOperator, SideWatermarks, suffixed
from everstream.engine.operators import INTERNAL, Services
from everstream.engine.state import Snapshot
from everstream.engine.time import MAX_TIME
from everstream.errors import StepError

if TYPE_CHECKING:
    from everstream.engine.joins import AsofSpec

RT = "_jrt"  # right event time in as-of state
RIDX, LIDX = "_jri", "_jli"  # row positions in the right rows an answer uses and in the candidate left rows
_HIDDEN = frozenset([SEQ, SRC, OFF, RT, *INTERNAL])  # columns of as-of state that are not the user's
#: Pieces at least this big are not merged with their neighbours any more (a merge copies both).
PIECE_ROWS = 65_536


def _concat(frames: list[pl.DataFrame], rechunk: bool = True) -> pl.DataFrame:
    """One frame of ``frames`` (columns aligned by name, types relaxed), in one chunk per column.
    ``rechunk=False``: the pieces are referenced, not copied, when their schemas agree (reads such as a
    gather or a join work on chunks)."""
    if len(frames) == 1:
        return frames[0].rechunk() if rechunk else frames[0]
    if not rechunk and all(f.schema == frames[0].schema for f in frames[1:]):
        return pl.concat(frames, how="vertical", rechunk=False)
    return pl.concat(frames, how="diagonal_relaxed", rechunk=True)


class Pieces:
    """A frame held as pieces in order, with each piece's smallest ``col`` value.

    ``append`` merges the newest pieces while the one before is below :data:`PIECE_ROWS` and not more
    than twice as big: with many small appends (live, a few rows per cycle) there are O(log n) small
    pieces and each row is copied O(log n) times; big appends (a replay) are never copied again."""

    def __init__(self, col: str) -> None:
        self.col = col
        self.frames: list[pl.DataFrame] = []
        self.lows: list[int] = []
        self.template: pl.DataFrame | None = None  # no rows, the columns of the last frame seen (kept when empty)

    @property
    def height(self) -> int:
        return sum(f.height for f in self.frames)

    def low(self) -> int | None:
        return min(self.lows) if self.lows else None

    def frame(self) -> pl.DataFrame | None:
        """All rows as one frame (a checkpoint); when empty, no rows but the columns (None: never any)."""
        return _concat(self.frames) if self.frames else self.template

    def set(self, frames: list[pl.DataFrame]) -> None:
        if frames:
            self.template = frames[-1].clear()
        self.frames = [f for f in frames if f.height]
        self.lows = [int(f.get_column(self.col).min()) for f in self.frames]  # type: ignore[arg-type]

    def append(self, df: pl.DataFrame, low: int | None = None) -> None:
        self.template = df.clear()
        if not df.height:
            return
        self.frames.append(df)
        self.lows.append(int(df.get_column(self.col).min()) if low is None else low)  # type: ignore[arg-type]
        frames, lows = self.frames, self.lows
        while len(frames) >= 2 and frames[-2].height < PIECE_ROWS and frames[-2].height <= 2 * frames[-1].height:
            last, lo = frames.pop(), lows.pop()
            frames[-1] = _concat([frames[-1], last])
            lows[-1] = min(lows[-1], lo)


class SortedPieces(Pieces):
    """Right rows sorted by (``col``, arrival) across pieces: every row of a piece is at or before every
    row of the next. New rows (later arrivals) are sorted on a narrow index and merged into the tail
    they overlap, so among equal times the last to arrive comes last (it is the one a backward
    as-of answer takes, as in Polars on the data in arrival order). Only the tail the new rows overlap
    (bounded disorder: a few seconds of rows) is sorted again with them."""

    def add(self, new: pl.DataFrame) -> None:
        if not new.height:
            return
        t0 = int(new.get_column(self.col).min())  # type: ignore[arg-type]
        tail: list[pl.DataFrame] = []
        while self.frames and int(self.frames[-1].get_column(self.col)[-1]) > t0:
            f = self.frames.pop()
            self.lows.pop()
            i = int(f.get_column(self.col).search_sorted(t0, side="right"))
            if i:
                self.frames.append(f.head(i))
                self.lows.append(int(f.get_column(self.col)[0]))
                tail.insert(0, f.slice(i))
                break
            tail.insert(0, f)
        new = _sorted(_concat([*tail, new]), self.col)  # one sort: the overlapped tail, then the new rows
        self.append(new, int(new.get_column(self.col)[0]))

    def count_before(self, t: int, side: Literal["left", "right"]) -> int:
        """How many rows have ``col < t`` (side "left") or ``col <= t`` (side "right")."""
        n = 0
        for f in self.frames:
            last = int(f.get_column(self.col)[-1])
            if last < t or (side == "right" and last == t):
                n += f.height
                continue
            return n + int(f.get_column(self.col).search_sorted(t, side=side))
        return n

    def head(self, n: int) -> pl.DataFrame | None:
        """The first ``n`` rows as one frame, referencing the pieces (not a copy: read it, do not keep it)."""
        out: list[pl.DataFrame] = []
        for f in self.frames:
            if n <= 0:
                break
            out.append(f if f.height <= n else f.head(n))
            n -= f.height
        return _concat(out, rechunk=False) if out else None

    def replace_head(self, n: int, keep: pl.DataFrame) -> None:
        """Drop the first ``n`` rows and put ``keep`` (sorted, all before the rest) in their place."""
        rest: list[pl.DataFrame] = []
        for f in self.frames:
            if n >= f.height:
                n -= f.height
                continue
            rest.append(f.slice(n) if n else f)
            n = 0
        self.set([keep, *rest])


def _sorted(df: pl.DataFrame, col: str) -> pl.DataFrame:
    """``df`` stably sorted by ``col``: the sort runs on the times alone, the rows move once."""
    t = df.get_column(col)
    return df if t.is_sorted() else df.gather(stable_order(t))


def stable_order(t: pl.Series) -> pl.Series:
    """The positions that sort ``t`` (integer times, no nulls) stably: ties keep their order.

    Each time is packed with its position into one int64 (``time - min`` in the high bits, the position
    in the low ones), and the packed values, all distinct, are sorted by NumPy's unstable sort (SIMD
    on x86: on one core ~1.5x faster than Polars' sort of the same values, ~2x faster than a stable
    sort of the times). Times spanning too much for the packing sort stably."""
    n = t.len()
    if n < 2:
        return pl.Series(RIDX, range(n), dtype=pl.Int64)
    bits = (n - 1).bit_length()
    lo, hi = int(t.min()), int(t.max())  # type: ignore[arg-type]
    if hi - lo >= 1 << (62 - bits):
        return t.to_frame("t").with_row_index(RIDX).sort("t", maintain_order=True).get_column(RIDX)
    packed = t.cast(pl.Int64).to_numpy() - lo  # a new array: the shifts below work in place
    packed <<= bits
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    packed &= (1 << bits) - 1
    return pl.Series(RIDX, packed)


class AsofJoinOp(JoinOperator):
    """As-of join (and stream-table join), vectorized per cycle; see the module docstring.

    State: ``waiting``, the left rows not answered yet, as pieces in arrival order; ``right``, the right
    rows sorted by (event time, arrival) as pieces, pruned. Per cycle the new right rows are merged into
    ``right`` (only the tail they overlap is sorted again) and the ready left rows (from the pieces old
    enough to hold any) are answered by one Polars ``join_asof`` of narrow frames (time, keys, row
    position) that gives each left row the position of its right row. The output then gathers the left
    rows in (time, arrival) order and the right values by those positions: only keys and times are
    sorted and joined, every other column moves once.
    """

    def __init__(self, step: p.Join, services: Services, side_watermarks: SideWatermarks) -> None:
        spec: AsofSpec = step.spec
        super().__init__(step, services, side_watermarks, spec.by, ((), ()))
        self.spec = spec
        self.waiting = Pieces(EVENT_TIME)  # left rows not answered yet, arrival order
        self.right = SortedPieces(RT)  # right rows by (event time, arrival), pruned
        self.kept = 0  # rows kept before the horizon at the last pruning

    def admit(self, df: pl.DataFrame, ctx: Any, side: int) -> pl.DataFrame | None:
        got = super().admit(df, ctx, side)
        if got is None or side == 0:
            return got
        drop = [self.spec.right_on] if self.spec.right_on == self.spec.left_on else []  # Polars coalesces it
        # no arrival number: the right rows' order is their arrival order among equal times (SortedPieces)
        return got.drop(*drop, SEQ).rename({EVENT_TIME: RT})

    def advance(self, watermark: int) -> pl.DataFrame | None:
        previous = self.update_watermarks()
        wl, wr = self.wm
        new = self.take(1)
        if new is not None:
            self.right.add(new)
        new = self.take(0)
        if new is not None:  # one chunk: the runtime's frames have one per log batch, and gathers from
            self.waiting.append(new.rechunk())  # many chunks cost several times more (strings: ~8x)
        cut = wr if self.spec.grace_ms is None else max(wr, wl - self.spec.grace_ms)  # ready: time < cut
        out = None
        touched = [j for j, low in enumerate(self.waiting.lows) if low < cut]
        if touched:
            pieces = [self.waiting.frames[j] for j in touched]
            rows = _concat(pieces, rechunk=False)
            ready = rows.get_column(EVENT_TIME) < cut
            n = int(ready.sum())
            if n:
                out, stay = self._answer(rows, None if n == rows.height else ready, wr, previous)
                keep = (~ready).to_numpy().copy()
                if stay is not None:  # answered rows that are not final yet stay, in arrival order
                    keep[stay] = True
                self._keep_waiting(touched, pieces, keep)
        self._prune(wl)
        self.metrics.state_rows = self.state_rows()
        return out

    def _keep_waiting(self, touched: list[int], pieces: list[pl.DataFrame], keep: np.ndarray) -> None:
        """Each touched piece of ``waiting`` replaced by its rows ``keep`` marks (in place: arrival order)."""
        frames = list(self.waiting.frames)
        start = 0
        for j, f in zip(touched, pieces, strict=True):
            mask = keep[start:start + f.height]
            start += f.height
            frames[j] = f.filter(pl.Series(mask)) if mask.any() else f.clear()
        self.waiting.set(frames)

    def state_rows(self) -> int:
        return self.waiting.height + self.right.height

    def state_frames(self) -> dict[str, pl.DataFrame | None]:
        """Checkpointed: the unanswered left rows (arrival order) and the pruned right rows (time order)."""
        return {"waiting": self.waiting.frame(), "right": self.right.frame()}

    def state_values(self) -> dict[str, Any]:
        return {"kept": int(self.kept)}

    def restore_frames(self, snap: Snapshot) -> None:
        waiting = snap.frame("waiting")
        # arrival order (older versions did not keep it)
        self.waiting.set([] if waiting is None else [waiting.sort(SEQ)])
        right = snap.frame("right")
        self.right.set([] if right is None else [right.drop(SEQ, strict=False)])  # older versions kept it
        self.kept = int(snap.values["kept"])

    def _right_rows(self, wr: int, newest: int) -> pl.DataFrame:
        """The right rows an answer may use (a prefix of ``self.right``, one frame). ``newest``: the time of
        the newest left row to answer."""
        if self.spec.direction == "backward":
            # rows after the newest left row answer nothing (in a replay one input may run far ahead)
            n = self.right.count_before(newest, "right")
        elif wr < MAX_TIME:  # sealed: every right row before wr has arrived
            n = self.right.count_before(wr, "left")
        else:
            n = self.right.height
        got = self.right.head(n)
        if got is None and self.right.template is not None:
            return self.right.template
        if got is None:
            schema = {**{k: self.key_types.get(k, pl.String()) for k in self.by}, RT: pl.Int64()}
            return pl.DataFrame(schema=schema)
        return got

    def _asof(self, rows: pl.DataFrame, right: pl.DataFrame, strategy: str) -> pl.DataFrame:
        try:
            return rows.join_asof(
                right, left_on=EVENT_TIME, right_on=RT, by=self.by or None, strategy=strategy,  # type: ignore[arg-type]
                tolerance=self.spec.tolerance_ms, allow_exact_matches=self.spec.allow_exact_matches,
                suffix=self.spec.suffix, check_sortedness=False)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise StepError(f"the as-of join failed: {type(e).__name__}: {e}", step_id=self.step.step_id,
                            fix="check that key columns have one type on both sides") from e

    def _answer(self, waiting: pl.DataFrame, ready: pl.Series | None, wr: int,
                previous: int) -> tuple[pl.DataFrame | None, np.ndarray | None]:
        """Answer the ready rows of ``waiting`` (None: all): the output rows in (time, arrival) order, and
        the positions in ``waiting`` of answered rows that are not final yet (None: all final)."""
        spec = self.spec
        keys = waiting.select(*self.by, EVENT_TIME).with_row_index(LIDX)
        if ready is not None:
            keys = keys.filter(ready)
        in_order = bool(keys.get_column(EVENT_TIME).is_sorted())
        if not in_order:  # waiting is in arrival order: (time, arrival)
            keys = keys.gather(stable_order(keys.get_column(EVENT_TIME)))
        right = self._right_rows(wr, int(keys.get_column(EVENT_TIME)[-1]))
        view = right.select(*self.by, RT).with_row_index(RIDX)
        found = self._asof(keys, view, spec.direction).get_column(RIDX)
        final: pl.Series | None = None
        if spec.direction != "backward" and wr < MAX_TIME:
            t = keys.get_column(EVENT_TIME)
            passed = (t + spec.tolerance_ms < wr) if spec.tolerance_ms is not None else pl.repeat(
                False, keys.height, eager=True)
            if spec.direction == "forward":
                final = found.is_not_null() | passed
            else:
                ahead = self._asof(keys, view, "forward").get_column(RT).is_not_null()
                back = self._asof(keys, view, "backward").get_column(RT)
                closest_behind = ((2 * t - back) < wr).fill_null(False)  # every row as near on the other side is in
                final = ahead | passed | closest_behind
        order = keys.get_column(LIDX)
        stay = None
        if final is not None and not final.all():
            stay = order.filter(~final).to_numpy()
            order, found, keys = order.filter(final), found.filter(final), keys.filter(final)
            in_order = False
        if spec.how == "inner":
            hit = found.is_not_null()
            if not hit.all():
                order, found, keys = order.filter(hit), found.filter(hit), keys.filter(hit)
                in_order = False
        if not order.len():
            return None, stay
        identity = in_order and ready is None  # every waiting row, already in order
        return self._output(waiting, None if identity else order, right, found, keys.get_column(EVENT_TIME),
                            previous), stay

    def _output(self, waiting: pl.DataFrame, order: pl.Series | None, right: pl.DataFrame, found: pl.Series,
                times: pl.Series, previous: int) -> pl.DataFrame:
        """Left user columns (rows ``order`` of ``waiting``), the right user columns of the rows ``found``
        of ``right`` (named as Polars names join outputs: keys once, clashes suffixed), event time and
        watermark."""
        left_users = [c for c in waiting.columns if c not in _HIDDEN]
        left = waiting.select(left_users)
        parts = [left if order is None else left.gather(order)]
        rights = [c for c in self._right_columns() if c not in _HIDDEN]
        names = suffixed(left_users, rights, self.by, self.spec.suffix)
        if self.projection is not None:  # a clash's suffixed copy (seq_right) nothing after the join reads
            names = {c: n for c, n in names.items() if n in self.projection}
        if names:
            have = right.columns
            values = right.select([pl.col(c) if c in have else pl.lit(None).alias(c) for c in names])
            parts.append(values.gather(found).rename(names))
        parts.append(times.to_frame())
        return self.finish_output(pl.concat(parts, how="horizontal"), previous)

    def _right_columns(self) -> list[str]:
        """The right state's columns (every piece's, in first-seen order)."""
        frames = self.right.frames
        if len(frames) == 1:
            return list(frames[0].columns)
        if not frames:
            return [] if self.right.template is None else list(self.right.template.columns)
        return list(dict.fromkeys(c for f in frames for c in f.columns))

    def _prune(self, wl: int) -> None:
        """Drop right rows no future answer can need: before the oldest left time still possible
        (the left watermark, or an unanswered row), keep only the latest row per key (backward,
        nearest; within the tolerance) and none for forward joins. Pruning waits until there are
        more such rows than twice those it kept last time, so its cost is amortized over the rows it drops."""
        if not self.right.frames:
            return
        horizon = wl
        low = self.waiting.low()
        if low is not None:
            horizon = min(horizon, low)
        i = self.right.count_before(horizon, "left")
        if i <= 2 * self.kept + 1024:
            return
        old = self.right.head(i)
        assert old is not None
        if self.spec.direction == "forward":
            keep = old.head(0)
        else:
            idx = old.select(*self.by, RT).with_row_index(RIDX)
            last = idx.unique(self.by, keep="last") if self.by else idx.tail(1)
            if self.spec.tolerance_ms is not None:
                last = last.filter(pl.col(RT) >= horizon - self.spec.tolerance_ms)
            keep = old.gather(last.get_column(RIDX).sort())  # positions in time order
        self.kept = keep.height
        self.right.replace_head(i, keep)

    def held(self) -> list[pl.DataFrame]:
        return [*self.waiting.frames, *self.right.frames]
