"""Run the whole comparison: everstream and the peers on the same data, same machine.

Writes ``docs/benchmarks.md`` (table: events/s, events per CPU-second, peak RSS, correctness,
our/peer ratios), ``docs/benchmarks.png`` (needs the ``bench`` extra: matplotlib) and the raw
results to ``benchmarks/results.json``.

    python benchmarks/compare.py --finance-events 1000000 --nexmark-events 500000

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from everstream.bench.harness import RssSampler, check_output, dataset, side_inputs
from everstream.bench.queries import SUITES, get

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
VENV_PEERS = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"
VENV_FLINK = ROOT / "benchmarks" / ".venv-flink" / "bin" / "python"

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
        "1:3:46). One run per cell (fresh process).", "",
        "- **ev/s**: input events / wall seconds. everstream: log -> engine -> log with the input already in the "
        "embedded log; Polars, DuckDB, Bytewax: Parquet -> result in memory; PyFlink: CSV copy -> result in memory "
        "(the wheel has no Parquet format; JVM start, warm-up job and the conversion are untimed); Pathway: CSV copy "
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
        if r is None:
            return "–"
        if r.get("status") != "ok":
            return str(r.get("status"))
        ok = "ok" if r.get("correct") else "WRONG"
        return (f"{_fmt(r['events_per_s'])} ev/s, {_fmt(r.get('events_per_cpu_s'))} ev/CPU-s, "
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
    ap.add_argument("--engines", default=",".join(["everstream", *ENGINES]))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run before it is reported as timeout")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from benchmarks/results.json")
    a = ap.parse_args()
    if a.report_only:
        saved = json.loads((ROOT / "benchmarks" / "results.json").read_text())
        write_report(saved["results"], saved["sizes"], a.out, a.out.with_suffix(".png"), saved["elapsed_s"],
                     dt.date.fromisoformat(saved["date"]))
        return
    sizes = {"finance": a.finance_events, "nexmark": a.nexmark_events}
    engines = a.engines.split(",")
    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    for suite, queries in SUITES.items():
        for name, q in queries.items():
            if q.build is None:
                continue
            parquet = dataset(suite, sizes[suite], a.seed, a.data, q.tables[0])  # W5: the cards table
            others = side_inputs(q, parquet, sizes[suite], a.seed, a.data)  # W4: quotes
            for e in engines:
                r = (_everstream(suite, name, sizes[suite], a.data, a.timeout) if e == "everstream"
                     else _peer(e, suite, name, parquet, sizes[suite], a.timeout, others))
                results.append(r)
                print(json.dumps({k: r.get(k) for k in ("engine", "suite", "query", "status", "events_per_s",
                                                         "peak_rss_mb", "correct", "check")}), flush=True)
    elapsed = time.perf_counter() - t_start
    saved = {"date": dt.date.today().isoformat(), "sizes": sizes, "elapsed_s": elapsed, "results": results}
    (ROOT / "benchmarks" / "results.json").write_text(json.dumps(saved, indent=1))
    write_report(results, sizes, a.out, a.out.with_suffix(".png"), elapsed)
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
