"""Run the whole comparison: everstream and the peers on the same data, same machine.

Writes ``docs/benchmarks.md`` (table: events/s, events per CPU-second, peak RSS, correctness,
our/peer ratios), ``docs/benchmarks.png`` (needs the ``bench`` extra: matplotlib) and the raw
results to ``benchmarks/results.json``.

    python benchmarks/compare.py --finance-events 1000000 --nexmark-events 500000
    python benchmarks/compare.py --only finance:w4,nexmark:q3 --engines bytewax,pathway --repeat 3

``--only`` (cells ``suite:query``) and/or ``--engines`` run part of the grid and MERGE the results into
the existing results file (the same (suite, query, engine) entries are replaced), then rewrite the
report from the merged file. ``--repeat N`` runs each cell N times: the cell reports the median
events/s (and events/CPU-s), with the min–max spread in the JSON (``runs``, ``events_per_s_min``,
``events_per_s_max``, ``events_per_s_runs``) and compactly in the table. ``--results PATH`` writes
somewhere else than ``benchmarks/results.json`` (a scratch copy while testing a runner).

Every engine runs each query in a fresh process, one at a time. Peers read the same Parquet file
that everstream's input log was filled from; each result is checked against the DuckDB batch
reference. everstream's seconds are log -> engine -> log (input already in the embedded log);
peers' seconds are Parquet -> result in memory. A peer without a runner for a query, or whose
interpreter is missing, is reported as such.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from everstream.bench.harness import RssSampler, check_output, dataset, side_inputs
from everstream.bench.queries import SUITES, get
from everstream.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
VENV_PEERS = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"
VENV_FLINK = ROOT / "benchmarks" / ".venv-flink" / "bin" / "python"
RESULTS = ROOT / "benchmarks" / "results.json"

#: engine -> (interpreter, script args)
ENGINES: dict[str, tuple[Path | str, list[str]]] = {
    "polars": (sys.executable, [str(PEERS / "batch.py"), "polars"]),
    "duckdb": (sys.executable, [str(PEERS / "batch.py"), "duckdb"]),
    "bytewax": (VENV_PEERS, [str(PEERS / "bytewax_peer.py")]),
    "pyflink": (VENV_FLINK, [str(PEERS / "pyflink_peer.py")]),
    "pathway": (VENV_PEERS, [str(PEERS / "pathway_peer.py")]),
    "quixstreams": (VENV_PEERS, [str(PEERS / "quix_peer.py")]),
}

#: engine -> (interpreter, distribution whose version goes in the report header)
PEER_DISTS: dict[str, tuple[Path, str]] = {
    "bytewax": (VENV_PEERS, "bytewax"), "pyflink": (VENV_FLINK, "apache-flink"), "pathway": (VENV_PEERS, "pathway"),
    "quixstreams": (VENV_PEERS, "quixstreams"),
}


def _everstream(suite: str, query: str, events: int, data: Path, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-c", "from everstream.cli import main; main()", "bench", suite,
           "--workload" if suite == "finance" else "--query", query, "--events", str(events), "--json",
           "--data", str(data)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"engine": "everstream", "suite": suite, "query": query, "status": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"engine": "everstream", "suite": suite, "query": query, "status": "error",
                "reason": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no output"}
    r: dict[str, Any] = json.loads(lines[-1])
    return r


def _peer(engine: str, suite: str, query: str, parquet: Path, events: int, timeout: float,
          others: dict[str, Path] | None = None) -> dict[str, Any]:
    """Run one peer on one query in a fresh process; ``others``: further inputs (W4's quotes) as ``--extra``."""
    python, args = ENGINES[engine]
    base: dict[str, Any] = {"engine": engine, "suite": suite, "query": query, "events": events}
    if not Path(python).exists():
        return {**base, "status": "not installed", "reason": f"{python} missing (see docs/benchmarks.md)"}
    with tempfile.TemporaryDirectory(prefix="everstream-peer-") as tmp:
        out_path = Path(tmp) / "out.parquet"
        cmd = [str(python), *args, "--suite", suite, "--query", query, "--input", str(parquet),
               "--output", str(out_path)]
        for name, path in (others or {}).items():
            cmd += ["--extra", f"{name}={path}"]
        # own session: on timeout the whole process group goes (PyFlink's JVM is a child process)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        with RssSampler(proc.pid) as rss:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                return {**base, "status": f"timeout after {timeout:.0f} s", "peak_rss_mb": round(rss.peak, 1),
                        "reason": f"killed after {timeout:.0f} s (setup included; raise --timeout)"}
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            return {**base, "status": "error", "reason": _error_line(stderr, proc.returncode)}
        r: dict[str, Any] = {**base, **json.loads(lines[-1])}
        if r["status"] != "ok":
            return r
        got = pl.read_parquet(out_path)
    ok, detail = check_output(get(suite, query), got, parquet, others)
    secs, cpu = r["seconds"], r.get("cpu_seconds") or 0.0
    r.update(events=events, events_per_s=round(events / secs), events_per_cpu_s=round(events / cpu) if cpu else None,
             peak_rss_mb=round(rss.peak, 1), correct=ok, check=detail)
    return r


