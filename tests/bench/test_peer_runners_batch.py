"""The batch peer runners (Polars, DuckDB) for W4 (as-of join), W5 (card testing) and the Nexmark
join queries, checked against independent references: a plain-Python as-of scan (W4), the
plain-Python card-testing scan of ``queries._w5_reference`` (W5) and the DuckDB reference SQL of
the Nexmark queries (against which only the Polars runner is independent). PyFlink's W4 (the
event-time temporal join) runs once on a tiny table when ``benchmarks/.venv-flink`` exists."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everstream.bench import data
from everstream.bench.check import compare
from everstream.bench.harness import check_output
from everstream.bench.queries import get

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "benchmarks" / "peers"
FLINK = ROOT / "benchmarks" / ".venv-flink" / "bin" / "python"
W4_COLS = ("seq", "ts", "symbol", "price", "bid", "ask")
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def batch() -> ModuleType:
    """benchmarks/peers/batch.py (not a package: loaded from its file, as compare.py runs it)."""
    spec = importlib.util.spec_from_file_location("peer_batch", PEERS / "batch.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def extras(batch: ModuleType) -> Iterator[dict[str, Path]]:
    """The runners' ``--extra`` table (``_common._EXTRA``), emptied after the test."""
    table: dict[str, Path] = sys.modules["_common"]._EXTRA
    yield table
    table.clear()


def runners(batch: ModuleType, suite: str, query: str) -> dict[str, Callable[[Path], pa.Table]]:
    return {"polars": batch.POLARS[(suite, query)], "duckdb": batch.duckdb_runner(suite, query)}


# -------------------------------------------------------------------------------------------- W4

def asof_reference(trades: list[dict[str, Any]], quotes: list[dict[str, Any]]) -> pl.DataFrame:
    """Each trade with the quote of its symbol of greatest (ts, seq) among those with ts <= the trade's."""
    rows = []
    for t in trades:
        best = max((q for q in quotes if q["symbol"] == t["symbol"] and q["ts"] <= t["ts"]),
                   key=lambda q: (q["ts"], q["seq"]), default=None)
        rows.append({**{c: t[c] for c in ("seq", "ts", "symbol", "price")},
                     "bid": best["bid"] if best else None, "ask": best["ask"] if best else None})
    return pl.DataFrame(rows, schema={"seq": pl.Int64, "ts": pl.Int64, "symbol": pl.String, "price": pl.Float64,
                                      "bid": pl.Float64, "ask": pl.Float64})


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    """Rows with epoch-ms ``ts`` as a Parquet file with a millisecond timestamp column (the bench data's types)."""
    df = pl.DataFrame(rows).with_columns(pl.col("ts").cast(pl.Datetime("ms")))
    df.write_parquet(path)
    return path


def w4_rows(n_trades: int, n_quotes: int, draw: Callable[[Any], Any]) -> tuple[list[dict[str, Any]], ...]:
    ts = st.integers(0, 40)  # a narrow range: many exact-time matches and same-time quotes
    sym = st.sampled_from(["A", "B"])
    trades = [{"seq": i, "ts": draw(ts), "symbol": draw(sym), "price": float(i)} for i in range(n_trades)]
    quotes = [{"seq": i, "ts": draw(ts), "symbol": draw(sym), "bid": float(i), "ask": i + 0.5} for i in range(n_quotes)]
    return trades, quotes


@PROPS
@given(st.data(), st.integers(1, 30), st.integers(0, 30))
def test_w4_asof_equals_plain_python(batch: ModuleType, extras: dict[str, Path], tmp_path: Path,
                                     d: st.DataObject, n_trades: int, n_quotes: int) -> None:
    trades, quotes = w4_rows(n_trades, n_quotes, d.draw)
    tp = write_table(trades, tmp_path / "trades.parquet")
    quote_schema = {"seq": pl.Int64, "ts": pl.Int64, "symbol": pl.String, "bid": pl.Float64, "ask": pl.Float64}
    pl.DataFrame(quotes, schema=quote_schema).with_columns(pl.col("ts").cast(pl.Datetime("ms"))).write_parquet(
        tmp_path / "quotes.parquet")
    extras["quotes"] = tmp_path / "quotes.parquet"
    want = asof_reference(trades, quotes)
    for engine, run in runners(batch, "finance", "w4").items():
        ok, detail = compare(pl.from_arrow(run(tp)), want, W4_COLS)
        assert ok, f"{engine}: {detail}"


