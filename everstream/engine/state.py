"""Operator state: what a stateful operator saves at a commit and gets back on restart.

The interface
-------------
A stateful operator implements three methods (structurally: :class:`StatefulOperator`)::

    def state_fingerprint(self) -> str       # the state's *shape*: changes when old state can't be read
    def snapshot_state(self) -> Snapshot     # everything needed to continue, as Arrow tables
    def restore_state(self, snap: Snapshot)  # the inverse, on a freshly built operator

A :class:`Snapshot` holds named Arrow tables (the columnar state: one row per key, window,
pending event...), JSON scalars (watermarks, counters) and, only where the state is user
Python objects (keyed process functions), opaque byte blobs. Snapshots must be columnar:
``snapshot_state`` converts the operator's Polars frames with ``to_arrow()`` (zero-copy), never
one Python object per key. Join and CEP operators implement the same three methods on
their class; :func:`state_of` picks them up. The built-in operators (windows, count windows,
rolling features, keyed process functions, watermark trackers) are served by adapters in this
module so their hot-path modules stay untouched.

The fingerprint is a short hash of the operator kind and the parts of its definition that
decide the state's columns (keys, window spec, aggregates, features). On restart, a step whose
``step_id`` and fingerprint are unchanged gets its state back; a step whose fingerprint changed
is refused with :class:`~everstream.errors.StateIncompatibleError` (never misread state).

On the log
----------
:mod:`everstream.engine.checkpoint` writes each changed snapshot to the compacted topic
``<app>.<step_id>.changelog`` inside the same transaction as the outputs and input offsets.
The encoded snapshot (:func:`encode`) is cut into chunks of at most :data:`CHUNK_BYTES`
(records stay under Kafka's default 1 MB message limit); chunk ``i`` has key ``chunk-i``, so
compaction keeps the latest generation whole. Restore reads the changelog to its end and
decodes the newest generation (:func:`latest`). Today a commit writes the whole snapshot of an
operator whose state changed; that is cheap for window state (open windows only) and bounds
restore time by construction (no replay of deltas), but costs O(state) per commit for very
large keyed state: per-key deltas are the next step for that case.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import pickle
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
import pyarrow as pa

from everstream.errors import StateError

if TYPE_CHECKING:
    from everstream.engine.operators import Operator

#: Largest payload of one changelog record.
CHUNK_BYTES = 512 * 1024
#: Schema of changelog records.
CHANGELOG_SCHEMA = pa.schema([
    ("generation", pa.int64()),
    ("chunk", pa.int32()),
    ("chunks", pa.int32()),
    ("fingerprint", pa.string()),
    ("payload", pa.binary()),
])
_MAGIC = b"ESS1"


@dataclass
class Snapshot:
    """An operator's state: named Arrow tables, JSON scalars, and opaque blobs (user objects only)."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def frame(self, name: str) -> pl.DataFrame | None:
        """Table ``name`` as a Polars frame (None when absent)."""
        t = self.tables.get(name)
        if t is None:
            return None
        df = pl.from_arrow(t, rechunk=False)
        assert isinstance(df, pl.DataFrame)
        return df


@runtime_checkable
class StatefulOperator(Protocol):
    """What an operator implements to have its state checkpointed (see the module docstring)."""

    def state_fingerprint(self) -> str: ...

    def snapshot_state(self) -> Snapshot: ...

    def restore_state(self, snap: Snapshot) -> None: ...


# ---------------------------------------------------------------------- encoding


def encode(snap: Snapshot) -> bytes:
    """One byte string: magic, header length, JSON header, then the tables (Arrow IPC, LZ4) and blobs."""
    parts: list[bytes] = []
    tables: list[list[Any]] = []
    for name, table in snap.tables.items():
        sink = io.BytesIO()
        opts = pa.ipc.IpcWriteOptions(compression="lz4")
        with pa.ipc.new_stream(sink, table.schema, options=opts) as writer:
            writer.write_table(table)
        data = sink.getvalue()
        tables.append([name, len(data)])
        parts.append(data)
    blobs = [[name, len(b)] for name, b in snap.blobs.items()]
    parts += list(snap.blobs.values())
    header = json.dumps({"tables": tables, "blobs": blobs, "values": snap.values}).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *parts])


