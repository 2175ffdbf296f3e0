"""Delayed labels: chargebacks joined to stored feature snapshots by transaction id, as of a time.

A fraud label arrives days after the transaction (a chargeback). Training at time ``T`` may use
only what was known at ``T``: the feature snapshot of each transaction (computed when it
happened, so point-in-time correct) and the chargebacks that had *arrived* by ``T``. A
transaction without a chargeback by ``T`` counts as legitimate once it is older than
``maturity`` (most chargebacks have arrived by then); younger ones are left out of training as
not yet known. Using a label before its arrival time is the classic leakage this module
prevents; the tests assert it.

:class:`LabelStore` keeps snapshots and labels (from frames or from their topics) and answers
:meth:`LabelStore.training_set` and, for online learners, :meth:`LabelStore.newly_labelled`
(each transaction once, when its label becomes known).
"""

from __future__ import annotations

import polars as pl

from everstream.errors import ConfigError
from everstream.log.contract import META_COLUMNS, Log

LABEL_COLUMNS = ("txn_id", "ts", "label")


class LabelStore:
    """Feature snapshots (``txn_id``, ``ts`` + features) and labels (``txn_id``, ``ts`` = arrival, ``label``)."""

    def __init__(self) -> None:
        self._snapshots: list[pl.DataFrame] = []
        self._labels: list[pl.DataFrame] = []
        self._snap: pl.DataFrame | None = None
        self._lab: pl.DataFrame | None = None
        self._emitted_pos: pl.DataFrame = pl.DataFrame(schema={"txn_id": pl.Int64})
        self._matured_until: int | None = None
        self._consumers: list[tuple[object, str, str]] = []

    # ------------------------------------------------------------------ input

    def add_snapshots(self, frame: pl.DataFrame) -> None:
        """Feature rows of transactions (must carry ``txn_id`` and ``ts``, event time in epoch ms)."""
        _need(frame, ("txn_id", "ts"), "feature snapshots")
        if frame.height:
            self._snapshots.append(frame.select([c for c in frame.columns if c not in META_COLUMNS]))
            self._snap = None

    def add_labels(self, frame: pl.DataFrame) -> None:
        """Label records: ``txn_id``, ``ts`` (when the label arrived, epoch ms), ``label`` (1 = fraud)."""
        _need(frame, LABEL_COLUMNS, "labels")
        if frame.height:
            self._labels.append(frame.select(pl.col("txn_id").cast(pl.Int64), pl.col("ts").cast(pl.Int64)
                                             .alias("label_ts"), pl.col("label").cast(pl.Int8)))
            self._lab = None

    def follow(self, log: Log, snapshots_topic: str, labels_topic: str) -> None:
        """Read both topics from the log from now on: call :meth:`poll` to take in what arrived."""
        consumer = log.consumer(start="earliest")
        parts = [(t, p.partition) for t in (snapshots_topic, labels_topic) for p in log.describe_topic(t).partitions]
        consumer.assign(parts)
        self._consumers.append((consumer, snapshots_topic, labels_topic))

    def poll(self, timeout: float = 0.05) -> int:
        """Take in records that arrived on followed topics; returns how many."""
        n = 0
        for consumer, snap_topic, label_topic in self._consumers:
            for batch in consumer.poll(timeout):  # type: ignore[attr-defined]
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                topic = frame.get_column("_topic")[0] if frame.height else None
                if topic == snap_topic:
                    self.add_snapshots(frame)
                elif topic == label_topic:
                    self.add_labels(frame)
                n += frame.height
        return n

    def close(self) -> None:
        for consumer, _, _ in self._consumers:
            consumer.close()  # type: ignore[attr-defined]
        self._consumers = []

    # ------------------------------------------------------------------ views

    @property
    def snapshots(self) -> pl.DataFrame:
        if self._snap is None:
            self._snap = (pl.concat(self._snapshots, how="diagonal_relaxed").unique("txn_id", keep="first")
                          if self._snapshots else pl.DataFrame(schema={"txn_id": pl.Int64, "ts": pl.Int64}))
            self._snapshots = [self._snap] if self._snap.height else []
        return self._snap

    @property
    def labels(self) -> pl.DataFrame:
        """Every label received, first arrival per transaction."""
        if self._lab is None:
            self._lab = (pl.concat(self._labels).sort("label_ts").unique("txn_id", keep="first")
                         if self._labels else
                         pl.DataFrame(schema={"txn_id": pl.Int64, "label_ts": pl.Int64, "label": pl.Int8}))
            self._labels = [self._lab] if self._lab.height else []
        return self._lab

    def training_set(self, as_of: int, *, window_ms: int | None = None, maturity_ms: int = 0) -> pl.DataFrame:
        """Snapshots of transactions in ``[as_of - window_ms, as_of)`` with their label as known at ``as_of``.

        ``label`` is 1 where a chargeback arrived at or before ``as_of``, else 0; transactions younger
        than ``maturity_ms`` without a label are left out (not yet known). ``label_ts`` is the
        arrival time of the label used (null for 0), so callers can audit that none is after ``as_of``.
        """
        if window_ms is not None and window_ms <= 0:
            raise ConfigError(f"training_set(window_ms={window_ms}): give a positive window, e.g. 7 days")
        if maturity_ms < 0:
            raise ConfigError(f"training_set(maturity_ms={maturity_ms}) must be >= 0")
        snap = self.snapshots.filter(pl.col("ts") < as_of)
        if window_ms is not None:
            snap = snap.filter(pl.col("ts") >= as_of - window_ms)
        known = self.labels.filter(pl.col("label_ts") <= as_of)
        out = snap.join(known, on="txn_id", how="left").with_columns(pl.col("label").fill_null(0))
        return out.filter((pl.col("label") == 1) | (pl.col("ts") <= as_of - maturity_ms)).sort("ts")

    def newly_labelled(self, as_of: int, *, maturity_ms: int) -> pl.DataFrame:
        """Transactions whose label became known since the last call, up to ``as_of``: positives when their
        chargeback arrived, negatives when they matured without one (each transaction once)."""
        snap, labels = self.snapshots, self.labels
        known = labels.filter(pl.col("label_ts") <= as_of)
        pos = (snap.join(known, on="txn_id", how="inner")
               .join(self._emitted_pos, on="txn_id", how="anti"))
        self._emitted_pos = pl.concat([self._emitted_pos, pos.select("txn_id")])
        lo = self._matured_until
        hi = as_of - maturity_ms
        neg = snap.filter(pl.col("ts") <= hi)
        if lo is not None:
            neg = neg.filter(pl.col("ts") > lo)
        neg = neg.join(labels.filter(pl.col("label_ts") <= max(as_of, hi)), on="txn_id", how="anti")
        neg = neg.join(self._emitted_pos, on="txn_id", how="anti").with_columns(
            pl.lit(None, dtype=pl.Int64).alias("label_ts"), pl.lit(0, dtype=pl.Int8).alias("label"))
        self._matured_until = hi if lo is None else max(lo, hi)
        return pl.concat([pos.with_columns(pl.col("label").cast(pl.Int8)), neg], how="diagonal_relaxed").sort("ts")


def _need(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what} need columns {list(columns)}; missing {missing} (got {frame.columns})")


__all__ = ["LABEL_COLUMNS", "LabelStore"]
