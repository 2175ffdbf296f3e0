"""The fluent Python API: ``Stream`` and ``WindowedStream`` build plan steps, nothing more."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import Aggregate
from everstream.engine.time import Duration, duration_ms
from everstream.engine.windows import WindowSpec
from everstream.errors import PlanError

if TYPE_CHECKING:
    from everstream.engine.app import App

#: Output columns of a window step besides the keys and the aggregates.
WINDOW_START = "window_start"
WINDOW_END = "window_end"


class Stream:
    """A stream of record batches at one point of an app's plan. Every method adds a step.

    Each method takes ``name=`` to set the step's id (default: derived from the graph, e.g.
    ``trades.filter``). Expressions are Polars expressions (``pl.col("price") > 10``).
    """

    def __init__(self, app: App, step_id: str) -> None:
        self._app = app
        self.step_id = step_id

    def __repr__(self) -> str:
        return f"Stream({self._app.name!r}, step_id={self.step_id!r})"

    @property
    def app(self) -> App:
        return self._app

    # ------------------------------------------------------------------ event time

    def with_watermark(
        self,
        field: str,
        max_delay: Duration = "0s",
        idle_timeout: Duration | None = None,
        *,
        name: str | None = None,
    ) -> Stream:
        """Declare the event-time ``field`` and how out of order events may arrive.

        The watermark of each input partition is the highest event time seen minus
        ``max_delay``; the stream's watermark is the minimum over partitions, leaving out those
        without data for ``idle_timeout`` (processing time). Events without the field, or whose
        value is not a time, go to the app's dead-letter topic ``<app>.dlq`` with the reason.
        """
        if not isinstance(field, str) or not field:
            raise PlanError(f"with_watermark: field must be a column name, got {field!r}")
        if self._app.plan_so_far().watermarks_of(self.step_id) or isinstance(
            self._app.step(self.step_id), p.Watermark
        ):
            raise PlanError(f"stream {self.step_id!r} already has a watermark; declare it once, on the source")
        idle = None if idle_timeout is None else duration_ms(idle_timeout, "idle_timeout")
        step = self._app.add(p.Watermark, self, "watermark", name, field=field,
                             max_delay_ms=duration_ms(max_delay, "max_delay"), idle_timeout_ms=idle)
        return step

    # ------------------------------------------------------------------ stateless

    def filter(self, *predicates: pl.Expr, name: str | None = None) -> Stream:
        """Keep rows where every predicate is true: ``.filter(pl.col("qty") > 100)``."""
        if not predicates:
            raise PlanError("filter() needs at least one expression, e.g. pl.col('qty') > 100")
        pred = predicates[0] if len(predicates) == 1 else pl.all_horizontal(*predicates)
        return self._app.add(p.Filter, self, "filter", name, predicate=_expr(pred, "filter"))

    def select(self, *exprs: pl.Expr | str, name: str | None = None, **named: pl.Expr) -> Stream:
        """Keep (and compute) these columns only: ``.select("symbol", notional=pl.col("price") * pl.col("qty"))``."""
        return self._app.add(p.Select, self, "select", name, exprs=_exprs(exprs, named, "select"), keep_columns=False)

    def with_columns(self, *exprs: pl.Expr, name: str | None = None, **named: pl.Expr) -> Stream:
        """Add or replace columns: ``.with_columns(notional=pl.col("price") * pl.col("qty"))``."""
        return self._app.add(
            p.Select, self, "with_columns", name, exprs=_exprs(exprs, named, "with_columns"), keep_columns=True
        )

    def map_batches(
        self, fn: Callable[[pl.DataFrame], pl.DataFrame], *, name: str | None = None, on_error: str = "raise"
    ) -> Stream:
        """Apply ``fn`` to each micro-batch as a Polars DataFrame (vectorized user code).

        The frame carries the metadata columns (``_partition``, ``_offset``, ``_key``,
        ``_event_time`` ...) after the user's; keep them to keep event time and error positions
        (if ``fn`` drops them without changing the row count they are put back).
        """
        _callable(fn, "map_batches")
        return self._app.add(p.MapBatches, self, "map_batches", name, fn=fn, on_error=p.check_on_error(on_error))

    def map(self, fn: Callable[[dict[str, Any]], dict[str, Any] | None], *, name: str | None = None,
            on_error: str = "raise") -> Stream:
        """Apply ``fn`` to each event as a dict; it returns a dict (or None to drop the event)."""
        _callable(fn, "map")
        return self._app.add(p.Map, self, "map", name, fn=fn, flat=False, on_error=p.check_on_error(on_error))

    def flat_map(self, fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]], *, name: str | None = None,
                 on_error: str = "raise") -> Stream:
        """Apply ``fn`` to each event as a dict; it returns any number of dicts."""
        _callable(fn, "flat_map")
        return self._app.add(p.Map, self, "flat_map", name, fn=fn, flat=True, on_error=p.check_on_error(on_error))

    def union(self, *others: Stream, name: str | None = None) -> Stream:
        """Merge this stream with others (columns are matched by name; missing ones are null)."""
        for o in others:
            if not isinstance(o, Stream) or o._app is not self._app:
                raise PlanError("union() takes streams of the same app")
        return self._app.add(p.Union, (self, *others), "union", name)

    # ------------------------------------------------------------------ windows

    def window(
        self,
        spec: WindowSpec,
        by: str | Iterable[str] | None = None,
        *,
        allowed_lateness: Duration = "0s",
        name: str | None = None,
    ) -> WindowedStream:
        """Group events into event-time windows per key; finish with ``.agg(...)``.

        A window fires once, when the watermark passes its end plus ``allowed_lateness``.
        Events that arrive after all their windows fired go to the topic
        ``<app>.<step_id>.late`` and are counted in the step's metrics.
        """
        if not isinstance(spec, WindowSpec):
            raise PlanError(f"window() takes es.tumbling(...), es.hopping(...) or es.session(...), not {spec!r}")
        keys = () if by is None else (by,) if isinstance(by, str) else tuple(by)
        return WindowedStream(self, spec, keys, duration_ms(allowed_lateness, "allowed_lateness"), name)

    # ------------------------------------------------------------------ sinks

    def to(self, topic: str, *, key: str | None = None, name: str | None = None) -> None:
        """Write the stream to ``topic`` (created when missing), keyed by column ``key``.

        Window results are keyed by their ``by`` column by default (when there is one).
        """
        from everstream.log.contract import check_topic_name

        check_topic_name(topic)
        if key is None:
            step = self._app.step(self.step_id)
            if isinstance(step, p.Window) and len(step.by) == 1:
                key = step.by[0]
        self._app.add(p.Sink, self, f"to.{topic}", name, topic=topic, key=key, derive=False)


class WindowedStream:
    """A stream grouped into windows; ``agg`` turns it back into a stream of window results."""

    def __init__(self, stream: Stream, spec: WindowSpec, by: tuple[str, ...], lateness_ms: int,
                 name: str | None) -> None:
        self._stream, self._spec, self._by, self._lateness, self._name = stream, spec, by, lateness_ms, name

    def agg(self, **aggs: Aggregate) -> Stream:
        """Aggregate each window: ``.agg(high=es.max("price"), n=es.count())``.

        Output columns: the ``by`` keys, ``window_start``, ``window_end``, then one per aggregate.
        """
        if not aggs:
            raise PlanError("agg() needs at least one aggregate, e.g. .agg(n=es.count())")
        for out, a in aggs.items():
            if not isinstance(a, Aggregate):
                raise PlanError(f"agg({out}=...): {a!r} is not an aggregate; use es.sum('qty'), es.count(), ...")
            if out in self._by or out in (WINDOW_START, WINDOW_END) or out.startswith("_"):
                raise PlanError(f"agg(): output name {out!r} clashes with a key, window column or metadata")
        app = self._stream.app
        if not app.plan_so_far().watermarks_of(self._stream.step_id) and not isinstance(
            app.step(self._stream.step_id), p.Watermark
        ):
            raise PlanError(
                f"window on {self._stream.step_id!r} needs event time: declare it on the source, e.g. "
                "app.stream('trades').with_watermark('ts', max_delay='2s')"
            )
        return app.add(p.Window, self._stream, "window", self._name, spec=self._spec, by=self._by,
                       aggs=dict(aggs), allowed_lateness_ms=self._lateness)


def _expr(e: Any, where: str) -> pl.Expr:
    if isinstance(e, str):
        return pl.col(e)
    if not isinstance(e, pl.Expr):
        raise PlanError(f"{where}: expected a Polars expression (pl.col(...)), got {type(e).__name__}: {e!r}")
    return e


def _exprs(exprs: tuple[pl.Expr | str, ...], named: dict[str, pl.Expr], where: str) -> tuple[pl.Expr, ...]:
    out = [_expr(e, where) for e in exprs]
    out += [_expr(e, where).alias(k) for k, e in named.items()]
    if not out:
        raise PlanError(f"{where}() needs at least one column or expression")
    return tuple(out)


def _callable(fn: Any, where: str) -> None:
    if not callable(fn):
        raise PlanError(f"{where}() takes a function, got {type(fn).__name__}: {fn!r}")
