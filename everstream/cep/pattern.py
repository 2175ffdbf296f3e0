"""The pattern API: a Pythonic take on Flink CEP's ``Pattern``, immutable and checked when built.

```python
import everstream as es
import polars as pl

card_testing = (
    es.pattern("small").where(pl.col("amount") < 2).times(3, None)
    .followed_by("big").where(pl.col("amount") > 500)
    .within("10m").after_match(es.cep.skip_past_last_event())
)
alerts = payments.match(card_testing, by="card", name="card-testing")
```

A pattern is a sequence of **stages**. Each positive stage takes events that satisfy its
condition; a negative stage (``not_next``, ``not_followed_by``) forbids events between its
neighbours. Every method returns a new pattern (patterns are values, safe to share).

Semantics (per key, over the key's events in event-time order; the reference matcher in the
tests implements exactly this):

- a match assigns strictly increasing events to the positive stages in order; each stage takes
  a number of events in its quantifier (``times(n, m)``; ``optional()`` also allows none) and
  each taken event satisfies the stage's condition (callables see the partial match so far);
- **contiguity** between an event ``x`` and the next taken event ``y`` (into a new stage: that
  stage's contiguity; within a loop: the loop's inner contiguity): ``next``/``consecutive``
  (strict) — ``y`` directly follows ``x``; ``followed_by`` (relaxed, skip till next match) — no
  event between them satisfies ``y``'s stage condition; ``followed_by_any`` /
  ``allow_combinations`` (non-deterministic) — anything may lie between;
- ``not_next(c)``: the event right after the previous stage's last event does not satisfy ``c``;
  ``not_followed_by(c)``: no event between the previous stage's last event and the next stage's
  first satisfies ``c``;
- ``until(c)``: a loop takes no more events once an event satisfying ``c`` occurs after its first;
- ``greedy()``: a loop is left only when it could not take the next event (no event up to and
  including the next stage's first could have continued it);
- ``not_followed_by(c)`` **at the end** (needs ``within(d)``, as in Flink): no event after the last
  positive stage's last event and before first event time + ``d`` satisfies ``c``; such a match is
  *pending* until that window closes (the watermark, or a later event of the key, reaches first
  event time + ``d``) and is emitted then, with ``_event_time`` = first event time + ``d`` - 1;
- ``within(d)``: last event time - first event time < ``d``; partial matches that can no longer
  complete in time are *timed out* (written to the step's side topic);
- matches are emitted when their last event is processed (pending ones: when their window closes),
  ordered by (last event, first event, the events themselves) (pending ones: by (first event, the
  events)); the **after-match skip strategy** then drops partial and pending
  matches: ``no_skip`` none, ``skip_to_next`` those starting at or before the match's first
  event, ``skip_past_last_event`` those starting at or before its last event,
  ``skip_to_first(s)`` / ``skip_to_last(s)`` those starting before the first / last event of
  stage ``s``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import polars as pl

from everstream.engine.time import Duration, duration_ms
from everstream.errors import PlanError

if TYPE_CHECKING:
    from everstream.engine import plan as p
    from everstream.engine.operators import Operator, Services

Contiguity = Literal["strict", "relaxed", "any"]
#: A condition: a Polars expression on the current event, or ``fn(event)`` / ``fn(event, match)``
#: where ``match`` maps each stage name to the list of events (dicts) it has taken so far.
Condition: TypeAlias = pl.Expr | Callable[..., Any]
SkipKind = Literal["no_skip", "skip_to_next", "skip_past_last_event", "skip_to_first", "skip_to_last"]

#: Output columns of a match step besides the keys and one list column per positive stage.
MATCH_START = "match_start"
MATCH_END = "match_end"
PATTERN = "pattern"
RESERVED = frozenset({MATCH_START, MATCH_END, PATTERN, "timed_out_at"})


@dataclass(frozen=True)
class AfterMatch:
    """An after-match skip strategy (see the module docstring); build with the functions below."""

    kind: SkipKind = "no_skip"
    stage: str | None = None

    def describe(self) -> str:
        return self.kind if self.stage is None else f"{self.kind}({self.stage!r})"


def no_skip() -> AfterMatch:
    """Every match is emitted (overlapping ones too)."""
    return AfterMatch("no_skip")


def skip_to_next() -> AfterMatch:
    """After a match, drop partial matches that started at or before its first event."""
    return AfterMatch("skip_to_next")


def skip_past_last_event() -> AfterMatch:
    """After a match, drop partial matches that started at or before its last event (no overlap)."""
    return AfterMatch("skip_past_last_event")


def skip_to_first(stage: str) -> AfterMatch:
    """After a match, drop partial matches that started before the first event of ``stage``."""
    return AfterMatch("skip_to_first", _name(stage, "skip_to_first"))


def skip_to_last(stage: str) -> AfterMatch:
    """After a match, drop partial matches that started before the last event of ``stage``."""
    return AfterMatch("skip_to_last", _name(stage, "skip_to_last"))


_SKIPS: dict[str, Callable[[], AfterMatch]] = {
    "no_skip": no_skip, "skip_to_next": skip_to_next, "skip_past_last_event": skip_past_last_event,
}


@dataclass(frozen=True)
class Group:
    """A conjunction: every expression and every callable must hold."""

    exprs: tuple[pl.Expr, ...] = ()
    fns: tuple[Callable[[dict[str, Any], dict[str, list[dict[str, Any]]]], bool], ...] = ()


Cond = tuple[Group, ...]  # a disjunction of groups; () = no condition (any event)


@dataclass(frozen=True)
class Stage:
    """One stage of a pattern (positive, or negative with ``negative=True``)."""

    name: str
    negative: bool = False
    contiguity: Contiguity = "relaxed"  # to the previous stage
    cond: Cond = ()
    until: Cond = ()
    min: int = 1
    max: int | None = 1
    optional: bool = False
    greedy: bool = False
    inner: Contiguity = "relaxed"  # between the events of a loop

    @property
    def loops(self) -> bool:
        return self.max is None or self.max > 1

    def describe(self) -> str:
        kind = {"strict": "next", "relaxed": "followed_by", "any": "followed_by_any"}[self.contiguity]
        if self.negative:
            kind = "not_next" if self.contiguity == "strict" else "not_followed_by"
        q = "" if (self.min, self.max) == (1, 1) else f"{{{self.min},{'' if self.max is None else self.max}}}"
        return f"{kind}({self.name}){q}{'?' if self.optional else ''}{' greedy' if self.greedy else ''}"


def _name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise PlanError(f"{where}: stage name {name!r} must be a Python identifier not starting with '_' "
                        "(it becomes an output column)")
    return name


def _group(c: Any, where: str) -> Group:
    if isinstance(c, pl.Expr):
        return Group(exprs=(c,))
    if callable(c):
        try:
            params = [q for q in inspect.signature(c).parameters.values()
                      if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD) and q.default is q.empty]
            two = len(params) >= 2
        except (TypeError, ValueError):
            two = True
        fn = c if two else (lambda event, match, _f=c: _f(event))
        return Group(fns=(fn,))
    raise PlanError(f"{where}: a condition is a Polars expression (pl.col('amount') < 2) or a function "
                    f"fn(event) / fn(event, match) returning a bool, got {type(c).__name__}: {c!r}")


def _and(cond: Cond, g: Group) -> Cond:
    if not cond:
        return (g,)
    return tuple(Group(x.exprs + g.exprs, x.fns + g.fns) for x in cond)


@dataclass(frozen=True)
class Pattern:
    """A pattern: stages, an optional time bound, an after-match skip strategy. Start with :func:`pattern`."""

    stages: tuple[Stage, ...] = ()
    within_ms: int | None = None
    skip: AfterMatch = field(default_factory=AfterMatch)

    # ------------------------------------------------------------------ stages

    def next(self, name: str) -> Pattern:
        """A new stage whose first event must directly follow the previous one (strict contiguity)."""
        return self._add(Stage(_name(name, "next"), contiguity="strict"))

    def followed_by(self, name: str) -> Pattern:
        """A new stage taking the next matching event; non-matching events between are skipped."""
        return self._add(Stage(_name(name, "followed_by"), contiguity="relaxed"))

    def followed_by_any(self, name: str) -> Pattern:
        """A new stage taking any later matching event (every combination: non-deterministic relaxed)."""
        return self._add(Stage(_name(name, "followed_by_any"), contiguity="any"))

    def not_next(self, name: str) -> Pattern:
        """The event right after the previous stage must not satisfy this stage's condition."""
        return self._add(Stage(_name(name, "not_next"), negative=True, contiguity="strict"))

    def not_followed_by(self, name: str) -> Pattern:
        """No event between the previous and the next stage may satisfy this stage's condition. At the end
        of a pattern (with ``within``): none until the match's window closes; the match is emitted then."""
        return self._add(Stage(_name(name, "not_followed_by"), negative=True, contiguity="relaxed"))

    # ------------------------------------------------------------------ conditions

    def where(self, condition: Condition) -> Pattern:
        """AND a condition to the current stage: ``.where(pl.col("amount") < 2)``."""
        return self._last(lambda s: replace(s, cond=_and(s.cond, _group(condition, f"{s.name}.where"))), "where")

    def or_where(self, condition: Condition) -> Pattern:
        """OR a condition to the current stage's condition."""
        def f(s: Stage) -> Stage:
            g = _group(condition, f"{s.name}.or_where")
            return replace(s, cond=(g,) if not s.cond else (*s.cond, g))
        return self._last(f, "or_where")

    def until(self, condition: Condition) -> Pattern:
        """Stop the current loop once an event satisfying ``condition`` occurs (that event is not taken)."""
        def f(s: Stage) -> Stage:
            g = _group(condition, f"{s.name}.until")
            return replace(s, until=(g,) if not s.until else (*s.until, g))
        return self._last(f, "until")

    # ------------------------------------------------------------------ quantifiers

    def times(self, n: int, m: int | Literal["same"] | None = "same") -> Pattern:
        """Exactly ``n`` events (``times(3)``), between ``n`` and ``m`` (``times(2, 4)``), or ``n`` or
        more (``times(3, None)``)."""
        hi = n if m == "same" else m
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (
                hi is not None and (not isinstance(hi, int) or isinstance(hi, bool) or hi < n)):
            raise PlanError(f"times({n!r}, {m!r}): use 1 <= n <= m (m=None for no upper bound)")
        return self._last(lambda s: replace(s, min=n, max=hi), "times")

    def one_or_more(self) -> Pattern:
        """One or more events (a loop)."""
        return self.times(1, None)

    def times_or_more(self, n: int) -> Pattern:
        """``n`` or more events (a loop)."""
        return self.times(n, None)

    def optional(self) -> Pattern:
        """The current stage may take no event at all."""
        return self._last(lambda s: replace(s, optional=True), "optional")

    def greedy(self) -> Pattern:
        """The current loop takes as many events as it can before the next stage may start."""
        return self._last(lambda s: replace(s, greedy=True), "greedy")

    def consecutive(self) -> Pattern:
        """The events of the current loop must directly follow each other (strict inner contiguity)."""
        return self._last(lambda s: replace(s, inner="strict"), "consecutive")

    def allow_combinations(self) -> Pattern:
        """The current loop may skip matching events (non-deterministic inner contiguity)."""
        return self._last(lambda s: replace(s, inner="any"), "allow_combinations")

    # ------------------------------------------------------------------ the whole pattern

    def within(self, duration: Duration) -> Pattern:
        """The match's last event is less than ``duration`` (event time) after its first."""
        ms = duration_ms(duration, "within")
        if ms <= 0:
            raise PlanError(f"within({duration!r}) must be positive, e.g. '10m'")
        self._check_started("within")
        return replace(self, within_ms=ms)

    def after_match(self, strategy: AfterMatch | str) -> Pattern:
        """The after-match skip strategy: ``es.cep.skip_past_last_event()``, ``"skip_to_next"``, ..."""
        self._check_started("after_match")
        if isinstance(strategy, str):
            if strategy not in _SKIPS:
                raise PlanError(f"after_match({strategy!r}): use one of {sorted(_SKIPS)}, or "
                                "es.cep.skip_to_first('stage') / es.cep.skip_to_last('stage')")
            strategy = _SKIPS[strategy]()
        if not isinstance(strategy, AfterMatch):
            raise PlanError(f"after_match() takes a skip strategy, got {strategy!r}")
        return replace(self, skip=strategy)

    def describe(self) -> str:
        parts = []
        for i, s in enumerate(self.stages):
            parts.append(f"begin({s.name})" + s.describe().split(")", 1)[1] if i == 0 else s.describe())
        extra = "" if self.within_ms is None else f" within {self.within_ms} ms"
        return " ".join(parts) + extra + ("" if self.skip.kind == "no_skip" else f" {self.skip.describe()}")

    def __repr__(self) -> str:
        return f"Pattern({self.describe()})"

    # ------------------------------------------------------------------ engine hooks

    def check(self, by: tuple[str, ...] = ()) -> Compiled:
        """Validate the whole pattern (raises :class:`PlanError` with the fix) and compile it."""
        return Compiled.of(self, by)

    def operator(self, step: p.Match, services: Services, *, multi_source: bool,
                 time_zone: Callable[[], str | None]) -> Operator:
        """The engine operator of a match step (the runtime asks the pattern: cep sits above the engine)."""
        from everstream.cep.operator import MatchOp

        return MatchOp(step, services, multi_source=multi_source, time_zone=time_zone)

    # ------------------------------------------------------------------ helpers

    def _check_started(self, what: str) -> None:
        if not self.stages:
            raise PlanError(f"{what}(): the pattern has no stage yet; begin it with es.pattern('name')")

    def _add(self, stage: Stage) -> Pattern:
        self._check_started(stage.describe().split("(")[0])
        if stage.name in {s.name for s in self.stages}:
            raise PlanError(f"stage name {stage.name!r} is used twice in the pattern; give each stage its own name")
        return replace(self, stages=(*self.stages, stage))

    def _last(self, f: Callable[[Stage], Stage], what: str) -> Pattern:
        self._check_started(what)
        return replace(self, stages=(*self.stages[:-1], f(self.stages[-1])))


