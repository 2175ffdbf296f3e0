"""The plan: an immutable graph of steps, each with a stable ``step_id``.

The Python API (:mod:`everstream.engine.stream`) only builds these nodes; the runtime executes
them. A ``step_id`` is given by the user (``name=``) or derived from the step's place in the
graph (``trades.filter``, ``trades.filter.window``), never from object ids; it names the step in
metrics, errors, late-event topics and (later) state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from everstream.engine.aggregates import Aggregate
from everstream.engine.features import Feature
from everstream.engine.windows import WindowSpec
from everstream.errors import PlanError

OnError = Literal["raise", "dead_letter"]
TimeKind = Literal["event", "processing"]

_STEP_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,120}$")


def check_step_id(step_id: str) -> str:
    if not isinstance(step_id, str) or not _STEP_ID.match(step_id):
        raise PlanError(
            f"invalid step id {step_id!r}: use 1-121 characters from a-z A-Z 0-9 . _ - "
            "(it becomes part of topic names such as <app>.<step_id>.late)"
        )
    return step_id


def check_on_error(on_error: str) -> OnError:
    if on_error not in ("raise", "dead_letter"):
        raise PlanError(f"on_error={on_error!r}: use 'raise' (stop the app) or 'dead_letter'")
    return on_error  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Step:
    """A node of the plan. ``inputs`` are the step ids feeding it."""

    step_id: str
    inputs: tuple[str, ...]

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True, eq=False)
class Source(Step):
    topic: str
    schema: pa.Schema | None = None

    def describe(self) -> str:
        return f"source({self.topic})"


@dataclass(frozen=True, eq=False)
class Watermark(Step):
    """Parses the event-time field and tracks watermarks per input partition."""

    field: str
    max_delay_ms: int
    idle_timeout_ms: int | None

    def describe(self) -> str:
        idle = "" if self.idle_timeout_ms is None else f", idle {self.idle_timeout_ms} ms"
        return f"watermark({self.field}, max delay {self.max_delay_ms} ms{idle})"


@dataclass(frozen=True, eq=False)
class Filter(Step):
    predicate: pl.Expr


@dataclass(frozen=True, eq=False)
class Select(Step):
    exprs: tuple[pl.Expr, ...]
    keep_columns: bool  # with_columns (True) or select (False)

    @property
    def kind(self) -> str:
        return "with_columns" if self.keep_columns else "select"


@dataclass(frozen=True, eq=False)
class MapBatches(Step):
    fn: Callable[[pl.DataFrame], pl.DataFrame]
    on_error: OnError = "raise"


@dataclass(frozen=True, eq=False)
class Map(Step):
    fn: Callable[[dict[str, Any]], Any]
    flat: bool = False
    on_error: OnError = "raise"

    @property
    def kind(self) -> str:
        return "flat_map" if self.flat else "map"


@dataclass(frozen=True, eq=False)
class Union(Step):
    pass


@dataclass(frozen=True, eq=False)
class Window(Step):
    spec: WindowSpec
    by: tuple[str, ...]
    aggs: Mapping[str, Aggregate]
    allowed_lateness_ms: int = 0
    early_fire_ms: int | None = None  # emit running values of open windows this often (processing time)
    time: TimeKind = "event"

    def describe(self) -> str:
        aggs = ", ".join(f"{k}={a.describe()}" for k, a in self.aggs.items())
        extra = "" if self.early_fire_ms is None else f", early fire every {self.early_fire_ms} ms"
        extra += ", processing time" if self.time == "processing" else ""
        return f"window({self.spec.describe()}, by={list(self.by)}, {aggs}{extra})"


@dataclass(frozen=True, eq=False)
class Top(Step):
    """Window Top-N: the ``n`` rows of each window and key ranked first by ``order`` (see engine/top.py)."""

    spec: WindowSpec
    by: tuple[str, ...]
    n: int
    order: str
    descending: bool = True
    ties: bool = True
    allowed_lateness_ms: int = 0
    window_columns: bool = True

    def describe(self) -> str:
        rank = "rank" if self.ties else "row_number"
        return (f"top({self.n}, {'-' if self.descending else '+'}{self.order}, {self.spec.describe()}, "
                f"by={list(self.by)}, {rank})")


@dataclass(frozen=True, eq=False)
class Rolling(Step):
    """Per-key features over each event's recent past, emitted with the event in event-time order."""

    by: tuple[str, ...]
    features: Mapping[str, Feature]

    def describe(self) -> str:
        feats = ", ".join(f"{k}={f.describe()}" for k, f in self.features.items())
        return f"rolling(by={list(self.by)}, {feats})"


@dataclass(frozen=True, eq=False)
class Process(Step):
    """A keyed process function: per-event Python with per-key state and timers."""

    by: tuple[str, ...]
    fn: Any
    on_error: OnError = "raise"

    def describe(self) -> str:
        return f"process(by={list(self.by)}, {getattr(self.fn, '__qualname__', repr(self.fn))})"


@dataclass(frozen=True, eq=False)
class Sink(Step):
    topic: str
    key: str | None = None

    def describe(self) -> str:
        return f"to({self.topic}{'' if self.key is None else f', key={self.key}'})"