def _error_line(stderr: str, code: int) -> str:
    """The most telling stderr line of a failed peer: the last exception line, else the last line
    (a JVM's stack trace or a log line would otherwise hide the Python error)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln.split(":", 1)[0] or "Exception" in ln.split(":", 1)[0]:
            return ln[:500]
    return lines[-1][:500] if lines else f"exit {code}"


def parse_cells(spec: str) -> list[tuple[str, str]]:
    """``"finance:w4,nexmark:q3"`` -> ``[("finance", "w4"), ("nexmark", "q3")]``; ``suite:*`` (or a bare
    suite name) means every query of the suite everstream or a peer can run. Unknown names raise ConfigError."""
    cells: list[tuple[str, str]] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        suite, _, query = item.partition(":")
        suite, query = suite.strip().lower(), query.strip().lower()
        if suite not in SUITES:
            raise ConfigError(f"--only {item!r}: unknown suite {suite!r}; cells look like "
                              f"finance:w4 or nexmark:q3 (suites: {', '.join(SUITES)})")
        if query in ("", "*"):
            cells += [(suite, q) for q in SUITES[suite] if (suite, q) not in cells]
            continue
        get(suite, query)  # ConfigError naming the known queries
        if (suite, query) not in cells:
            cells.append((suite, query))
    if not cells:
        raise ConfigError(f"--only {spec!r} names no cell: use suite:query, for example finance:w4,nexmark:q3")
    return cells


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's result from ``runs`` repetitions (fresh process each).

    All runs ok: the run whose events/s is the median (``median_low``, so its other fields belong to a
    real run), with ``events_per_s`` and ``events_per_cpu_s`` replaced by the medians over all runs,
    ``peak_rss_mb`` the maximum, ``correct`` only if every run was correct (else the first wrong run's
    ``check``), ``host_reference_ms`` the median (when the runs carry it), and the spread: ``runs``,
    ``events_per_s_min``/``_max`` and ``events_per_s_runs``.
    Any run not ok: the first such run (a failure is not averaged away), with ``runs`` and
    ``failed_runs``."""
    if not runs:
        raise ConfigError("summarize_runs needs at least one run (--repeat must be >= 1)")
    if len(runs) == 1:
        return runs[0]
    bad = [r for r in runs if r.get("status") != "ok"]
    if bad:
        return {**bad[0], "runs": len(runs), "failed_runs": len(bad)}
    rates = [float(r["events_per_s"]) for r in runs]
    mid = statistics.median_low(rates)
    out = dict(next(r for r in runs if float(r["events_per_s"]) == mid))
    cpu = [float(r["events_per_cpu_s"]) for r in runs if r.get("events_per_cpu_s")]
    wrong = [r for r in runs if not r.get("correct")]
    out.update(runs=len(runs), events_per_s=round(statistics.median(rates)), events_per_s_min=round(min(rates)),
               events_per_s_max=round(max(rates)), events_per_s_runs=[round(x) for x in rates],
               events_per_cpu_s=round(statistics.median(cpu)) if cpu else None,
               peak_rss_mb=max(float(r.get("peak_rss_mb") or 0.0) for r in runs), correct=not wrong)
    hosts = [float(r["host_reference_ms"]) for r in runs if r.get("host_reference_ms")]
    if hosts:
        out["host_reference_ms"] = round(statistics.median(hosts), 2)
    if wrong:
        out["check"] = f"{len(wrong)} of {len(runs)} runs wrong; first: {wrong[0].get('check')}"
    return out


