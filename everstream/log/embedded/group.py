"""Consumer-group membership for the embedded log, coordinated through the database.

Each member writes a heartbeat row. Every member computes the same target assignment from the
live members (round-robin over each topic's partitions among the members subscribed to it) and
then, in one write transaction, releases partitions it should no longer read and claims the ones
it should, taking over a partition only when its lease is free, expired or held by a dead
member. A lease is what makes a member the only reader of a partition and the only one allowed
to commit its offset: a member that stalls past its session timeout loses its leases and its
next commit fails with :class:`CommitFailedError` instead of overwriting the new owner's progress.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from everstream.errors import CommitFailedError
from everstream.log.embedded.store import Store, now_ms

PartitionId = tuple[int, int]  # (topic id, partition)


@dataclass(frozen=True)
class Rebalance:
    owned: frozenset[PartitionId]
    claimed: frozenset[PartitionId]
    revoked: frozenset[PartitionId]


class GroupMember:
    """One member of a consumer group: heartbeats (own thread and connection) and leases."""

    def __init__(
        self, store: Store, heartbeat_store: Store, group: str, member_id: str,
        session_ms: int, heartbeat_ms: int,
    ) -> None:
        self.store = store
        self._hb_store = heartbeat_store
        self.group = group
        self.member_id = member_id
        self.session_ms = session_ms
        self.heartbeat_ms = heartbeat_ms
        self.topics: list[str] = []
        self.owned: frozenset[PartitionId] = frozenset()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def join(self, topics: list[str]) -> None:
        self.topics = sorted(set(topics))
        with self.store.write() as con:
            con.execute(
                "INSERT OR REPLACE INTO group_members (group_id, member_id, topics, heartbeat_ms, "
                "session_ms) VALUES (?, ?, ?, ?, ?)",
                (self.group, self.member_id, json.dumps(self.topics), now_ms(), self.session_ms),
            )
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat, name=f"everstream-heartbeat-{self.group}", daemon=True
            )
            self._thread.start()

    def leave(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.store.write() as con:
            con.execute(
                "DELETE FROM group_leases WHERE group_id = ? AND member_id = ?", (self.group, self.member_id)
            )
            con.execute(
                "DELETE FROM group_members WHERE group_id = ? AND member_id = ?", (self.group, self.member_id)
            )
        self.owned = frozenset()
        self._hb_store.close()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.heartbeat_ms / 1000.0):
                now = now_ms()
                with self._hb_store.write() as con:
                    con.execute(
                        "UPDATE group_members SET heartbeat_ms = ? WHERE group_id = ? AND member_id = ?",
                        (now, self.group, self.member_id),
                    )
                    con.execute(
                        "UPDATE group_leases SET expires_ms = ? WHERE group_id = ? AND member_id = ?",
                        (now + self.session_ms, self.group, self.member_id),
                    )
        except BaseException as e:  # surfaced by the consumer's next poll
            self.error = e

    # ------------------------------------------------------------------ assignment

    def target(self, live: Mapping[str, list[str]], partitions: Mapping[str, tuple[int, int]]) -> set[PartitionId]:
        """This member's share: topic -> partitions spread round-robin over its subscribers."""
        mine: set[PartitionId] = set()
        for name, (tid, count) in sorted(partitions.items()):
            subs = sorted(m for m, topics in live.items() if name in topics)
            if self.member_id not in subs:
                continue
            k = len(subs)
            me = subs.index(self.member_id)
            mine.update((tid, p) for p in range(count) if p % k == me)
        return mine

    def rebalance(self) -> Rebalance:
        """Release what is no longer ours, claim what is free; returns what changed."""
        now = now_ms()
        with self.store.write() as con:
            con.execute(
                "DELETE FROM group_members WHERE group_id = ? AND heartbeat_ms < ? - session_ms",
                (self.group, now),
            )
            live_rows = con.execute(
                "SELECT member_id, topics FROM group_members WHERE group_id = ?", (self.group,)
            ).fetchall()
            live = {m: json.loads(t) for m, t in live_rows}
            if self.member_id not in live:  # we were presumed dead (a long stall): rejoin
                live[self.member_id] = self.topics
                con.execute(
                    "INSERT OR REPLACE INTO group_members VALUES (?, ?, ?, ?, ?)",
                    (self.group, self.member_id, json.dumps(self.topics), now, self.session_ms),
                )
            names = sorted({t for ts in live.values() for t in ts})
            parts: dict[str, tuple[int, int]] = {}
            for name in names:
                row = con.execute("SELECT id, partitions FROM topics WHERE name = ?", (name,)).fetchone()
                if row is not None:
                    parts[name] = (int(row[0]), int(row[1]))
            want = self.target(live, parts)
            leases = {
                (int(t), int(p)): (m, int(e))
                for t, p, m, e in con.execute(
                    "SELECT topic_id, partition, member_id, expires_ms FROM group_leases WHERE group_id = ?",
                    (self.group,),
                ).fetchall()
            }
            held = {tp for tp, (m, _) in leases.items() if m == self.member_id}
            revoked = held - want
            for tid, p in revoked:
                con.execute(
                    "DELETE FROM group_leases WHERE group_id = ? AND topic_id = ? AND partition = ? "
                    "AND member_id = ?",
                    (self.group, tid, p, self.member_id),
                )
            claimed: set[PartitionId] = set()
            for tp in want - held:
                cur = leases.get(tp)
                if cur is None or cur[1] < now or cur[0] not in live:
                    con.execute(
                        "INSERT OR REPLACE INTO group_leases VALUES (?, ?, ?, ?, ?)",
                        (self.group, tp[0], tp[1], self.member_id, now + self.session_ms),
                    )
                    claimed.add(tp)
            owned = frozenset((held - revoked) | claimed)
        self.owned = owned
        return Rebalance(owned, frozenset(claimed), frozenset(revoked))

    def needs_rebalance(self) -> bool:
        """Cheap read: does the live membership or our lease set differ from what we own?"""
        now = now_ms()
        with self.store.read() as con:
            live_rows = con.execute(
                "SELECT member_id, topics, heartbeat_ms, session_ms FROM group_members WHERE group_id = ?",
                (self.group,),
            ).fetchall()
            live = {m: json.loads(t) for m, t, hb, s in live_rows if hb >= now - s}
            if self.member_id not in live:
                return True
            parts: dict[str, tuple[int, int]] = {}
            for name in sorted({t for ts in live.values() for t in ts}):
                row = con.execute("SELECT id, partitions FROM topics WHERE name = ?", (name,)).fetchone()
                if row is not None:
                    parts[name] = (int(row[0]), int(row[1]))
            held = {
                (int(t), int(p))
                for t, p in con.execute(
                    "SELECT topic_id, partition FROM group_leases WHERE group_id = ? AND member_id = ?",
                    (self.group, self.member_id),
                ).fetchall()
            }
        return held != self.target(live, parts) or held != set(self.owned)

    # ------------------------------------------------------------------ offsets

    def commit(self, offsets: Mapping[PartitionId, int], fenced: bool, names: Mapping[int, str]) -> None:
        """Store offsets; with ``fenced``, only for partitions whose lease this member holds."""
        now = now_ms()
        with self.store.write() as con:
            for (tid, p), off in offsets.items():
                if fenced:
                    row = con.execute(
                        "SELECT member_id FROM group_leases WHERE group_id = ? AND topic_id = ? AND partition = ?",
                        (self.group, tid, p),
                    ).fetchone()
                    if row is None or row[0] != self.member_id:
                        raise CommitFailedError(
                            f"group {self.group!r}: cannot commit offset {off} of topic "
                            f"{names.get(tid, tid)!r} partition {p}: the partition was reassigned to "
                            f"{'no one' if row is None else 'member ' + str(row[0])} (this member missed "
                            f"heartbeats for longer than the {self.session_ms} ms session timeout). Its "
                            "records since the last commit will be read again by the new owner; poll() "
                            "again to get a fresh assignment."
                        )
                con.execute(
                    "INSERT OR REPLACE INTO group_offsets VALUES (?, ?, ?, ?, ?)",
                    (self.group, tid, p, int(off), now),
                )


def committed_offset(store: Store, group: str, topic_id: int, partition: int) -> int | None:
    with store.lock:
        row = store.con.execute(
            "SELECT offset FROM group_offsets WHERE group_id = ? AND topic_id = ? AND partition = ?",
            (group, topic_id, partition),
        ).fetchone()
    return None if row is None else int(row[0])
