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
    workload: Annotated[str, typer.Option("--workload", "-w", help="w1, w2, w3, w4, w5")],
    events: _Events = 1_000_000, as_json: _Json = False, seed: _Seed = 7, data: _Data = None,
) -> None:
    """Finance workload over seeded trades: W1 filter-project, W2 1-minute bars, W3 sliding windows,
    W4 as-of join of trades and quotes, W5 card-testing pattern (CEP) over card authorizations."""
    _run("finance", workload, events, seed, data, as_json)


@bench_app.command("nexmark")
def nexmark(
    query: Annotated[str, typer.Option(
        "--query", "-q", help="q0, q1, q2, q3, q4, q5, q7, q8, q11, q12, q14, q17, q20, q21, q22 (the others "
                              "report 'not expressible' with the reason)")],
    events: _Events = 1_000_000, as_json: _Json = False, seed: _Seed = 7, data: _Data = None,
) -> None:
    """A Nexmark query over seeded Person/Auction/Bid events (1:3:46); the joins q3, q4, q8, q20 split the
    one event stream into persons, auctions and bids and are checked against DuckDB's regular joins."""
    _run("nexmark", query, events, seed, data, as_json)


@bench_app.command("exactly-once")
def exactly_once(
    events: _Events = 1_000_000, as_json: _Json = False, seed: _Seed = 7,
    restore_keys: Annotated[int, typer.Option(help="Open windows (keys) of the restore measurement; 0: skip")]
    = 1_000_000,
    repeat: Annotated[int, typer.Option(help="Throughput runs per guarantee (best one counts)")] = 2,
) -> None:
    """Exactly-once vs at-least-once on the bars workload, commit latency p99, restore time of 1 M keys."""
    from everstream.bench.exactly_once import run as run_eo

    if not as_json:
        _err.print(f"exactly-once vs at-least-once over {events:,} trades, restore of {restore_keys:,} keys ...")
    result = run_eo(events, seed=seed, restore_keys=restore_keys, repeat=repeat)
    if as_json:
        print(json.dumps(result))
        return
    _err.print(
        f"at-least-once {result['alo_events_per_s']:,} events/s, exactly-once {result['eo_events_per_s']:,} "
        f"events/s ({result['eo_vs_alo']:.0%}); latency p99 {result['eo_latency_p99_ms']} ms at a 10 ms commit "
        f"interval; restore of {result['restore_keys']:,} keys {result['restore_seconds_1m_keys']} s; "
        f"same result: {result['same_result']}"
    )


@bench_app.command("ml")
def ml(
    days: Annotated[int, typer.Option(help="Simulated days of payments")] = 20,
    per_day: Annotated[int, typer.Option("--per-day", help="Transactions per simulated day")] = 25_000,
    drift_day: Annotated[int, typer.Option("--drift-day", help="Day the fraud tactics change")] = 10,
    rate: Annotated[int, typer.Option(help="Live transactions per second for the latency measurement")] = 5_000,
    plot: Annotated[Path, typer.Option(help="Where to write the PNG of AUC-PR per day")] = Path("ml_auc_pr.png"),
    as_json: _Json = False, seed: _Seed = 7,
) -> None:
    """Fraud models on fresh data: features replay, retraining with drift, scoring throughput and latency."""
    from everstream.bench.ml import run as run_ml

    if not as_json:
        _err.print(f"running ml over {days} days x {per_day:,} payments (drift on day {drift_day}) ...")
    result = run_ml(days=days, per_day=per_day, drift_day=drift_day, rate=rate, seed=seed, plot=plot)
    if as_json:
        print(json.dumps(result))
        return
    _err.print(f"scoring {result['score_events_per_s']:,} events/s (step alone {result['score_step_events_per_s']:,}), "
               f"p99 {result['score_latency_p99_ms']} ms at {rate:,}/s; retrain 1M rows "
               f"{result['retrain_seconds_1m_rows']} s; AUC-PR model {result['auc_pr_model']} vs rules "
               f"{result['auc_pr_rules']}; plot {result.get('plot')}")