def check_sizes(saved: dict[str, Any] | None, suites: set[str], sizes: dict[str, int]) -> None:
    """ConfigError if a suite of ``suites`` was saved at another size than ``sizes`` says (checked before a
    partial run starts, so a mismatch costs no measurement)."""
    old_sizes: dict[str, int] = dict((saved or {}).get("sizes", {}))
    for suite in sorted(suites):
        if suite in old_sizes and old_sizes[suite] != sizes[suite]:
            raise ConfigError(f"cannot merge {suite} results for {sizes[suite]:,} events into a results file "
                              f"measured at {old_sizes[suite]:,}: pass --{suite}-events {old_sizes[suite]} "
                              "(or --results PATH for a separate file)")


def merge_results(saved: dict[str, Any] | None, new: list[dict[str, Any]], sizes: dict[str, int],
                  elapsed_s: float, day: dt.date) -> dict[str, Any]:
    """The results file after a partial run: ``saved``'s entries with those of ``new`` replacing the same
    (suite, query, engine); new cells are added. A suite whose size differs from the saved one cannot be
    merged (the report states one size per suite): ConfigError naming both sizes and the fix."""
    new = [{**r, "date": r.get("date", day.isoformat())} for r in new]  # each cell says when it was measured
    if saved is None:
        return {"date": day.isoformat(), "sizes": dict(sizes), "elapsed_s": elapsed_s, "results": new}
    touched = {r["suite"] for r in new}
    check_sizes(saved, touched, sizes)
    old_sizes: dict[str, int] = dict(saved.get("sizes", {}))
    keys = {(r["suite"], r["query"], r["engine"]) for r in new}
    kept = [{**r, "date": r.get("date", saved.get("date"))}  # older files dated the file, not its cells
            for r in saved.get("results", []) if (r["suite"], r["query"], r["engine"]) not in keys]
    merged_sizes = {**old_sizes, **{s: sizes[s] for s in touched}}
    for suite, n in sizes.items():
        merged_sizes.setdefault(suite, n)
    return {"date": day.isoformat(), "sizes": merged_sizes,
            "elapsed_s": float(saved.get("elapsed_s", 0.0)) + elapsed_s, "results": kept + new}


def _days(results: list[dict[str, Any]]) -> list[str]:
    """A line naming the day each row was measured, when partial runs merged rows of several days (this
    host's speed moves between days: compare engines within a row, not across rows); none for one day."""
    rows: dict[str, set[str]] = {}
    for r in results:
        if r.get("date"):
            rows.setdefault(f"{r['suite']} {r['query']}", set()).add(str(r["date"]))
    if len({d for days in rows.values() for d in days}) <= 1:
        return []
    said = "; ".join(f"{row} on {', '.join(sorted(days))}" for row, days in sorted(rows.items()))
    return [f"Rows were measured on different days (partial runs merged; compare engines within a row): {said}."]


def _hosts(results: list[dict[str, Any]]) -> list[str]:
    """A line with the host's speed at everstream's runs (``host_reference_ms``, the median over a cell's
    runs), when the results carry it: a figure that moved between reports with it is the host, not the code."""
    said = [f"{r['suite']} {r['query']} {r['host_reference_ms']:.0f} ms" for r in results
            if r["engine"] == "everstream" and r.get("host_reference_ms")]
    if not said:
        return []
    return ["Host speed at everstream's runs (`host_reference_ms` of everstream.bench.host, a fixed one-thread "
            f"workload; lower is faster): {'; '.join(sorted(said))}."]


