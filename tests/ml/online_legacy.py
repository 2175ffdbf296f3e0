"""Today's (pre-LSM) family state of the on-arrival step, kept verbatim as a reference.

``LegacyFamilyState`` is the ``_FamilyState`` of ``everstream/engine/online.py`` before the tiered
(LSM-style) layout: one sorted main part plus an unsorted delta merged (whole-state re-sort) when it
reaches a quarter of the state. Tests swap it into an :class:`~everstream.engine.online.OnlineFeaturesOp`
and require the new layout to give the same features; ``benchmarks/online_bench.py`` measures it as
"before". Do not "fix" this file: it is the reference.
"""
# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from everstream.engine.online import _SMALL, Family, _runs
from everstream.engine.state import Snapshot
from everstream.engine.time import MIN_TIME
from everstream.errors import StateError, StepError

_MERGE_MIN = 2048


class LegacyFamilyState:
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

