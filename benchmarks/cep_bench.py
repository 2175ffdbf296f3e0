"""CEP benchmark: the card-testing pattern (W5) — the match operator alone, and log -> engine -> log.

1. **Operator alone**: ``bench.data.cards(n)`` (card authorizations, arriving out of order by up to
   2 s) as in-memory Polars batches of ``--batch`` rows, each pushed through the match operator
   (``process``, then ``advance`` to the batch's max event time - 2 s) as the runtime does, with no
   log. Events per second of wall time and of CPU time, best of ``--repeat``. Three settings: the
   step's default (time-outs to a side topic: the NFA is fed eagerly), ``_no_timeouts`` (as W5 and
   the peers run it: lazy per-key evaluation, :mod:`everstream.cep.parked`) and
   ``current_no_timeouts_eager`` (the same with lazy evaluation turned off, ``lazy=False``).
2. **Baseline in the same run**: the same loop over the ``everstream/cep`` package as it stands at
   ``--baseline-rev`` (default ``HEAD``: the committed code, read with ``git show`` into a temporary
   package), interleaved with the current code's repeats, so before/after share the machine's load.
   Both must give the same matches.
3. **log -> engine -> log** (``--log``): ``everstream bench finance --workload w5`` (embedded log,
   1 partition, checked against the plain-Python reference) for the current code.

Prints one JSON object.

    python benchmarks/cep_bench.py --events 1000000 --log
    python benchmarks/cep_bench.py --events 200000 --baseline-rev none --profile   # cProfile top 25
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl

from everstream.bench import data
from everstream.engine import plan as p
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.operators import Ctx
from everstream.engine.testing import FakeServices
from everstream.engine.time import MAX_TIME
from everstream.finance.patterns import card_testing

ROOT = Path(__file__).resolve().parent.parent
DELAY_MS = 2_000


def baseline_package(rev: str, directory: Path) -> ModuleType:
    """``everstream/cep`` at git revision ``rev`` as an importable package ``cep_baseline`` (its
    imports of ``everstream.cep.*`` point at itself; the rest of everstream is the current code)."""
    pkg = directory / "cep_baseline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:everstream/cep"], check=True,
                            capture_output=True, text=True).stdout.split()
    for name in (n for n in listed if n.endswith(".py") and n != "__init__.py"):  # the modules at rev
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:everstream/cep/{name}"], check=True,
                             capture_output=True, text=True).stdout
        (pkg / name).write_text(src.replace("everstream.cep.", "cep_baseline."))
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    return importlib.import_module("cep_baseline.operator")


def batches(events: int, seed: int, batch: int) -> list[pl.DataFrame]:
    table, _ = data.cards(events, seed=seed)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    df = df.with_columns(pl.col("ts").dt.epoch("ms").alias(EVENT_TIME))
    return [df.slice(i, batch) for i in range(0, df.height, batch)]


def run_operator(operator_module: ModuleType, pattern_module: ModuleType | None,
                 parts: list[pl.DataFrame], timeouts: bool = True,
                 lazy: bool | None = None) -> tuple[float, float, pl.DataFrame]:
    """Wall and CPU seconds of the match operator over ``parts``; its output (sorted, comparable).
    ``lazy``: passed to the operator (None: its default; the baseline may not know the argument)."""
    pattern = card_testing()
    if pattern_module is not None:  # rebuild the pattern with the baseline's own classes
        pattern = pattern_module.pattern("small").where(pl.col("amount") < 2.0).times(3, None) \
            .followed_by("large").where(pl.col("amount") > 500.0).within("10m") \
            .after_match(pattern_module.skip_past_last_event())
    step = p.Match("card_testing", ("cards",), pattern=pattern, by=("card",), timeouts=timeouts)  # W5: True
    services = FakeServices("bench", late="keep", dead="fail")
    op = operator_module.MatchOp(step, services) if lazy is None else operator_module.MatchOp(step, services, lazy=lazy)
    outs: list[pl.DataFrame] = []
    seen = -MAX_TIME
    t0, c0 = time.perf_counter(), time.process_time()
    for part in parts:
        op.process(part, Ctx("cards", 0))
        seen = max(seen, int(part.get_column(EVENT_TIME).max()))  # type: ignore[arg-type]
        got = op.advance(seen - DELAY_MS)
        if got is not None:
            outs.append(got)
    got = op.advance(MAX_TIME)
    if got is not None:
        outs.append(got)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = pl.concat(outs) if outs else pl.DataFrame()
    if out.height:
        out = out.select("card", "match_start", "match_end", n_small=pl.col("small").list.len()).sort(
            "card", "match_start")
    return wall, cpu, out


def log_engine_log(args: argparse.Namespace, impls: dict[str, tuple[ModuleType, ModuleType | None]]) -> dict[str, Any]:
    """W5 as ``everstream bench finance --workload w5`` runs it, once per implementation per repeat
    (the baseline's operator is swapped in through ``Pattern.operator``, the hook the runtime calls)."""
    from everstream.bench.harness import run as bench_run
    from everstream.cep.pattern import Pattern

    hook = Pattern.operator
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.log_repeat):
        for name, (mod, _pat) in impls.items():
            if name != "current":
                def swapped(self: Any, step: Any, services: Any, *, multi_source: bool, time_zone: Any,
                            _mod: ModuleType = mod) -> Any:
                    return _mod.MatchOp(step, services, multi_source=multi_source, time_zone=time_zone)

                Pattern.operator = swapped  # type: ignore[method-assign]
            try:
                r = bench_run("finance", "w5", args.events, seed=args.seed)
            finally:
                Pattern.operator = hook  # type: ignore[method-assign]
            row = {k: r[k] for k in ("events_per_s", "events_per_cpu_s", "seconds", "correct", "output_rows")}
            if name not in best or row["seconds"] < best[name]["seconds"]:
                best[name] = row
    out: dict[str, Any] = {f"w5_log_engine_log_{name}": row for name, row in best.items()}
    if "baseline" in best:
        out["w5_speedup_vs_baseline"] = round(best["baseline"]["seconds"] / best["current"]["seconds"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=250_000,
                    help="rows per batch (the runtime merges polled batches up to max_batch_events=250k)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-rev", default="HEAD", help="git revision of everstream/cep to compare with; none: skip")
    ap.add_argument("--log", action="store_true", help="also run log -> engine -> log (everstream bench finance w5)")
    ap.add_argument("--log-repeat", type=int, default=2, help="runs of W5 log -> engine -> log per implementation")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one operator run to stderr")
    args = ap.parse_args()

    from everstream.cep import operator as current

    parts = batches(args.events, args.seed, args.batch)
    n = sum(b.height for b in parts)
    result: dict[str, Any] = {"benchmark": "cep", "pattern": "card_testing (W5)", "events": n, "batch": args.batch,
                              "load_avg_1m": round(os.getloadavg()[0], 2)}
    impls: dict[str, tuple[ModuleType, ModuleType | None]] = {"current": (current, None)}
    with tempfile.TemporaryDirectory(prefix="cep-bench-") as tmp:
        if args.baseline_rev != "none":
            base = baseline_package(args.baseline_rev, Path(tmp))
            impls["baseline"] = (base, importlib.import_module("cep_baseline.pattern"))
        # with time-outs: the match step's default (a side topic of timed-out partial matches, so the NFA is
        # fed eagerly); W5 and the peers report matches only (timeouts=False: lazy per-key evaluation)
        cases: list[tuple[str, ModuleType, ModuleType | None, bool, bool | None]] = [
            (name, mod, pat_mod, True, None) for name, (mod, pat_mod) in impls.items()]
        cases += [(f"{name}_no_timeouts", mod, pat_mod, False, None) for name, (mod, pat_mod) in impls.items()]
        cases.append(("current_no_timeouts_eager", current, None, False, False))  # lazy evaluation off
        runs: dict[str, list[tuple[float, float]]] = {c[0]: [] for c in cases}
        outputs: dict[str, pl.DataFrame] = {}
        for _ in range(args.repeat):
            for name, mod, pat_mod, timeouts, lazy in cases:
                wall, cpu, out = run_operator(mod, pat_mod, parts, timeouts, lazy)
                runs[name].append((wall, cpu))
                outputs[name] = out
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            run_operator(current, None, parts)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats(os.environ.get("CEP_PROFILE_SORT", "cumulative")).print_stats(40)
            print(s.getvalue(), file=sys.stderr)
    for name, rs in runs.items():
        wall = min(w for w, _ in rs)
        cpu = min(c for _, c in rs)
        result[f"operator_{name}"] = {"seconds": round(wall, 4), "events_per_s": round(n / wall),
                                      "events_per_cpu_s": round(n / cpu), "matches": outputs[name].height,
                                      "all_seconds": [round(w, 4) for w, _ in rs],
                                      "all_cpu_seconds": [round(c, 4) for _, c in rs]}
    result["speedup_lazy_vs_eager_no_timeouts"] = round(
        result["operator_current_no_timeouts_eager"]["seconds"] / result["operator_current_no_timeouts"]["seconds"], 2)
    result["lazy_same_matches"] = outputs["current_no_timeouts_eager"].equals(outputs["current_no_timeouts"])
    if "baseline" in outputs:
        result["baseline_rev"] = args.baseline_rev
        result["same_matches"] = all(o.equals(outputs["current"]) for o in outputs.values())
        for suffix in ("", "_no_timeouts"):
            result[f"speedup_vs_baseline{suffix}"] = round(result[f"operator_baseline{suffix}"]["seconds"]
                                                           / result[f"operator_current{suffix}"]["seconds"], 2)
        if args.log:
            result.update(log_engine_log(args, impls))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
