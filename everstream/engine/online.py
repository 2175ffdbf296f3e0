"""On-arrival features: many per-key rolling features in ONE step, emitted the moment an event arrives.

:meth:`Stream.rolling` waits for the watermark so that every event sees all events of its key up
to its own time, whatever their arrival order. That wait is the price of exactness under
disorder, and for fraud scoring it is most of the latency. Serving needs the other contract:

    each event's features cover the events of its key that **have already arrived** (or arrive
    with it, earlier in the same batch) and have event time ``<= its own`` (windowed features:
    in ``(t - over, t]``, the event itself included).

No future leakage (nothing with a later event time, nothing that arrived later), no watermark
wait, and the answer depends only on the arrival order: replaying the log in arrival order with
any batching gives the same features as running live. For in-order input it equals
:meth:`Stream.rolling`. An event that arrives more than ``max_delay`` behind the newest event
time seen may find part of its window already pruned from state (its features then cover the
retained part only).

One step computes several *families* (keys) in order, so later families can use earlier
outputs (through :class:`Derive` steps, NumPy functions over the columns so far): the fraud
features (:mod:`everstream.ml.features`) compute card/merchant and card/device novelty first
and sum the novelty flags per card, merchant and device after.

How it runs (vectorized, no Python object per event on big batches): per family the state is
the key's retained events (key id, time, arrival sequence, values) in NumPy arrays, a sorted
main part plus a small appended delta merged now and then. A batch gathers the history rows of
its keys, sorts them with the batch by (key, time, arrival), and answers every window with two
``searchsorted`` calls and prefix sums. Rows of a key that arrive out of time order within one
batch are split into in-order runs processed one after another, so arrival order is honoured
exactly. Small batches (a few events, live) cost a few dozen NumPy calls per family and no
Polars round trip except reading the input columns and adding the outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.features import Feature, RollingAgg, SinceLast
from everstream.engine.operators import INTERNAL, Ctx, Operator, Services, first_offset, user_columns
from everstream.engine.state import Snapshot, fingerprint
from everstream.engine.time import MIN_TIME, Duration, duration_ms
from everstream.errors import PlanError, StateError, StepError

if TYPE_CHECKING:
    from everstream.engine.stream import Stream

_SMALL = 64  # batches up to this many rows map keys with a dict per row (cheaper than a Polars round trip)
_MERGE_MIN = 2048
_INTERNAL = frozenset(INTERNAL)  # delta rows before a merge into the sorted main part


@dataclass(frozen=True)
class Family:
    """Features of one key: ``by`` columns, and ``features`` (rolling_count/rolling_sum/time_since_last)."""

    by: tuple[str, ...]
    features: Mapping[str, Feature]

    def __post_init__(self) -> None:
        if not self.by or not all(isinstance(b, str) and b for b in self.by):
            raise PlanError(f"online feature family by={self.by!r}: give one or more key column names")
        if not self.features:
            raise PlanError(f"online feature family by={list(self.by)}: give at least one feature")
        for name, f in self.features.items():
            ok = isinstance(f, SinceLast) or (isinstance(f, RollingAgg) and (
                (f.kind == "count" and f.column is None) or f.kind == "sum"))
            if not ok:
                raise PlanError(f"online feature {name}={f.describe() if isinstance(f, Feature) else f!r}: on-arrival "
                                "families take rolling_count(over), rolling_sum(column, over) and time_since_last(); "
                                "derive means and z-scores from sums with a Derive step")

    @property
    def windows(self) -> dict[str, RollingAgg]:
        return {n: f for n, f in self.features.items() if isinstance(f, RollingAgg)}

    @property
    def since(self) -> list[str]:
        return [n for n, f in self.features.items() if isinstance(f, SinceLast)]

    @property
    def value_columns(self) -> list[str]:
        return list(dict.fromkeys(f.column for f in self.windows.values() if f.column is not None))

    def describe(self) -> str:
        return f"by={list(self.by)}: " + ", ".join(f"{n}={f.describe()}" for n, f in self.features.items())


@dataclass(frozen=True)
class Derive:
    """Columns computed from the columns so far (inputs and earlier features) as NumPy arrays.

    ``fn`` gets a mapping of column name -> array (``ts``: event time in ms; integer features as
    int64, nullable ones as float64 with NaN) and returns new arrays by name (NaN becomes null)."""

    outputs: tuple[str, ...]
    fn: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
    name: str = "derive"

    def describe(self) -> str:
        return f"{self.name}({', '.join(self.outputs)})"


@dataclass(frozen=True)
class OnlineSpec:
    """What one on-arrival step computes: families and derive steps in order, and which columns it adds."""

    parts: tuple[Family | Derive, ...]
    outputs: tuple[str, ...]
    max_delay_ms: int = 3_600_000
    keep: frozenset[str] | None = None  # input columns kept (None: all)

    @property
    def inputs(self) -> set[str]:
        made: set[str] = set()
        need: set[str] = set()
        for part in self.parts:
            if isinstance(part, Family):
                need |= {c for c in (*part.by, *part.value_columns) if c not in made}
                made |= set(part.features)
            else:
                made |= set(part.outputs)
        return need

    def describe(self) -> str:
        return "online(" + "; ".join(x.describe() for x in self.parts) + ")"

    def operator(self, step: p.Match, services: Services, *, multi_source: bool,
                 time_zone: Callable[[], str | None]) -> Operator:
        """The engine operator (the runtime builds operators of pattern-like steps through their spec)."""
        return OnlineFeaturesOp(step, services, self)


@dataclass(frozen=True, eq=False)
class OnlineStep(p.Match):
    """Plan step of :func:`online_features` (the runtime asks ``pattern.operator`` for its operator)."""

    @property
    def kind(self) -> str:
        return "online_features"

    def describe(self) -> str:
        return str(self.pattern.describe())


def online_features(stream: Stream, parts: tuple[Family | Derive, ...] | list[Family | Derive], *,
                    outputs: tuple[str, ...] | list[str] | None = None, keep: tuple[str, ...] | list[str] | None = None,
                    max_delay: Duration = "1h", name: str | None = None) -> Stream:
    """Add on-arrival features to ``stream`` (event time declared with ``with_watermark``); see the module doc.

    ``outputs``: the columns added (default: every feature and derived column, in order); ``keep``:
    the input columns kept besides the engine's metadata (default: all).
    """
    made: list[str] = []
    for part in parts:
        if not isinstance(part, (Family, Derive)):
            raise PlanError(f"online_features: parts are Family(...) and Derive(...), got {part!r}")
        made += list(part.features) if isinstance(part, Family) else list(part.outputs)
    dup = sorted({m for m in made if made.count(m) > 1})
    if dup:
        raise PlanError(f"online_features: columns {dup} are made twice; give every feature its own name")
    outs = tuple(made if outputs is None else outputs)
    unknown = [o for o in outs if o not in made]
    if unknown:
        raise PlanError(f"online_features(outputs=...): {unknown} are not made by any part (made: {made})")
    stream._needs_event_time("online_features")
    spec = OnlineSpec(tuple(parts), outs, duration_ms(max_delay, "max_delay"),
                      None if keep is None else frozenset(keep))
    return stream.app.add(OnlineStep, stream, "online", name, pattern=spec, by=(), timeouts=False)


# ---------------------------------------------------------------------- state of one family


class _FamilyState:
    """The retained events of one family's keys (see the module doc) and the key index."""

    def __init__(self, family: Family, max_delay_ms: int) -> None:
        self.family = family
        self.step_id = ""  # the step's id, for errors (set by the operator)
        self.windows = family.windows
        self.values = family.value_columns
        self.overs = np.array([f.over_ms for f in self.windows.values()], dtype=np.int64)
        self.max_over = int(self.overs.max()) if len(self.overs) else 0
        self.retention = self.max_over + max_delay_ms
        self.keys: dict[Any, int] = {}
        nv = len(self.values)
        self.kid = np.zeros(0, np.int64)
        self.ts = np.zeros(0, np.int64)
        self.seq = np.zeros(0, np.int64)
        self.val = np.zeros((0, nv))
        self.dkid = np.zeros(0, np.int64)  # the delta: rows appended since the last merge (first delta_rows)
        self.dts = np.zeros(0, np.int64)
        self.dseq = np.zeros(0, np.int64)
        self.dval = np.zeros((0, nv))
        self.delta_rows = 0
        self.pruned_last = np.zeros(0, np.int64)  # per key: newest time of its pruned rows (MIN_TIME: none)

    # -------------------------------------------------------------- key ids

    def key_ids(self, cols: list[pl.Series]) -> np.ndarray:
        """Dense ids of the rows' keys (new keys get the next ids)."""
        keys = self.keys
        n = len(cols[0])
        if n <= _SMALL:
            vals = cols[0].to_list() if len(cols) == 1 else list(zip(*(c.to_list() for c in cols), strict=True))
            out = np.empty(n, np.int64)
            for i, k in enumerate(vals):
                got = keys.get(k)
                if got is None:
                    got = keys[k] = len(keys)
                out[i] = got
        else:
            frame = pl.DataFrame(cols)
            uniq = frame.unique(maintain_order=True)
            u = uniq.to_series().to_list() if uniq.width == 1 else uniq.rows()
            ids = [keys.setdefault(k, len(keys)) for k in u]  # one dict lookup per distinct key
            joined = frame.join(uniq.with_columns(pl.Series("__kid", ids, dtype=pl.Int64)),
                                on=frame.columns, how="left", maintain_order="left", nulls_equal=True)
            out = joined.get_column("__kid").to_numpy()
        if len(self.pruned_last) < len(keys):
            grow = np.full(max(len(keys), 2 * len(self.pruned_last)) - len(self.pruned_last), MIN_TIME, np.int64)
            self.pruned_last = np.concatenate([self.pruned_last, grow])
        return out

    # -------------------------------------------------------------- one batch

    def compute(self, kid: np.ndarray, ts: np.ndarray, seq: np.ndarray, val: np.ndarray
                ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Window features and the previous event time (since-last) of every row; rows are appended
        to the state. Rows of a key out of time order within the batch are handled run by run."""
        n = len(kid)
        runs = _runs(kid, ts)
        if runs is None:
            got = self._query(kid, ts, seq, val)
            self._append(kid, ts, seq, val)
            return got
        outs = {name: np.zeros(n, np.float64) for name in self.windows}
        prev = np.full(n, MIN_TIME, np.int64)
        for r in range(int(runs.max()) + 1):
            rows = np.flatnonzero(runs == r)
            w, pv = self._query(kid[rows], ts[rows], seq[rows], val[rows])
            for name, arr in w.items():
                outs[name][rows] = arr
            if pv is not None:
                prev[rows] = pv
            self._append(kid[rows], ts[rows], seq[rows], val[rows])
        return outs, prev if self.family.since else None

    def _query(self, kid: np.ndarray, ts: np.ndarray, seq: np.ndarray, val: np.ndarray
               ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        n = len(kid)
        ukids = np.unique(kid)
        hk, ht, hs, hv = self._history(ukids)
        ck = np.concatenate([hk, kid])
        ct = np.concatenate([ht, ts])
        cs = np.concatenate([hs, seq])
        cv = np.concatenate([hv, val]) if len(self.values) else hv
        order = np.lexsort((cs, ct, ck))
        ck, ct = ck[order], ct[order]
        pos = np.empty(len(order), np.int64)
        pos[order] = np.arange(len(order))
        mine = pos[len(hk):]  # sorted positions of the batch rows, in batch order
        out: dict[str, np.ndarray] = {}
        if self.windows:
            rank = np.zeros(len(ck), np.int64)
            if len(ck) > 1:
                rank[1:] = np.cumsum(ck[1:] != ck[:-1])
            base = int(ct.min())
            span = int(ct.max()) - base + self.max_over + 1
            if (int(rank[-1]) + 1) * span >= (1 << 62):
                raise StepError(f"online features: the batch spans too much event time ({span} ms) for "
                                f"{int(rank[-1]) + 1} keys of {list(self.family.by)}", step_id=self.step_id,
                                fix="feed smaller batches (max_batch_events)")
            g = rank * span + (ct - base)
            gm = g[mine]
            sums = None
            if len(self.values):
                sv = cv[order]
                sums = np.zeros((len(sv) + 1, sv.shape[1]))
                np.cumsum(sv, axis=0, out=sums[1:])
            col = {c: i for i, c in enumerate(self.values)}
            for (name, f), over in zip(self.windows.items(), self.overs, strict=True):
                lo = np.searchsorted(g, gm - over, side="right")
                if f.kind == "count":
                    out[name] = (mine - lo + 1).astype(np.float64)
                else:
                    assert sums is not None and f.column is not None
                    j = col[f.column]
                    out[name] = sums[mine + 1, j] - sums[lo, j]
        prev: np.ndarray | None = None
        if self.family.since:
            before = mine - 1
            ok = before >= 0
            same = np.zeros(n, bool)
            same[ok] = ck[before[ok]] == kid[ok]
            prev = np.where(same, ct[np.maximum(before, 0)], self.pruned_last[kid])
        return out, prev

    def _history(self, ukids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Retained rows of the keys ``ukids`` (sorted unique): main part by range, delta by membership."""
        lo = np.searchsorted(self.kid, ukids, side="left")
        hi = np.searchsorted(self.kid, ukids, side="right")
        lens = hi - lo
        total = int(lens.sum())
        if total:
            idx = np.arange(total) + np.repeat(lo - np.cumsum(lens) + lens, lens)
            parts = [(self.kid[idx], self.ts[idx], self.seq[idx], self.val[idx])]
        else:
            parts = []
        d = self.delta_rows
        if d:
            dk = self.dkid[:d]
            m = np.isin(dk, ukids) if len(ukids) > 8 else _any_equal(dk, ukids)
            if m.any():
                parts.append((dk[m], self.dts[:d][m], self.dseq[:d][m], self.dval[:d][m]))
        if not parts:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                    np.zeros((0, len(self.values))))
        if len(parts) == 1:
            return parts[0]
        return (np.concatenate([x[0] for x in parts]), np.concatenate([x[1] for x in parts]),
                np.concatenate([x[2] for x in parts]), np.concatenate([x[3] for x in parts]))

    def _append(self, kid: np.ndarray, ts: np.ndarray, seq: np.ndarray, val: np.ndarray) -> None:
        """Append rows to the delta (preallocated arrays, grown by doubling: O(rows) per batch)."""
        d, n = self.delta_rows, len(kid)
        if d + n > len(self.dkid):
            cap = max(2 * len(self.dkid), d + n, 1024)
            self.dkid = _grow(self.dkid, cap, d)
            self.dts = _grow(self.dts, cap, d)
            self.dseq = _grow(self.dseq, cap, d)
            self.dval = _grow(self.dval, cap, d)
        self.dkid[d:d + n], self.dts[d:d + n], self.dseq[d:d + n], self.dval[d:d + n] = kid, ts, seq, val
        self.delta_rows = d + n

    def maybe_merge(self, max_ts: int, max_delay_ms: int, force: bool = False) -> None:
        """Fold the delta into the sorted main part and prune rows no timely event can need."""
        d = self.delta_rows
        if not d or (not force and d < max(_MERGE_MIN, len(self.kid) // 4)):
            return
        kid = np.concatenate([self.kid, self.dkid[:d]])
        ts = np.concatenate([self.ts, self.dts[:d]])
        seq = np.concatenate([self.seq, self.dseq[:d]])
        val = np.concatenate([self.val, self.dval[:d]])
        self.delta_rows = 0
        cut = max_ts - max_delay_ms - self.retention
        old = ts <= cut
        if old.any():
            np.maximum.at(self.pruned_last, kid[old], ts[old])
            keep = ~old
            kid, ts, seq, val = kid[keep], ts[keep], seq[keep], val[keep]
        order = np.argsort(kid, kind="stable")  # main is (key, arrival) ordered; the delta comes after it
        self.kid, self.ts, self.seq, self.val = kid[order], ts[order], seq[order], val[order]

    # -------------------------------------------------------------- snapshot

    def snapshot(self, prefix: str) -> dict[str, pl.DataFrame]:
        self.maybe_merge(MIN_TIME, 0, force=True)
        rows = pl.DataFrame({"kid": self.kid, "ts": self.ts, "seq": self.seq,
                             **{f"v{i}": self.val[:, i] for i in range(len(self.values))}})
        keys = list(self.keys)
        by = self.family.by
        cols = [keys] if len(by) == 1 else [list(x) for x in zip(*keys, strict=True)] if keys else [[] for _ in by]
        index = pl.DataFrame({f"k{i}": c for i, c in enumerate(cols)} | {"kid": list(self.keys.values())},
                             strict=False)
        last = pl.DataFrame({"last": self.pruned_last[: len(keys)]})
        return {f"{prefix}.rows": rows, f"{prefix}.keys": index, f"{prefix}.last": last}

    def restore(self, prefix: str, snap: Snapshot) -> None:
        rows, index, last = (snap.frame(f"{prefix}.{x}") for x in ("rows", "keys", "last"))
        if rows is None or index is None or last is None:
            raise StateError(f"online features: snapshot lacks the tables of family {prefix}")
        self.kid, self.ts, self.seq = (rows.get_column(c).to_numpy().astype(np.int64) for c in ("kid", "ts", "seq"))
        self.val = (np.column_stack([rows.get_column(f"v{i}").to_numpy() for i in range(len(self.values))])
                    if self.values else np.zeros((len(self.kid), 0)))
        n = len(self.family.by)
        kids = index.get_column("kid").to_list()
        keys = index.get_column("k0").to_list() if n == 1 else list(
            zip(*(index.get_column(f"k{i}").to_list() for i in range(n)), strict=True))
        self.keys = dict(zip(keys, kids, strict=True))
        self.pruned_last = last.get_column("last").to_numpy().astype(np.int64).copy()
        self.delta_rows = 0


def _grow(a: np.ndarray, cap: int, used: int) -> np.ndarray:
    out = np.empty((cap, *a.shape[1:]), a.dtype)
    out[:used] = a[:used]
    return out


def _any_equal(a: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.isin`` for a handful of values: one comparison per value (no sort of ``a``)."""
    m: np.ndarray = a == values[0]
    for v in values[1:]:
        m |= a == v
    return m


def _runs(kid: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """Per row (arrival order), its in-order run within its key: None when the batch is in order per key."""
    if len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all()):
        return None
    order = np.argsort(kid, kind="stable")  # by key, arrival order kept
    k, t = kid[order], ts[order]
    starts = np.r_[True, k[1:] != k[:-1]]
    rank = np.cumsum(starts) - 1
    base = int(t.min())
    span = int(t.max()) - base + 1
    g = rank * span + (t - base)
    runmax = np.maximum.accumulate(g)
    descent = np.zeros(len(g), np.int64)
    descent[1:] = (~starts[1:]) & (g[1:] < runmax[:-1])
    if not descent.any():
        return None
    c = np.cumsum(descent)
    seg_base = c[np.flatnonzero(starts)]
    run_sorted = c - np.repeat(seg_base, np.diff(np.r_[np.flatnonzero(starts), len(g)]))
    out = np.empty(len(g), np.int64)
    out[order] = run_sorted
    return out


# ---------------------------------------------------------------------- the operator


class OnlineFeaturesOp(Operator):
    """Computes an :class:`OnlineSpec` on each batch as it arrives (holds no events back)."""

    def __init__(self, step: p.Match, services: Services, spec: OnlineSpec) -> None:
        super().__init__(step, services)
        self.spec = spec
        self.families = [_FamilyState(f, spec.max_delay_ms) if isinstance(f, Family) else None for f in spec.parts]
        for fs in self.families:
            if fs is not None:
                fs.step_id = step.step_id
        self.seq = 0
        self.max_ts = MIN_TIME
        self.watermark = MIN_TIME

    def compute(self, df: pl.DataFrame, ts: np.ndarray) -> dict[str, np.ndarray]:
        """The spec's columns for the rows of ``df`` (arrival order) with event times ``ts``; updates state."""
        n = df.height
        seq = np.arange(self.seq, self.seq + n, dtype=np.int64)
        self.seq += n
        cols: dict[str, np.ndarray] = {"ts": ts}
        series: dict[str, pl.Series] = {}

        def column(name: str) -> np.ndarray:
            if name not in cols:
                s = series.get(name)
                if s is None:
                    s = series[name] = df.get_column(name)
                arr = s.to_numpy()
                if s.dtype.is_numeric() or s.dtype == pl.Boolean:  # nulls count as 0 in sums
                    arr = np.nan_to_num(arr.astype(np.float64, copy=False), nan=0.0)
                cols[name] = arr
            return cols[name]

        for part, fs in zip(self.spec.parts, self.families, strict=True):
            if isinstance(part, Derive):
                got = part.fn(_Columns(cols, column))
                for o in part.outputs:
                    cols[o] = np.asarray(got[o])
                continue
            assert fs is not None
            for b in part.by:
                if b not in series:
                    series[b] = df.get_column(b)
            kid = fs.key_ids([series[b] for b in part.by])
            val = (np.column_stack([np.asarray(column(c), np.float64) for c in fs.values]) if fs.values
                   else np.zeros((n, 0)))
            win, prev = fs.compute(kid, ts, seq, val)
            windows = part.windows
            for name, arr in win.items():
                f = windows[name]
                integer = f.kind == "count" or (f.column is not None and f.column in series
                                                and series[f.column].dtype.is_integer()) or (
                    f.column is not None and f.column in cols and cols[f.column].dtype.kind in "iu")
                cols[name] = np.rint(arr).astype(np.int64) if integer else arr
            for name in part.since:
                assert prev is not None
                cols[name] = np.where(prev == MIN_TIME, np.nan, (ts - prev).astype(np.float64))
        self.max_ts = max(self.max_ts, int(ts.max()))
        for fs in self.families:
            if fs is not None:
                fs.maybe_merge(self.max_ts, self.spec.max_delay_ms)
        return cols

    def process(self, df: pl.DataFrame, ctx: Ctx) -> pl.DataFrame | None:
        if df.is_empty():
            return None
        if EVENT_TIME not in df.columns:
            raise StepError("online features need event time", step_id=self.step.step_id, topic=ctx.topic,
                            partition=ctx.partition, offset=first_offset(df),
                            fix="declare it on the source: app.stream(...).with_watermark('ts')")
        missing = [c for c in self.spec.inputs if c not in df.columns]
        if missing:
            raise StepError(f"online features: the events lack columns {missing} (they have {user_columns(df)})",
                            step_id=self.step.step_id, topic=ctx.topic, partition=ctx.partition,
                            offset=first_offset(df), fix="produce events with these fields, or fix the feature spec")
        ts = df.get_column(EVENT_TIME).to_numpy().astype(np.int64, copy=False)
        try:
            cols = self.compute(df, ts)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
            raise self.error("online features failed", ctx, df, "check the key and value columns' types", e) from e
        out = [_series(name, cols[name]) for name in self.spec.outputs]
        keep = self.spec.keep
        base = df if keep is None else df[[c for c in df.columns if c in keep or c in _INTERNAL]]
        if any(s.name in base.columns for s in out):
            return base.with_columns(out)
        return base.hstack(out)  # no lazy-engine round trip (a with_columns costs ~1 ms on a 5-row batch)

    # the runtime drives pattern-like steps by the watermark; this step holds nothing back
    def advance(self, watermark: int) -> pl.DataFrame | None:
        self.watermark = watermark
        return None

    def held_offsets(self) -> dict[tuple[str, int], int]:
        return {}

    # -------------------------------------------------------------- state (exactly-once)

    def state_fingerprint(self) -> str:
        return fingerprint("online", self.spec.describe(), self.spec.max_delay_ms)

    def snapshot_state(self) -> Snapshot:
        tables: dict[str, Any] = {}
        for i, fs in enumerate(self.families):
            if fs is not None:
                for name, frame in fs.snapshot(f"f{i}").items():
                    tables[name] = frame.to_arrow()
        return Snapshot(tables=tables, values={"seq": self.seq, "max_ts": self.max_ts})

    def restore_state(self, snap: Snapshot) -> None:
        for i, fs in enumerate(self.families):
            if fs is not None:
                fs.restore(f"f{i}", snap)
        self.seq, self.max_ts = int(snap.values["seq"]), int(snap.values["max_ts"])


@dataclass
class _Columns(Mapping[str, np.ndarray]):
    """The columns so far, reading input columns on first use."""

    cols: dict[str, np.ndarray]
    read: Callable[[str], np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name] if name in self.cols else self.read(name)

    def __iter__(self) -> Any:
        return iter(self.cols)

    def __len__(self) -> int:
        return len(self.cols)


def _series(name: str, arr: np.ndarray) -> pl.Series:
    if arr.dtype.kind == "f":
        return pl.Series(name, arr, dtype=pl.Float64, nan_to_null=bool(np.isnan(arr).any()))
    return pl.Series(name, arr)


__all__ = ["Derive", "Family", "OnlineFeaturesOp", "OnlineSpec", "OnlineStep", "online_features"]
