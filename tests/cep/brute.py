"""A brute-force CEP reference: enumerate every labelled subsequence, keep the valid ones, apply the skip.

Independent of the NFA: it knows nothing of roles, branches or masks. It implements the
declarative definition in ``everstream/cep/pattern.py``'s docstring over plain Python predicates,
for short sequences (it is exponential). A predicate takes the event, or the event and the match so
far (``{stage name: [events taken before this one]}``), like the pattern API's callables.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

Event = dict[str, Any]
SoFar = dict[str, list[Event]]
Pred = Callable[..., bool]  # fn(event) or fn(event, so_far)


def _two(f: Pred) -> Callable[[Event, SoFar], bool]:
    params = [q for q in inspect.signature(f).parameters.values()
              if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD) and q.default is q.empty]
    return f if len(params) >= 2 else (lambda e, m: f(e))


@dataclass
class RStage:
    name: str
    cond: Pred
    negative: bool = False
    contig: str = "relaxed"  # strict | relaxed | any (to the previous stage); negatives: strict = not_next
    min: int = 1
    max: int | None = 1
    optional: bool = False
    greedy: bool = False
    inner: str = "relaxed"
    until: Pred | None = None

    def __post_init__(self) -> None:
        self.cond = _two(self.cond)
        self.until = None if self.until is None else _two(self.until)


Match = tuple[int, int, tuple[tuple[int, str], ...]]  # start index, end index, (index, stage name) pairs


def matches(stages: list[RStage], events: list[dict[str, Any]], *, time: str = "ts", within: int | None = None,
            skip: tuple[str, str | None] = ("no_skip", None)) -> list[Match]:
    """Emitted matches over ``events`` (one key, event-time order), in emission order.

    Negative stages after the last positive one (``not_followed_by`` at the end) forbid their events
    from the match's last event until its window closes (first event time + ``within``); such matches
    are emitted when the window closes, so in order of (first event, events)."""
    return [m for m, _ in _Ref(stages, events, time, within, skip).emitted()]


def timed_out(stages: list[RStage], events: list[dict[str, Any]], *, time: str = "ts", within: int,
              skip: tuple[str, str | None] = ("no_skip", None)) -> list[Match]:
    """Partial matches timed out when their window (first event time + ``within``) closes, sorted.

    A partial match is a prefix of a match (its events satisfy every rule so far, within the time
    bound) that has not reached the end of its positive stages and is still *alive* when its window
    closes: some stage could still take a further event, i.e. the prefix followed by a wildcard event
    placed right after the events before the close (satisfying that stage's condition and nothing
    else) obeys every rule.
    It is not reported when a match emitted before the close pruned it by the skip strategy."""
    ref = _Ref(stages, events, time, within, skip)
    cuts = [(at, pid, strict) for m, at in ref.emitted() for pid, strict in ref.prune_points(m)]
    out: list[Match] = []
    for seq in ref.prefixes():
        if ref.valid(seq, trailing=False):
            continue  # a match (emitted, pending or killed by a final not_followed_by), not a partial one
        closes = events[seq[0][0]][time] + within
        if any(at < closes and (seq[0][0] < pid if strict else seq[0][0] <= pid) for at, pid, strict in cuts):
            continue
        cut = next((z for z in range(seq[-1][0] + 1, len(events)) if events[z][time] >= closes), len(events))
        wild = cut  # index of the wildcard event in events[:cut] + [wildcard]
        if any(ref.valid([*seq, (wild, s)], upto=cut) for s in range(seq[-1][1], len(ref.pos))):
            out.append((seq[0][0], seq[-1][0], tuple((x, ref.pos[s].name) for x, s in seq)))
    return sorted(out)


class _Ref:
    """The declarative rules over one key's events (see ``everstream/cep/pattern.py``)."""

    def __init__(self, stages: list[RStage], events: list[dict[str, Any]], time: str, within: int | None,
                 skip: tuple[str, str | None]) -> None:
        self.events, self.time, self.within, self.skip = events, time, within, skip
        stages = [replace(s) for s in stages]  # normalizes conditions set after construction
        self.pos = [s for s in stages if not s.negative]
        last_pos = max(i for i, s in enumerate(stages) if not s.negative)
        self.trailing = stages[last_pos + 1:]
        assert not self.trailing or within is not None
        self.negs: list[list[RStage]] = []
        for i, s in enumerate(stages):
            if s.negative:
                continue
            after = []
            for t in stages[i + 1:]:
                if not t.negative:
                    break
                after.append(t)
            self.negs.append(after)

    def sofar(self, seq: list[tuple[int, int]], before: int | None = None) -> SoFar:
        """The match so far as callables see it: each stage's events in ``seq`` (those before index
        ``before`` only, when given)."""
        out: SoFar = {st.name: [] for st in self.pos}
        for x, s in seq:
            if before is None or x < before:
                out[self.pos[s].name].append(self.events[x])
        return out

    def prefixes(self) -> list[list[tuple[int, int]]]:
        """Every labelled increasing subsequence whose events satisfy their stages' conditions and
        whose time span is within the bound (candidates for matches and partial matches)."""
        events, pos, out = self.events, self.pos, []

        def rec(seq: list[tuple[int, int]], nxt: int) -> None:
            if seq:
                if self.within is not None and \
                        events[seq[-1][0]][self.time] - events[seq[0][0]][self.time] >= self.within:
                    return
                out.append(list(seq))
            last_stage = seq[-1][1] if seq else 0
            # the next event stays in the last stage or moves on past optional stages only (a match starts
            # at the first stage, or a later one when every stage before it is optional)
            after = last_stage + 1 if seq else 0
            stop = next((i + 1 for i in range(after, len(pos)) if not pos[i].optional), len(pos))
            for y in range(nxt, len(events)):
                for s in range(last_stage, stop):
                    if pos[s].cond(events[y], self.sofar(seq)):
                        seq.append((y, s))
                        rec(seq, y + 1)
                        seq.pop()

        rec([], 0)
        return out

    def emitted(self) -> list[tuple[Match, int]]:
        """Emitted matches in emission order, with the event time each is emitted at."""
        found = [m for m in self.prefixes() if self.valid(m)]
        t = self.time
        if self.trailing:
            assert self.within is not None
            ordered = sorted(found, key=lambda m: (m[0][0], m))
            at = [self.events[m[0][0]][t] + self.within for m in ordered]
        else:
            ordered = sorted(found, key=lambda m: (m[-1][0], m[0][0], m))
            at = [self.events[m[-1][0]][t] for m in ordered]
        out: list[tuple[Match, int]] = []
        prunes: list[tuple[int, bool]] = []  # (pruning position, strict)
        for m, when in zip(ordered, at, strict=True):
            start = m[0][0]
            if any(start < pid if strict else start <= pid for pid, strict in prunes):
                continue
            match = (start, m[-1][0], tuple((x, self.pos[s].name) for x, s in m))
            out.append((match, when))
            prunes += self.prune_points(match)
        return out

    def prune_points(self, m: Match) -> list[tuple[int, bool]]:
        kind, stage = self.skip
        if kind == "skip_to_next":
            return [(m[0], False)]
        if kind == "skip_past_last_event":
            return [(m[1], False)]
        if kind in ("skip_to_first", "skip_to_last"):
            of = [x for x, s in m[2] if s == stage]
            if of:
                return [(of[0] if kind == "skip_to_first" else of[-1], True)]
        return []

    def valid(self, seq: list[tuple[int, int]], upto: int | None = None, trailing: bool = True) -> bool:
        """``seq`` is a match (``trailing=False``: ignoring a final not_followed_by); with ``upto``: ``seq``
        ends with a wildcard event at index ``upto`` (right after events[:upto]) and is a valid prefix of
        a match (later stages not yet reached)."""
        events, pos, k = self.events, self.pos, len(self.pos)
        wild = upto is not None
        counts = [0] * k
        for _, s in seq:
            counts[s] += 1
        for s, st in enumerate(pos):
            c = counts[s]
            if wild and s >= seq[-1][1]:
                if s == seq[-1][1] and st.max is not None and c > st.max:
                    return False
                break
            if c == 0:
                if not st.optional:
                    return False
            elif c < st.min or (st.max is not None and c > st.max):
                return False
        if not wild:
            if self.within is not None and \
                    events[seq[-1][0]][self.time] - events[seq[0][0]][self.time] >= self.within:
                return False
            if self.trailing and trailing:
                assert self.within is not None
                closes = events[seq[0][0]][self.time] + self.within
                for z in range(seq[-1][0] + 1, len(events)):
                    if events[z][self.time] >= closes:
                        break
                    if any(neg.cond(events[z], self.sofar(seq)) for neg in self.trailing):
                        return False

        def cond_at(c: Pred, z: int, m: SoFar) -> bool:  # the wildcard satisfies only its own stage's condition
            return False if wild and z == upto else c(events[z], m)

        for (x, sx), (y, sy) in itertools.pairwise(seq):
            m = self.sofar(seq, before=x + 1)
            if sx == sy:
                contig, cond = pos[sy].inner, pos[sy].cond
            else:
                contig, cond = pos[sy].contig, pos[sy].cond
            between = range(x + 1, y)
            if contig == "strict" and y != x + 1:
                return False
            if contig == "relaxed" and any(cond(events[z], m) for z in between):
                return False
            if sx != sy:
                for neg in self.negs[sx]:
                    if neg.contig == "strict":
                        if cond_at(neg.cond, x + 1, m):
                            return False
                    elif any(neg.cond(events[z], m) for z in between):
                        return False
                st = pos[sx]
                if st.greedy and (st.max is None or counts[sx] < st.max) and \
                        _could_continue(st, events, x, y - 1 if wild and y == upto else y, m):
                    return False
        for s, st in enumerate(pos):
            if st.until is None:
                continue
            idx = [x for x, t in seq if t == s]
            if len(idx) > 1 and any(cond_at(st.until, z, self.sofar(seq, before=z))
                                    for z in range(idx[0] + 1, idx[-1] + 1)):
                return False
        return True


def _could_continue(st: RStage, events: list[dict[str, Any]], x: int, y: int, m: SoFar) -> bool:
    """Could the greedy loop whose last event is ``x`` (match so far ``m``) have taken some event in (x, y]?"""
    for z in range(x + 1, y + 1):
        if st.until is not None and st.until(events[z], m):
            return False
        if st.cond(events[z], m):
            return st.inner != "strict" or z == x + 1
        if st.inner == "strict":
            return False
    return False
