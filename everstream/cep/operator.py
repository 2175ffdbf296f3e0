"""The match operator: event-time ordering, vectorized pre-filtering, the NFA over candidate rows.

Per batch (``process``): every condition group of the pattern that is a Polars expression is
evaluated on the whole batch at once into one int64 bit mask per row; rows with an empty mask
cannot take part in any stage (nor trigger a negative stage or an ``until``) and, unless the
pattern needs adjacency (strict contiguity, ``not_next``), are dropped right there. The rest wait
in the event-time buffer of :class:`~everstream.engine.ordered.OrderedOp` until the watermark
passes them, then are released sorted by (key, event time, arrival) and fed to the NFA
(:mod:`everstream.cep.nfa`); keys without a candidate never reach Python. So out-of-order arrival
within ``max_delay`` gives the matches of in-order input. Where it gives the same matches (a time
bound, no time-out topic, no adjacency, no Python condition: :meth:`Compiled.lazy_ending_bits`), the
released candidates are first **parked** per key (:mod:`everstream.cep.parked`) and a key's rows are
fed to the NFA only when a row that can end a match arrives for it (W5: a large amount after small
ones), so most candidates never become Python objects. Then the candidates are released sorted by
(event time, arrival) only: the parking step sorts by key just the rows it looks at.

Per-batch fixed costs matter (a live batch is a few rows; W5 polls 250 k rows, of which ~3 % are
candidates): the common case of ``process`` (no late row) filters column by column and buffers only
the columns used, and releasing is one sort and a slice (a commit's held offsets: :func:`oldest_held`,
three column minimums per frame of one input).

Output: one row per match — the key columns, ``pattern`` (the step id), ``match_start`` and
``match_end`` (event times of its first and last event), and one list-of-struct column per
positive stage holding that stage's events (all user columns). Timed-out partial matches (the
pattern has ``within``) go to ``<app>.<step_id>.timeouts`` (or the topic given), same columns with
``timed_out_at`` instead of ``match_end``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa

from everstream.cep.nfa import Found, Matcher, TimedOut
from everstream.cep.parked import GID, MASK, Parked
from everstream.cep.pattern import MATCH_END, MATCH_START, PATTERN, Compiled, Pattern
from everstream.engine import plan as p
from everstream.engine import state as st
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import INTERNAL, WATERMARK, Ctx, Services, user_columns
from everstream.engine.ordered import _SEQ, _SRC, OrderedOp
from everstream.engine.state import Snapshot
from everstream.engine.time import MAX_TIME, event_time_ms
from everstream.errors import PlanError, StepError
from everstream.log.contract import OFFSET_COL

POS = "_cep_pos"
#: input columns the operator never reads once the batch is buffered (the log's metadata; the rows'
#: watermark, already compared): the pre-filter does not copy them
_DROPPED = frozenset([c for c in INTERNAL if c not in (EVENT_TIME, OFFSET_COL)])
TIMED_OUT_AT = "timed_out_at"


def mask_expr(compiled: Compiled) -> pl.Expr:
    """One int64 per row: bit k set when the row satisfies condition group k's expressions."""
    terms = [pl.when(e.fill_null(False)).then(pl.lit(1 << k, dtype=pl.Int64)).otherwise(pl.lit(0, dtype=pl.Int64))
             for k, e in enumerate(compiled.exprs)]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total.alias(MASK)


def check_columns(compiled: Compiled, columns: Sequence[str], where: str) -> None:
    missing = sorted(compiled.columns() - set(columns))
    if missing:
        raise PlanError(
            f"{where}: the pattern's conditions read columns {missing}, which the stream does not have "
            f"(columns: {[c for c in columns if not c.startswith('_')]}); fix the condition "
            f"(pattern {compiled.pattern.describe()})")


