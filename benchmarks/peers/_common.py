"""Shared command line of the peer runners: read Parquet, time the query, write the result."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: A runner takes the input Parquet path and returns the result table (or raises NotExpressible).
Runner = Callable[[Path], pa.Table]
#: Untimed preparation of a run, ``(suite, query, parquet) -> path handed to the runner``: input
#: conversion (Parquet -> CSV for PyFlink, Parquet -> Kafka topic for Quix Streams), JVM start, warm-up.
Prepare = Callable[[str, str, Path], Path]


class NotExpressible(Exception):
    """The peer cannot express this query (the message says why)."""


#: Inputs besides ``--input``, by table name (W4: ``quotes``), from ``--extra NAME=PATH``; set by ``main``.
_EXTRA: dict[str, Path] = {}


def extra(name: str) -> Path:
    """The Parquet file of the query's further input ``name`` (W4's ``quotes``), passed as ``--extra NAME=PATH``."""
    try:
        return _EXTRA[name]
    except KeyError:
        raise SystemExit(f"this query needs its {name!r} input: pass --extra {name}=PATH "
                         f"(benchmarks/compare.py does; got {sorted(_EXTRA) or 'none'})") from None


def _descendants(root: int) -> list[int]:
    """Live descendant pids of ``root`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for e in entries:
        try:
            with open(f"/proc/{e}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(e))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of this process plus its live child processes.

    ``time.process_time()`` alone misses work done in children: PyFlink's JVM is a child of the
    Python process, so a per-core figure from ``process_time`` would be meaningless for it.
    For a peer without children this equals ``process_time()``."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return total


def main(engine: str, version: str, runners: dict[tuple[str, str], Runner], prepare: Prepare | None = None) -> None:
    """Parse the peer command line, run one query and print one JSON line.

    ``prepare`` (optional) runs before the clock starts; its seconds are reported as
    ``setup_seconds``. ``cpu_seconds`` covers this process and its children (see
    ``tree_cpu_seconds``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                    help="a further input table (W4: quotes=PATH); repeatable")
    a = ap.parse_args()
    for item in a.extra:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--extra {item!r}: expected NAME=PATH, for example quotes=/data/quotes.parquet")
        _EXTRA[name] = Path(value)
    out: dict[str, Any] = {"engine": engine, "version": version, "suite": a.suite, "query": a.query}
    runner = runners.get((a.suite, a.query))
    if runner is None:
        out.update(status="no runner", reason=f"no {engine} runner written for {a.suite} {a.query} yet")
    else:
        try:
            path = a.input
            if prepare is not None:
                s0 = time.perf_counter()
                path = prepare(a.suite, a.query, a.input)
                out.update(setup_seconds=round(time.perf_counter() - s0, 3))
            t0, c0 = time.perf_counter(), tree_cpu_seconds()
            table = runner(path)
            out.update(status="ok", seconds=time.perf_counter() - t0, cpu_seconds=tree_cpu_seconds() - c0,
                       output_rows=table.num_rows)
            pq.write_table(table, a.output)
        except NotExpressible as e:
            out.update(status="not expressible", reason=str(e))
    print(json.dumps(out))
