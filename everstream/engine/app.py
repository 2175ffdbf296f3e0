"""``App``: names a pipeline, collects its steps and runs it on a log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from everstream.engine import plan as p
from everstream.engine.stream import Stream
from everstream.errors import PlanError

if TYPE_CHECKING:
    from everstream.engine.runtime import Runner, RunResult
    from everstream.log.contract import Log, StartAt


class App:
    """A stream-processing application: ``app = es.App("market")``.

    ``name`` is the consumer group of its inputs and prefixes its internal topics
    (``<name>.dlq`` for dead letters, ``<name>.<step_id>.late`` for late events).
    """

    def __init__(self, name: str) -> None:
        from everstream.log.contract import check_topic_name

        try:
            check_topic_name(name)
        except ValueError as e:
            raise PlanError(f"App name {name!r}: {e}") from None
        self.name = name
        self._steps: list[p.Step] = []
        self._ids: dict[str, p.Step] = {}

    def __repr__(self) -> str:
        return f"App({self.name!r}, steps={len(self._steps)})"

    # ------------------------------------------------------------------ building

    def stream(self, topic: str, *, schema: Any = None, name: str | None = None) -> Stream:
        """A stream reading ``topic``; ``schema`` (dataclass, pydantic model or Arrow schema) is checked
        against the topic's declared schema when the app starts."""
        from everstream.log.contract import check_topic_name

        check_topic_name(topic)
        arrow = None
        if schema is not None:
            from everstream.schema import arrow_schema

            arrow = schema if isinstance(schema, pa.Schema) else arrow_schema(schema)
        return self.add(p.Source, (), topic, name, derive=False, topic=topic, schema=arrow)

    def add(
        self,
        cls: Callable[..., p.Step],
        parents: Stream | tuple[Stream, ...],
        base: str,
        name: str | None,
        *,
        derive: bool = True,
        **params: Any,
    ) -> Stream:
        """Append a step (used by :class:`Stream`); returns the stream it produces."""
        ups = (parents,) if isinstance(parents, Stream) else parents
        if name is not None:
            sid = p.check_step_id(name)
            if sid in self._ids:
                raise PlanError(f"step id {sid!r} is used twice in app {self.name!r}; give each step its own name=")
        else:
            stem = f"{self._stem(ups[0].step_id)}.{base}" if derive and ups else base
            sid, n = stem, 2
            while sid in self._ids:
                sid, n = f"{stem}{n}", n + 1
            p.check_step_id(sid)
        step = cls(step_id=sid, inputs=tuple(u.step_id for u in ups), **params)
        self._steps.append(step)
        self._ids[sid] = step
        return Stream(self, sid)

    def _stem(self, step_id: str) -> str:
        """Prefix for derived ids of a step's children (a watermark adds nothing: ``trades.window``)."""
        step = self._ids[step_id]
        if isinstance(step, p.Watermark) and step.inputs:
            return self._stem(step.inputs[0])
        return step_id

    def step(self, step_id: str) -> p.Step:
        try:
            return self._ids[step_id]
        except KeyError:
            raise PlanError(f"no step {step_id!r} in app {self.name!r}") from None

    def plan_so_far(self) -> p.Plan:
        return p.Plan.build(self.name, tuple(self._steps))

    @property
    def plan(self) -> p.Plan:
        """The immutable plan of the steps defined so far."""
        plan = self.plan_so_far()
        if not plan.sources():
            raise PlanError(f"app {self.name!r} has no input: add one with app.stream('topic')")
        return plan

    # ------------------------------------------------------------------ running

    def runner(self, log: Log | None = None, **options: Any) -> Runner:
        """A runner for this app on ``log`` (default: ``open_log()`` from the environment)."""
        from everstream.engine.runtime import Runner

        return Runner(self, log, **options)

    def run(
        self,
        log: Log | None = None,
        *,
        until_idle: bool = False,
        duration: float | None = None,
        start: StartAt = "earliest",
        **options: Any,
    ) -> RunResult:
        """Run until stopped (Ctrl-C), for ``duration`` seconds, or ``until_idle``: until every
        input is drained and every window has fired (replays, backtests, tests).

        Options go to the :class:`~everstream.engine.runtime.Runner`, notably
        ``guarantee="at_least_once"`` (default) or ``"exactly_once"`` (outputs, operator state and
        input offsets committed in one transaction; a restart resumes exactly), and
        ``commit_interval`` (seconds, default 0.1; 0 commits after every batch)."""
        with self.runner(log, start=start, **options) as r:
            return r.run(until_idle=until_idle, duration=duration)