def with_mask(compiled: Compiled, df: pl.DataFrame, where: str) -> pl.DataFrame:
    check_columns(compiled, df.columns, where)
    try:
        return df.with_columns(mask_expr(compiled))
    except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
        raise PlanError(f"{where}: a condition of pattern {compiled.pattern.describe()} failed on the data: "
                        f"{type(e).__name__}: {' '.join(str(e).split())}; check the columns' types") from e


class Store:
    """Candidate rows that partial matches may still reference, by event id (``gid``), contiguous."""

    def __init__(self) -> None:
        self.frame: pl.DataFrame | None = None
        self.base = 0
        self.next_gid = 0
        self.users: list[str] = []
        self._dicts: list[dict[str, Any]] | None = None  # rows as dicts, for Python conditions

    def add(self, rows: pl.DataFrame) -> pl.DataFrame:
        rows = rows.with_columns(pl.int_range(self.next_gid, self.next_gid + rows.height, dtype=pl.Int64).alias(GID))
        self.next_gid += rows.height
        self._dicts = None
        if self.frame is None or self.frame.is_empty():
            self.frame, self.base = rows, int(rows.get_column(GID)[0]) if rows.height else self.next_gid
        else:
            self.frame = pl.concat([self.frame, rows], how="diagonal_relaxed")
        if not self.users:
            self.users = [c for c in user_columns(rows) if not c.startswith("_cep_") and c not in (_SEQ, _SRC)]
        return rows

    def row(self, gid: int) -> dict[str, Any]:
        if self._dicts is None:
            assert self.frame is not None
            self._dicts = self.frame.select(self.users).to_dicts()
        return self._dicts[gid - self.base]

    def compact(self, lowest: int | None) -> None:
        if self.frame is None:
            return
        self._dicts = None
        if lowest is None:
            self.frame, self.base = None, self.next_gid
        elif lowest > self.base:
            self.frame = self.frame.slice(lowest - self.base)
            self.base = lowest

    def build(self, items: Sequence[Found | TimedOut], by: list[str], compiled: Compiled, step_id: str,
              dtype: pl.Datetime) -> pl.DataFrame:
        """The output rows of matches (or timeouts): keys, pattern, times, one list-of-struct per stage.
        Only the rows the items reference are gathered (one take), then cut into the stages' lists."""
        assert self.frame is not None
        base, k = self.base, len(compiled.stages)
        flats: list[list[int]] = [[] for _ in range(k)]
        offsets: list[list[int]] = [[0] for _ in range(k)]
        first: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        for it in items:
            events = it.events
            first.append(events[0][0] - base)
            for g, stage in events:
                flats[stage].append(g - base)
            for stage in range(k):
                offsets[stage].append(len(flats[stage]))
            starts.append(it.start_t)
            ends.append(it.expired_at if isinstance(it, TimedOut) else it.end_t)
        timed_out = isinstance(items[0], TimedOut)
        taken = np.fromiter((i for f in flats for i in f), dtype=np.int64)
        structs = self.frame.select(pl.struct(self.users).alias("e"))[taken].to_series().to_arrow()
        if isinstance(structs, pa.ChunkedArray):
            structs = structs.combine_chunks()
        cols: list[pl.Series] = [
            pl.Series(PATTERN, [step_id] * len(items), dtype=pl.String),
            pl.Series(MATCH_START, starts, dtype=pl.Int64).cast(dtype),
            pl.Series(TIMED_OUT_AT if timed_out else MATCH_END, ends, dtype=pl.Int64).cast(dtype),
        ]
        at = 0
        for st_, f, off in zip(compiled.stages, flats, offsets, strict=True):
            lists = pa.ListArray.from_arrays(pa.array(off, pa.int32()), structs.slice(at, len(f)))
            cols.append(pl.Series(st_.name, lists))
            at += len(f)
        out = self.frame.select(by)[first].hstack(cols) if by else pl.DataFrame(cols)
        times = [it.at if isinstance(it, Found) and it.at is not None else e for it, e in zip(items, ends, strict=True)]
        return out.with_columns(pl.Series(EVENT_TIME, times, dtype=pl.Int64))


