"""benchmarks/compare.py's partial runs: ``--only`` cell parsing, merging into the results file,
``--repeat`` medians and spreads, and ``--report-only`` over a merged file (no peer venv needed:
the functions are pure; the CLI test only rewrites a report from a scratch results file)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from everstream.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "compare.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compare", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


compare = _load()
DAY = dt.date(2026, 1, 2)


def _r(engine: str, query: str, eps: float, *, suite: str = "finance", correct: bool = True,
       status: str = "ok", rss: float = 100.0, cpu: float | None = None) -> dict[str, Any]:
    return {"engine": engine, "suite": suite, "query": query, "status": status, "events": 1000,
            "events_per_s": eps, "events_per_cpu_s": cpu if cpu is not None else eps / 2, "peak_rss_mb": rss,
            "correct": correct, "check": "ok" if correct else "column 'bid' differs"}


# ---------------------------------------------------------------------------------------------- cells

def test_parse_cells_names_suites_and_queries() -> None:
    assert compare.parse_cells("finance:w4, nexmark:Q3,finance:w4") == [("finance", "w4"), ("nexmark", "q3")]
    whole = compare.parse_cells("finance:*")
    assert whole == [("finance", q) for q in ("w1", "w2", "w3", "w4", "w5")]
    assert compare.parse_cells("finance") == whole


@pytest.mark.parametrize("spec, needle", [("bogus:w1", "unknown suite 'bogus'"), ("finance:w9", "w9"),
                                          (" , ", "names no cell")])
def test_parse_cells_rejects_bad_cells(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        compare.parse_cells(spec)


# --------------------------------------------------------------------------------------------- repeat

def test_single_run_is_unchanged() -> None:
    r = _r("bytewax", "w4", 1234.0)
    assert compare.summarize_runs([r]) is r


def test_median_of_three_with_spread() -> None:
    runs = [_r("bytewax", "w4", 300.0, rss=90.0, cpu=10.0), _r("bytewax", "w4", 100.0, rss=120.0, cpu=30.0),
            _r("bytewax", "w4", 200.0, rss=80.0, cpu=20.0)]
    got = compare.summarize_runs(runs)
    assert (got["events_per_s"], got["events_per_s_min"], got["events_per_s_max"]) == (200, 100, 300)
    assert got["events_per_s_runs"] == [300, 100, 200]
    assert got["events_per_cpu_s"] == 20 and got["peak_rss_mb"] == 120.0 and got["runs"] == 3
    assert got["correct"] is True
    assert runs[2]["events_per_s"] == 200.0 and "runs" not in runs[2]  # inputs not mutated


def test_one_wrong_run_makes_the_cell_wrong() -> None:
    got = compare.summarize_runs([_r("pathway", "w4", 10.0), _r("pathway", "w4", 20.0, correct=False),
                                  _r("pathway", "w4", 30.0)])
    assert got["correct"] is False and "1 of 3 runs wrong" in got["check"]


def test_a_failed_run_is_not_averaged_away() -> None:
    bad = _r("quixstreams", "w4", 0.0, status="timeout after 240 s")
    got = compare.summarize_runs([_r("quixstreams", "w4", 10.0), bad])
    assert got["status"] == "timeout after 240 s" and got["failed_runs"] == 1 and got["runs"] == 2


def test_no_runs_is_an_error() -> None:
    with pytest.raises(ConfigError, match="at least one run"):
        compare.summarize_runs([])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=9))
def test_median_matches_statistics(rates: list[int]) -> None:
    got = compare.summarize_runs([_r("bytewax", "w5", float(x)) for x in rates])
    assert got["events_per_s"] == round(statistics.median(rates))
    if len(rates) > 1:
        assert (got["events_per_s_min"], got["events_per_s_max"]) == (min(rates), max(rates))
        assert got["events_per_s_min"] <= got["events_per_s"] <= got["events_per_s_max"]
        # events per CPU-second: its own median over the runs
        assert got["events_per_cpu_s"] == round(statistics.median([x / 2 for x in rates]))


def test_spread_text() -> None:
    assert compare.spread(_r("bytewax", "w4", 5.0)) == ""
    r = compare.summarize_runs([_r("b", "w4", 1_100_000.0), _r("b", "w4", 1_310_000.0), _r("b", "w4", 1.2e6)])
    assert compare.spread(r) == " [1.10–1.31 M] ×3"
    r = compare.summarize_runs([_r("b", "w4", 150_000.0), _r("b", "w4", 162_400.0)])
    assert compare.spread(r) == " [150–162 k] ×2"


# ---------------------------------------------------------------------------------------------- merge

def _saved() -> dict[str, Any]:
    return {"date": "2026-01-01", "sizes": {"finance": 1000, "nexmark": 500}, "elapsed_s": 60.0,
            "results": [_r("everstream", "w4", 9.0), _r("bytewax", "w4", 1.0), _r("bytewax", "w5", 2.0),
                        _r("bytewax", "q3", 3.0, suite="nexmark")]}


def test_merge_replaces_same_cells_and_keeps_the_rest() -> None:
    new = [_r("bytewax", "w4", 11.0), _r("pathway", "w4", 5.0)]
    got = compare.merge_results(_saved(), new, {"finance": 1000, "nexmark": 7}, 30.0, DAY)
    by = {(r["suite"], r["query"], r["engine"]): r["events_per_s"] for r in got["results"]}
    assert by == {("finance", "w4", "everstream"): 9.0, ("finance", "w4", "bytewax"): 11.0,
                  ("finance", "w5", "bytewax"): 2.0, ("nexmark", "q3", "bytewax"): 3.0,
                  ("finance", "w4", "pathway"): 5.0}
    assert len(got["results"]) == 5
    # untouched suites keep their saved size even if the command line said otherwise
    assert got["sizes"] == {"finance": 1000, "nexmark": 500}
    assert got["elapsed_s"] == 90.0 and got["date"] == "2026-01-02"
    # each cell says when it was measured: the new ones today, the kept ones the saved file's day
    days = {(r["query"], r["engine"]): r["date"] for r in got["results"]}
    assert days[("w4", "bytewax")] == days[("w4", "pathway")] == "2026-01-02"
    assert days[("w4", "everstream")] == days[("w5", "bytewax")] == "2026-01-01"


def test_merge_into_nothing_is_the_new_run() -> None:
    new = [_r("bytewax", "w4", 11.0)]
    got = compare.merge_results(None, new, {"finance": 1000, "nexmark": 500}, 3.0, DAY)
    assert got == {"date": "2026-01-02", "sizes": {"finance": 1000, "nexmark": 500}, "elapsed_s": 3.0,
                   "results": [{**new[0], "date": "2026-01-02"}]}


def test_host_reference_is_the_cells_median_and_reported_for_everstream() -> None:
    runs = [{**_r("everstream", "w4", float(x)), "host_reference_ms": h} for x, h in ((1e6, 90.0), (2e6, 80.0),
                                                                                   (3e6, 200.0))]
    cell = compare.summarize_runs(runs)
    assert cell["host_reference_ms"] == 90.0  # the median, not the median run's own (80)
    peer = {**_r("polars", "w4", 1.0), "host_reference_ms": 5.0}  # only everstream's runs measure it
    assert compare._hosts([cell, peer]) == [
        "Host speed at everstream's runs (`host_reference_ms` of everstream.bench.host, a fixed one-thread "
        "workload; lower is faster): finance w4 90 ms."]
    assert compare._hosts([_r("everstream", "w4", 1.0)]) == []
    assert "host_reference_ms" not in compare.summarize_runs([_r("b", "w4", 1.0), _r("b", "w4", 2.0)])


def test_report_names_the_days_only_when_rows_differ() -> None:
    one = [{**_r("bytewax", "w4", 1.0), "date": "2026-01-02"}, {**_r("polars", "w5", 1.0), "date": "2026-01-02"}]
    assert compare._days(one) == []
    two = [*one, {**_r("everstream", "w4", 1.0), "date": "2026-01-01"}]
    assert compare._days(two) == [
        "Rows were measured on different days (partial runs merged; compare engines within a row): "
        "finance w4 on 2026-01-01, 2026-01-02; finance w5 on 2026-01-02."]


def test_merge_refuses_a_different_size() -> None:
    with pytest.raises(ConfigError, match=r"--finance-events 1000"):
        compare.merge_results(_saved(), [_r("bytewax", "w4", 1.0)], {"finance": 2000, "nexmark": 500}, 1.0, DAY)
    with pytest.raises(ConfigError, match="measured at 500"):
        compare.check_sizes(_saved(), {"nexmark"}, {"finance": 1000, "nexmark": 999})
    compare.check_sizes(_saved(), {"finance"}, {"finance": 1000, "nexmark": 999})  # nexmark not touched


# ----------------------------------------------------------------------------------------------- CLI

def test_report_only_reads_the_results_option(tmp_path: Path) -> None:
    saved = compare.merge_results(_saved(), [compare.summarize_runs(
        [_r("bytewax", "w4", 150_000.0), _r("bytewax", "w4", 162_400.0), _r("bytewax", "w4", 155_000.0)])],
        {"finance": 1000, "nexmark": 500}, 1.0, DAY)
    results = tmp_path / "scratch.json"
    results.write_text(json.dumps(saved))
    subprocess.run([sys.executable, str(SCRIPT), "--report-only", "--results", str(results)], check=True,
                   cwd=ROOT, capture_output=True, timeout=120)
    md = (tmp_path / "scratch.md").read_text()  # the report goes beside a non-default results file
    row = next(ln for ln in md.splitlines() if ln.startswith("| finance | w4 |"))
    assert "155 k ev/s [150–162 k] ×3" in row
    assert "finance w4 on 2026-01-01, 2026-01-02" in md  # the kept everstream cell is older than bytewax's
