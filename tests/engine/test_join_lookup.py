"""Lookup joins against a Parquet file and a DuckDB table (bounded LRU/TTL cache), and join plan errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from enginetools import produce, trades
from polars.testing import assert_frame_equal

import everstream as es
from everstream.connectors.lookup import DuckDBLookup, ParquetLookup
from everstream.engine.testing import read_topic
from everstream.errors import PlanError, StepError
from everstream.log import Log


def _accounts(n: int = 15) -> pl.DataFrame:
    """Accounts A0..A{n-1} (trades use A0..A19: five are unknown to the table)."""
    return pl.DataFrame({"account": [f"A{i}" for i in range(n)], "tier": [f"T{i % 3}" for i in range(n)],
                         "limit": [1000 * (i + 1) for i in range(n)]})


@pytest.mark.parametrize("how", ["left", "inner"])
def test_parquet_lookup_join_matches_polars(how: str, log: Log, names: Callable[[str], str], tmp_path: Path) -> None:
    """Each trade gets its account's row from a Parquet file; the cache never holds more than max_keys."""
    path = tmp_path / "accounts.parquet"
    _accounts().write_parquet(path)
    table = ParquetLookup(path, key="account", max_keys=8)
    t = trades(1000, seed=21)
    topic, out = names("trades"), names("out")
    produce(log, topic, t, partitions=2, chunk=100)
    app = es.App(names("lookup"))
    app.stream(topic).join_lookup(table, by="account", how=how).to(out)
    app.run(log, until_idle=True)
    want = t.join(_accounts(), on="account", how=how)
    got = read_topic(log, out)
    assert got.height == want.height
    assert_frame_equal(got.select(want.columns).sort("ts"), want.sort("ts"), check_dtypes=False)
    assert table.cached_keys <= 8 and table.fetches > 1


def test_duckdb_lookup_with_other_key_name_and_ttl(tmp_path: Path) -> None:
    """A DuckDB table keyed by another column name; entries expire after ttl, then changes are seen."""
    db = tmp_path / "mart.duckdb"
    con = duckdb.connect(str(db))
    con.register("acc", _accounts().rename({"account": "id"}).to_arrow())
    con.execute("CREATE TABLE customers AS SELECT * FROM acc")
    now = [0.0]
    table = DuckDBLookup(con, "customers", key="id", ttl=10, clock=lambda: now[0])
    keys = pl.DataFrame({"id": ["A1", "A2", "A99"]})
    first = table.get(keys).sort("id")
    assert first["limit"].to_list() == [2000, 3000]  # A99 unknown: no row (and cached as a miss)
    assert table.fetches == 1
    table.get(keys)
    assert table.fetches == 1 and table.hits == 3
    con.execute("UPDATE customers SET \"limit\" = 7 WHERE id = 'A1'")
    assert table.get(keys).sort("id")["limit"].to_list() == [2000, 3000]  # still cached
    now[0] = 11.0
    assert table.get(keys).sort("id")["limit"].to_list() == [7, 3000]  # expired: fetched anew
    assert table.fetches == 2


def test_lookup_join_in_app_with_table_by(log: Log, names: Callable[[str], str], tmp_path: Path) -> None:
    """join_lookup(by='account', table_by='id') against a DuckDB file equals the Polars join."""
    db = tmp_path / "mart.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("acc", _accounts().rename({"account": "id"}).to_arrow())
        con.execute("CREATE TABLE customers AS SELECT * FROM acc")
    table = DuckDBLookup(db, "customers", key="id", max_keys=100)
    t = trades(500, seed=22)
    topic, out = names("trades"), names("out")
    produce(log, topic, t)
    app = es.App(names("lookup"))
    app.stream(topic).join_lookup(table, by="account", table_by="id").to(out)
    app.run(log, until_idle=True)
    table.close()
    want = t.join(_accounts(), on="account", how="left")
    assert_frame_equal(read_topic(log, out).select(want.columns).sort("ts"), want.sort("ts"), check_dtypes=False)