def fed(by: list[str]) -> pl.Expr:
    """Rows the NFA sees when adjacency matters (rows sorted by key, event time): the candidates, and
    each non-candidate right after a candidate (or first of its key here): it takes no stage, but it
    ends the strict-contiguity branches (next, consecutive) waiting on the key, so those are not
    reported as timed out later. Further non-candidates in a row change nothing."""
    prev = pl.col(MASK).shift(1)
    return (pl.col(MASK) != 0) | ((prev.over(by) if by else prev) != 0).fill_null(True)


def keys_of(rows: pl.DataFrame, by: list[str]) -> list[Hashable]:
    """The NFA's key of each row: the key column's value, a tuple of several, 0 without keys."""
    if not by:
        return [0] * rows.height
    if len(by) == 1:
        keys: list[Hashable] = rows.get_column(by[0]).to_list()
        return keys
    return list(zip(*[rows.get_column(c).to_list() for c in by], strict=True))


def feed(matcher: Matcher, cands: pl.DataFrame, by: list[str]) -> None:
    """Step the NFA over candidate rows sorted by (key, event time, arrival)."""
    if not cands.height:
        return
    keys = keys_of(cands, by)
    gids = cands.get_column(GID).to_list()
    pos = cands.get_column(POS).to_list() if POS in cands.columns else gids
    ts = cands.get_column(EVENT_TIME).to_list()
    masks = cands.get_column(MASK).to_list()
    step = matcher.feed
    for k, g, q, t, m in zip(keys, gids, pos, ts, masks, strict=True):
        step(k, g, q, t, m)


