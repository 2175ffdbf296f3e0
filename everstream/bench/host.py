"""How fast this host runs right now: a fixed reference workload timed beside each benchmark.

On a shared machine the same code's figures move by up to 2x between days (measured here: W4 on one core
took 1.9 s of CPU one day and about 4.4 s the evening before, with the same engine code). A figure alone cannot tell
a slower host from slower code, so each benchmark's JSON carries ``host_reference_ms``: the time of a fixed,
seeded, single-threaded workload made of the engine's own kinds of work (an Arrow IPC stream with LZ4 written
and read back, a NumPy sort, a Python loop), the best of ``repeat`` runs, taken just before the measurement.
Lower is faster. Comparing two runs: a figure that moved with ``host_reference_ms`` is the host; one that
moved alone is the code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

ROWS = 1 << 20  # rows of the IPC table and values sorted (here, quiet: IPC ~48 ms, sort ~5 ms, loop ~31 ms)
LOOP = 400_000  # iterations of the Python loop


def reference_table(rows: int = ROWS, seed: int = 7) -> pa.Table:
    """A trades-like table (int64 time, float64 price, int64 quantity, a 500-value symbol), seeded."""
    rng = np.random.default_rng(seed)
    symbols = np.array([f"SYM{i:03d}" for i in range(500)])
    return pa.table({
        "ts": np.cumsum(rng.integers(0, 3, rows)),
        "price": np.round(rng.uniform(10, 500, rows), 2),
        "qty": rng.integers(1, 1_000, rows),
        "symbol": symbols[rng.integers(0, 500, rows)],
    })


def ipc_round_trip(table: pa.Table) -> pa.Table:
    """``table`` written as an LZ4-compressed Arrow IPC stream on one thread and read back."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=65_536)
    return pa.ipc.open_stream(sink.getvalue(), options=pa.ipc.IpcReadOptions(use_threads=False)).read_all()


def sorted_copy(values: np.ndarray) -> np.ndarray:
    out = values.copy()
    out.sort()
    return out


def python_loop(n: int = LOOP) -> int:
    """Plain interpreter work: a loop with arithmetic, a branch and a dict update."""
    counts: dict[int, int] = {}
    total = 0
    for i in range(n):
        k = i % 97
        total += k * 3 if k & 1 else k
        counts[k] = counts.get(k, 0) + 1
    return total + len(counts)


def _best(work: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return best


def host_reference(repeat: int = 5) -> dict[str, Any]:
    """``host_reference_ms`` (the sum of the parts' best times) and ``host_reference_parts_ms``."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    table = reference_table(ROWS)
    values = np.random.default_rng(7).integers(0, 1 << 40, ROWS)
    parts = {
        "ipc_lz4": _best(lambda: ipc_round_trip(table), repeat),
        "sort": _best(lambda: sorted_copy(values), repeat),
        "python": _best(lambda: python_loop(LOOP), repeat),
    }
    return {"host_reference_ms": round(sum(parts.values()) * 1e3, 2),
            "host_reference_parts_ms": {k: round(v * 1e3, 2) for k, v in parts.items()}}
