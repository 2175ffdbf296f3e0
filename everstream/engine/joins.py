"""Joins for finance: as-of, stream-table, interval, window and lookup joins.

Every stream join equals the batch join of the same data (Polars ``join_asof`` / ``join``, DuckDB)
despite bounded disorder, because a row is emitted only once the watermarks guarantee its answer
is final, and state is pruned only of rows no future answer can need:

- **as-of** (``join_asof``): left rows wait until the right side's watermark has passed them
  (backward), or until a right row at or after them is sealed by the right watermark or the
  tolerance has passed (forward, nearest). All ready rows of a cycle are answered by one Polars
  ``join_asof`` against the right state. The right state keeps, per key, the latest row before the
  oldest left time still possible plus every newer row.
- **stream-table** (``join_table``): an as-of backward join on a keyed changelog: each event sees
  the table version valid at its event time; ``grace`` bounds how long it waits for the table.
- **interval** and **window** joins: :mod:`everstream.engine.join_interval`.
- **lookup** (``join_lookup``): each batch's distinct keys are looked up in an external table
  through an object passed in (``everstream.connectors.lookup``); the engine never imports
  connectors.

Matching is on event time (``_event_time``, epoch milliseconds), which is the ``on`` column of
each side: a join's ``on`` must be the field its input declared with ``with_watermark``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.join_base import OFF, SEQ, SRC, JoinOperator, SideWatermarks, suffixed
from everstream.engine.operators import INTERNAL, Ctx, Operator, Services, dead_letters_of, user_columns
from everstream.engine.state import Snapshot
from everstream.engine.time import MAX_TIME, MIN_TIME, Duration, duration_ms
from everstream.engine.windows import Hopping, Tumbling
from everstream.errors import ConfigError, PlanError, StepError

if TYPE_CHECKING:
    from everstream.engine.stream import Stream

Direction = Literal["backward", "forward", "nearest"]
RT = "_jrt"  # right event time in as-of state
HIT = "_jhit"  # True on every looked-up row: null after the lookup join means "no match"
RIDX, LIDX = "_jri", "_jli"  # row positions in the right state and in the waiting left rows
_PRIVATE = (SEQ, SRC, OFF, RT, HIT)
_META = frozenset(INTERNAL)
_HIDDEN = frozenset([*_PRIVATE, *INTERNAL])  # columns of as-of state that are not the user's


# ---------------------------------------------------------------------- specs (what a Join step holds)


def _input_columns(below: frozenset[str], keys: Iterable[str], times: Iterable[str], suffix: str) -> frozenset[str]:
    """The user columns a join reads from either input (projection pushdown, ``Plan.required_columns``):
    its keys and time fields, what the steps after it read, and for an output name with the suffix
    (``bid_right``) the input column it comes from. A column the steps after the join read is kept on
    both sides, so the output names (suffixed on a clash) stay what they are without the pushdown."""
    plain = {c[: -len(suffix)] for c in below if suffix and c.endswith(suffix) and len(c) > len(suffix)}
    return frozenset({*below, *plain, *keys, *times})


@dataclass(frozen=True)
class AsofSpec:
    """As-of join (and stream-table join, ``table=True``) parameters."""

    by: tuple[str, ...]
    left_on: str
    right_on: str
    direction: Direction = "backward"
    allow_exact_matches: bool = True
    tolerance_ms: int | None = None
    how: Literal["left", "inner"] = "left"
    suffix: str = "_right"
    grace_ms: int | None = None
    table: bool = False

    @property
    def kind(self) -> str:
        return "join_table" if self.table else "join_asof"

    def input_columns(self, below: frozenset[str]) -> frozenset[str]:
        return _input_columns(below, self.by, (self.left_on, self.right_on), self.suffix)

    @property
    def holdback_ms(self) -> int:
        """A forward/nearest answer can come up to the tolerance after the left row's time."""
        return 0 if self.direction == "backward" else self.tolerance_ms or 0

    def describe(self) -> str:
        if self.table:
            grace = "" if self.grace_ms is None else f", grace {self.grace_ms} ms"
            return f"join_table(by={list(self.by)}, {self.how}{grace})"
        tol = "" if self.tolerance_ms is None else f", tolerance {self.tolerance_ms} ms"
        exact = "" if self.allow_exact_matches else ", strict"
        return (f"join_asof(on={self.left_on}/{self.right_on}, by={list(self.by)}, {self.direction}"
                f"{exact}{tol}, {self.how})")


