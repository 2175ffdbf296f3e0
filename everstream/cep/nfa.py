"""The NFA matcher: per key, partial matches stepped over candidate events in event-time order.

The engine evaluates the conditions that only look at the current event vectorized on the batch
(one bit per condition group in an int ``mask``), drops rows that satisfy none, and feeds the
rest here, key by key in event-time order. Python runs per *candidate* event only.

A partial match knows the stage of its last event, how many events that stage has taken, and
which **roles** the next event may still play: continue the loop (bit 0) or start stage ``j``
(bit ``j + 1``). Each event branches a partial into one partial per role it can take, plus the
*ignore* branch that skips the event; skipping kills the roles that may not skip it (strict
contiguity: any event; relaxed: an event satisfying the role's condition; negative stages:
an event satisfying them). This is exactly the declarative definition in
:mod:`everstream.cep.pattern`: a match is valid iff no event between two of its events is one
the rules forbid to skip.

Event positions (``pos``) order a key's events: the per-key ordinal over all its events when
the pattern needs adjacency (strict contiguity, ``not_next``), else any increasing id.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from everstream.cep.pattern import Compiled, CompiledCond
from everstream.errors import StateError

LOOP = 1

#: (gid, stage index, pos, event time, parent): the events of a partial match, newest first.
Events = tuple[int, int, int, int, Any] | None


class Partial:
    """A partial match (immutable once made; branching makes new ones)."""

    __slots__ = ("count", "done", "events", "last_pos", "roles", "stage", "start_pos", "start_t")

    def __init__(self, start_pos: int, start_t: int, last_pos: int, stage: int, count: int, roles: int,
                 events: Events, done: bool) -> None:
        self.start_pos, self.start_t, self.last_pos = start_pos, start_t, last_pos
        self.stage, self.count, self.roles, self.events, self.done = stage, count, roles, events, done

    def taken(self) -> list[tuple[int, int, int, int]]:
        """(gid, stage, pos, time) of its events, oldest first."""
        out = []
        e = self.events
        while e is not None:
            out.append(e[:4])
            e = e[4]
        out.reverse()
        return out


@dataclass
class Found:
    """A complete match: its key, first and last event time, and (gid, stage) of its events in order.

    ``at``: for a match of a pattern ending in ``not_followed_by``, the event time it was emitted at
    (the last instant of its window, first event time + within - 1); None: its last event's time."""

    key: Hashable
    start_t: int
    end_t: int
    events: list[tuple[int, int]]
    at: int | None = None


@dataclass
class TimedOut:
    """A partial match that can no longer complete within the pattern's time bound."""

    key: Hashable
    start_t: int
    expired_at: int
    events: list[tuple[int, int]]


