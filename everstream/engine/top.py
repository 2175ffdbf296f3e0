"""Window Top-N: the ``n`` highest (or lowest) events of each window and key, emitted when the window closes.

Flink SQL spells it ``ROW_NUMBER() / RANK() OVER (PARTITION BY window_start, key ORDER BY x DESC) <= n``
over a windowing table function; finance asks it all day: the largest trades per symbol and minute,
the top movers per 5 minutes, Nexmark q7 (highest bid per 10 s) and q5 (hottest auctions).

Events wait for the watermark like every event-time-ordered operator (:class:`OrderedOp`), then
each release is merged into a small table of the current leaders per (key, window): only rows
that can still make the cut are kept, so state is ``n`` rows (plus ties) per open window, never
the window's events. A window's leaders are emitted once the watermark passes its end (plus
``allowed_lateness``), ordered by window end, key, rank. Ranks: ``ties=True`` is SQL ``RANK()``
(every row tied at the cut stays; ``n=1`` gives all rows at the maximum), ``ties=False`` is
``ROW_NUMBER()`` with ties broken by event time then arrival. Null values never rank.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from everstream.engine import plan as p
from everstream.engine import windows as w
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import WATERMARK, Services, user_columns
from everstream.engine.ordered import _SEQ, _SRC, OrderedOp
from everstream.engine.state import Snapshot, fingerprint, restore_ordered, snapshot_ordered
from everstream.engine.stream import WINDOW_END, WINDOW_START
from everstream.engine.time import MAX_TIME


class TopOp(OrderedOp):
    """Keeps each open window's leading rows; emits them when the window closes."""

    def __init__(self, step: p.Top, services: Services, time_zone: Callable[[], str | None],
                 multi_source: bool = False) -> None:
        super().__init__(step, services, step.by, [step.order], multi_source)
        self.top = step
        self.time_zone = time_zone
        self.leaders: pl.DataFrame | None = None  # rows still in the running, with _ws/_we/_seq/_src/_offset

    def release(self, rows: pl.DataFrame, previous: int) -> pl.DataFrame | None:
        s = self.top
        assigned = w.assign(s.spec, rows, EVENT_TIME).filter(pl.col(s.order).is_not_null())
        parts = [f for f in (self.leaders, assigned) if f is not None and f.height]
        if not parts:
            return None
        # leaders come from earlier releases, so appearance order is (event time, arrival): ROW_NUMBER's tie-break
        cand = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
        rank = pl.col(s.order).rank("min" if s.ties else "ordinal", descending=s.descending).over([*s.by, w.WS])
        self.leaders = cand.filter(rank <= s.n)
        return None

    def advance(self, watermark: int) -> pl.DataFrame | None:
        previous = self.watermark
        super().advance(watermark)
        if self.leaders is None or self.leaders.is_empty():
            return None
        due = self.leaders.get_column(w.WE) + self.top.allowed_lateness_ms <= self.watermark
        if not due.any():
            self.metrics.state_rows = self.state_rows() + (self.waiting.height if self.waiting is not None else 0)
            return None
        done, self.leaders = self.leaders.filter(due), self.leaders.filter(~due)
        self.metrics.state_rows = self.state_rows() + (self.waiting.height if self.waiting is not None else 0)
        return self._results(done, previous)

    def _results(self, done: pl.DataFrame, previous: int) -> pl.DataFrame:
        s = self.top
        out = done.sort([w.WE, w.WS, *s.by, s.order, EVENT_TIME, _SEQ],
                        descending=[False, False, *(False for _ in s.by), s.descending, False, False])
        self.metrics.windows_fired += out.select(pl.struct([*s.by, w.WS]).n_unique()).item()  # (key, window)s
        dtype = pl.Datetime("ms", self.time_zone())
        cols = [c for c in user_columns(out) if c not in (w.WS, w.WE, _SEQ, _SRC)]
        window = ([] if not s.window_columns else
                  [pl.col(w.WS).cast(dtype).alias(WINDOW_START), pl.col(w.WE).cast(dtype).alias(WINDOW_END)])
        return out.select(
            *cols, *window,
            (pl.col(w.WE) - 1).alias(EVENT_TIME),
            pl.lit(max(previous, -MAX_TIME) - s.allowed_lateness_ms, dtype=pl.Int64).alias(WATERMARK),
        )

    def state_rows(self) -> int:
        return 0 if self.leaders is None else self.leaders.height

    def held(self) -> list[pl.DataFrame]:
        """Waiting events and the leaders: a restart re-reads from the oldest of them (a row that lost
        its place can never win back, so nothing older is needed)."""
        return [*super().held(), *([self.leaders] if self.leaders is not None else [])]

    # ------------------------------------------------------------------ exactly-once state

    def state_fingerprint(self) -> str:
        s = self.top
        return fingerprint("top", s.spec.describe(), s.by, s.n, s.order, s.descending, s.ties)

    def snapshot_state(self) -> Snapshot:
        snap = snapshot_ordered(self)
        if self.leaders is not None:
            snap.tables["leaders"] = self.leaders.to_arrow()
        return snap

    def restore_state(self, snap: Snapshot) -> None:
        restore_ordered(self, snap)
        self.leaders = snap.frame("leaders")


__all__ = ["TopOp"]
