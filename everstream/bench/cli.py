"""``everstream bench finance|nexmark``: run one benchmark query and print its result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

bench_app = typer.Typer(help="Benchmarks: finance workloads and Nexmark, checked against DuckDB.",
                        no_args_is_help=True)
_err = Console(stderr=True, soft_wrap=True)

_Events = Annotated[int, typer.Option("--events", "-n", help="Number of input events")]
_Json = Annotated[bool, typer.Option("--json", help="Print one JSON object")]
_Seed = Annotated[int, typer.Option(help="Generator seed")]
_Data = Annotated[Path | None, typer.Option("--data", help="Directory for the generated Parquet input "
                                            "(default: $EVERSTREAM_BENCH_DATA or benchmarks/.data)")]


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    if result["status"] != "ok":
        _err.print(f"{result['suite']} {result['query']}: {result['status']}: {result['reason']}")
        return
    mark = "[green]correct[/]" if result["correct"] else f"[red]WRONG[/] ({result['check']})"
    _err.print(f"{result['suite']} {result['query']} ({result['title']}): {result['events']:,} events in "
               f"{result['seconds']:.3f} s = {result['events_per_s']:,} events/s, peak RSS "
               f"{result['peak_rss_mb']:.0f} MB, {mark}")


def _run(suite: str, query: str, events: int, seed: int, data: Path | None, as_json: bool) -> None:
    from everstream.bench.harness import run

    if not as_json:
        _err.print(f"running {suite} {query} over {events:,} events ...")
    result = run(suite, query, events, seed=seed, data_dir=data)
    _report(result, as_json)
    if result["status"] == "ok" and not result["correct"]:
        raise typer.Exit(1)


@bench_app.command("finance")
def finance(
    workload: Annotated[str, typer.Option("--workload", "-w", help="w1, w2, w3 (w4, w5: not yet expressible)")],
    events: _Events = 1_000_000, as_json: _Json = False, seed: _Seed = 7, data: _Data = None,
) -> None:
    """Finance workload over seeded trades: W1 filter-project, W2 1-minute bars, W3 sliding windows."""
    _run("finance", workload, events, seed, data, as_json)


@bench_app.command("nexmark")
def nexmark(
    query: Annotated[str, typer.Option("--query", "-q", help="q0, q1, q2, q5, q7, q11, q12, q14, q17, q21, q22")],
    events: _Events = 1_000_000, as_json: _Json = False, seed: _Seed = 7, data: _Data = None,
) -> None:
    """A Nexmark query over seeded Person/Auction/Bid events (1:3:46)."""
    _run("nexmark", query, events, seed, data, as_json)
