"""The fluent Python API: ``Stream`` and ``WindowedStream`` build plan steps, nothing more."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import Aggregate
from everstream.engine.features import Feature
from everstream.engine.time import Duration, duration_ms
from everstream.engine.windows import Count, WindowSpec
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
        early_fire: Duration | None = None,
        time: str = "event",
        name: str | None = None,
    ) -> WindowedStream:
        """Group events into windows per key; finish with ``.agg(...)``.

        A window fires once, when the watermark passes its end plus ``allowed_lateness``.
        Events that arrive after all their windows fired go to the topic
        ``<app>.<step_id>.late`` and are counted in the step's metrics.

        ``early_fire="500ms"`` also emits the running value of open windows that changed, at most
        that often (processing time), for live views; the output then has a ``final`` column,
        False for running values and True for the one result at close. ``time="processing"``
        uses the wall clock at processing instead of event time (no watermark needed).
        """
        if not isinstance(spec, WindowSpec):
            raise PlanError(f"window() takes es.tumbling(...), es.hopping(...), es.session(...), "
                            f"es.cumulative(...) or es.count_window(...), not {spec!r}")
        if time not in ("event", "processing"):
            raise PlanError(f"window(time={time!r}): use 'event' (default) or 'processing'")
        if isinstance(spec, Count) and (time == "processing" or early_fire is not None):
            raise PlanError("count windows are in event-time order and fire on their n-th event: "
                            "drop time='processing' and early_fire")
        keys = () if by is None else (by,) if isinstance(by, str) else tuple(by)
        early = None if early_fire is None else duration_ms(early_fire, "early_fire")
        if early is not None and early <= 0:
            raise PlanError(f"window(early_fire={early_fire!r}) must be positive, e.g. '500ms'")
        return WindowedStream(self, spec, keys, duration_ms(allowed_lateness, "allowed_lateness"), name,
                              early, time)

    # ------------------------------------------------------------------ per-key features and functions

    def rolling(self, by: str | Iterable[str] | None = None, *, name: str | None = None,
                **features: Feature) -> Stream:
        """Add per-key rolling features to every event, e.g. the velocity of a card::

            payments.rolling(by="card", n_10m=es.rolling_count("10m"), sum_1h=es.rolling_sum("amount", "1h"),
                             ewma=es.ewma("amount", half_life="30m"), gap=es.time_since_last())

        Each event comes out with its features once the watermark passes its time, in event-time
        order; windowed features cover ``(t - over, t]`` of its key, the event itself included.
        """
        if not features:
            raise PlanError("rolling() needs at least one feature, e.g. n_10m=es.rolling_count('10m')")
        keys = () if by is None else (by,) if isinstance(by, str) else tuple(by)
        for out, f in features.items():
            if not isinstance(f, Feature):
                raise PlanError(f"rolling({out}=...): {f!r} is not a feature; use es.rolling_sum('amount', '10m'), "
                                "es.rolling_count('10m'), es.ewma(...), es.time_since_last()")
            if out in keys or out.startswith("_"):
                raise PlanError(f"rolling(): feature name {out!r} clashes with a key or metadata column")
        self._needs_event_time("rolling")
        return self._app.add(p.Rolling, self, "rolling", name, by=keys, features=dict(features))

    def key_by(self, *by: str) -> KeyedStream:
        """Key the stream by columns, for ``.process(fn)``.

        The events of a key must come from one input partition (the topic is keyed by it);
        repartitioning through a topic is not built yet.
        """
        if not by or not all(isinstance(b, str) and b for b in by):
            raise PlanError(f"key_by() takes column names, got {by!r}")
        return KeyedStream(self, tuple(by))

    def _needs_event_time(self, what: str) -> None:
        if not self._app.plan_so_far().watermarks_of(self.step_id) and not isinstance(
            self._app.step(self.step_id), p.Watermark
        ):
            raise PlanError(
                f"{what} on {self.step_id!r} needs event time: declare it on the source, e.g. "
                "app.stream('payments').with_watermark('ts', max_delay='2s')"
            )

    # ------------------------------------------------------------------ joins (everstream.engine.joins)

    def join_asof(self, other: Stream, on: str | tuple[str, str] | None = None, by: str | Iterable[str] | None = None,
                  *, direction: str = "backward", allow_exact_matches: bool = True, tolerance: Duration | None = None,
                  how: str = "left", suffix: str = "_right", name: str | None = None) -> Stream:
        """Join each event with the ``other`` stream's row nearest in event time (same ``by`` key), e.g. a
        trade with the quote that prevailed: ``trades.join_asof(quotes, on="ts", by="symbol")``.

        The results equal Polars ``join_asof`` (``strategy=direction``, ``allow_exact_matches``,
        ``tolerance``) over the same data; an event is emitted once the watermarks make its answer final
        (backward: the other side's watermark passed it). ``how="inner"`` drops events without a match.
        ``on`` is each side's event-time field (default: theirs).
        """
        from everstream.engine import joins

        return joins.asof(self, other, on=on, by=by, direction=direction, allow_exact_matches=allow_exact_matches,
                          tolerance=tolerance, how=how, suffix=suffix, name=name)

    def join_interval(self, other: Stream, on: str | tuple[str, str] | None = None,
                      by: str | Iterable[str] | None = None, *, lower: Duration = "0s", upper: Duration = "0s",
                      how: str = "inner", suffix: str = "_right", name: str | None = None) -> Stream:
        """Pair each event with the ``other`` stream's events of the same key whose time is within
        ``[t + lower, t + upper]`` (``lower`` may be negative, ``"-2s"``): an order and its executions,
        ``orders.join_interval(execs, by="order_id", upper="5s")``. ``how``: inner, left, right or full
        (unmatched events come out, with nulls, once the watermark passes their interval)."""
        from everstream.engine import joins

        return joins.interval(self, other, on=on, by=by or (), lower=lower, upper=upper, how=how, suffix=suffix,
                              name=name)

    def join_table(self, table: Stream, by: str | Iterable[str] | None = None, *, how: str = "left",
                   grace: Duration | None = None, suffix: str = "_right", name: str | None = None) -> Stream:
        """Enrich each event with the value of a keyed changelog ``table`` (latest row per key) valid at
        the event's time. An event waits until the table's watermark passes its time, or at most ``grace``
        of its own stream's event time (for tables that change rarely). ``how``: left or inner."""
        from everstream.engine import joins

        return joins.table(self, table, by=by or (), how=how, grace=grace, suffix=suffix, name=name)

    def join_window(self, other: Stream, spec: WindowSpec, by: str | Iterable[str] | None = None, *,
                    how: str = "inner", suffix: str = "_right", name: str | None = None) -> Stream:
        """Join the events of both streams that fall in the same tumbling/hopping window and key; emitted
        when the window closes, with ``window_start``/``window_end``. ``how``: inner or left."""
        from everstream.engine import joins

        return joins.window(self, other, spec=spec, by=by or (), how=how, suffix=suffix, name=name)

    def join_lookup(self, table: Any, by: str | Iterable[str] | None = None, *,
                    table_by: str | Iterable[str] | None = None, how: str = "left", suffix: str = "_right",
                    name: str | None = None) -> Stream:
        """Enrich each event from an external table (``everstream.connectors.lookup``: Parquet, DuckDB) with
        a bounded cache; one lookup per micro-batch for its distinct keys. ``how``: left or inner."""
        from everstream.engine import joins

        return joins.lookup(self, table, by=by or (), table_by=table_by, how=how, suffix=suffix, name=name)

    # ------------------------------------------------------------------ patterns (everstream.cep)

    def match(self, pattern: Any, by: str | Iterable[str] | None = None, *, timeouts: str | bool = True,
              name: str | None = None) -> Stream:
        """Complex event processing: find ``pattern`` (``es.pattern(...)``) in each key's events, in event
        time order. One output row per match: the keys, ``pattern`` (this step's id), ``match_start``,
        ``match_end`` and one list-of-struct column per stage with its events. Partial matches that time
        out (``within``) go to ``<app>.<step_id>.timeouts`` (``timeouts="topic"`` to rename, False to drop).
        See :mod:`everstream.cep`.
        """
        keys = () if by is None else (by,) if isinstance(by, str) else tuple(by)
        if not callable(getattr(pattern, "check", None)) or not callable(getattr(pattern, "operator", None)):
            raise PlanError(f"match() takes a pattern built with es.pattern('name').where(...)..., got "
                            f"{type(pattern).__name__}: {pattern!r}")
        pattern.check(keys)  # raises PlanError with the fix
        if not isinstance(timeouts, (bool, str)):
            raise PlanError(f"match(timeouts={timeouts!r}): use True, False or a topic name")
        if isinstance(timeouts, str):
            from everstream.log.contract import check_topic_name

            check_topic_name(timeouts)
        self._needs_event_time("match")
        return self._app.add(p.Match, self, "match", name, pattern=pattern, by=keys, timeouts=timeouts)

    # ------------------------------------------------------------------ models (everstream.ml)

    def score(self, registry: Any, model: str = "fraud", *, name: str | None = None, **options: Any) -> Stream:
        """Score every event with the promoted version of ``model`` from a model registry
        (``everstream.ml.ModelRegistry``): vectorized per micro-batch, switching to a newly promoted
        version without stopping. Adds ``score``, ``model``, ``model_version``, ``reasons`` (top
        contributing features), ``score_latency_ms`` and ``scored_at_ms``; options go to
        :class:`everstream.ml.Scorer` (``reasons=3``, ``explain_above=0.5``, ``refresh_s=0.05``).
        """
        if not callable(getattr(registry, "scorer", None)):
            raise PlanError(f"score() takes a model registry (everstream.ml.ModelRegistry(log)), got "
                            f"{type(registry).__name__}: {registry!r}")
        fn = registry.scorer(model, **options)
        return self._app.add(p.MapBatches, self, "score", name, fn=fn, on_error="raise")

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
                 name: str | None, early_fire_ms: int | None = None, time: str = "event") -> None:
        self._stream, self._spec, self._by, self._lateness, self._name = stream, spec, by, lateness_ms, name
        self._early, self._time = early_fire_ms, time

    def agg(self, **aggs: Aggregate) -> Stream:
        """Aggregate each window: ``.agg(high=es.max("price"), n=es.count())``.

        Output columns: the ``by`` keys, ``window_start``, ``window_end``, then one per aggregate.
        """
        if not aggs:
            raise PlanError("agg() needs at least one aggregate, e.g. .agg(n=es.count())")
        for out, a in aggs.items():
            if not isinstance(a, Aggregate):
                raise PlanError(f"agg({out}=...): {a!r} is not an aggregate; use es.sum('qty'), es.count(), ...")
            reserved = (WINDOW_START, WINDOW_END, "window", "final")
            if out in self._by or out in reserved or out.startswith("_"):
                raise PlanError(f"agg(): output name {out!r} clashes with a key, window column or metadata")
        app = self._stream.app
        if self._time == "event":
            self._stream._needs_event_time("window")
        return app.add(p.Window, self._stream, "window", self._name, spec=self._spec, by=self._by,
                       aggs=dict(aggs), allowed_lateness_ms=self._lateness, early_fire_ms=self._early,
                       time=self._time)


    def top(self, n: int, order: str, *, descending: bool = True, ties: bool = True,
            window_columns: bool = True) -> Stream:
        """Window Top-N: the ``n`` rows of each window (and ``by`` key) with the highest ``order``
        (``descending=False``: lowest), emitted when the window closes: ``.top(3, "notional")``.

        ``ties=True`` ranks like SQL ``RANK()`` (all rows tied at the cut stay: ``top(1, "price")``
        gives every bid at the window's maximum), ``ties=False`` like ``ROW_NUMBER()`` (ties broken
        by event time, then arrival). Output: the input rows' columns, then ``window_start`` and
        ``window_end`` (``window_columns=False`` leaves them out, for inputs that already carry
        window bounds, e.g. the results of an upstream window). Rows with a null ``order`` never rank.
        Tumbling, hopping and cumulative windows; state is the leading rows per open window.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PlanError(f"top(n={n!r}): n must be a positive integer (rows per window and key)")
        if not isinstance(order, str) or not order or order.startswith("_"):
            raise PlanError(f"top(order={order!r}): name the column to rank by, e.g. top(3, 'notional')")
        from everstream.engine.windows import Session

        if isinstance(self._spec, (Session, Count)) or self._early is not None or self._time != "event":
            raise PlanError(f"top() ranks within event-time tumbling, hopping or cumulative windows without "
                            f"early firing; got {self._spec.describe()}" + (", early_fire" if self._early else "")
                            + (f", time={self._time!r}" if self._time != "event" else ""))
        self._stream._needs_event_time("top")
        return self._stream.app.add(p.Top, self._stream, "top", self._name, spec=self._spec, by=self._by, n=n,
                                    order=order, descending=descending, ties=ties,
                                    allowed_lateness_ms=self._lateness, window_columns=window_columns)


class KeyedStream:
    """A stream keyed by columns; ``process`` runs a keyed process function on it."""

    def __init__(self, stream: Stream, by: tuple[str, ...]) -> None:
        self._stream, self._by = stream, by

    def process(self, fn: Any, *, name: str | None = None, on_error: str = "raise") -> Stream:
        """Run ``fn(event, ctx)`` per event in event-time order, with per-key ``ctx.state`` and timers.

        ``fn`` is a function, or a :class:`es.KeyedProcess` subclass (or instance) with
        ``process(event, ctx)`` and ``on_timer(at, ctx)``. It returns a dict, a list of dicts or
        None; those are the step's output. See :mod:`everstream.engine.process`.
        """
        target = fn() if isinstance(fn, type) else fn
        if not callable(getattr(target, "process", None)) and not callable(target):
            raise PlanError(f"process() takes a function or a KeyedProcess class, got {type(fn).__name__}: {fn!r}")
        self._stream._needs_event_time("process")
        return self._stream.app.add(p.Process, self._stream, "process", name, by=self._by, fn=target,
                                    on_error=p.check_on_error(on_error))


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