@dataclass(frozen=True)
class IntervalSpec:
    """Interval join: right rows with ``left_t + lower <= right_t <= left_t + upper`` and equal keys."""

    by: tuple[str, ...]
    left_on: str
    right_on: str
    lower_ms: int
    upper_ms: int
    how: Literal["inner", "left", "right", "full"] = "inner"
    suffix: str = "_right"
    kind: str = "join_interval"

    @property
    def holdback_ms(self) -> int:
        """Unmatched rows are emitted once no partner can come: up to this long after their time."""
        return max(self.upper_ms, -self.lower_ms, 0)

    def describe(self) -> str:
        return f"join_interval(by={list(self.by)}, [{self.lower_ms}, {self.upper_ms}] ms, {self.how})"

    def input_columns(self, below: frozenset[str]) -> frozenset[str]:
        return _input_columns(below, self.by, (self.left_on, self.right_on), self.suffix)


@dataclass(frozen=True)
class WindowJoinSpec:
    """Window join: rows of both sides in the same tumbling/hopping window and key."""

    window: Tumbling | Hopping
    by: tuple[str, ...]
    how: Literal["inner", "left"] = "inner"
    suffix: str = "_right"
    kind: str = "join_window"
    holdback_ms: int = 0

    def describe(self) -> str:
        return f"join_window({self.window.describe()}, by={list(self.by)}, {self.how})"

    def input_columns(self, below: frozenset[str]) -> frozenset[str]:
        return _input_columns(below, self.by, (), self.suffix)


@runtime_checkable
class Lookup(Protocol):
    """An external table the lookup join reads (see :mod:`everstream.connectors.lookup`).

    ``get(keys)`` receives distinct key rows (columns named as the table's keys) and returns the
    table's rows for the keys it has: the key columns plus value columns, at most one row per key.
    Implementations cache (bounded) and refresh; they are called once per micro-batch.
    """

    def get(self, keys: pl.DataFrame) -> pl.DataFrame: ...


@dataclass(frozen=True)
class LookupSpec:
    lookup: Any  # a Lookup
    by: tuple[str, ...]
    table_by: tuple[str, ...]
    how: Literal["left", "inner"] = "left"
    suffix: str = "_right"
    kind: str = "join_lookup"
    holdback_ms: int = 0

    def describe(self) -> str:
        return f"join_lookup({type(self.lookup).__name__}, by={list(self.by)}, {self.how})"

    def input_columns(self, below: frozenset[str]) -> frozenset[str]:
        return _input_columns(below, self.by, (), self.suffix)


# ---------------------------------------------------------------------- plan building (called by Stream)


def _keys(by: str | Iterable[str] | None, where: str, required: bool) -> tuple[str, ...]:
    if by is None or by == ():
        if required:
            raise PlanError(f"{where} needs by= (the key column(s) both sides share, e.g. by='order_id')")
        return ()
    if not isinstance(by, (str, list, tuple)):
        raise PlanError(f"{where}: by={by!r} must be a column name or a list of column names")
    keys = (by,) if isinstance(by, str) else tuple(by)
    if (required and not keys) or not all(isinstance(k, str) and k for k in keys):
        raise PlanError(f"{where}: by={by!r} must be a column name or a list of column names")
    if any(k.startswith("_") for k in keys):
        raise PlanError(f"{where}: by={by!r}: columns starting with '_' are engine metadata")
    return keys


def _time_fields(stream: Stream) -> list[str]:
    plan = stream.app.plan_so_far()
    step = plan.step(stream.step_id)
    wms = plan.watermarks_of(stream.step_id) + ([step] if isinstance(step, p.Watermark) else [])
    return [w.field for w in wms]


