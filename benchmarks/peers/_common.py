"""Shared command line of the peer runners: read Parquet, time the query, write the result."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: A runner takes the input Parquet path and returns the result table (or raises NotExpressible).
Runner = Callable[[Path], pa.Table]


class NotExpressible(Exception):
    """The peer cannot express this query (the message says why)."""


def main(engine: str, version: str, runners: dict[tuple[str, str], Runner]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    a = ap.parse_args()
    out: dict[str, Any] = {"engine": engine, "version": version, "suite": a.suite, "query": a.query}
    runner = runners.get((a.suite, a.query))
    if runner is None:
        out.update(status="no runner", reason=f"no {engine} runner written for {a.suite} {a.query} yet")
    else:
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            table = runner(a.input)
            out.update(status="ok", seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                       output_rows=table.num_rows)
            pq.write_table(table, a.output)
        except NotExpressible as e:
            out.update(status="not expressible", reason=str(e))
    print(json.dumps(out))
