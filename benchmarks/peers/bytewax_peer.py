"""Bytewax runner (run with benchmarks/.venv-peers/bin/python): finance W1–W3, Nexmark q0–q2.

Input: our own partitioned source over the Parquet file (Arrow batches of 4096 -> tuples; Bytewax
has no Parquet connector). Windows use ``EventClock`` with a frozen ``now_getter`` so the watermark
follows event time only (the default lets wall-clock time push the watermark past a fast replay
and drops data as late). One worker (``run_main``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax
import bytewax.operators as op
import bytewax.operators.windowing as win
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main

sys.path.insert(0, str(Path(__file__).parent))
from _common import Runner, main

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FROZEN = datetime(2000, 1, 1, tzinfo=UTC)


class _Part(StatefulSourcePartition[tuple[Any, ...], None]):
    def __init__(self, path: Path, cols: list[str], where: tuple[str, int] | None) -> None:
        read = cols if where is None or where[0] in cols else [*cols, where[0]]
        self._it = pq.ParquetFile(path).iter_batches(4096, columns=read)
        self._cols, self._where = cols, where

    def next_batch(self) -> list[tuple[Any, ...]]:
        b = next(self._it)  # StopIteration ends the input
        if self._where is not None:
            b = b.filter(pc.equal(b.column(self._where[0]), self._where[1]))
        arrays = [b.column(c).cast(pa.int64()) if pa.types.is_timestamp(b.column(c).type) else b.column(c)
                  for c in self._cols]
        return list(zip(*[a.to_pylist() for a in arrays], strict=True))

    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[tuple[Any, ...], None]):
    def __init__(self, path: Path, cols: list[str], where: tuple[str, int] | None = None) -> None:
        self._args = (path, cols, where)

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(*self._args)


def _clock(ts_index: int) -> win.EventClock[Any]:
    return win.EventClock(lambda r: EPOCH + timedelta(milliseconds=r[ts_index]),
                          wait_for_system_duration=timedelta(seconds=2),
                          now_getter=lambda: FROZEN, to_system_utc=lambda dt: None)


def _collect(flow: Dataflow, stream: Any, names: list[str]) -> pa.Table:
    out: list[tuple[Any, ...]] = []
    op.output("out", stream, TestingSink(out))
    run_main(flow)
    return pa.table({n: [r[i] for r in out] for i, n in enumerate(names)})


def w1(p: Path) -> pa.Table:
    flow = Dataflow("w1")
    s = op.input("in", flow, _Source(p, ["ts", "symbol", "price", "qty"]))
    s = op.filter_map("f", s, lambda r: (r[0], r[1], r[2] * r[3]) if r[2] * r[3] > 100_000 else None)
    return _collect(flow, s, ["ts", "symbol", "notional"])


def w2(p: Path) -> pa.Table:
    flow = Dataflow("w2")
    s = op.input("in", flow, _Source(p, ["ts", "seq", "symbol", "price", "qty"]))
    keyed = op.key_on("key", s, lambda r: r[2])

    def fold(st: list[Any], r: tuple[Any, ...]) -> list[Any]:
        k = (r[0], r[1])
        if st[0] is None or k < st[0]:
            st[0], st[1] = k, r[3]
        if st[2] is None or k > st[2]:
            st[2], st[3] = k, r[3]
        st[4] = max(st[4], r[3])
        st[5] = min(st[5], r[3])
        st[6] += r[4]
        st[7] += r[3] * r[4]
        return st

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        raise NotImplementedError("tumbling windows never merge")

    w = win.fold_window("w", keyed, _clock(0), win.TumblingWindower(timedelta(minutes=1), EPOCH),
                        lambda: [None, 0.0, None, 0.0, float("-inf"), float("inf"), 0, 0.0], fold, merge)
    rows = op.map("fmt", w.down, lambda kv: (kv[0], kv[1][0] * 60_000, kv[1][0] * 60_000 + 60_000, kv[1][1][1],
                                             kv[1][1][4], kv[1][1][5], kv[1][1][3], kv[1][1][6],
                                             kv[1][1][7] / kv[1][1][6]))
    return _collect(flow, rows, ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume",
                                 "vwap"])


def w3(p: Path) -> pa.Table:
    flow = Dataflow("w3")
    s = op.input("in", flow, _Source(p, ["ts", "account", "price", "qty"]))
    keyed = op.key_on("key", s, lambda r: r[1])

    def fold(st: list[Any], r: tuple[Any, ...]) -> list[Any]:
        st[0] += 1
        st[1] += r[2] * r[3]
        return st

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        raise NotImplementedError("sliding windows never merge")

    windower = win.SlidingWindower(timedelta(minutes=5), timedelta(minutes=1), EPOCH)
    w = win.fold_window("w", keyed, _clock(0), windower, lambda: [0, 0.0], fold, merge)
    rows = op.map("fmt", w.down, lambda kv: (kv[0], kv[1][0] * 60_000, kv[1][0] * 60_000 + 300_000,
                                             kv[1][1][0], kv[1][1][1]))
    return _collect(flow, rows, ["account", "window_start", "window_end", "cnt", "sum_notional"])


_BID = ["date_time", "b_auction", "b_bidder", "b_price", "b_channel", "b_url", "b_extra"]


def q0(p: Path) -> pa.Table:
    flow = Dataflow("q0")
    s = op.input("in", flow, _Source(p, _BID, ("event_type", 2)))
    s = op.map("m", s, lambda r: (r[1], r[2], r[3], r[4], r[5], r[0], r[6]))
    return _collect(flow, s, ["auction", "bidder", "price", "channel", "url", "date_time", "extra"])


def q1(p: Path) -> pa.Table:
    flow = Dataflow("q1")
    s = op.input("in", flow, _Source(p, _BID, ("event_type", 2)))
    s = op.map("m", s, lambda r: (r[1], r[2], r[3] * 0.908, r[4], r[5], r[0], r[6]))
    return _collect(flow, s, ["auction", "bidder", "price", "channel", "url", "date_time", "extra"])


def q2(p: Path) -> pa.Table:
    flow = Dataflow("q2")
    s = op.input("in", flow, _Source(p, ["b_auction", "b_price"], ("event_type", 2)))
    s = op.filter("f", s, lambda r: r[0] % 123 == 0)
    return _collect(flow, s, ["auction", "price"])


RUNNERS: dict[tuple[str, str], Runner] = {
    ("finance", "w1"): w1, ("finance", "w2"): w2, ("finance", "w3"): w3,
    ("nexmark", "q0"): q0, ("nexmark", "q1"): q1, ("nexmark", "q2"): q2,
}

if __name__ == "__main__":
    main("bytewax", getattr(bytewax, "__version__", "0.21"), RUNNERS)