def _known_columns(stream: Stream) -> set[str] | None:
    """The columns a stream certainly has, when its source declared a schema and only row filters
    and watermarks follow (None when not known at build time)."""
    plan = stream.app.plan_so_far()
    step = plan.step(stream.step_id)
    while isinstance(step, (p.Watermark, p.Filter)):
        step = plan.step(step.inputs[0])
    if isinstance(step, p.Source) and step.schema is not None:
        return set(step.schema.names)
    return None


def _check_pair(left: Stream, right: Any, where: str) -> None:
    from everstream.engine.stream import Stream

    if not isinstance(right, Stream) or right.app is not left.app:
        raise PlanError(f"{where} takes a stream of the same app, got {type(right).__name__}: {right!r}")
    if right.step_id == left.step_id:
        raise PlanError(f"{where}: a stream joined with itself; branch it first, e.g. "
                        "other = s.filter(...) or s.with_columns(...), and join s with other")


def _on(left: Stream, right: Stream, on: str | tuple[str, str] | None, where: str) -> tuple[str, str]:
    """The (left, right) time columns: each must be its side's event-time (watermark) field."""
    if on is None:
        ons: tuple[str | None, str | None] = (None, None)
    elif isinstance(on, str):
        ons = (on, on)
    elif isinstance(on, tuple) and len(on) == 2 and all(isinstance(o, str) for o in on):
        ons = on
    else:
        raise PlanError(f"{where}: on={on!r} must be a column name or a (left, right) pair of names")
    out: list[str] = []
    for side, s, want in (("left", left, ons[0]), ("right", right, ons[1])):
        fields = _time_fields(s)
        if not fields:
            raise PlanError(f"{where}: the {side} input {s.step_id!r} has no event time; declare it on its "
                            "source, e.g. app.stream('quotes').with_watermark('ts', max_delay='2s')")
        if len(set(fields)) > 1:
            raise PlanError(f"{where}: the {side} input {s.step_id!r} merges sources with different time "
                            f"fields {sorted(set(fields))}; give them one name before joining")
        if want is not None and want != fields[0]:
            raise PlanError(f"{where}: on={on!r}, but the {side} input's event time is {fields[0]!r} (its "
                            f"with_watermark field); joins match on event time: pass on={fields[0]!r} or "
                            f"declare with_watermark({want!r})")
        out.append(fields[0])
    return out[0], out[1]


def _check_columns(s: Stream, cols: Sequence[str], side: str, where: str) -> None:
    known = _known_columns(s)
    missing = [c for c in cols if known is not None and c not in known]
    if missing:
        raise PlanError(f"{where}: the {side} input {s.step_id!r} has no column(s) {missing} "
                        f"(its declared schema: {sorted(known or ())})")


def _how(how: str, allowed: tuple[str, ...], where: str) -> Any:
    if how not in allowed:
        raise PlanError(f"{where}: how={how!r}; use one of {', '.join(repr(a) for a in allowed)}")
    return how


def _suffix(suffix: str, where: str) -> str:
    if not isinstance(suffix, str) or not suffix:
        raise PlanError(f"{where}: suffix={suffix!r} must be a non-empty string such as '_right'")
    return suffix


def _signed_ms(value: Duration, what: str) -> int:
    """A duration that may be negative: ``"-2s"``."""
    if isinstance(value, str) and value.strip().startswith("-"):
        return -duration_ms(value.strip()[1:], what)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return -duration_ms(-value, what)
    return duration_ms(value, what)


def _ms(value: Duration | None, what: str, where: str) -> int | None:
    if value is None:
        return None
    try:
        return duration_ms(value, what)
    except ConfigError as e:
        raise PlanError(f"{where}: {e}") from None