class MatchOp(OrderedOp):
    """``stream.match(pattern, by=...)``: a pattern matched per key in event-time order.

    ``lazy=False`` turns lazy per-key evaluation (:mod:`everstream.cep.parked`) off; it is on by
    default where it gives the eager results exactly (``self.parked`` is set then)."""

    step: p.Match

    def __init__(self, step: p.Match, services: Services, *, multi_source: bool = False,
                 time_zone: Callable[[], str | None] = lambda: "UTC", lazy: bool = True) -> None:
        self.compiled: Compiled = step.pattern.check(step.by)
        super().__init__(step, services, step.by, [], multi_source)
        self.time_zone = time_zone
        self.store = Store()
        self.matcher = Matcher(self.compiled, self.store.row)
        self.carry: pl.DataFrame | None = None  # per key: events seen (positions), when adjacency matters
        t = step.timeouts
        self.timeout_topic: str | None = (
            f"{services.app_name}.{step.step_id}.timeouts" if t is True else t if isinstance(t, str) else None)
        self.previous = 0
        self.key_schema: dict[str, pl.DataType] | None = None  # of the matcher's keys (for snapshots)
        self.matcher.report_timeouts = self.timeout_topic is not None
        ending = self.compiled.lazy_ending_bits()
        self.parked: Parked | None = None  # lazy per-key evaluation: candidate rows not fed yet
        if lazy and ending is not None and self.timeout_topic is None and self.compiled.within_ms is not None:
            self.parked = Parked(self.by, ending, self.compiled.within_ms, self.compiled.min_events())
        #: a row some condition group holds for (the vectorized pre-filter)
        self._any = pl.any_horizontal([e.fill_null(False) for e in self.compiled.exprs])
        self._mask = mask_expr(self.compiled)
        self._checked: list[str] | None = None  # the columns check_columns last passed
        self._waiting_sorted = True  # lazy evaluation keeps ``waiting`` sorted by (event time, arrival)

    def process(self, df: pl.DataFrame, ctx: Ctx) -> pl.DataFrame | None:
        """Vectorized pre-filter: unless adjacency matters, one pass over the batch keeps only the rows
        some condition group holds for, with their bit mask; the rest of the operator never sees the
        other rows. Late rows (whatever their mask) go to the late topic whole, as the base class sends them."""
        where = f"step {self.step.step_id!r}"
        try:
            if self.compiled.needs_positions or EVENT_TIME not in df.columns:
                df = with_mask(self.compiled, df, where)
            else:
                if self._checked != df.columns:
                    check_columns(self.compiled, df.columns, where)
                    self._checked = df.columns
                if self._buffer_candidates(df, ctx):
                    return None
                ts = pl.col(EVENT_TIME)
                late = ts < (pl.col(WATERMARK) if WATERMARK in df.columns and not self.multi_source
                             else pl.lit(self.watermark, dtype=pl.Int64))
                df = df.lazy().filter(self._any | late).with_columns(self._mask).collect()  # one pass
                if df.is_empty():
                    return None
        except PlanError as e:
            raise PlanError(f"{e} (topic {ctx.topic!r}, partition {ctx.partition})") from None
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:  # the pre-filter's conditions
            raise PlanError(f"{where}: a condition of pattern {self.compiled.pattern.describe()} failed on the data: "
                            f"{type(e).__name__}: {' '.join(str(e).split())}; check the columns' types "
                            f"(topic {ctx.topic!r}, partition {ctx.partition})") from e
        super().process(df, ctx)
        return None

    def _buffer_candidates(self, df: pl.DataFrame, ctx: Ctx) -> bool:
        """The common case of ``process``: no late row (one column comparison), so the candidates go
        straight to the event-time buffer with their mask, arrival number and input index, and only the
        columns the operator uses (user columns, event time, input offset): the log's metadata columns
        are not copied. False: not the common case (a late row, a row without event time or watermark,
        a missing key column): the caller takes the general path."""
        ts = df.get_column(EVENT_TIME)
        if any(c not in df.columns for c in self.columns) or ts.null_count():
            return False
        if WATERMARK in df.columns and not self.multi_source:
            wm = df.get_column(WATERMARK)
            if wm.null_count() or (ts < wm).any():
                return False
        elif (ts < self.watermark).any():
            return False
        src = self.sources.setdefault((ctx.topic, ctx.partition), len(self.sources))
        # eager, column by column: cheaper than the same lazy filter-and-project query here (250 k rows,
        # 3 % kept), and the conditions may read a column that is not kept. One chunk: a polled frame has
        # one per log batch (~26), which every later step (concat, sort, gather) would carry along
        # (with_columns, not select: a condition group of Python functions only is a constant, broadcast)
        keep = df.with_columns(self._any.alias(MASK)).get_column(MASK)
        rows = pl.DataFrame([df.get_column(c).filter(keep) for c in df.columns if c not in _DROPPED]).rechunk()
        n = rows.height
        if not n:
            return True
        extra = [] if OFFSET_COL in df.columns else [pl.Series(OFFSET_COL, [None] * n, dtype=pl.Int64)]
        self.buffer.append(rows.with_columns(self._mask).hstack([
            pl.Series(_SEQ, np.arange(self.seq, self.seq + n, dtype=np.int64)),
            pl.Series(_SRC, np.full(n, src, dtype=np.int32)), *extra]))
        self.seq += n
        return True

    def release(self, rows: pl.DataFrame, previous: int) -> pl.DataFrame | None:
        self.previous = previous
        if self.compiled.needs_positions:
            kid, keys = self.key_ids(rows)
            state = self.carried(keys, self.carry, {"_n": pl.Int64()})
            n0 = state.get_column("_n").fill_null(0).to_numpy()
            m = len(kid)
            starts = np.flatnonzero(np.r_[True, kid[1:] != kid[:-1]]) if m else np.array([], dtype=np.int64)
            lens = np.diff(np.r_[starts, m])
            pos = np.arange(m) - np.repeat(starts, lens) + n0[kid]
            new_carry = (keys.select(self.by) if self.by else pl.DataFrame()).with_columns(
                pl.Series("_n", n0 + lens, dtype=pl.Int64))
            self.carry = self.update_carry(self.carry, new_carry)
            rows = rows.with_columns(pl.Series(POS, pos, dtype=pl.Int64)).filter(fed(self.by))
        if rows.is_empty():
            return None
        if self.key_schema is None and self.by:
            self.key_schema = dict(rows.select(self.by).schema)
        cands = self.store.add(rows)
        if self.parked is not None:
            cands = self.parked.split(cands, self.matcher.start_bits, self._live)
        try:
            feed(self.matcher, cands, self.by)
        except Exception as e:
            if isinstance(e, (StepError, PlanError)):
                raise
            raise StepError(f"a pattern condition function raised {type(e).__name__}: {e}",
                            step_id=self.step.step_id, offset=None,
                            fix="fix the function passed to where/or_where/until (it gets (event, match))") from e
        return None

    def _live(self, rows: pl.DataFrame) -> pl.Series:
        """Per row: does the NFA hold a partial match for its key (few keys do between matches)."""
        state = self.matcher.state
        if not state:
            return pl.repeat(False, rows.height, eager=True)
        return pl.Series([k in state for k in keys_of(rows, self.by)], dtype=pl.Boolean)

    def advance(self, watermark: int) -> pl.DataFrame | None:
        # the output's watermark: the one before this advance (pending matches may close with no release)
        self.previous = max(self.watermark, -MAX_TIME)
        if self.parked is not None:
            self._release_in_time_order(watermark)
        else:
            super().advance(watermark)
        m = self.matcher
        m.expire(self.watermark)
        out = None
        dtype = pl.Datetime("ms", self.time_zone() or "UTC")
        if m.found:
            out = self.store.build(m.found, self.by, self.compiled, self.step.step_id, dtype).with_columns(
                pl.lit(self.previous, dtype=pl.Int64).alias(WATERMARK))
            self.metrics.windows_fired += len(m.found)
            m.found = []
        if m.timed_out:
            if self.timeout_topic is not None:
                side = self.store.build(m.timed_out, self.by, self.compiled, self.step.step_id, dtype)
                self.services.side_output(self.timeout_topic, side)  # type: ignore[attr-defined]
            m.timed_out = []
        lowest = m.live_gids()
        if self.parked is not None:
            self.parked.prune(self.watermark)
            parked = self.parked.lowest_gid()
            lowest = parked if lowest is None else lowest if parked is None else min(lowest, parked)
        self.store.compact(lowest)
        self.metrics.state_rows = self.state_rows() + (0 if self.waiting is None else self.waiting.height)
        return out

    def _release_in_time_order(self, watermark: int) -> None:
        """``OrderedOp.advance`` for lazy evaluation: the rows the watermark passed are released sorted by
        (event time, arrival), not by key first: event ids then still increase with event time within each
        key, which is all :meth:`Parked.split` needs; it sorts by key itself, with its parked rows, and not
        at all when no row can end a match (sorting every release by the card string as well was ~10 % of
        W5's operator). The waiting rows stay sorted the same way, so the due rows are a prefix: one
        numeric sort and a slice instead of two filters."""
        previous, self.watermark = self.watermark, max(self.watermark, watermark)
        if self.buffer or not self._waiting_sorted:
            parts = ([self.waiting] if self.waiting is not None else []) + self.buffer
            self.waiting = pl.concat(parts, how="diagonal_relaxed").sort(EVENT_TIME, _SEQ) if parts else None
            self.buffer, self._waiting_sorted = [], True
        waiting = self.waiting
        if waiting is None or waiting.is_empty():
            return
        due = int(np.searchsorted(waiting.get_column(EVENT_TIME).to_numpy(), self.watermark, side="left"))
        if due:
            self.waiting = waiting.slice(due)
            self.release(waiting.slice(0, due), max(previous, -MAX_TIME))

    def state_rows(self) -> int:
        return self.matcher.partial_count() + (0 if self.parked is None else self.parked.height)

    # ------------------------------------------------------------------ checkpoints (exactly-once)

    def state_fingerprint(self) -> str:
        """The keys and the pattern: stages and quantifiers, time bound, skip strategy, the vectorized
        conditions (their mask bits are in the stored rows) and the names of Python conditions. A
        changed pattern cannot continue old partial matches: it is refused with StateIncompatibleError."""
        c = self.compiled
        conds = [*c.conds, *[u for u in c.untils if u is not None], *[k for n in c.negatives for _, k in n]]
        fns = tuple(tuple(_fn_name(f) for _, group in k.groups for f in group) for k in conds)
        return st.fingerprint("match", tuple(self.by), c.pattern.describe(), tuple(str(e) for e in c.exprs), fns,
                              c.needs_positions)

    def snapshot_state(self) -> Snapshot:
        """Events waiting for the watermark (:func:`~everstream.engine.state.snapshot_ordered`), the
        candidate rows partial matches reference (``store``), per-key event counts (``carry``, when
        adjacency matters) and the NFA's partial matches as tables (:meth:`Matcher.export_state`)."""
        snap = st.snapshot_ordered(self)
        keys, tables, values = self.matcher.export_state()
        snap.tables.update(tables)
        if self.by and keys:
            try:
                cols = [keys] if len(self.by) == 1 else [list(c) for c in zip(*cast(list[tuple[Any, ...]], keys),
                                                                               strict=True)]
                snap.tables["keys"] = pl.DataFrame(dict(zip(self.by, cols, strict=True)),
                                                   schema=self.key_schema).to_arrow()
            except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
                # keys of one column came in several types: keep the Python values as they are
                snap.blobs["keys"] = pickle.dumps(keys, protocol=pickle.HIGHEST_PROTOCOL)
        store = self.store
        parked = None if self.parked is None else self.parked.frame
        for name, f in (("store", store.frame), ("carry", self.carry), ("parked", parked)):
            if f is not None:
                snap.tables[name] = f.to_arrow()
        snap.values.update(
            matcher=values, nkeys=len(keys), previous=int(self.previous),
            store={"base": int(store.base), "next_gid": int(store.next_gid), "users": list(store.users)})
        return snap

    def restore_state(self, snap: Snapshot) -> None:
        """The inverse of :meth:`snapshot_state`, on a freshly built operator."""
        st.restore_ordered(self, snap)
        self._waiting_sorted = False  # (an eager operator's snapshot has them in arrival order)
        v = snap.values
        if "keys" in snap.blobs:
            keys: list[Hashable] = pickle.loads(snap.blobs["keys"])
        elif (kt := snap.frame("keys")) is not None:
            self.key_schema = dict(kt.schema)
            keys = kt.get_column(self.by[0]).to_list() if len(self.by) == 1 else list(kt.rows())
        else:
            keys = [0] * int(v["nkeys"])
        self.matcher.import_state(keys, snap.tables, v["matcher"])
        store, sv = self.store, v["store"]
        store.frame, store.base, store.next_gid = snap.frame("store"), int(sv["base"]), int(sv["next_gid"])
        store.users, store._dicts = list(sv["users"]), None
        self.carry, self.previous = snap.frame("carry"), int(v["previous"])
        parked = snap.frame("parked")
        if parked is not None and parked.height:
            if self.parked is not None:
                self.parked.frame = parked
            else:  # taken while evaluating lazily (the step had no time-out topic then): catch the NFA up
                feed(self.matcher, parked.sort([*self.by, GID], nulls_last=True), self.by)  # eager's order
        self.metrics.state_rows = self.state_rows() + (0 if self.waiting is None else self.waiting.height)

    def held(self) -> list[pl.DataFrame]:
        f = self.store.frame
        return [*super().held(), *([] if f is None or f.is_empty() else [f.select(_SRC, OFFSET_COL)])]