def pattern(name: str, *, after_match: AfterMatch | str | None = None) -> Pattern:
    """Begin a pattern with its first stage: ``es.pattern("small").where(pl.col("amount") < 2)``."""
    pat = Pattern((Stage(_name(name, "pattern"), contiguity="relaxed"),))
    return pat if after_match is None else pat.after_match(after_match)


begin = pattern


# ---------------------------------------------------------------------- compiled form


@dataclass(frozen=True)
class CompiledCond:
    """A condition as bits of the vectorized mask plus per-group callables."""

    groups: tuple[tuple[int, tuple[Callable[..., Any], ...]], ...]  # (bit, fns) per group
    bits: int  # OR of the group bits
    has_fns: bool

    @property
    def empty(self) -> bool:
        return not self.groups


@dataclass(frozen=True)
class Compiled:
    """The checked pattern in the form the matcher uses: positive stages, negatives per gap, mask bits."""

    pattern: Pattern
    stages: tuple[Stage, ...]  # positive stages only
    conds: tuple[CompiledCond, ...]
    untils: tuple[CompiledCond | None, ...]
    #: per positive stage i: negative constraints applying when the match leaves stage i
    negatives: tuple[tuple[tuple[bool, CompiledCond], ...], ...]  # (is_not_next, cond)
    exprs: tuple[pl.Expr, ...]  # mask bit k is exprs[k] (all of a group's expressions ANDed)
    needs_positions: bool  # strict contiguity or not_next: neutral events matter
    has_fns: bool
    within_ms: int | None
    skip: AfterMatch
    #: conditions of the not_followed_by stages ending the pattern: a match that reaches the last positive
    #: stage is *pending* until its window closes (first event time + within) with none of them seen
    trailing: tuple[CompiledCond, ...] = ()

    @classmethod
    def of(cls, pat: Pattern, by: tuple[str, ...] = ()) -> Compiled:
        if not isinstance(pat, Pattern) or not pat.stages:
            raise PlanError(f"match() needs a pattern with at least one stage; begin it with es.pattern('name'), "
                            f"got {pat!r}")
        st = pat.stages
        if st[0].negative:
            raise PlanError(f"pattern {pat.describe()!r} starts with a negative stage {st[0].name!r}: "
                            "begin with a positive stage")
        tail = st[max(i for i, s in enumerate(st) if not s.negative) + 1:]
        if any(s.contiguity == "strict" for s in tail):
            raise PlanError(f"pattern {pat.describe()!r} ends with not_next stage "
                            f"{next(s.name for s in tail if s.contiguity == 'strict')!r}: add a positive "
                            "stage after it, or use not_followed_by(...) with within(...) at the end")
        if st[-1].negative and pat.within_ms is None:
            raise PlanError(f"pattern {pat.describe()!r} ends with not_followed_by stage {st[-1].name!r} but has no "
                            "time bound: add .within(duration) (a match completes when that window closes with no "
                            "forbidden event), or add a positive stage after it")
        positives = [s for s in st if not s.negative]
        for s in st:
            if s.negative and (s.loops or s.optional or s.greedy or s.until or s.inner != "relaxed"):
                raise PlanError(f"negative stage {s.name!r} cannot be quantified (times, optional, greedy, until)")
            if s.negative and not s.cond:
                raise PlanError(f"negative stage {s.name!r} needs a condition: .where(...)")
            if not s.loops and (s.until or s.greedy or s.inner != "relaxed"):
                raise PlanError(f"stage {s.name!r}: until / greedy / consecutive / allow_combinations apply to "
                                "loops only; add .times(n, m) or .one_or_more() first")
        for i, s in enumerate(st):
            if s.negative and i > 0 and st[i - 1].optional:
                raise PlanError(f"negative stage {s.name!r} follows optional stage {st[i - 1].name!r}: make "
                                f"{st[i - 1].name!r} mandatory or move the negative stage")
        if all(s.optional for s in positives):
            raise PlanError(f"pattern {pat.describe()!r}: every stage is optional, so it would match nothing; "
                            "make one stage mandatory")
        for i, s in enumerate(positives):
            if s.greedy and all(t.optional for t in positives[i + 1:]):
                raise PlanError(f"greedy stage {s.name!r} needs a mandatory stage after it (a greedy loop "
                                "at the end of a match would never know it is done)")
        clash = [s.name for s in positives if s.name in by or s.name in RESERVED]
        if clash:
            raise PlanError(f"stage names {clash} clash with the key columns {list(by)} or the output columns "
                            f"{sorted(RESERVED)}; rename the stages")
        names = {s.name for s in positives}
        if pat.skip.stage is not None:
            if pat.skip.stage not in names:
                raise PlanError(f"{pat.skip.describe()}: no positive stage {pat.skip.stage!r} in the pattern "
                                f"(stages: {sorted(names)})")
            if pat.skip.kind == "skip_to_first" and pat.skip.stage == positives[0].name:
                raise PlanError(f"{pat.skip.describe()}: skipping to the first event of the first stage would "
                                "find the same match again; use skip_to_next()")
        exprs: list[pl.Expr] = []

        def comp(cond: Cond) -> CompiledCond:
            groups = []
            for g in (cond or (Group(),)):
                if len(exprs) >= 62:
                    raise PlanError("the pattern has more than 62 condition groups; simplify it")
                e = pl.lit(True) if not g.exprs else pl.all_horizontal(*g.exprs) if len(g.exprs) > 1 else g.exprs[0]
                exprs.append(e)
                groups.append((len(exprs) - 1, g.fns))
            bits = 0
            for b, _ in groups:
                bits |= 1 << b
            return CompiledCond(tuple(groups), bits, any(f for _, f in groups))

        conds, untils, negs = [], [], []
        for i, s in enumerate(st):
            if s.negative:
                continue
            conds.append(comp(s.cond))
            untils.append(comp(s.until) if s.until else None)
            after = []
            for t in st[i + 1:]:
                if not t.negative:
                    break
                after.append((t.contiguity == "strict", comp(t.cond)))
            negs.append(tuple(after))
        trailing = tuple(c for _, c in negs[-1]) if st[-1].negative else ()
        all_conds = [*conds, *[u for u in untils if u], *[c for n in negs for _, c in n]]
        needs = any(s.contiguity == "strict" for s in positives[1:]) or any(s.inner == "strict" for s in positives) \
            or any(nx for n in negs for nx, _ in n)
        return cls(pat, tuple(positives), tuple(conds), tuple(untils), tuple(negs), tuple(exprs), needs,
                   any(c.has_fns for c in all_conds), pat.within_ms, pat.skip, trailing)

    def lazy_ending_bits(self) -> int | None:
        """Mask bits of the stages whose event can complete a match (the last mandatory positive stage
        and the optional ones after it), when lazy per-key evaluation (:mod:`everstream.cep.parked`)
        gives exactly the matches of eager feeding; None when it may not be used:

        - no ``within``: parked rows would never age out;
        - a trailing ``not_followed_by``: matches complete on the watermark, not on an event;
        - strict contiguity or ``not_next``: non-candidate events matter (their positions);
        - Python conditions: they would run later and fewer times (an error would surface elsewhere).

        (The operator also needs the step to have no time-out side output: time-outs are per event.)"""
        if self.within_ms is None or self.trailing or self.needs_positions or self.has_fns:
            return None
        bits = 0
        for i in range(len(self.stages) - 1, -1, -1):
            bits |= self.conds[i].bits
            if not self.stages[i].optional:
                break
        return bits

    def min_events(self) -> int:
        """The fewest events a match has: the minimum count of each positive stage that is not optional."""
        return max(1, sum(s.min for s in self.stages if not s.optional))

    def columns(self) -> set[str]:
        """User columns the vectorized conditions read."""
        out: set[str] = set()
        for e in self.exprs:
            out.update(e.meta.root_names())
        return out