def asof(left: Stream, right: Stream, *, on: str | tuple[str, str] | None, by: str | Iterable[str] | None,
         direction: str, allow_exact_matches: bool, tolerance: Duration | None, how: str, suffix: str,
         name: str | None) -> Stream:
    where = f"join_asof on {left.step_id!r}"
    _check_pair(left, right, where)
    if direction not in ("backward", "forward", "nearest"):
        raise PlanError(f"{where}: direction={direction!r}; use 'backward', 'forward' or 'nearest'")
    if not isinstance(allow_exact_matches, bool):
        raise PlanError(f"{where}: allow_exact_matches={allow_exact_matches!r} must be True or False")
    keys = _keys(by, where, required=False)
    left_on, right_on = _on(left, right, on, where)
    for s, side in ((left, "left"), (right, "right")):
        _check_columns(s, keys, side, where)
    spec = AsofSpec(keys, left_on, right_on, direction, allow_exact_matches,  # type: ignore[arg-type]
                    _ms(tolerance, "tolerance", where), _how(how, ("left", "inner"), where), _suffix(suffix, where))
    return left.app.add(p.Join, (left, right), "join_asof", name, spec=spec)


def table(left: Stream, right: Stream, *, by: str | Iterable[str], how: str, grace: Duration | None,
          suffix: str, name: str | None) -> Stream:
    where = f"join_table on {left.step_id!r}"
    _check_pair(left, right, where)
    keys = _keys(by, where, required=True)
    left_on, right_on = _on(left, right, None, where)
    for s, side in ((left, "left"), (right, "right")):
        _check_columns(s, keys, side, where)
    spec = AsofSpec(keys, left_on, right_on, "backward", True, None, _how(how, ("left", "inner"), where),
                    _suffix(suffix, where), grace_ms=_ms(grace, "grace", where), table=True)
    return left.app.add(p.Join, (left, right), "join_table", name, spec=spec)


def interval(left: Stream, right: Stream, *, on: str | tuple[str, str] | None, by: str | Iterable[str],
             lower: Duration, upper: Duration, how: str, suffix: str, name: str | None) -> Stream:
    where = f"join_interval on {left.step_id!r}"
    _check_pair(left, right, where)
    keys = _keys(by, where, required=True)
    left_on, right_on = _on(left, right, on, where)
    try:
        lo, hi = _signed_ms(lower, "lower"), _signed_ms(upper, "upper")
    except ConfigError as e:
        raise PlanError(f"{where}: {e}") from None
    if lo > hi:
        raise PlanError(f"{where}: lower={lower!r} is after upper={upper!r}; a right row matches when "
                        "left.t + lower <= right.t <= left.t + upper")
    for s, side in ((left, "left"), (right, "right")):
        _check_columns(s, keys, side, where)
    spec = IntervalSpec(keys, left_on, right_on, lo, hi, _how(how, ("inner", "left", "right", "full"), where),
                        _suffix(suffix, where))
    return left.app.add(p.Join, (left, right), "join_interval", name, spec=spec)


def window(left: Stream, right: Stream, *, spec: Any, by: str | Iterable[str], how: str, suffix: str,
           name: str | None) -> Stream:
    where = f"join_window on {left.step_id!r}"
    _check_pair(left, right, where)
    if not isinstance(spec, (Tumbling, Hopping)):
        raise PlanError(f"{where}: window joins take es.tumbling(...) or es.hopping(...), not {spec!r}")
    keys = _keys(by, where, required=True)
    _on(left, right, None, where)
    for s, side in ((left, "left"), (right, "right")):
        _check_columns(s, keys, side, where)
    js = WindowJoinSpec(spec, keys, _how(how, ("inner", "left"), where), _suffix(suffix, where))
    return left.app.add(p.Join, (left, right), "join_window", name, spec=js)


