"""Keyed process functions: per-event Python with per-key state and timers.

For logic the DSL cannot express. Events of a key reach the function in event-time order (they
wait for the watermark like rolling features do), each with a :class:`ProcessContext` giving the
key's state (a dict kept between events), the event time, the watermark, and timers:

- ``ctx.timer(at_ms)``: an event-time timer; ``on_timer`` runs once the watermark passes
  ``at_ms`` (after every event at or before ``at_ms``, interleaved with events in time order);
- ``ctx.processing_timer(at_ms)``: fires once the wall clock reaches ``at_ms``.

The function returns a dict, a list of dicts or None (or calls ``ctx.emit``); those become the
step's output rows. Per-event Python is the point here, so it runs in a plain loop.
"""

from __future__ import annotations

import heapq
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import WATERMARK, Ctx, Services, dead_letter, fn_location, user_columns
from everstream.engine.ordered import _SRC, OrderedOp
from everstream.engine.time import MAX_TIME
from everstream.errors import StepError, UserFunctionError
from everstream.log.contract import KEY_COL, OFFSET_COL, PARTITION_COL


class KeyedProcess:
    """Base class for keyed process functions: override ``process`` (and ``on_timer`` for timers)."""

    def process(self, event: dict[str, Any], ctx: ProcessContext) -> Any:
        raise NotImplementedError

    def on_timer(self, at: int, ctx: ProcessContext) -> Any:
        return None


class ProcessContext:
    """What a process function sees besides the event: key, state, time, timers, emit."""

    def __init__(self, op: ProcessOp, key: tuple[Any, ...], time: int, watermark: int) -> None:
        self._op, self._key, self.time, self.watermark = op, key, time, watermark
        self.out: list[dict[str, Any]] = []

    @property
    def key(self) -> Any:
        """The key's value (a tuple when keyed by several columns)."""
        return self._key[0] if len(self._key) == 1 else self._key

    @property
    def state(self) -> dict[str, Any]:
        """This key's state: a dict kept between its events (clear it to free the key)."""
        return self._op.states.setdefault(self._key, {})

    def timer(self, at_ms: int) -> None:
        """Call ``on_timer(at_ms, ctx)`` for this key once the watermark passes ``at_ms`` (event time)."""
        self._op.add_timer(int(at_ms), self._key, processing=False)

    def processing_timer(self, at_ms: int) -> None:
        """Call ``on_timer(at_ms, ctx)`` for this key once the wall clock reaches ``at_ms`` (epoch ms)."""
        self._op.add_timer(int(at_ms), self._key, processing=True)

    def emit(self, row: dict[str, Any]) -> None:
        """Emit an output row (same as returning it)."""
        self.out.append(row)


