"""Joins for finance: as-of, stream-table, interval, window and lookup joins.

Every stream join equals the batch join of the same data (Polars ``join_asof`` / ``join``, DuckDB)
despite bounded disorder, because a row is emitted only once the watermarks guarantee its answer
is final, and state is pruned only of rows no future answer can need:

- **as-of** (``join_asof``): left rows wait until the right side's watermark has passed them
  (backward), or until a right row at or after them is sealed by the right watermark or the
  tolerance has passed (forward, nearest). All ready rows of a cycle are answered by one Polars
  ``join_asof`` against the right state. The right state keeps, per key, the latest row before the
  oldest left time still possible plus every newer row. The operator: :mod:`everstream.engine.join_asof`
  (``AsofJoinOp``, re-exported here).
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

import polars as pl

from everstream.engine import plan as p
from everstream.engine.join_asof import AsofJoinOp
from everstream.engine.join_base import JoinOperator
from everstream.engine.operators import Ctx, Operator, Services, dead_letters_of, user_columns
from everstream.engine.time import MAX_TIME, MIN_TIME, Duration, duration_ms
from everstream.engine.windows import Hopping, Tumbling
from everstream.errors import ConfigError, PlanError, StepError

if TYPE_CHECKING:
    from everstream.engine.stream import Stream

Direction = Literal["backward", "forward", "nearest"]
HIT = "_jhit"  # True on every looked-up row: null after the lookup join means "no match"


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

    from everstream.engine.join_interval import IntervalJoinOp, WindowJoinOp

    op: JoinOperator
    if isinstance(spec, AsofSpec):
        op = AsofJoinOp(step, services, side_watermarks)
    elif isinstance(spec, IntervalSpec):
        op = IntervalJoinOp(step, services, side_watermarks)
    else:
        op = WindowJoinOp(step, services, side_watermarks)
    # the columns its inputs carry (projection pushdown) decide the columns of its state: part of the fingerprint
    op.projection = plan.required_columns(step.step_id)
    return op


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