def lookup(left: Stream, source: Any, *, by: str | Iterable[str], table_by: str | Iterable[str] | None, how: str,
           suffix: str, name: str | None) -> Stream:
    where = f"join_lookup on {left.step_id!r}"
    if not isinstance(source, Lookup):
        raise PlanError(f"{where} takes a lookup table with get(keys) -> DataFrame, e.g. "
                        f"everstream.connectors.lookup.ParquetLookup(path, key='account'); got {source!r}")
    keys = _keys(by, where, required=True)
    tkeys = keys if table_by is None else _keys(table_by, where, required=True)
    if len(tkeys) != len(keys):
        raise PlanError(f"{where}: by={list(keys)} and table_by={list(tkeys)} must have the same length")
    _check_columns(left, keys, "left", where)
    spec = LookupSpec(source, keys, tkeys, _how(how, ("left", "inner"), where), _suffix(suffix, where))
    return left.app.add(p.Join, left, "join_lookup", name, spec=spec)


# ---------------------------------------------------------------------- operators


def join_operator(step: p.Join, services: Services, plan: p.Plan, source_watermark: Callable[[str], int],
                  holdback_of: Callable[[str], int]) -> Operator:
    """The operator of a join step; ``source_watermark(watermark_step_id)`` reads a source's watermark."""
    spec = step.spec
    if isinstance(spec, LookupSpec):
        return LookupJoinOp(step, services)
    sides: list[tuple[list[str], int]] = []
    for sid in step.inputs:
        s = plan.step(sid)
        wms = [w.step_id for w in plan.watermarks_of(sid)] + ([sid] if isinstance(s, p.Watermark) else [])
        hold = holdback_of(sid)
        if isinstance(s, p.Window) and s.time == "event":
            hold += s.allowed_lateness_ms
        if isinstance(s, p.Join):
            hold += int(s.spec.holdback_ms)
        sides.append((wms, hold))

    def side_watermarks() -> tuple[int, int]:
        out = []
        for wms, hold in sides:
            wm = min(source_watermark(w) for w in wms) if wms else MIN_TIME
            out.append(wm - hold if MIN_TIME < wm < MAX_TIME else wm)
        return out[0], out[1]

    if isinstance(spec, AsofSpec):
        return AsofJoinOp(step, services, side_watermarks)
    from everstream.engine.join_interval import IntervalJoinOp, WindowJoinOp

    if isinstance(spec, IntervalSpec):
        return IntervalJoinOp(step, services, side_watermarks)
    return WindowJoinOp(step, services, side_watermarks)