class Matcher:
    """Per-key NFA state over a compiled pattern. ``feed`` one candidate event at a time.

    ``event(gid)`` returns the event as a dict; it is only called for conditions that are Python
    functions (which also receive the partial match as ``{stage: [event, ...]}``).
    """

    def __init__(self, compiled: Compiled, event: Callable[[int], dict[str, Any]] | None = None) -> None:
        self.c = compiled
        self.event = event
        st = compiled.stages
        n = len(st)
        self.names = [s.name for s in st]
        self.mins = [s.min for s in st]
        self.maxs = [s.max for s in st]
        self.greedy = [s.greedy for s in st]
        # stages reachable when leaving stage i (skipping optional ones), and at the start
        self.targets: list[list[int]] = []
        for i in range(n):
            t = []
            for j in range(i + 1, n):
                t.append(j)
                if not st[j].optional:
                    break
            self.targets.append(t)
        self.start: list[int] = []
        for j in range(n):
            self.start.append(j)
            if not st[j].optional:
                break
        self.complete_at = [all(s.optional for s in st[i + 1:]) for i in range(n)]
        self.fwd_bits = [sum(1 << (j + 1) for j in self.targets[i]) for i in range(n)]
        self.start_bits = 0
        for j in self.start:
            self.start_bits |= compiled.conds[j].bits
        #: contiguity of each role of stage i: loop -> inner, forward j -> stage j's contiguity
        self.contig = [s.contiguity for s in st]
        self.inner = [s.inner for s in st]
        self.state: dict[Hashable, list[Partial]] = {}
        #: roles by stage and count: counts past max(min, max) + 1 all have the last entry's roles
        self._role_table = [[self._roles_of(i, c) for c in range(max(s.min, s.max or s.min) + 2)]
                            for i, s in enumerate(st)]
        #: the starting stages whose condition is vectorized only: (stage, mask bits)
        self._plain_start = [(j, compiled.conds[j].bits) for j in self.start] \
            if not any(compiled.conds[j].has_fns for j in self.start) else None
        #: per stage j: (roles, complete) of a partial match whose first event starts at stage j
        self._start_of = [(self._roles(j, 1), self.mins[j] <= 1 and self.complete_at[j]) for j in range(n)]
        #: matches of a pattern ending in not_followed_by, waiting for their window to close (per key)
        self.trailing = compiled.trailing
        self.pending: dict[Hashable, list[Partial]] = {}
        self.found: list[Found] = []
        self.timed_out: list[TimedOut] = []
        self.report_timeouts = True  # False: the step has no time-out topic, so do not collect them
        #: (at, seq, key) heap: when the key's earliest window closes; ``scheduled`` says which entry per
        #: key is current (one push per key and window close, not per event; others are stale)
        self.expiry: list[tuple[int, int, Hashable]] = []
        self.scheduled: dict[Hashable, int] = {}
        self._seq = 0
        skip = compiled.skip
        self.skip_kind = skip.kind
        self.skip_stage = -1 if skip.stage is None else self.names.index(skip.stage)

    # ------------------------------------------------------------------ conditions

    def _cond(self, k: CompiledCond, mask: int, gid: int, p: Partial | None) -> bool:
        if not k.has_fns:
            return bool(mask & k.bits)
        ev = None
        for bit, fns in k.groups:
            if not (mask >> bit) & 1:
                continue
            if not fns:
                return True
            if ev is None:
                assert self.event is not None
                ev = self.event(gid)
                so_far = self._so_far(p)
            if all(f(ev, so_far) for f in fns):
                return True
        return False

    def _so_far(self, p: Partial | None) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {n: [] for n in self.names}
        if p is not None:
            assert self.event is not None
            for gid, stage, _, _ in p.taken():
                out[self.names[stage]].append(self.event(gid))
        return out

    def _roles(self, stage: int, count: int) -> int:
        """Roles of a partial whose last event made ``count`` events of ``stage`` (cached per stage)."""
        table = self._role_table[stage]
        return table[count] if count < len(table) else table[-1]

    def _roles_of(self, stage: int, count: int) -> int:
        mx = self.maxs[stage]
        r = LOOP if mx is None or count < mx else 0
        if count >= self.mins[stage]:
            r |= self.fwd_bits[stage]
        return r

    # ------------------------------------------------------------------ stepping

    def feed(self, key: Hashable, gid: int, pos: int, t: int, mask: int) -> None:
        """Process one candidate event of ``key`` (events of a key must come in event-time order)."""
        if self.trailing:
            self._feed_trailing(key, gid, pos, t, mask)
            return
        parts = self.state.get(key)
        if not parts and not (mask & self.start_bits):
            return
        c = self.c
        within = c.within_ms
        if parts and within is not None:
            alive = []
            for p in parts:
                if t - p.start_t >= within:
                    if not p.done and self.report_timeouts:
                        self.timed_out.append(TimedOut(key, p.start_t, p.start_t + within, _pairs(p)))
                else:
                    alive.append(p)
            parts = alive
        new: list[Partial] = []
        done: list[Partial] = []
        for p in parts or ():
            self._branch(p, gid, pos, t, mask, new, done)
        # a match may start here
        if self._plain_start is not None:
            for j, bits in self._plain_start:
                if mask & bits:
                    # _take(None, j, ...) inlined: the one allocation per starting candidate
                    roles, complete = self._start_of[j]
                    q = Partial(pos, t, pos, j, 1, roles, (gid, j, pos, t, None), complete)
                    if complete:
                        done.append(q)
                    if roles:
                        new.append(q)
        else:
            for j in self.start:
                if self._cond(c.conds[j], mask, gid, None):
                    self._take(None, j, gid, pos, t, new, done)
        if done:
            new = self._emit(key, done, new)
        if new:
            self.state[key] = new
            if within is not None and key not in self.scheduled:
                self._schedule(key, new, within)
        elif parts is not None:
            self.state.pop(key, None)

    def _schedule(self, key: Hashable, parts: list[Partial], within: int) -> None:
        """Expire ``key`` when the earliest window of ``parts`` closes (the caller checked that the key
        has no current entry: a current one is never later, as windows only open later)."""
        at = (parts[0].start_t if len(parts) == 1 else min(p.start_t for p in parts)) + within
        self.scheduled[key] = at
        self._seq += 1
        heapq.heappush(self.expiry, (at, self._seq, key))

    def _feed_trailing(self, key: Hashable, gid: int, pos: int, t: int, mask: int) -> None:
        """``feed`` for a pattern ending in not_followed_by: first settle what the event's time closes
        (time-outs, pending matches whose window closed: emitted), then the event kills the pending
        matches it is forbidden for, then it steps the partial matches; completed ones become pending."""
        parts = self.state.get(key)
        pend = self.pending.get(key)
        if not parts and not pend and not (mask & self.start_bits):
            return
        within = self.c.within_ms
        assert within is not None  # Compiled.of refuses a trailing not_followed_by without within
        if parts or pend:
            parts, pend = self._settle(key, parts or [], pend or [], t)
        if pend:
            pend = [q for q in pend if not any(self._cond(k, mask, gid, q) for k in self.trailing)]
        new: list[Partial] = []
        done: list[Partial] = []
        for p in parts or ():
            self._branch(p, gid, pos, t, mask, new, done)
        c = self.c
        for j in self.start:
            if self._cond(c.conds[j], mask, gid, None):
                self._take(None, j, gid, pos, t, new, done)
        if done:
            pend = [*(pend or ()), *done]
        if pend:
            self.pending[key] = pend
        else:
            self.pending.pop(key, None)
        if new:
            self.state[key] = new
        else:
            self.state.pop(key, None)
        if (new or pend) and key not in self.scheduled:
            self._schedule(key, [*new, *(pend or ())], within)

    def _settle(self, key: Hashable, parts: list[Partial], pend: list[Partial],
                upto: int) -> tuple[list[Partial], list[Partial]]:
        """Everything of ``key`` whose window closes at or before ``upto``, in window-close order (a
        time-out before a pending match closing at the same time): partial matches time out, pending
        matches are emitted and their skip strategy prunes partial and pending matches."""
        within = self.c.within_ms
        assert within is not None
        due = sorted((q for q in pend if q.start_t + within <= upto), key=_order)
        if not due:
            return self._time_out(key, parts, upto), pend
        pend = [q for q in pend if q.start_t + within > upto]
        pruned: set[int] = set()
        for q in due:
            if id(q) in pruned:
                continue
            closes = q.start_t + within
            parts = self._time_out(key, parts, closes)
            taken = q.taken()
            self.found.append(Found(key, q.start_t, taken[-1][3], [(g, s) for g, s, _, _ in taken], closes - 1))
            cut = self._prune_point(q.start_pos, taken)
            if cut is None:
                continue
            pid, strict = cut
            for x in due:
                if (x.start_pos < pid) if strict else (x.start_pos <= pid):
                    pruned.add(id(x))
            parts = [x for x in parts if not ((x.start_pos < pid) if strict else (x.start_pos <= pid))]
            pend = [x for x in pend if not ((x.start_pos < pid) if strict else (x.start_pos <= pid))]
        return self._time_out(key, parts, upto), pend

    def _time_out(self, key: Hashable, parts: list[Partial], upto: int) -> list[Partial]:
        """Drop the partial matches whose window closes at or before ``upto``, reporting the unfinished."""
        within = self.c.within_ms
        assert within is not None
        alive = []
        for p in parts:
            if p.start_t + within <= upto:
                if not p.done and self.report_timeouts:
                    self.timed_out.append(TimedOut(key, p.start_t, p.start_t + within, _pairs(p)))
            else:
                alive.append(p)
        return alive

    def _prune_point(self, start: int, taken: list[tuple[int, int, int, int]]) -> tuple[int, bool] | None:
        """Where the skip strategy cuts after a match: partial matches starting at or before (strict:
        before) the returned position are dropped; None: nothing is."""
        kind = self.skip_kind
        if kind == "no_skip":
            return None
        if kind == "skip_to_next":
            return start, False
        if kind == "skip_past_last_event":
            return taken[-1][2], False
        of_stage = [pos for _, s, pos, _ in taken if s == self.skip_stage]
        if not of_stage:
            return None
        return (of_stage[0] if kind == "skip_to_first" else of_stage[-1]), True

    def _branch(self, p: Partial, gid: int, pos: int, t: int, mask: int, new: list[Partial],
                done: list[Partial]) -> None:
        c = self.c
        i = p.stage
        roles = p.roles
        adjacent = pos == p.last_pos + 1
        fwd = self.fwd_bits[i]
        until = c.untils[i]
        if roles & LOOP and until is not None and self._cond(until, mask, gid, p):
            roles &= ~LOOP
        ignore_kill = 0
        if roles & fwd:
            for is_next, neg in c.negatives[i]:
                if is_next:
                    if adjacent and self._cond(neg, mask, gid, p):
                        roles &= ~fwd
                        break
                elif self._cond(neg, mask, gid, p):
                    ignore_kill |= fwd
        # which roles take the event
        take_loop = False
        if roles & LOOP:
            ok = adjacent or self.inner[i] != "strict"
            matches = self._cond(c.conds[i], mask, gid, p)
            take_loop = ok and matches
            if matches and self.inner[i] == "relaxed":
                ignore_kill |= LOOP
            if self.inner[i] == "strict":
                ignore_kill |= LOOP
            if take_loop and self.greedy[i]:
                roles &= ~fwd
        takes = []
        if roles & fwd:
            for j in self.targets[i]:
                if not roles & (1 << (j + 1)):
                    continue
                kind = self.contig[j]
                if kind == "strict":
                    ignore_kill |= 1 << (j + 1)
                    if not adjacent:
                        continue
                if self._cond(c.conds[j], mask, gid, p):
                    takes.append(j)
                    if kind == "relaxed":
                        ignore_kill |= 1 << (j + 1)
        if take_loop:
            self._take(p, i, gid, pos, t, new, done)
        for j in takes:
            self._take(p, j, gid, pos, t, new, done)
        left = roles & ~ignore_kill
        if left:
            new.append(Partial(p.start_pos, p.start_t, p.last_pos, i, p.count, left, p.events, p.done))

    def _take(self, p: Partial | None, j: int, gid: int, pos: int, t: int, new: list[Partial],
              done: list[Partial]) -> None:
        if p is None:
            count, start_pos, start_t, parent = 1, pos, t, None
        else:
            count = p.count + 1 if j == p.stage else 1
            start_pos, start_t, parent = p.start_pos, p.start_t, p.events
        table = self._role_table[j]
        roles = table[count] if count < len(table) else table[-1]
        complete = count >= self.mins[j] and self.complete_at[j]
        q = Partial(start_pos, start_t, pos, j, count, roles, (gid, j, pos, t, parent), complete)
        if complete:
            done.append(q)
        if roles:
            new.append(q)

    # ------------------------------------------------------------------ matches and skipping

    def _emit(self, key: Hashable, done: list[Partial], new: list[Partial]) -> list[Partial]:
        """Emit complete matches in order; the skip strategy prunes later ones and partial matches."""
        ordered = sorted(done, key=_order)
        pruned: set[int] = set()  # ids of pruned Partial objects
        for p in ordered:
            if id(p) in pruned:
                continue
            taken = p.taken()
            self.found.append(Found(key, p.start_t, taken[-1][3], [(g, s) for g, s, _, _ in taken]))
            cut = self._prune_point(p.start_pos, taken)
            if cut is None:
                continue
            pid, strict = cut
            for q in ordered:
                if (q.start_pos < pid) if strict else (q.start_pos <= pid):
                    pruned.add(id(q))
            new = [q for q in new if not ((q.start_pos < pid) if strict else (q.start_pos <= pid))]
        return new

    def expire(self, watermark: int) -> None:
        """Time out partial matches that can no longer complete: no event before ``watermark`` can come."""
        within = self.c.within_ms
        if within is None:
            return
        heap, scheduled = self.expiry, self.scheduled
        while heap and heap[0][0] <= watermark:
            at, _, key = heapq.heappop(heap)
            if scheduled.get(key) != at:
                continue  # stale: the key was rescheduled
            del scheduled[key]
            parts = self.state.get(key)
            if self.trailing:
                pend = self.pending.get(key)
                if parts or pend:
                    parts, pend = self._settle(key, parts or [], pend or [], watermark)
                    for d, v in ((self.state, parts), (self.pending, pend)):
                        if v:
                            d[key] = v
                        else:
                            d.pop(key, None)
                    if parts or pend:
                        self._schedule(key, [*parts, *pend], within)
                continue
            if not parts:
                continue
            if len(parts) == 1 and parts[0].start_t + within <= watermark:  # the common case: one, timed out
                p = parts[0]
                if not p.done and self.report_timeouts:
                    self.timed_out.append(TimedOut(key, p.start_t, p.start_t + within, _pairs(p)))
                del self.state[key]
                continue
            alive = []
            for p in parts:
                if p.start_t + within <= watermark:
                    if not p.done and self.report_timeouts:
                        self.timed_out.append(TimedOut(key, p.start_t, p.start_t + within, _pairs(p)))
                else:
                    alive.append(p)
            if alive:
                self.state[key] = alive
                self._schedule(key, alive, within)
            else:
                del self.state[key]

    def live_gids(self) -> int | None:
        """The smallest event id a partial match still holds (None: none)."""
        lo: int | None = None
        for parts in (*self.state.values(), *self.pending.values()):
            for p in parts:
                e = p.events
                while e is not None:
                    if lo is None or e[0] < lo:
                        lo = e[0]
                    e = e[4]
        return lo

    def partial_count(self) -> int:
        """Partial matches and pending matches (waiting for their window to close) held."""
        return sum(len(v) for v in self.state.values()) + sum(len(v) for v in self.pending.values())

    # ------------------------------------------------------------------ checkpoints (exactly-once)

    def export_state(self) -> tuple[list[Hashable], dict[str, pa.Table], dict[str, Any]]:
        """The partial matches as Arrow tables, for a state snapshot: ``(keys, tables, values)``.

        ``keys`` are the distinct keys referenced (partial matches and pending expiries), which the
        caller stores in the key columns' types; tables refer to them by index. ``partials``: one row
        per partial match in per-key order (its fields, ``node``: its newest event, ``pending``: 1 for a
        complete match of a pattern ending in not_followed_by, waiting for its window to close). ``nodes``:
        one row per distinct event link (gid, stage, pos, t, parent node), parents before children,
        so the links partial matches share stay shared. ``expiry``: the time-out heap. Skip
        strategies keep no state of their own: they act when a match completes, by pruning partials.
        """
        with _no_gc():
            return self._export()

    def _export(self) -> tuple[list[Hashable], dict[str, pa.Table], dict[str, Any]]:
        if self.found or self.timed_out:
            raise StateError("internal: a matcher snapshot while matches are waiting to be emitted (found or "
                             "timed out since the last advance); the runtime commits after advancing, report a bug")
        key_ix: dict[Hashable, int] = {}
        node_ix: dict[int, int] = {}
        nodes: list[tuple[int, int, int, int, int]] = []
        parts: list[tuple[int, ...]] = []
        chain: list[tuple[int, int, int, int, Any]] = []
        held = [(key, plist, 0) for key, plist in self.state.items()]
        held += [(key, plist, 1) for key, plist in self.pending.items()]
        for key, plist, pending in held:
            k = key_ix.setdefault(key, len(key_ix))
            for p in plist:
                e = p.events
                while e is not None and id(e) not in node_ix:
                    chain.append(e)
                    e = e[4]
                while chain:  # oldest first: a node's parent is already numbered
                    e = chain.pop()
                    node_ix[id(e)] = len(nodes)
                    nodes.append((e[0], e[1], e[2], e[3], -1 if e[4] is None else node_ix[id(e[4])]))
                parts.append((k, p.start_pos, p.start_t, p.last_pos, p.stage, p.count, p.roles,
                              -1 if p.events is None else node_ix[id(p.events)], 1 if p.done else 0, pending))
        expiry = [(at, seq, key_ix.setdefault(key, len(key_ix))) for at, seq, key in self.expiry]  # heap order
        tables = {name: _columns(names, rows) for name, names, rows in (
            ("partials", _PARTIAL_COLS, parts), ("nodes", _NODE_COLS, nodes), ("expiry", ("at", "seq", "key"), expiry))}
        return list(key_ix), tables, {"seq": int(self._seq)}

    def import_state(self, keys: list[Hashable], tables: dict[str, pa.Table], values: dict[str, Any]) -> None:
        """The inverse of :meth:`export_state`, on a fresh matcher of the same compiled pattern."""
        with _no_gc():
            self._import(keys, tables, values)

    def _import(self, keys: list[Hashable], tables: dict[str, pa.Table], values: dict[str, Any]) -> None:
        n = tables["nodes"]
        gid, stage, pos, t, parent = (n.column(c).to_pylist() for c in _NODE_COLS)
        built: list[Events] = []
        for i in range(n.num_rows):
            built.append((gid[i], stage[i], pos[i], t[i], None if parent[i] < 0 else built[parent[i]]))
        pt = tables["partials"]
        if "pending" not in pt.column_names:  # a snapshot from before pending matches existed
            pt = pt.append_column("pending", pa.array([0] * pt.num_rows, pa.int64()))
        cols = [pt.column(c).to_pylist() for c in _PARTIAL_COLS]
        state: dict[Hashable, list[Partial]] = {}
        pending: dict[Hashable, list[Partial]] = {}
        for k, sp, st, lp, sg, cnt, roles, node, done, pend in zip(*cols, strict=True):
            (pending if pend else state).setdefault(keys[k], []).append(
                Partial(sp, st, lp, sg, cnt, roles, None if node < 0 else built[node], bool(done)))
        ex = tables["expiry"]
        self.state, self.pending = state, pending
        self.expiry = [(a, s, keys[k]) for a, s, k in zip(*(ex.column(c).to_pylist() for c in ("at", "seq", "key")),
                                                          strict=True)]
        self.scheduled = {}
        for a, _, k in self.expiry:  # the current entry of a key is its earliest
            if k not in self.scheduled or a < self.scheduled[k]:
                self.scheduled[k] = a
        self._seq = int(values["seq"])
        self.found, self.timed_out = [], []


_PARTIAL_COLS = ("key", "start_pos", "start_t", "last_pos", "stage", "count", "roles", "node", "done", "pending")
_NODE_COLS = ("gid", "stage", "pos", "t", "parent")


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: (de)serializing partial matches allocates one acyclic tuple
    per event link, and the collections those allocations trigger would double the time taken."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _columns(names: tuple[str, ...], rows: list[Any]) -> pa.Table:
    """Row tuples of integers as an int64 Arrow table (one transposition in C, no per-value Python)."""
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table({n: pa.array(c, pa.int64()) for n, c in zip(names, cols, strict=True)})


def _order(p: Partial) -> tuple[int, list[tuple[int, int]]]:
    """Emission order of matches completed together: (first event, then (position, stage) of each event)."""
    return p.start_pos, [(e[2], e[1]) for e in p.taken()]


def _pairs(p: Partial) -> list[tuple[int, int]]:
    """(gid, stage) of a partial match's events, oldest first."""
    e = p.events
    if e is not None and e[4] is None:  # one event (most time-outs): no walk
        return [(e[0], e[1])]
    return [(g, s) for g, s, _, _ in p.taken()]