def decode(data: bytes) -> Snapshot:
    """The inverse of :func:`encode`; raises StateError on anything else."""
    if data[:4] != _MAGIC:
        raise StateError("a changelog record is not an everstream state snapshot (bad magic bytes)")
    (n,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + n])
    pos = 8 + n
    snap = Snapshot(values=header["values"])
    buf = pa.py_buffer(data)
    for name, size in header["tables"]:
        with pa.ipc.open_stream(buf.slice(pos, size)) as reader:
            snap.tables[name] = reader.read_all()
        pos += size
    for name, size in header["blobs"]:
        snap.blobs[name] = bytes(data[pos:pos + size])
        pos += size
    return snap


def chunks(data: bytes, size: int | None = None) -> list[bytes]:
    """``data`` cut into pieces of at most ``size`` (default :data:`CHUNK_BYTES`) bytes; at least one."""
    n = size or CHUNK_BYTES
    return [data[i:i + n] for i in range(0, max(len(data), 1), n)] or [b""]


def latest(records: pa.Table) -> tuple[int, str, bytes] | None:
    """(generation, fingerprint, payload) of the newest complete generation in changelog records."""
    if records.num_rows == 0:
        return None
    df = pl.from_arrow(records.select(["generation", "chunk", "chunks", "fingerprint"]))
    assert isinstance(df, pl.DataFrame)
    df = df.with_row_index("_row")
    done = (df.group_by("generation")
            .agg(pl.col("chunk").n_unique().alias("have"), pl.col("chunks").first().alias("need"))
            .filter(pl.col("have") >= pl.col("need")))
    if done.is_empty():
        return None
    gen = int(done.get_column("generation").max())  # type: ignore[arg-type]
    rows = (df.filter(pl.col("generation") == gen).sort("chunk", "_row")
            .unique("chunk", keep="last", maintain_order=True))
    payload = records.column("payload")
    data = b"".join(payload[int(i)].as_py() for i in rows.get_column("_row"))
    return gen, str(rows.get_column("fingerprint")[0]), data