class AsofJoinOp(JoinOperator):
    """As-of join (and stream-table join), vectorized per cycle; see the module docstring.

    State: ``waiting``, the left rows not answered yet, in arrival order; ``right``, the right rows
    sorted by (event time, arrival), pruned. Per cycle the new right rows are merged into ``right``
    (only the part they overlap is sorted again) and the ready left rows are answered by one Polars
    ``join_asof`` of narrow frames (time, keys, row position) that gives each left row the position
    of its right row. The output then gathers the left rows in (time, arrival) order and the right
    values by those positions: only keys and times are sorted and joined, every other column moves
    once.
    """

    def __init__(self, step: p.Join, services: Services, side_watermarks: SideWatermarks) -> None:
        spec: AsofSpec = step.spec
        super().__init__(step, services, side_watermarks, spec.by, ((), ()))
        self.spec = spec
        self.waiting: pl.DataFrame | None = None  # left rows not answered yet, arrival order
        self.right: pl.DataFrame | None = None  # right rows by (event time, arrival), pruned
        self.kept = 0  # rows kept before the horizon at the last pruning

    def admit(self, df: pl.DataFrame, ctx: Ctx, side: int) -> pl.DataFrame | None:
        got = super().admit(df, ctx, side)
        if got is None or side == 0:
            return got
        drop = [self.spec.right_on] if self.spec.right_on == self.spec.left_on else []  # Polars coalesces it
        return got.drop(drop).rename({EVENT_TIME: RT})

    def advance(self, watermark: int) -> pl.DataFrame | None:
        previous = self.update_watermarks()
        wl, wr = self.wm
        new = self.take(1)
        if new is not None:
            self.right = _merged(self.right, new)
        new = self.take(0)
        if new is not None:
            old = self.waiting
            self.waiting = new if old is None or not old.height else pl.concat([old, new], how="diagonal_relaxed")
        out = None
        waiting = self.waiting
        if waiting is not None and waiting.height:
            t = waiting.get_column(EVENT_TIME)
            ready = t < wr
            if self.spec.grace_ms is not None:
                ready = ready | (t + self.spec.grace_ms < wl)
            n = int(ready.sum())
            if n:
                out, stay = self._answer(waiting, None if n == waiting.height else ready, wr, previous)
                if stay is None:
                    self.waiting = waiting.filter(~ready) if n < waiting.height else waiting.clear()
                else:  # answered rows that are not final yet stay, in arrival order
                    keep = (~ready).to_numpy().copy()
                    keep[stay] = True
                    self.waiting = waiting.filter(pl.Series(keep))
        self._prune(wl)
        self.metrics.state_rows = self.state_rows()
        return out

    def state_rows(self) -> int:
        return sum(f.height for f in (self.waiting, self.right) if f is not None)

    def state_frames(self) -> dict[str, pl.DataFrame | None]:
        """Checkpointed: the unanswered left rows (arrival order) and the pruned right rows (time order)."""
        return {"waiting": self.waiting, "right": self.right}

    def state_values(self) -> dict[str, Any]:
        return {"kept": int(self.kept)}

    def restore_frames(self, snap: Snapshot) -> None:
        waiting = snap.frame("waiting")
        self.waiting = None if waiting is None else waiting.sort(SEQ)  # arrival order (older versions did not keep it)
        self.right = snap.frame("right")
        self.kept = int(snap.values["kept"])

    def _right_keys(self, wr: int, newest: int) -> pl.DataFrame:
        """The right rows an answer may use, narrow: keys, time and position in ``self.right``. ``newest``:
        the time of the newest left row to answer."""
        right = self.right
        if right is None:
            schema = {**{k: self.key_types.get(k, pl.String()) for k in self.by}, RT: pl.Int64(), RIDX: pl.UInt32()}
            return pl.DataFrame(schema=schema)
        if self.spec.direction == "backward":
            # rows after the newest left row answer nothing (in a replay one input may run far ahead)
            right = right.head(int(right.get_column(RT).search_sorted(newest, side="right")))
        elif wr < MAX_TIME:  # sealed: every right row before wr has arrived
            right = right.head(int(right.get_column(RT).search_sorted(wr, side="left")))
        return right.select(*self.by, RT).with_row_index(RIDX)

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
        if not in_order:
            keys = keys.sort(EVENT_TIME, maintain_order=True)  # waiting is in arrival order: (time, arrival)
        view = self._right_keys(wr, int(keys.get_column(EVENT_TIME)[-1]))
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
        return self._output(waiting, None if identity else order, found, keys.get_column(EVENT_TIME), previous), stay

    def _output(self, waiting: pl.DataFrame, order: pl.Series | None, found: pl.Series, times: pl.Series,
                previous: int) -> pl.DataFrame:
        """Left user columns (rows ``order`` of ``waiting``), the right user columns of the rows ``found``
        (named as Polars names join outputs: keys once, clashes suffixed), event time and watermark."""
        left_users = [c for c in waiting.columns if c not in _HIDDEN]
        left = waiting.select(left_users)
        parts = [left if order is None else left.gather(order)]
        right = self.right
        if right is not None:
            names = suffixed(left_users, [c for c in right.columns if c not in _HIDDEN], self.by, self.spec.suffix)
            if names:
                parts.append(right.select(list(names)).gather(found).rename(names))
        parts.append(times.to_frame())
        return self.finish_output(pl.concat(parts, how="horizontal"), previous)

    def _prune(self, wl: int) -> None:
        """Drop right rows no future answer can need: before the oldest left time still possible
        (the left watermark, or an unanswered row), keep only the latest row per key (backward,
        nearest; within the tolerance) and none for forward joins."""
        right = self.right
        if right is None or right.is_empty():
            return
        horizon = wl
        if self.waiting is not None and self.waiting.height:
            horizon = min(horizon, int(self.waiting.get_column(EVENT_TIME).min()))  # type: ignore[arg-type]
        i = int(right.get_column(RT).search_sorted(horizon, side="left"))
        if i <= 2 * self.kept + 1024:
            return
        if self.spec.direction == "forward":
            keep = right.head(0)
        else:
            old = right.head(i).select(*self.by, RT).with_row_index(RIDX)
            last = old.unique(self.by, keep="last", maintain_order=True) if self.by else old.tail(1)
            if self.spec.tolerance_ms is not None:
                last = last.filter(pl.col(RT) >= horizon - self.spec.tolerance_ms)
            keep = right.gather(last.get_column(RIDX))
        self.kept = keep.height
        self.right = pl.concat([keep, right.slice(i)], how="diagonal_relaxed").rechunk()

    def held(self) -> list[pl.DataFrame]:
        return [f for f in (self.waiting, self.right) if f is not None]