def test_w4_on_generated_data(batch: ModuleType, extras: dict[str, Path], tmp_path: Path) -> None:
    tp = tmp_path / "trades.parquet"
    trades = data.trades(5_000, seed=5)
    pl.from_arrow(trades).write_parquet(tp)
    pl.from_arrow(data.quotes(trades, seed=5)).write_parquet(tmp_path / "quotes.parquet")
    extras["quotes"] = tmp_path / "quotes.parquet"
    for engine, run in runners(batch, "finance", "w4").items():
        got = pl.from_arrow(run(tp))
        assert isinstance(got, pl.DataFrame) and got["bid"].null_count() < got.height
        ok, detail = check_output(get("finance", "w4"), got, tp, dict(extras))
        assert ok, f"{engine}: {detail}"


def test_w4_without_quotes_says_how_to_pass_them(tmp_path: Path) -> None:
    tp = tmp_path / "trades.parquet"
    pl.from_arrow(data.trades(100, seed=1)).write_parquet(tp)
    cmd = [sys.executable, str(PEERS / "batch.py"), "polars", "--suite", "finance", "--query", "w4",
           "--input", str(tp), "--output", str(tmp_path / "out.parquet")]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "--extra quotes=PATH" in r.stderr
    qp = tmp_path / "quotes.parquet"
    pl.from_arrow(data.quotes(pq_table(tp), seed=1)).write_parquet(qp)
    r = subprocess.run([*cmd, "--extra", f"quotes={qp}"], capture_output=True, text=True, check=False)
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["status"] == "ok" and out["output_rows"] == 100, r.stderr


def pq_table(path: Path) -> pa.Table:
    return pl.read_parquet(path).to_arrow()


# -------------------------------------------------------------------------------------------- W5

def cards_table(events: list[tuple[str, int, float]]) -> list[dict[str, Any]]:
    """(card, ts, amount) in arrival order -> rows with seq = arrival position."""
    return [{"seq": i, "ts": t, "card": c, "amount": a, "merchant": f"M{i % 3}"} for i, (c, t, a) in enumerate(events)]


def check_w5(batch: ModuleType, rows: list[dict[str, Any]], path: Path) -> list[pl.DataFrame]:
    """Both runners' W5 output, each checked against the plain-Python reference (via its normalize)."""
    write_table(rows, path)
    outs = []
    for engine, run in runners(batch, "finance", "w5").items():
        got = pl.from_arrow(run(path))
        assert isinstance(got, pl.DataFrame)
        ok, detail = check_output(get("finance", "w5"), got, path)
        assert ok, f"{engine}: {detail}"
        outs.append(got)
    return outs


MIN = 60_000


def test_w5_after_match_cases(batch: ModuleType, tmp_path: Path) -> None:
    """Hand-computed alerts: an alert consumes its smalls; smalls before a large that did not alert
    still count; the 10-minute bound is strict; same-millisecond smalls count (order by ts, seq)."""
    ev = [("X", 0, 1.0), ("X", 1000, 1.5), ("X", 2000, 1.0), ("X", 3000, 600.0),  # alert, 3 smalls
          ("X", 4000, 1.0), ("X", 5000, 700.0),  # 1 small since the alert: none
          ("Y", 0, 1.0), ("Y", 1000, 1.0), ("Y", 2000, 600.0),  # 2 smalls: none
          ("Y", 3000, 1.0), ("Y", 4000, 700.0),  # 3 smalls across the large that did not alert: alert
          ("Z", 0, 1.0), ("Z", 1000, 1.0), ("Z", 2000, 1.0), ("Z", 3000, 1.0),
          ("Z", 10 * MIN, 900.0),  # the first small is exactly 10 minutes before: 3 of 4 count
          ("W", 0, 1.0), ("W", 1000, 1.0), ("W", 1000, 1.0), ("W", 1000, 800.0),  # ties at 1000 ms
          ("V", 0, 2.0), ("V", 1, 1.99), ("V", 2, 1.0), ("V", 3, 500.0), ("V", 4, 500.01)]  # bounds: 2.00, 500.00
    ev.sort(key=lambda e: e[1])
    outs = check_w5(batch, cards_table(ev), tmp_path / "cards.parquet")
    want = pl.DataFrame({"card": ["W", "X", "Y", "Z"], "match_start": [0, 0, 0, 1000],
                         "match_end": [1000, 3000, 4000, 10 * MIN], "n_small": [3, 3, 3, 3]})
    for got in outs:
        norm = got.select("card", pl.col("match_start").cast(pl.Datetime("ms")).dt.epoch("ms"),
                          pl.col("match_end").cast(pl.Datetime("ms")).dt.epoch("ms"),
                          n_small=pl.col("small").list.len().cast(pl.Int64)).sort("card")
        assert norm.equals(want), norm