def spread(r: dict[str, Any]) -> str:
    """The compact repeat spread of a cell, `` [1.10–1.31 M] ×3``; empty for a single run."""
    if int(r.get("runs") or 1) <= 1 or r.get("events_per_s_min") is None:
        return ""
    lo, hi = float(r["events_per_s_min"]), float(r["events_per_s_max"])
    unit, div = ("M", 1e6) if hi >= 1e6 else ("k", 1e3)
    digits = 2 if unit == "M" else 0
    return f" [{lo / div:.{digits}f}–{hi / div:.{digits}f} {unit}] ×{r['runs']}"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"


def _versions() -> dict[str, str]:
    import duckdb
    import pyarrow

    v = {"python": sys.version.split()[0], "polars": pl.__version__, "duckdb": duckdb.__version__,
         "pyarrow": pyarrow.__version__}
    for engine, (python, dist) in PEER_DISTS.items():
        if python.exists():
            got = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                                 capture_output=True, text=True, check=False)
            v[engine] = got.stdout.strip() or "not installed"
        else:
            v[engine] = "not installed"
    return v


def _machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM"


def write_report(results: list[dict[str, Any]], sizes: dict[str, int], out_md: Path, out_png: Path,
                 elapsed_s: float, day: dt.date | None = None) -> None:
    engines = ["everstream", *ENGINES]
    by = {(r["suite"], r["query"], r["engine"]): r for r in results}
    lines = [
        "# Benchmarks", "",
        f"Generated by `python benchmarks/compare.py` on {(day or dt.date.today()).isoformat()} "
        f"in {elapsed_s / 60:.1f} min.",
        f"Machine: {_machine()}; 1-minute load at start {os.getloadavg()[0]:.2f} (shared, noisy: treat "
        "differences under 1.5x as ties).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()) + ".",
        f"Sizes: finance {sizes['finance']:,} trades; Nexmark {sizes['nexmark']:,} events (Person:Auction:Bid "
        "1:3:46). One run per cell (fresh process), except cells showing `[min–max] ×N`: the median of N runs "
        "(`--repeat`), with the range of their ev/s.", *_days(results), *_hosts(results), "",
        "- **ev/s**: input events / wall seconds. everstream: log -> engine -> log with the input already in the "
        "embedded log; Polars, DuckDB, Bytewax: Parquet -> result in memory; PyFlink: CSV copy -> result written "
        "by the job (Flink's filesystem connector, CSV; the updating q4/q17 into a blackhole sink), with the rows "
        "for the check fetched after the clock (the wheel has no Parquet format; JVM start, warm-up job and the "
        "conversion are untimed); Pathway: CSV copy "
        "(static mode) -> result; Quix Streams: Kafka topic on the local broker -> result (producing it is untimed).",
        "- **ev/CPU-s**: input events / CPU seconds of the measured section (all threads, and child processes such "
        "as PyFlink's JVM): the per-core figure. Polars and DuckDB use both cores; Bytewax, Pathway and Quix Streams "
        "run one worker; PyFlink runs parallelism 1 (its JVM's compiler and GC threads still count). The Kafka "
        "broker's CPU is not counted for Quix Streams.",
        "- **RSS**: peak resident memory of the process tree (MB), sampled every 50 ms.",
        "- **ok**: the output equals the DuckDB batch reference (keys, counts and picked values exactly, "
        "sums within 1e-6 relative); `WRONG` says where it differs.",
        "- **ratio**: everstream ev/s ÷ the peer's ev/s (> 1: everstream faster).", "",
        "| suite | query | " + " | ".join(engines) + " | ratio vs " + " / ".join(ENGINES) + " |",
        "|---|---|" + "---|" * (len(engines) + 1),
    ]

    def cell(r: dict[str, Any] | None) -> str:
        """One table cell: ev/s (with the repeat spread), ev/CPU-s, RSS, correctness; or the status."""
        if r is None:
            return "–"
        if r.get("status") != "ok":
            return str(r.get("status"))
        ok = "ok" if r.get("correct") else "WRONG"
        return (f"{_fmt(r['events_per_s'])} ev/s{spread(r)}, {_fmt(r.get('events_per_cpu_s'))} ev/CPU-s, "
                f"{r['peak_rss_mb']:.0f} MB, {ok}")

    for suite, queries in SUITES.items():
        for name in queries:
            ours = by.get((suite, name, "everstream"))
            ratios = []
            for e in ENGINES:
                peer = by.get((suite, name, e))
                if ours and peer and ours.get("status") == "ok" and peer.get("status") == "ok":
                    ratios.append(f"{ours['events_per_s'] / peer['events_per_s']:.2f}")
                else:
                    ratios.append("–")
            lines.append(f"| {suite} | {name} | " + " | ".join(cell(by.get((suite, name, e))) for e in engines)
                         + " | " + " / ".join(ratios) + " |")
    lines += ["", *_geomeans(by), "", "## Not expressible yet (everstream)", ""]
    for suite, queries in SUITES.items():
        for q in queries.values():
            if q.build is None:
                lines.append(f"- {suite} {q.name} ({q.title}): {q.reason}")
    lines += ["", "## Failures and notes", ""]
    for r in results:
        if r.get("status") == "ok" and not r.get("correct"):
            lines.append(f"- {r['engine']} {r['suite']} {r['query']}: WRONG: {r.get('check')}")
        elif r.get("status") not in ("ok", "not expressible", None):
            lines.append(f"- {r['engine']} {r['suite']} {r['query']}: {r['status']} {r.get('reason', '')}".rstrip())
        elif r.get("status") == "not expressible" and r["engine"] != "everstream":
            lines.append(f"- {r['engine']} {r['suite']} {r['query']}: {r.get('reason')}")
    for suite, queries in SUITES.items():
        for q in queries.values():
            if q.notes:
                lines.append(f"- everstream {suite} {q.name}: {q.notes}")
    lines += ["", (ROOT / "benchmarks" / "NOTES.md").read_text() if (ROOT / "benchmarks" / "NOTES.md").exists()
              else ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines).rstrip() + "\n")
    _chart(results, engines, out_png)


