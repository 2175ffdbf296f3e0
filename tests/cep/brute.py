"""A brute-force CEP reference: enumerate every labelled subsequence, keep the valid ones, apply the skip.

Independent of the NFA: it knows nothing of roles, branches or masks. It implements the
declarative definition in ``everstream/cep/pattern.py``'s docstring over plain Python predicates,
for short sequences (it is exponential).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Pred = Callable[[dict[str, Any]], bool]


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


Match = tuple[int, int, tuple[tuple[int, str], ...]]  # start index, end index, (index, stage name) pairs


def matches(stages: list[RStage], events: list[dict[str, Any]], *, time: str = "ts", within: int | None = None,
            skip: tuple[str, str | None] = ("no_skip", None)) -> list[Match]:
    """Emitted matches over ``events`` (one key, event-time order), in emission order."""
    pos = [s for s in stages if not s.negative]
    negs: list[list[RStage]] = []
    for i, s in enumerate(stages):
        if s.negative:
            continue
        after = []
        for t in stages[i + 1:]:
            if not t.negative:
                break
            after.append(t)
        negs.append(after)
    n, k = len(events), len(pos)
    found: list[list[tuple[int, int]]] = []

    def rec(seq: list[tuple[int, int]], nxt: int) -> None:
        if seq and valid(seq):
            found.append(list(seq))
        last_stage = seq[-1][1] if seq else 0
        for y in range(nxt, n):
            for s in range(last_stage, k):
                if pos[s].cond(events[y]):
                    seq.append((y, s))
                    rec(seq, y + 1)
                    seq.pop()

    def valid(seq: list[tuple[int, int]]) -> bool:
        counts = [0] * k
        for _, s in seq:
            counts[s] += 1
        for s, st in enumerate(pos):
            c = counts[s]
            if c == 0:
                if not st.optional:
                    return False
            elif c < st.min or (st.max is not None and c > st.max):
                return False
        if within is not None and events[seq[-1][0]][time] - events[seq[0][0]][time] >= within:
            return False
        for (x, sx), (y, sy) in itertools.pairwise(seq):
            if sx == sy:
                contig, cond = pos[sy].inner, pos[sy].cond
            else:
                contig, cond = pos[sy].contig, pos[sy].cond
            between = range(x + 1, y)
            if contig == "strict" and y != x + 1:
                return False
            if contig == "relaxed" and any(cond(events[z]) for z in between):
                return False
            if sx != sy:
                for neg in negs[sx]:
                    if neg.contig == "strict":
                        if neg.cond(events[x + 1]):
                            return False
                    elif any(neg.cond(events[z]) for z in between):
                        return False
                st = pos[sx]
                if st.greedy and (st.max is None or counts[sx] < st.max) and _could_continue(st, events, x, y):
                    return False
        for s, st in enumerate(pos):
            if st.until is None:
                continue
            idx = [x for x, t in seq if t == s]
            if len(idx) > 1 and any(st.until(events[z]) for z in range(idx[0] + 1, idx[-1] + 1)):
                return False
        return True

    rec([], 0)
    ordered = sorted(found, key=lambda m: (m[-1][0], m[0][0], m))
    kind, stage = skip
    emitted: list[Match] = []
    prunes: list[tuple[int, bool]] = []  # (pruning position, strict)
    for m in ordered:
        start = m[0][0]
        if any(start < pid if strict else start <= pid for pid, strict in prunes):
            continue
        emitted.append((start, m[-1][0], tuple((x, pos[s].name) for x, s in m)))
        if kind == "skip_to_next":
            prunes.append((start, False))
        elif kind == "skip_past_last_event":
            prunes.append((m[-1][0], False))
        elif kind in ("skip_to_first", "skip_to_last"):
            of = [x for x, s in m if pos[s].name == stage]
            if of:
                prunes.append((of[0] if kind == "skip_to_first" else of[-1], True))
    return emitted


def _could_continue(st: RStage, events: list[dict[str, Any]], x: int, y: int) -> bool:
    """Could the greedy loop whose last event is ``x`` have taken some event in (x, y]?"""
    for z in range(x + 1, y + 1):
        if st.until is not None and st.until(events[z]):
            return False
        if st.cond(events[z]):
            return st.inner != "strict" or z == x + 1
        if st.inner == "strict":
            return False
    return False