@PROPS
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 40).map(lambda k: k * 30_000),
                          st.sampled_from([1.0, 1.0, 1.5, 2.0, 100.0, 500.0, 600.0, 900.0])),
                max_size=60))
def test_w5_equals_plain_python_reference(batch: ModuleType, tmp_path: Path, ev: list[tuple[str, int, float]]) -> None:
    """Dense smalls and larges on 30-second steps: chains of alerts, exact 10-minute distances, ties."""
    if not ev:
        return
    check_w5(batch, cards_table(ev), tmp_path / "cards.parquet")


def test_w5_on_generated_cards(batch: ModuleType, tmp_path: Path) -> None:
    table, injected = data.cards(20_000, seed=4)
    path = tmp_path / "cards.parquet"
    pl.from_arrow(table).write_parquet(path)
    for engine, run in runners(batch, "finance", "w5").items():
        got = pl.from_arrow(run(path))
        assert isinstance(got, pl.DataFrame)
        assert set(injected) <= set(got["card"]), engine
        ok, detail = check_output(get("finance", "w5"), got, path)
        assert ok, f"{engine}: {detail}"


# ---------------------------------------------------------------------------------- Nexmark joins

@pytest.fixture(scope="module")
def nexmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nexmark") / "nexmark.parquet"
    pl.from_arrow(data.nexmark(20_000, seed=3)).write_parquet(path)
    return path


@pytest.mark.parametrize("query", ["q3", "q4", "q8", "q20"])
def test_nexmark_joins_equal_duckdb_reference(batch: ModuleType, nexmark: Path, query: str) -> None:
    for engine, run in runners(batch, "nexmark", query).items():
        got = pl.from_arrow(run(nexmark))
        assert isinstance(got, pl.DataFrame) and got.height > 0, engine
        ok, detail = check_output(get("nexmark", query), got, nexmark)
        assert ok, f"{engine}: {detail}"


def test_nexmark_join_check_catches_a_wrong_polars_answer(batch: ModuleType, nexmark: Path) -> None:
    """The check has teeth: q20 without the category filter, or q4 with one auction fewer, is flagged."""
    got = pl.from_arrow(batch.p_q20(nexmark))
    assert isinstance(got, pl.DataFrame)
    ok, _ = check_output(get("nexmark", "q20"), got.filter(pl.col("bidder") % 7 != 0), nexmark)
    assert not ok
    q4 = pl.from_arrow(batch.p_q4(nexmark))
    assert isinstance(q4, pl.DataFrame)
    ok, _ = check_output(get("nexmark", "q4"), q4.with_columns(auctions=pl.col("auctions") - 1), nexmark)
    assert not ok


# ------------------------------------------------------------------------------------ PyFlink W4

@pytest.mark.skipif(not FLINK.exists(), reason="benchmarks/.venv-flink not installed (see benchmarks/NOTES.md)")
def test_pyflink_w4_temporal_join_is_a_backward_asof(tmp_path: Path) -> None:
    """Flink's event-time temporal join against the versioned quotes equals the backward as-of join,
    with exact-time matches and same-time quotes (the last to arrive wins); written to the CSV sink."""
    trades = [{"seq": i, "ts": t, "symbol": s, "price": float(i)}
              for i, (t, s) in enumerate([(500, "A"), (1000, "A"), (2000, "A"), (2500, "A"), (3000, "B"),
                                          (2400, "B"), (4000, "A")])]
    quotes = [{"seq": i, "ts": t, "symbol": s, "bid": float(i), "ask": i + 0.5}
              for i, (t, s) in enumerate([(1000, "A"), (1000, "A"), (2000, "A"), (1999, "A"), (900, "B"),
                                          (2000, "A"), (3900, "A"), (3000, "B")])]
    tp, qp = write_table(trades, tmp_path / "trades.parquet"), write_table(quotes, tmp_path / "quotes.parquet")
    out = tmp_path / "out.parquet"
    r = subprocess.run([str(FLINK), str(PEERS / "pyflink_peer.py"), "--suite", "finance", "--query", "w4",
                        "--input", str(tp), "--extra", f"quotes={qp}", "--output", str(out)],
                       capture_output=True, text=True, timeout=400, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    line = json.loads(r.stdout.splitlines()[-1])
    assert line["status"] == "ok" and line["sink"] == "filesystem-csv" and line["fetch_seconds"] >= 0
    ok, detail = compare(pl.read_parquet(out), asof_reference(trades, quotes), W4_COLS)
    assert ok, detail
