"""Retention, compaction and integrity checks of the embedded log."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from everstream.log import batch as batchcodec
from everstream.log.contract import KEY_COL, OFFSET_COL
from everstream.log.embedded.store import Store, TopicRow, now_ms


def enforce_retention(store: Store, row: TopicRow, now: int | None = None) -> int:
    """Delete the oldest batches past the topic's age or size limit; returns batches deleted.

    Whole batches go, oldest first, and only as a prefix: a partition never gets a hole.
    """
    spec = row.spec
    if spec.retention_ms is None and spec.retention_bytes is None:
        return 0
    now = now_ms() if now is None else now
    deleted = 0
    with store.write() as con:
        for p in range(spec.partitions):
            rows = con.execute(
                "SELECT id, max_ts, size FROM batches WHERE topic_id = ? AND partition = ? ORDER BY last_offset",
                (row.id, p),
            ).fetchall()
            total = sum(r[2] for r in rows)
            drop: list[int] = []
            for rid, max_ts, size in rows:
                too_old = spec.retention_ms is not None and max_ts < now - spec.retention_ms
                too_big = spec.retention_bytes is not None and total > spec.retention_bytes
                if not (too_old or too_big):
                    break
                drop.append(rid)
                total -= size
            if drop:
                con.executemany("DELETE FROM batches WHERE id = ?", [(r,) for r in drop])
                con.execute(
                    "UPDATE partitions SET bytes = ? WHERE topic_id = ? AND partition = ?", (total, row.id, p)
                )
                store._reset_start(con, row.id, p)
                deleted += len(drop)
    return deleted


def compact(store: Store, row: TopicRow) -> int:
    """Keep only the latest record per key in each partition of a compacted topic.

    Surviving records keep their offsets (stored explicitly in the rewritten batch). Returns the
    number of records removed.
    """
    if not row.spec.compact:
        return 0
    removed = 0
    with store.write() as con:
        for p in range(row.spec.partitions):
            removed += _compact_partition(con, store, row, p)
    return removed


_VIEW_TYPES = (pa.string_view(), pa.binary_view())


def _rows_kept(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """The rows where ``keep`` holds. Arrow's filter and take have no kernels for view types (a producer
    may send ``string_view`` columns): such a table is cut into slices of consecutive kept rows."""
    if not any(f.type in _VIEW_TYPES for f in table.schema):
        return table.filter(pa.array(keep))
    edges = np.flatnonzero(np.diff(np.r_[0, keep.astype(np.int8), 0]))
    pieces = [table.slice(a, b - a) for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True)]
    return pa.concat_tables(pieces) if pieces else table.slice(0, 0)


def _compact_partition(con: sqlite3.Connection, store: Store, row: TopicRow, p: int) -> int:
    rows = con.execute(
        "SELECT id, base_offset, last_offset, count, crc, payload FROM batches "
        "WHERE topic_id = ? AND partition = ? ORDER BY last_offset",
        (row.id, p),
    ).fetchall()
    if not rows:
        return 0
    batches = []
    for rid, base, _last, count, crc, payload in rows:
        if batchcodec.checksum(payload) != crc:
            return 0  # never rewrite around damage: `log check` reports it
        b = batchcodec.as_plain(batchcodec.decode(payload))  # one schema for payloads stored with and without views
        offs = batchcodec.offsets_of(b, base)
        if OFFSET_COL not in b.schema.names:
            b = b.append_column(OFFSET_COL, pa.array(offs, pa.int64()))
        batches.append(b)
        del rid, count
    try:
        table = pa.Table.from_batches(batches).combine_chunks()
    except pa.ArrowInvalid:
        table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")
    keys = table.column(KEY_COL)
    offsets = np.asarray(table.column(OFFSET_COL))
    # latest offset per key: group by key, max offset
    last = pa.table({"k": keys, "o": offsets}).group_by("k").aggregate([("o", "max")])
    keep = np.isin(offsets, np.asarray(last.column("o_max")))
    if keep.all():
        return 0
    kept = _rows_kept(table, keep)
    removed = int((~keep).sum())
    con.executemany("DELETE FROM batches WHERE id = ?", [(r[0],) for r in rows])
    size_total = 0
    for chunk in kept.to_batches(max_chunksize=10_000):
        enc = batchcodec.encode(chunk, row.spec.compression)
        offs = np.asarray(chunk.column(OFFSET_COL))
        con.execute(
            "INSERT INTO batches (topic_id, partition, base_offset, last_offset, count, min_ts, max_ts, "
            "size, crc, created_ms, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.id, p, int(offs[0]), int(offs[-1]), chunk.num_rows, enc.min_ts, enc.max_ts,
             len(enc.payload), enc.crc, now_ms(), enc.payload),
        )
        size_total += len(enc.payload)
    con.execute(
        "UPDATE partitions SET bytes = ? WHERE topic_id = ? AND partition = ?", (size_total, row.id, p)
    )
    # As on Kafka, compaction leaves the log start offset alone: offset 0 stays readable.
    return removed


@dataclass(frozen=True)
class Damage:
    topic: str
    partition: int
    first: int
    last: int
    reason: str

    def __str__(self) -> str:
        return f"topic {self.topic!r} partition {self.partition} offsets {self.first}..{self.last}: {self.reason}"


def check(store: Store, repair: bool = False) -> tuple[int, list[Damage]]:
    """Verify every stored batch (CRC, decode, record count, offset order) and the database.

    Returns (batches checked, damage found). With ``repair``, damaged batches are deleted.
    """
    damage: list[Damage] = []
    try:
        with store.lock:
            result = [r[0] for r in store.con.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as e:
        result = [str(e)]
    if result != ["ok"]:
        damage.append(Damage("*", -1, -1, -1, "database structure: " + "; ".join(result[:5])))
    checked = 0
    bad_rows: list[int] = []
    prev: dict[tuple[str, int], int] = {}
    try:
        headers = list(store.iter_batch_headers())
    except sqlite3.DatabaseError as e:
        damage.append(Damage("*", -1, -1, -1, f"cannot list batches: {e}"))
        return checked, damage
    for topic, part, base, last, count, rid in headers:
        checked += 1
        reason = None
        try:
            crc, payload = store.batch_payload(rid)
            if batchcodec.checksum(payload) != crc:
                reason = "checksum mismatch"
            else:
                b = batchcodec.decode(payload)
                if b.num_rows != count:
                    reason = f"holds {b.num_rows} records, index says {count}"
        except (sqlite3.DatabaseError, pa.ArrowInvalid, ValueError, OSError) as e:
            reason = f"unreadable: {e}"
        if reason is None and prev.get((topic, part), -1) >= base:
            reason = f"overlaps the previous batch (ends at {prev[(topic, part)]})"
        prev[(topic, part)] = last
        if reason is not None:
            damage.append(Damage(topic, part, base, last, reason))
            bad_rows.append(rid)
    if repair:
        for rid in bad_rows:
            store.delete_batch(rid)
    return checked, damage
