"""Operators that see each key's events in event-time order: rolling features and count windows.

Events wait in a buffer until the watermark passes their time (no earlier event can still
come), then are released sorted by (event time, arrival) and processed vectorized per release
with per-key state carried between releases. So the results are those of the batch query over
the same data in event-time order, whatever the arrival order within the watermark's bound.
An event older than the watermark when it arrives is late: it goes to ``<app>.<step_id>.late``.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.features import Ewma, RollingAgg, SinceLast, decayed_sums, ln2_over
from everstream.engine.operators import (
    WATERMARK,
    Ctx,
    Operator,
    Services,
    first_offset,
    oldest_held,
    user_columns,
)
from everstream.engine.stream import WINDOW_END, WINDOW_START
from everstream.engine.time import MAX_TIME
from everstream.engine.windows import Count
from everstream.errors import StepError
from everstream.log.contract import OFFSET_COL

_SEQ = "_seq"  # arrival order (ties of event time)
_SRC = "_src"  # index of the input (topic, partition) a row came from, for commit positions
_ONE = "_one"
_KID = "_kid"
_AUX = (_SEQ, _SRC)


class OrderedOp(Operator):
    """Buffers events until the watermark passes them; ``release`` gets them in event-time order."""

    def __init__(self, step: p.Step, services: Services, by: tuple[str, ...], columns: list[str],
                 multi_source: bool = False) -> None:
        super().__init__(step, services)
        self.by = list(by)
        self.columns = list(dict.fromkeys([*self.by, *columns]))
        self.multi_source = multi_source
        self.buffer: list[pl.DataFrame] = []
        self.waiting: pl.DataFrame | None = None
        self.watermark = -MAX_TIME
        self.seq = 0
        self.sources: dict[tuple[str | None, int | None], int] = {}

    def process(self, df: pl.DataFrame, ctx: Ctx) -> pl.DataFrame | None:
        missing = [c for c in self.columns if c not in df.columns]
        if missing or EVENT_TIME not in df.columns:
            raise StepError(
                f"columns {missing or [EVENT_TIME]} are not in the stream (columns: {user_columns(df)})",
                step_id=self.step.step_id, topic=ctx.topic, partition=ctx.partition, offset=first_offset(df),
                fix="keys and feature inputs must be columns of the stream; declare event time with "
                    "with_watermark(...) on the source, and keep _event_time in map_batches",
            )
        ts = pl.col(EVENT_TIME)
        if self.multi_source or WATERMARK not in df.columns:
            late = df.select(ts < self.watermark).to_series()
        else:
            late = df.select(ts < pl.col(WATERMARK)).to_series()
        if late.any():
            rows = df.filter(late)
            self.metrics.late_events += rows.height
            self.services.late(self.step, rows)
            df = df.filter(~late)
            if df.is_empty():
                return None
        src = self.sources.setdefault((ctx.topic, ctx.partition), len(self.sources))
        if OFFSET_COL not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias(OFFSET_COL))
        self.buffer.append(df.with_columns(
            pl.int_range(self.seq, self.seq + df.height, dtype=pl.Int64).alias(_SEQ),
            pl.lit(src, dtype=pl.Int32).alias(_SRC),
        ))
        self.seq += df.height
        return None

    def advance(self, watermark: int) -> pl.DataFrame | None:
        previous, self.watermark = self.watermark, max(self.watermark, watermark)
        if self.buffer:
            parts = ([self.waiting] if self.waiting is not None else []) + self.buffer
            self.waiting = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
            self.buffer = []
        if self.waiting is None or self.waiting.is_empty():
            self.metrics.state_rows = self.state_rows()
            return None
        due = self.waiting.get_column(EVENT_TIME) < self.watermark
        if not due.any():
            self.metrics.state_rows = self.state_rows() + self.waiting.height
            return None
        rows, self.waiting = self.waiting.filter(due), self.waiting.filter(~due)
        out = self.release(rows.sort([*self.by, EVENT_TIME, _SEQ], nulls_last=True), max(previous, -MAX_TIME))
        self.metrics.state_rows = self.state_rows() + self.waiting.height
        return out

    def release(self, rows: pl.DataFrame, previous: int) -> pl.DataFrame | None:
        raise NotImplementedError

    def state_rows(self) -> int:
        return 0

    def held(self) -> list[pl.DataFrame]:
        """Frames (with ``_src`` and ``_offset``) whose events in-memory state still needs."""
        return [] if self.waiting is None else [self.waiting]

    def held_offsets(self) -> dict[tuple[str, int], int]:
        return oldest_held([*self.held(), *self.buffer], _SRC, OFFSET_COL, self.sources)

    # ------------------------------------------------------------------ helpers

    def key_ids(self, rows: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
        """Dense key ids of rows sorted by key, and each key's first row (key columns + ``_kid``)."""
        if not self.by:
            return np.zeros(rows.height, dtype=np.int64), pl.DataFrame({_KID: [0]}, schema={_KID: pl.Int64})
        new = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in self.by]).fill_null(True)
        kid = rows.select((new.cast(pl.Int64).cum_sum() - 1).alias(_KID)).to_series()
        keys = rows.select(self.by).with_columns(kid).unique(_KID, keep="first", maintain_order=True)
        return kid.to_numpy(), keys

    def carried(self, keys: pl.DataFrame, carry: pl.DataFrame | None, cols: dict[str, pl.DataType]) -> pl.DataFrame:
        """Carried state columns for each key id (nulls where the key is new)."""
        if carry is None:
            return keys.with_columns(*[pl.lit(None, dtype=t).alias(c) for c, t in cols.items()])
        if not self.by:
            return keys.hstack(carry.select(list(cols)))
        return keys.join(carry, on=self.by, how="left", nulls_equal=True).sort(_KID)

    def update_carry(self, carry: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
        if carry is None or not self.by:
            return new
        return pl.concat([carry.join(new.select(self.by), on=self.by, how="anti", nulls_equal=True), new],
                         how="vertical_relaxed")


class RollingOp(OrderedOp):
    """Per-key rolling features (see :mod:`everstream.engine.features`), emitted with each event."""

    step: p.Rolling

    def __init__(self, step: p.Rolling, services: Services, multi_source: bool = False) -> None:
        cols = [c for f in step.features.values() for c in f.columns]
        super().__init__(step, services, step.by, cols, multi_source)
        self.windowed = {n: f for n, f in step.features.items() if isinstance(f, RollingAgg)}
        self.horizon = max((f.over_ms for f in self.windowed.values()), default=0)
        self.context: pl.DataFrame | None = None  # the last `horizon` of events per key
        self.carry: pl.DataFrame | None = None  # per key: last event time, ewma sums

    def release(self, rows: pl.DataFrame, previous: int) -> pl.DataFrame | None:
        feats: list[pl.Series] = []
        if self.windowed:
            feats += self._windowed(rows)
        kid, keys = self.key_ids(rows)
        feats += self._carried(rows, kid, keys)
        out = rows.hstack(feats).sort(EVENT_TIME, _SEQ).drop(_AUX)
        return out.with_columns(pl.lit(previous, dtype=pl.Int64).alias(WATERMARK))

    def _windowed(self, rows: pl.DataFrame) -> list[pl.Series]:
        cols = [*self.columns, EVENT_TIME, _SEQ, _SRC, OFFSET_COL]
        new = rows.select(cols).with_columns(pl.lit(False).alias("_ctx"))
        ctx = self.context
        if ctx is not None and self.by:
            ctx = ctx.join(rows.select(self.by).unique(), on=self.by, how="semi", nulls_equal=True)
        frame = new if ctx is None or ctx.is_empty() else pl.concat(
            [ctx.with_columns(pl.lit(True).alias("_ctx")), new], how="vertical_relaxed"
        ).sort([*self.by, EVENT_TIME, _SEQ], nulls_last=True)
        exprs = []
        for name, f in self.windowed.items():
            e = f.expr(EVENT_TIME, _ONE)
            exprs.append((e.over(self.by) if self.by else e).alias(name))
        try:
            got = frame.with_columns(pl.lit(1, dtype=pl.Int64).alias(_ONE)).select(pl.col("_ctx"), *exprs)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise StepError(f"a rolling feature failed: {type(e).__name__}: {e}", step_id=self.step.step_id,
                            offset=first_offset(rows), fix="check the features' input columns are numeric") from e
        got = got.filter(~pl.col("_ctx")).drop("_ctx")
        keep = pl.concat([self.context, new.drop("_ctx")], how="vertical_relaxed") if self.context is not None \
            else new.drop("_ctx")
        self.context = keep.filter(pl.col(EVENT_TIME) > self.watermark - self.horizon)
        return list(got.iter_columns())

    def _carried(self, rows: pl.DataFrame, kid: np.ndarray, keys: pl.DataFrame) -> list[pl.Series]:
        out: list[pl.Series] = []
        others = {n: f for n, f in self.step.features.items() if not isinstance(f, RollingAgg)}
        if not others:
            return out
        types: dict[str, pl.DataType] = {"_last_t": pl.Int64()}
        for fname, f in others.items():
            if isinstance(f, Ewma):
                types |= {f"{fname}__s": pl.Float64(), f"{fname}__w": pl.Float64(), f"{fname}__t": pl.Int64()}
        state = self.carried(keys, self.carry, types)
        ts = rows.get_column(EVENT_TIME).to_numpy()
        n = len(ts)
        starts = np.flatnonzero(np.r_[True, kid[1:] != kid[:-1]])
        last = np.r_[starts[1:], n] - 1
        new_state = keys.select(self.by) if self.by else pl.DataFrame()
        for name, f in others.items():
            if isinstance(f, SinceLast):
                prev = np.empty(n, dtype=np.float64)
                prev[1:] = ts[:-1]
                carried = state.get_column("_last_t").cast(pl.Float64).fill_null(np.nan).to_numpy()
                prev[starts] = carried
                since = ts - prev
                out.append(pl.Series(name, since, dtype=pl.Float64, nan_to_null=True).cast(pl.Int64))
            elif isinstance(f, Ewma):
                x = rows.get_column(f.column)
                try:
                    xv = x.cast(pl.Float64).to_numpy()
                except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
                    raise StepError(f"ewma({f.column!r}) needs numbers, got {x.dtype}", step_id=self.step.step_id,
                                    offset=first_offset(rows), fix="cast the column to a number first") from e
                valid = ~np.isnan(xv)
                s0 = state.get_column(f"{name}__s").fill_null(0.0).to_numpy()
                w0 = state.get_column(f"{name}__w").fill_null(0.0).to_numpy()
                t0 = state.get_column(f"{name}__t").fill_null(0).to_numpy()
                s, w = decayed_sums(kid, ts, xv, valid, ln2_over(f.half_life_ms), s0, w0, t0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out.append(pl.Series(name, np.where(w > 0, s / w, np.nan), nan_to_null=True))
                new_state = new_state.with_columns(
                    pl.Series(f"{name}__s", s[last]), pl.Series(f"{name}__w", w[last]),
                    pl.Series(f"{name}__t", ts[last], dtype=pl.Int64))
        new_state = new_state.with_columns(pl.Series("_last_t", ts[last], dtype=pl.Int64))
        self.carry = self.update_carry(self.carry, new_state)
        return out

    def state_rows(self) -> int:
        return (0 if self.context is None else self.context.height) + (0 if self.carry is None else self.carry.height)

    def held(self) -> list[pl.DataFrame]:
        return [*super().held(), *([] if self.context is None else [self.context])]


class CountWindowOp(OrderedOp):
    """Count windows: every ``n`` events of a key in event-time order make one window."""

    step: p.Window

    def __init__(self, step: p.Window, services: Services, time_zone: str | None = "UTC",
                 multi_source: bool = False) -> None:
        need: list[str] = []
        for name, a in step.aggs.items():
            for e in a.partial(name):
                need += [c for c in e.meta.root_names() if not c.startswith("_")]
        super().__init__(step, services, step.by, need, multi_source)
        self.n = cast(Count, step.spec).n
        self.partials = [e for name, a in step.aggs.items() for e in a.partial(name)]
        self.merges = [e for name, a in step.aggs.items() for e in a.merge(name)]
        self.finals = [a.finalize(name) for name, a in step.aggs.items()]
        self.time_zone = time_zone
        self.state: pl.DataFrame | None = None  # partials of open windows per (key, window, source)
        self.carry: pl.DataFrame | None = None  # per key: events in its open window, its number

    def release(self, rows: pl.DataFrame, previous: int) -> pl.DataFrame | None:
        kid, keys = self.key_ids(rows)
        state = self.carried(keys, self.carry, {"_n": pl.Int64(), "_win": pl.Int64()})
        n0 = state.get_column("_n").fill_null(0).to_numpy()
        w0 = state.get_column("_win").fill_null(0).to_numpy()
        m = len(kid)
        starts = np.flatnonzero(np.r_[True, kid[1:] != kid[:-1]])
        lens = np.diff(np.r_[starts, m])
        pos = np.arange(m) - np.repeat(starts, lens) + n0[kid]
        win = w0[kid] + pos // self.n
        total = n0 + lens
        new_carry = (keys.select(self.by) if self.by else pl.DataFrame()).with_columns(
            pl.Series("_n", total % self.n, dtype=pl.Int64), pl.Series("_win", w0 + total // self.n, dtype=pl.Int64))
        self.carry = self.update_carry(self.carry, new_carry)
        rows = rows.with_columns(pl.Series("_win", win, dtype=pl.Int64))
        group = [*self.by, "_win", _SRC]
        bounds = [pl.col(EVENT_TIME).min().alias("_t0"), pl.col(EVENT_TIME).max().alias("_t1"),
                  pl.len().cast(pl.Int64).alias("_cnt"), pl.col(OFFSET_COL).min()]
        merges = [pl.col("_t0").min(), pl.col("_t1").max(), pl.col("_cnt").sum(), pl.col(OFFSET_COL).min()]
        try:
            part = rows.group_by(group).agg(*self.partials, *bounds)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise StepError(f"an aggregate failed: {type(e).__name__}: {e}", step_id=self.step.step_id,
                            offset=first_offset(rows), fix="check the aggregates' input columns and types") from e
        merged = pl.concat([*([] if self.state is None else [self.state]), part], how="vertical_relaxed")
        merged = merged.group_by(group).agg(*self.merges, *merges)
        full = pl.col("_cnt").sum().over([*self.by, "_win"]) >= self.n
        fired = merged.filter(full)
        self.state = merged.filter(~full)
        if fired.is_empty():
            return None
        dtype = pl.Datetime("ms", self.time_zone)
        out = fired.group_by([*self.by, "_win"]).agg(*self.merges, *merges[:2]).sort("_t1", *self.by, "_win")
        out = out.select(
            *self.by, pl.col("_win").alias("window"),
            pl.col("_t0").cast(dtype).alias(WINDOW_START), (pl.col("_t1") + 1).cast(dtype).alias(WINDOW_END),
            *self.finals, pl.col("_t1").alias(EVENT_TIME), pl.lit(previous, dtype=pl.Int64).alias(WATERMARK),
        )
        self.metrics.windows_fired += out.height
        return out

    def state_rows(self) -> int:
        return 0 if self.state is None else self.state.height

    def held(self) -> list[pl.DataFrame]:
        return [*super().held(), *([] if self.state is None else [self.state.select(_SRC, OFFSET_COL)])]
