"""Lazy per-key evaluation: candidate rows wait, columnar, until a row that can end a match arrives.

A match is emitted only when the NFA takes a row into a stage that can complete it (the last
mandatory positive stage, or an optional one after it): an **ending row**. Until such a row comes
for a key, feeding the key's other candidates to the NFA changes nothing anyone can observe, as
long as nothing else is reported per event. So, when :meth:`Compiled.lazy_ending_bits` allows it,
the match operator parks each key's candidate rows here (key columns, event id, event time and
condition mask: a few ints per row, no Python object) and feeds the NFA a key's parked rows, in
the order it would have seen them, only when an ending row of that key is released.

Parked rows older than the pattern's time bound are dropped: once the watermark is ``W``, every
ending row still to come has event time ``>= W``, so a row with ``t + within <= W`` can be in no
future match, and neither can any partial match it would have started or extended (those start
no later than ``t``). Dropping it cannot change another partial match either: partial matches
only interact through the after-match skip strategy, which acts on completed matches.

The equivalence with eager feeding (same matches, same order, same emission batches) is checked
by the property tests in ``tests/cep`` on random patterns and out-of-order arrival, including a
snapshot and restore in the middle.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from everstream.engine.aggregates import EVENT_TIME

#: column names shared with :mod:`everstream.cep.operator` (kept here so both import one definition)
MASK = "_cep_mask"
GID = "_cep_gid"


class Parked:
    """The parked candidate rows of every key: ``by`` columns, ``GID``, ``EVENT_TIME``, ``MASK``; a key's
    rows in event id order (sorted by key and event id once an ending row arrives; any order across keys
    before). Operator state: snapshotted with the match operator's other tables."""

    def __init__(self, by: list[str], ending_bits: int, within_ms: int, min_events: int = 1) -> None:
        self.by = by
        self.ending_bits = ending_bits
        self.within_ms = within_ms
        self.min_events = min_events  # the fewest events a match has (W5: 4)
        self.columns = [*by, GID, EVENT_TIME, MASK]
        self.frame: pl.DataFrame | None = None

    @property
    def height(self) -> int:
        return 0 if self.frame is None else self.frame.height

    def split(self, cands: pl.DataFrame, start_bits: int, live: Callable[[pl.DataFrame], pl.Series]) -> pl.DataFrame:
        """Take newly released candidate rows (in any order across keys; within a key, event ids increase
        with event time, as the store assigns them); return the rows to feed the NFA now — per key with
        an ending row among the parked and new rows, its rows up to its last ending row, in (key, event
        id) order, the order eager feeding sees them in — and park the rest.

        Of the rows to feed, those before the key's first row that can start a match (``start_bits``)
        are dropped when the key has no partial match in the NFA (``live(keys)``: True per row whose key
        has one): the NFA would ignore them (W5: a large amount on a card with no recent small one).

        A key with no partial match and fewer rows from its first starting row to its last ending row
        than a match has events (``min_events``) cannot complete a match now: its rows stay parked
        (W5: one or two small amounts, then a large one; about half the rows the NFA would see). The
        NFA gets them, in order, with the key's next ending row: as nothing of the key is reported in
        between, feeding them later gives the same matches at the same release."""
        new = cands.select(self.columns)
        if self.frame is not None and self.frame.height:
            rows = pl.concat([self.frame, new], how="vertical_relaxed")
        else:
            rows = new
        n = rows.height
        if not n:
            self.frame = None
            return rows
        mask = rows.get_column(MASK).to_numpy()
        if not (mask & self.ending_bits).any():  # nothing can complete (most small live batches): no sort
            self.frame = rows
            return rows.clear()
        rows = rows.sort([*self.by, GID], nulls_last=True)
        mask = rows.get_column(MASK).to_numpy()
        # per key group (rows are sorted by key): the last ending row's and the first starting row's event
        # id, by NumPy reductions over the group starts (a Polars window `over` the key costs ~10x more here)
        if self.by:
            change = rows.select(pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in self.by]))
            head = change.to_series().fill_null(True).to_numpy().copy()
            head[0] = True
        else:
            head = np.zeros(n, bool)
            head[0] = True
        starts = np.flatnonzero(head)
        group = np.cumsum(head) - 1
        gid = rows.get_column(GID).to_numpy()
        none_lo, none_hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        last = np.maximum.reduceat(np.where((mask & self.ending_bits) != 0, gid, none_lo), starts)[group]
        first = np.minimum.reduceat(np.where((mask & start_bits) != 0, gid, none_hi), starts)[group]
        # 0: park; 1: feed; 2: feed if the key has a partial match, else drop (before the key's first
        # starting row); 3: feed if the key has a partial match, else park (deferred: too few rows for a match)
        what = np.where((last == none_lo) | (gid > last), 0, np.where((first == none_hi) | (gid < first), 2, 1))
        if self.min_events > 1:
            feeding = np.add.reduceat((what == 1).astype(np.int64), starts)[group]
            what[(what == 1) & (feeding < self.min_events)] = 3
        ask = what >= 2
        if ask.any():
            has = np.zeros(n, bool)
            has[ask] = live(rows.filter(pl.Series(ask))).to_numpy()
            what[ask & has] = 1
            what[(what == 3) & ~has] = 0
        park, feed = what == 0, what == 1
        self.frame = rows.filter(pl.Series(park)) if park.any() else None
        return rows if feed.all() else rows.filter(pl.Series(feed))

    def prune(self, watermark: int) -> None:
        """Drop parked rows no future ending row (event time >= ``watermark``) can share a match with."""
        if self.frame is not None:
            keep = self.frame.filter(pl.col(EVENT_TIME) > watermark - self.within_ms)
            self.frame = keep if keep.height else None

    def lowest_gid(self) -> int | None:
        """The smallest event id parked (the store must keep that row and the later ones)."""
        if self.frame is None or not self.frame.height:
            return None
        got = self.frame.get_column(GID).min()
        return None if got is None else int(got)  # type: ignore[arg-type]