def _fn_name(fn: Callable[..., Any]) -> str:
    """A Python condition's qualified name (one-argument functions are wrapped: the wrapped one's)."""
    inner = [d for d in (getattr(fn, "__defaults__", None) or ()) if callable(d)]
    f = inner[0] if inner else fn
    return f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', type(f).__qualname__)}"


def find(pattern: Pattern, df: pl.DataFrame, *, by: str | Sequence[str] | None = None, time: str = "ts",
         timeouts: bool = False, lazy: bool = True) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """Match ``pattern`` over a whole DataFrame at once (backtests, notebooks): the same rows the
    streaming ``match`` step emits, in the same order per key. Ties of event time keep row order.

    With ``timeouts=True`` returns ``(matches, timed_out)``. Without, where lazy per-key evaluation
    gives the same matches (:mod:`everstream.cep.parked`), the NFA only sees each key's rows up to its
    last row that can end a match (``lazy=False``: all candidate rows).
    """
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    compiled = pattern.check(tuple(keys))
    if time not in df.columns:
        raise PlanError(f"find(): no time column {time!r} in the frame (columns: {df.columns})")
    et = event_time_ms(df.get_column(time))
    if et.null_count():
        raise PlanError(f"find(): time column {time!r} has {et.null_count()} missing or unparsable values")
    dtype = pl.Datetime("ms", getattr(df.schema[time], "time_zone", None) or "UTC")
    rows = with_mask(compiled, df.with_columns(et.alias(EVENT_TIME)), "find()")
    rows = rows.with_row_index(_SEQ).sort([*keys, EVENT_TIME, _SEQ], nulls_last=True)
    if compiled.needs_positions:
        rows = rows.with_columns((pl.int_range(pl.len()).over(keys) if keys else pl.int_range(pl.len()))
                                 .cast(pl.Int64).alias(POS))
    rows = rows.filter(fed(keys) if compiled.needs_positions else pl.col(MASK) != 0)
    store = Store()
    matcher = Matcher(compiled, store.row)
    cands = store.add(rows.with_columns(pl.lit(0, dtype=pl.Int32).alias(_SRC)))
    ending = compiled.lazy_ending_bits()
    if lazy and not timeouts and ending is not None and compiled.within_ms is not None:
        # the rest is never fed: no ending row follows; the NFA holds nothing yet, so rows no match can start at
        # before a key's first row that can start one are dropped too
        cands = Parked(keys, ending, compiled.within_ms, compiled.min_events()).split(
            cands, matcher.start_bits, lambda rows: pl.repeat(False, rows.height, eager=True))
    matcher.report_timeouts = timeouts
    feed(matcher, cands, keys)
    matcher.expire(1 << 62)
    empty = _empty(df, keys, compiled, dtype)
    found = store.build(matcher.found, keys, compiled, "find", dtype).drop(EVENT_TIME) if matcher.found else empty
    if compiled.trailing and keys:  # pending matches closed by the final watermark came key-interleaved
        found = found.sort(keys, nulls_last=True, maintain_order=True)
    if not timeouts:
        return found
    gone = store.build(matcher.timed_out, keys, compiled, "find", dtype).drop(EVENT_TIME) \
        if matcher.timed_out else empty.rename({MATCH_END: TIMED_OUT_AT})
    return found, gone


def _empty(df: pl.DataFrame, keys: list[str], compiled: Compiled, dtype: pl.Datetime) -> pl.DataFrame:
    users = [c for c in df.columns if not c.startswith("_")]
    struct = pl.Struct({c: df.schema[c] for c in users})
    schema: dict[str, Any] = {k: df.schema[k] for k in keys}
    schema |= {PATTERN: pl.String, MATCH_START: dtype, MATCH_END: dtype}
    schema |= {s.name: pl.List(struct) for s in compiled.stages}
    return pl.DataFrame(schema=schema)