def _merged(state: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
    """``state`` (sorted by event time, then arrival) with ``new`` (later arrivals, in arrival order)
    merged in: only the rows of ``state`` after the oldest new time are sorted again with ``new``."""
    new = new.sort(RT, maintain_order=True)  # arrival order among equal times: the last to arrive counts
    if state is None or state.is_empty():
        return new
    i = int(state.get_column(RT).search_sorted(new.get_column(RT)[0], side="right"))
    if i < state.height:
        new = pl.concat([state.slice(i), new], how="diagonal_relaxed").sort(RT, maintain_order=True)
    out = pl.concat([state.head(i), new], how="diagonal_relaxed")
    return out.rechunk() if out.n_chunks() > 16 else out


class LookupJoinOp(Operator):
    """Enriches each batch from an external table: one ``get`` per batch for its distinct keys.

    Stateless for exactly-once: it holds no input between batches, and whatever the lookup object
    caches is not checkpointed (a restarted runner looks the keys up again; the answer is that of
    the external table at lookup time, as for any lookup join)."""

    step: p.Join

    def __init__(self, step: p.Join, services: Services) -> None:
        super().__init__(step, services)
        self.spec: LookupSpec = step.spec

    def process(self, df: pl.DataFrame, ctx: Ctx) -> pl.DataFrame | None:
        spec = self.spec
        by, tby = list(spec.by), list(spec.table_by)
        missing = [c for c in by if c not in df.columns]
        if missing:
            self.metrics.dead_letters += df.height
            self.services.dead_letters(dead_letters_of(
                ctx, self.step.step_id, df, f"no key column(s) {missing} for the lookup (columns: "
                                            f"{user_columns(df)}); fix the producer or the join's by="))
            return None
        keys = df.select([pl.col(b).alias(t) for b, t in zip(by, tby, strict=True)]).unique()
        try:
            found = spec.lookup.get(keys)
        except Exception as e:
            raise StepError(
                f"lookup in {spec.lookup!r} failed: {type(e).__name__}: {e}", step_id=self.step.step_id,
                topic=ctx.topic, partition=ctx.partition,
                fix="check that the external table is reachable and has the key columns "
                    f"{tby}; the batch is not committed, so a restart retries it") from e
        if not isinstance(found, pl.DataFrame):
            raise StepError(f"{spec.lookup!r}.get returned {type(found).__name__}, not a polars DataFrame",
                            step_id=self.step.step_id, fix="return the found rows as a polars DataFrame")
        found = found.with_columns(pl.lit(True).alias(HIT))
        try:
            casts = [pl.col(t).cast(df.schema[b]) for b, t in zip(by, tby, strict=True)
                     if found.schema[t] != df.schema[b]]
            if casts:
                found = found.with_columns(casts)
            out = df.join(found, left_on=by, right_on=tby, how="left", suffix=spec.suffix, maintain_order="left")
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise StepError(f"the lookup join failed: {type(e).__name__}: {e}", step_id=self.step.step_id,
                            topic=ctx.topic, partition=ctx.partition,
                            fix=f"the table's key columns {tby} must convert to the stream's {by}") from e
        if spec.how == "inner":
            out = out.filter(pl.col(HIT).is_not_null())
        return out.drop(HIT)