#: nexmark/nexmark's published Flink V1 figures, per core (events/s): their geometric mean
FLINK_PUBLISHED_PER_CORE = 63_000


def _geomeans(by: dict[tuple[str, str, str], dict[str, Any]]) -> list[str]:
    """Geometric means over the Nexmark queries each engine answered correctly, vs Flink's published figure."""
    import math

    out = ["## Nexmark geometric means", "",
           f"Flink's published per-core geometric mean (nexmark/nexmark V1 table): about {FLINK_PUBLISHED_PER_CORE:,} "
           "ev/s. Each engine: over the queries it answered correctly in this run (so engines with fewer queries "
           "are not directly comparable); everstream also over exactly the queries the peer answered.", ""]
    ours = {q: r for (s, q, e), r in by.items() if s == "nexmark" and e == "everstream" and r.get("status") == "ok"
            and r.get("correct")}

    def gm(rs: list[dict[str, Any]], key: str) -> float:
        vals = [float(r[key]) for r in rs if r.get(key)]
        return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")

    if ours:
        cpu = gm(list(ours.values()), "events_per_cpu_s")
        out.append(f"- everstream: {len(ours)} queries, {_fmt(gm(list(ours.values()), 'events_per_s'))} ev/s, "
                   f"{_fmt(cpu)} ev/CPU-s = {cpu / FLINK_PUBLISHED_PER_CORE:.1f}x Flink's published per-core mean")
    for e in ENGINES:
        theirs = {q: r for (s, q, en), r in by.items() if s == "nexmark" and en == e and r.get("status") == "ok"
                  and r.get("correct")}
        both = sorted(set(theirs) & set(ours))
        if not both:
            continue
        mine, peer = gm([ours[q] for q in both], "events_per_s"), gm([theirs[q] for q in both], "events_per_s")
        out.append(f"- {e}: {len(both)} queries in common ({' '.join(both)}): {_fmt(peer)} ev/s; everstream "
                   f"{_fmt(mine)} ev/s on the same queries: ratio {mine / peer:.2f}")
    return out