def test_parquet_lookup_refresh_sees_a_rewritten_file(tmp_path: Path) -> None:
    """With refresh=5 s, a changed file (new modification time) drops the cache."""
    path = tmp_path / "accounts.parquet"
    _accounts().write_parquet(path)
    now = [0.0]
    table = ParquetLookup(path, key="account", refresh=5, clock=lambda: now[0])
    keys = pl.DataFrame({"account": ["A0"]})
    assert table.get(keys)["limit"].to_list() == [1000]
    _accounts().with_columns(pl.col("limit") + 1).write_parquet(path)
    os.utime(path, (1e9, 1e9))
    assert table.get(keys)["limit"].to_list() == [1000]  # not checked yet
    now[0] = 6.0
    assert table.get(keys)["limit"].to_list() == [1001]


def test_lookup_failure_names_the_step(log: Log, names: Callable[[str], str], tmp_path: Path) -> None:
    """A lookup table that cannot be read stops the app with an error naming the step and the fix."""
    table = ParquetLookup(tmp_path / "missing.parquet", key="account")
    topic = names("trades")
    produce(log, topic, trades(50, seed=23))
    app = es.App(names("lookup"))
    app.stream(topic).join_lookup(table, by="account", name="enrich").to(names("out"))
    with pytest.raises(StepError, match=r"'enrich'.*lookup in ParquetLookup"):
        app.run(log, until_idle=True)


# ---------------------------------------------------------------------- plan errors


def _app() -> tuple[es.App, es.engine.Stream, es.engine.Stream]:
    app = es.App("plan")
    return app, app.stream("trades").with_watermark("ts"), app.stream("quotes").with_watermark("ts")


@pytest.mark.parametrize(("build", "match"), [
    (lambda a, t, q: a.stream("x").join_asof(q, by="symbol"), "has no event time"),
    (lambda a, t, q: t.join_asof(q, on="time", by="symbol"), "event time is 'ts'"),
    (lambda a, t, q: t.join_asof(t, by="symbol"), "joined with itself"),
    (lambda a, t, q: t.join_asof(q, by="symbol", direction="sideways"), "direction='sideways'"),
    (lambda a, t, q: t.join_asof(q, by="symbol", tolerance="soon"), "tolerance='soon'"),
    (lambda a, t, q: t.join_asof(q, by=3), "by=3"),
    (lambda a, t, q: t.join_asof(q, by="symbol", how="outer"), "how='outer'"),
    (lambda a, t, q: t.join_asof("quotes", by="symbol"), "takes a stream"),
    (lambda a, t, q: t.join_interval(q, by="symbol", lower="5s", upper="1s"), "lower='5s' is after"),
    (lambda a, t, q: t.join_interval(q, upper="1s"), "needs by="),
    (lambda a, t, q: t.join_window(q, es.session("1s"), by="symbol"), "tumbling"),
    (lambda a, t, q: t.join_table(q, by="symbol", grace="-1s"), "grace"),
    (lambda a, t, q: t.join_lookup(object(), by="symbol"), "get\\(keys\\)"),
])
def test_join_plan_errors(build: Callable[..., object], match: str) -> None:
    """Bad join definitions fail when the plan is built, saying what to change."""
    app, t, q = _app()
    with pytest.raises(PlanError, match=match):
        build(app, t, q)


def test_join_on_missing_declared_column_is_a_plan_error() -> None:
    """A key that is not in a source's declared schema is caught at build time."""
    import pyarrow as pa

    app = es.App("plan")
    t = app.stream("trades", schema=pa.schema([("ts", pa.int64()), ("symbol", pa.string())])).with_watermark("ts")
    q = app.stream("quotes", schema=pa.schema([("ts", pa.int64()), ("sym", pa.string())])).with_watermark("ts")
    with pytest.raises(PlanError, match=r"right input .* no column\(s\) \['symbol'\]"):
        t.join_asof(q, by="symbol")


def test_docs_joins_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The first example of the Joins section of docs/engine.md runs and prints the prevailing quotes."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "engine.md").read_text()
    section = doc[doc.index("## Joins"):doc.index("## Event time")]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    exec(compile(code, "docs/engine.md#joins", "exec"), {})
    printed = capsys.readouterr().out
    assert "10.25" in printed and "10.5" in printed