class ProcessOp(OrderedOp):
    """Runs a keyed process function over events released in event-time order, and its timers."""

    step: p.Process

    def __init__(self, step: p.Process, services: Services, multi_source: bool = False) -> None:
        super().__init__(step, services, step.by, [], multi_source)
        fn = step.fn
        self.fn: Callable[[dict[str, Any], ProcessContext], Any]
        self.on_timer: Callable[[int, ProcessContext], Any] | None = None
        if isinstance(fn, type):
            fn = fn()
        if hasattr(fn, "process"):
            self.fn, self.on_timer = fn.process, getattr(fn, "on_timer", None)
        else:
            self.fn = fn
        self.states: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.timers: list[tuple[int, int, tuple[Any, ...]]] = []  # event time heap
        self.ptimers: list[tuple[int, int, tuple[Any, ...]]] = []  # processing time heap
        self._timer_seq = 0
        self._set: set[tuple[bool, int, tuple[Any, ...]]] = set()

    def add_timer(self, at: int, key: tuple[Any, ...], processing: bool) -> None:
        if (processing, at, key) in self._set:  # one timer per (time, key), like Flink
            return
        self._set.add((processing, at, key))
        self._timer_seq += 1
        heapq.heappush(self.ptimers if processing else self.timers, (at, self._timer_seq, key))

    def advance(self, watermark: int) -> pl.DataFrame | None:
        previous = max(self.watermark, -MAX_TIME)
        got = super().advance(watermark)
        rows: list[dict[str, Any]] = [] if got is None else got.to_dicts()
        out = self._fire(self.timers, self.watermark, False, previous)
        out += self._fire(self.ptimers, self.services.now_ms() + 1, True, previous)
        rows += out
        if not rows:
            return None
        self.metrics.state_rows = len(self.states) + (0 if self.waiting is None else self.waiting.height)
        return pl.DataFrame(rows, infer_schema_length=None)

    def release(self, rows: pl.DataFrame, previous: int) -> pl.DataFrame | None:
        rows = rows.sort(EVENT_TIME, "_seq")
        users = user_columns(rows)
        meta = rows.select(*[c for c in (PARTITION_COL, OFFSET_COL, KEY_COL, _SRC) if c in rows.columns])
        out: list[dict[str, Any]] = []
        names = {i: tp for tp, i in self.sources.items()}
        for event, m, ts in zip(rows.select(users).iter_rows(named=True), meta.iter_rows(named=True),
                                rows.get_column(EVENT_TIME).to_list(), strict=True):
            # event-time timers due before this event run first (time order)
            bound = min(int(ts), self.watermark)
            out += self._fire(self.timers, bound, False, previous)
            key = tuple(event[c] for c in self.by)
            ctx = ProcessContext(self, key, int(ts), previous)
            try:
                got = self.fn(dict(event), ctx)
            except Exception as e:
                topic, part = names.get(m.get(_SRC, -1), (None, m.get(PARTITION_COL)))
                if self.step.on_error == "dead_letter":
                    tb = "".join(traceback.format_exception(e))
                    self.metrics.dead_letters += 1
                    self.services.dead_letters([dead_letter(
                        Ctx(topic, part), self.step.step_id, event, m,
                        f"process function raised at {fn_location(self.fn, e)}:\n{tb}")])
                    continue
                loc = fn_location(self.fn, e)
                raise UserFunctionError(
                    f"process function raised {type(e).__name__}: {e} at {loc}", location=loc,
                    step_id=self.step.step_id, topic=topic, partition=part, offset=m.get(OFFSET_COL),
                    key=ctx.key if isinstance(ctx.key, (str, bytes)) else repr(ctx.key), event_time=int(ts),
                    fix="fix the function, or pass on_error='dead_letter' to send failing events to "
                        f"'{self.services.app_name}.dlq' and go on",
                ) from e
            out += self._rows(got, ctx, int(ts), previous)
        return pl.DataFrame(out, infer_schema_length=None) if out else None

    def _fire(self, heap: list[tuple[int, int, tuple[Any, ...]]], before: int, processing: bool,
              previous: int) -> list[dict[str, Any]]:
        """Run the timers of ``heap`` set for times before ``before``, in time order."""
        out: list[dict[str, Any]] = []
        while heap and heap[0][0] < before:
            at, _, key = heapq.heappop(heap)
            self._set.discard((processing, at, key))
            if self.on_timer is None:
                continue
            ctx = ProcessContext(self, key, at, previous)
            try:
                got = self.on_timer(at, ctx)
            except Exception as e:
                loc = fn_location(self.on_timer, e)
                raise UserFunctionError(
                    f"on_timer raised {type(e).__name__}: {e} at {loc}", location=loc, step_id=self.step.step_id,
                    key=repr(ctx.key), event_time=at, fix="fix the on_timer method",
                ) from e
            out += self._rows(got, ctx, at if not processing else self.watermark, previous)
        return out

    def _rows(self, got: Any, ctx: ProcessContext, ts: int, previous: int) -> list[dict[str, Any]]:
        rows = list(ctx.out)
        if isinstance(got, dict):
            rows.append(got)
        elif got is not None:
            if not isinstance(got, Iterable) or isinstance(got, (str, bytes)):
                raise StepError(f"process function returned {type(got).__name__}: {got!r}",
                                step_id=self.step.step_id, key=repr(ctx.key), event_time=ts,
                                fix="return a dict, a list of dicts or None (or call ctx.emit(row))")
            rows.extend(got)
        for r in rows:
            if not isinstance(r, dict):
                raise StepError(f"process function emitted {type(r).__name__}: {r!r}", step_id=self.step.step_id,
                                key=repr(ctx.key), event_time=ts, fix="emit dicts (column name -> value)")
            r[EVENT_TIME] = ts
            r[WATERMARK] = previous
        return rows


__all__ = ["KeyedProcess", "ProcessContext", "ProcessOp"]