def _chart(results: list[dict[str, Any]], engines: list[str], out_png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[bench]'): no chart", file=sys.stderr)
        return
    cases = [(s, n) for s, qs in SUITES.items() for n, q in qs.items() if q.build is not None]
    fig, ax = plt.subplots(figsize=(max(8, len(cases) * 0.9), 4.5))
    width = 0.8 / len(engines)
    by = {(r["suite"], r["query"], r["engine"]): r for r in results}
    for i, e in enumerate(engines):
        ys = []
        for s, n in cases:
            r = by.get((s, n, e))
            ys.append(r["events_per_s"] if r and r.get("status") == "ok" else 0)
        xs = [j + i * width for j in range(len(cases))]
        bars = ax.bar(xs, ys, width, label=e)
        for b, (s, n) in zip(bars, cases, strict=True):
            r = by.get((s, n, e))
            if r and r.get("status") == "ok" and not r.get("correct"):
                ax.annotate("✗", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", color="red")
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))], [n.upper() for _, n in cases])
    ax.set_ylabel("input events / s (log)")
    ax.set_title("everstream vs peers, same data and machine (✗ = wrong result)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finance-events", type=int, default=1_000_000)
    ap.add_argument("--nexmark-events", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / ".data")
    ap.add_argument("--engines", default=None,
                    help=f"comma-separated subset of everstream,{','.join(ENGINES)} (default: all); a subset "
                         "merges into --results")
    ap.add_argument("--only", default=None, metavar="CELLS",
                    help="run only these cells, e.g. finance:w4,nexmark:q3 (suite:* = a whole suite); "
                         "merges into --results")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the cell reports the median")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run before it is reported as timeout")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="the raw results file (read for merging and by --report-only, then written)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the report (default docs/benchmarks.md; with --results PATH: PATH with suffix .md)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the --results file")
    a = ap.parse_args()
    if a.out is None:
        a.out = ROOT / "docs" / "benchmarks.md" if a.results.resolve() == RESULTS else a.results.with_suffix(".md")
    if a.report_only:
        saved = json.loads(a.results.read_text())
        write_report(saved["results"], saved["sizes"], a.out, a.out.with_suffix(".png"), saved["elapsed_s"],
                     dt.date.fromisoformat(saved["date"]))
        return
    if a.repeat < 1:
        raise SystemExit(f"--repeat {a.repeat}: must be at least 1")
    known = ["everstream", *ENGINES]
    engines = [e.strip() for e in (a.engines or ",".join(known)).split(",") if e.strip()]
    unknown = [e for e in engines if e not in known]
    if unknown:
        raise SystemExit(f"--engines: unknown {unknown}; use some of {','.join(known)}")
    try:
        cells = set(parse_cells(a.only)) if a.only else None
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    partial = cells is not None or a.engines is not None
    sizes = {"finance": a.finance_events, "nexmark": a.nexmark_events}
    previous = json.loads(a.results.read_text()) if partial and a.results.exists() else None
    try:
        check_sizes(previous, {s for s, _ in cells} if cells is not None else set(SUITES), sizes)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    for suite, queries in SUITES.items():
        for name, q in queries.items():
            if q.build is None or (cells is not None and (suite, name) not in cells):
                continue
            parquet = dataset(suite, sizes[suite], a.seed, a.data, q.tables[0])  # W5: the cards table
            others = side_inputs(q, parquet, sizes[suite], a.seed, a.data)  # W4: quotes
            for engine in engines:
                runs = [(_everstream(suite, name, sizes[suite], a.data, a.timeout) if engine == "everstream"
                         else _peer(engine, suite, name, parquet, sizes[suite], a.timeout, others))
                        for _ in range(a.repeat)]
                r = summarize_runs(runs)
                results.append(r)
                print(json.dumps({k: r[k] for k in ("engine", "suite", "query", "status", "events_per_s",
                                                     "events_per_s_min", "events_per_s_max", "peak_rss_mb",
                                                     "correct", "check", "reason") if k in r}), flush=True)
    elapsed = time.perf_counter() - t_start
    day = dt.date.today()
    try:
        saved = merge_results(previous, results, sizes, elapsed, day)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps(saved, indent=1))
    write_report(saved["results"], saved["sizes"], a.out, a.out.with_suffix(".png"), saved["elapsed_s"], day)
    print(f"wrote {a.results}, {a.out} and {a.out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