def fingerprint(*parts: object) -> str:
    """A short stable hash of a state shape description."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- adapters of the built-in operators


def _arrow(df: pl.DataFrame | None) -> pa.Table | None:
    return None if df is None else df.to_arrow()


def _frames(snap: Snapshot, name: str) -> list[pl.DataFrame]:
    df = snap.frame(name)
    return [] if df is None or df.is_empty() else [df]


def _tables(**frames: pl.DataFrame | None) -> dict[str, pa.Table]:
    return {k: t for k, v in frames.items() if (t := _arrow(v)) is not None}


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    frames = [f for f in frames if f.height]
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


class _WindowState:
    """Event-time windows: open windows' partials (merged and pending) and the operator's watermark."""

    def __init__(self, op: Any) -> None:
        self.op = op

    def state_fingerprint(self) -> str:
        s = self.op.step
        return fingerprint("window", tuple(s.by), s.spec, s.time, tuple(str(e) for e in self.op.partials),
                           tuple(self.op.partial_names))

    def snapshot_state(self) -> Snapshot:
        op = self.op
        rows = _concat(([op.state] if op.state is not None else []) + list(op.pending))
        return Snapshot(tables=_tables(rows=rows), values={"watermark": int(op.watermark)})

    def restore_state(self, snap: Snapshot) -> None:
        op = self.op
        op.state, op.pending = None, _frames(snap, "rows")  # merged (and sessions joined) at the next advance
        op.watermark = int(snap.values["watermark"])


class _OrderedState:
    """Operators that release events in event-time order: their waiting events and sources."""

    kind = "ordered"

    def __init__(self, op: Any) -> None:
        self.op = op

    def shape(self) -> tuple[Any, ...]:
        return ()

    def state_fingerprint(self) -> str:
        return fingerprint(self.kind, tuple(self.op.by), self.shape())

    def snapshot_state(self) -> Snapshot:
        op = self.op
        waiting = _concat(([op.waiting] if op.waiting is not None else []) + list(op.buffer))
        sources = [[t, p, i] for (t, p), i in op.sources.items()]
        snap = Snapshot(tables=_tables(waiting=waiting),
                        values={"watermark": int(op.watermark), "seq": int(op.seq), "sources": sources})
        self.more(snap)
        return snap

    def restore_state(self, snap: Snapshot) -> None:
        op = self.op
        op.buffer, op.waiting = [], snap.frame("waiting")
        op.watermark, op.seq = int(snap.values["watermark"]), int(snap.values["seq"])
        op.sources = {(t, p): int(i) for t, p, i in snap.values["sources"]}
        self.restore_more(snap)

    def more(self, snap: Snapshot) -> None:
        return None

    def restore_more(self, snap: Snapshot) -> None:
        return None


class _RollingState(_OrderedState):
    kind = "rolling"

    def shape(self) -> tuple[Any, ...]:
        return tuple((n, f.describe()) for n, f in self.op.step.features.items())

    def more(self, snap: Snapshot) -> None:
        snap.tables.update(_tables(context=self.op.context, carry=self.op.carry))

    def restore_more(self, snap: Snapshot) -> None:
        self.op.context, self.op.carry = snap.frame("context"), snap.frame("carry")


class _CountWindowState(_OrderedState):
    kind = "count_window"

    def shape(self) -> tuple[Any, ...]:
        return (self.op.n, tuple(str(e) for e in self.op.partials))

    def more(self, snap: Snapshot) -> None:
        snap.tables.update(_tables(state=self.op.state, carry=self.op.carry))

    def restore_more(self, snap: Snapshot) -> None:
        self.op.state, self.op.carry = snap.frame("state"), snap.frame("carry")


class _ProcessState(_OrderedState):
    """Keyed process functions: the per-key dicts are user Python objects, kept as one pickled blob."""

    kind = "process"

    def shape(self) -> tuple[Any, ...]:
        fn = self.op.step.fn
        return (getattr(fn, "__qualname__", type(fn).__qualname__),)

    def more(self, snap: Snapshot) -> None:
        op = self.op
        snap.blobs["keyed"] = pickle.dumps((op.states, op.timers, op.ptimers, op._timer_seq),
                                           protocol=pickle.HIGHEST_PROTOCOL)

    def restore_more(self, snap: Snapshot) -> None:
        op = self.op
        try:
            op.states, op.timers, op.ptimers, op._timer_seq = pickle.loads(snap.blobs["keyed"])
        except Exception as e:
            raise StateError(f"step {op.step.step_id!r}: its keyed state could not be unpickled ({e}); the "
                             "state's classes must be importable under the same names") from e
        heapq.heapify(op.timers)
        heapq.heapify(op.ptimers)
        op._set = {(False, at, k) for at, _, k in op.timers} | {(True, at, k) for at, _, k in op.ptimers}


class _WatermarkState:
    """A source's watermark tracker: highest event time per partition and the current watermark."""

    def __init__(self, op: Any) -> None:
        self.op = op

    def state_fingerprint(self) -> str:
        s = self.op.step
        return fingerprint("watermark", s.field, len(self.op.slots))

    def snapshot_state(self) -> Snapshot:
        op, tr = self.op, self.op.tracker
        return Snapshot(values={
            "max": [int(v) for v in tr._max], "current": int(tr._current), "final": bool(tr._final),
            "time_zone": op.time_zone, "time_dtype_seen": bool(op.time_dtype_seen),
        })

    def restore_state(self, snap: Snapshot) -> None:
        op, tr, v = self.op, self.op.tracker, snap.values
        tr._max = np.asarray(v["max"], dtype=np.int64)
        tr._current, tr._final = int(v["current"]), bool(v["final"])
        op.time_zone, op.time_dtype_seen = v["time_zone"], bool(v["time_dtype_seen"])


def snapshot_ordered(op: Any) -> Snapshot:
    """The state every event-time-ordering operator (:class:`~everstream.engine.ordered.OrderedOp`)
    shares: its waiting events (table ``waiting``), watermark, arrival counter and sources. For
    operators outside the engine built on it (the CEP match step), which add their own parts."""
    return _OrderedState(op).snapshot_state()


def restore_ordered(op: Any, snap: Snapshot) -> None:
    """The inverse of :func:`snapshot_ordered`."""
    _OrderedState(op).restore_state(snap)


def state_of(op: Operator) -> StatefulOperator | None:
    """The state handler of an operator: the operator itself if it implements the interface,
    an adapter for the built-in stateful operators, or None for stateless ones."""
    if isinstance(op, StatefulOperator):
        return op
    from everstream.engine.operators import WatermarkOp, WindowOp
    from everstream.engine.ordered import CountWindowOp, RollingOp
    from everstream.engine.process import ProcessOp

    if isinstance(op, WindowOp):
        return _WindowState(op)
    if isinstance(op, ProcessOp):
        return _ProcessState(op)
    if isinstance(op, RollingOp):
        return _RollingState(op)
    if isinstance(op, CountWindowOp):
        return _CountWindowState(op)
    if isinstance(op, WatermarkOp):
        return _WatermarkState(op)
    return None


__all__ = ["CHANGELOG_SCHEMA", "Snapshot", "StatefulOperator", "decode", "encode", "fingerprint", "latest",
           "restore_ordered", "snapshot_ordered", "state_of"]