@dataclass(frozen=True, eq=False)
class Join(Step):
    """A join: ``inputs`` are (left, right) for stream joins, (left,) for a lookup join.

    ``spec`` (from :mod:`everstream.engine.joins`) says which join and how; its ``holdback_ms``
    is how far behind the watermark the join may emit rows (downstream windows wait that much).
    """

    spec: Any

    @property
    def kind(self) -> str:
        return str(self.spec.kind)

    def describe(self) -> str:
        return str(self.spec.describe())


@dataclass(frozen=True, eq=False)
class Match(Step):
    """Complex event processing: ``pattern`` (an :class:`everstream.cep.Pattern`) matched per key.

    The pattern builds its own operator (``pattern.operator(...)``): cep sits above the engine,
    which never imports it. ``timeouts``: True for ``<app>.<step_id>.timeouts``, a topic, or False.
    """

    pattern: Any
    by: tuple[str, ...]
    timeouts: str | bool = True

    def describe(self) -> str:
        return f"match({self.pattern.describe()}, by={list(self.by)})"


@dataclass(frozen=True)
class Plan:
    """The steps of an app in definition order (every step after its inputs)."""

    app: str
    steps: tuple[Step, ...]
    _children: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, app: str, steps: tuple[Step, ...]) -> Plan:
        seen: set[str] = set()
        children: dict[str, list[str]] = {}
        for s in steps:
            for i in s.inputs:
                if i not in seen:
                    raise PlanError(f"step {s.step_id!r} reads {i!r}, which is not defined before it")
                children.setdefault(i, []).append(s.step_id)
            seen.add(s.step_id)
        return cls(app, steps, {k: tuple(v) for k, v in children.items()})

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.step_id == step_id:
                return s
        raise PlanError(f"no step {step_id!r} in app {self.app!r}; steps: {[s.step_id for s in self.steps]}")

    def children(self, step_id: str) -> tuple[str, ...]:
        return self._children.get(step_id, ())

    def sources(self) -> list[Source]:
        return [s for s in self.steps if isinstance(s, Source)]

    def upstream(self, step_id: str) -> list[Step]:
        """Every step feeding ``step_id`` (transitively), nearest first."""
        out: list[Step] = []
        todo = list(self.step(step_id).inputs)
        seen: set[str] = set()
        while todo:
            sid = todo.pop(0)
            if sid in seen:
                continue
            seen.add(sid)
            s = self.step(sid)
            out.append(s)
            todo.extend(s.inputs)
        return out

    def watermarks_of(self, step_id: str) -> list[Watermark]:
        """The watermark steps whose event time reaches ``step_id``."""
        return [s for s in self.upstream(step_id) if isinstance(s, Watermark)]

    def required_columns(self, step_id: str) -> frozenset[str] | None:
        """User columns ``step_id`` and everything after it read (None: all of them).

        The runtime reads only these from the log (projection pushdown): a window needs its
        keys and aggregate inputs, a filter its predicate's columns plus what follows, while a
        sink, a map or a map_batches needs every column. A join needs its keys and times plus what
        follows it, from either input (``spec.input_columns``).
        """
        step = self.step(step_id)
        if isinstance(step, (Sink, Map, MapBatches, Process, Match)):
            return None
        if isinstance(step, Window):
            cols = set(step.by)
            for name, agg in step.aggs.items():
                for e in agg.partial(name):
                    cols.update(e.meta.root_names())
            return frozenset(cols)
        if isinstance(step, Select) and not step.keep_columns:  # what follows sees only its output
            return _with_roots(set(), step.exprs)
        below: set[str] = set()
        for child in self.children(step_id):
            got = self.required_columns(child)
            if got is None:
                return None
            below |= got
        if isinstance(step, Join):
            need = getattr(step.spec, "input_columns", None)
            return None if need is None else frozenset(need(frozenset(below)))
        if isinstance(step, Filter):
            return _with_roots(below, (step.predicate,))
        if isinstance(step, Rolling):
            return frozenset(below | set(step.by) | {c for f in step.features.values() for c in f.columns})
        if isinstance(step, Top):
            return frozenset(below | set(step.by) | {step.order})
        if isinstance(step, Watermark):
            return frozenset(below | {step.field})
        if isinstance(step, Select):
            if any(e.meta.has_multiple_outputs() for e in step.exprs):
                return None
            try:
                made = {e.meta.output_name() for e in step.exprs}
            except Exception:
                return None
            return _with_roots(below - made, step.exprs)
        return frozenset(below)

    def describe(self) -> str:
        """One line per step: ``step_id  <- inputs  description``."""
        lines = []
        for s in self.steps:
            src = f" <- {', '.join(s.inputs)}" if s.inputs else ""
            lines.append(f"{s.step_id}{src}  {s.describe()}")
        return "\n".join(lines)


def _with_roots(cols: set[str], exprs: tuple[pl.Expr, ...]) -> frozenset[str] | None:
    for e in exprs:
        if e.meta.has_multiple_outputs():
            return None
        cols = cols | set(e.meta.root_names())
    return frozenset(cols)
