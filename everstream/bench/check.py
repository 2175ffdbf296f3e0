"""Result checks: an engine's output against a DuckDB batch reference over the same data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

REL_TOL = 1e-6


def epoch_ms(df: pl.DataFrame) -> pl.DataFrame:
    """Datetime columns as int64 epoch milliseconds (engines differ in time zones and units)."""
    conv = [pl.col(c).dt.epoch("ms").alias(c) for c, t in df.schema.items() if isinstance(t, pl.Datetime)]
    return df.with_columns(conv) if conv else df


def reference(sql: str, tables: dict[str, Path]) -> pl.DataFrame:
    """Run ``sql`` in DuckDB with each ``name`` bound to a view over its Parquet file."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, path in tables.items():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path.as_posix()}')")
        *setup, query = [part for part in sql.split(";") if part.strip()]
        for statement in setup:
            con.execute(statement)
        df = pl.from_arrow(con.sql(query).to_arrow_table())
        if not isinstance(df, pl.DataFrame):
            raise TypeError("reference query did not return a table")
        return epoch_ms(df)
    finally:
        con.close()


def compare(
    got: pl.DataFrame, want: pl.DataFrame, exact: Sequence[str], approx: Sequence[str] = ()
) -> tuple[bool, str]:
    """True when ``got`` has the rows of ``want``: ``exact`` columns equal, ``approx`` columns
    within 1e-6 relative. Row order does not matter. Returns (ok, reason)."""
    cols = [*exact, *approx]
    if got.height == 0 and want.height == 0:  # an engine that emits nothing writes no columns either
        return True, "both empty"
    missing = [c for c in cols if c not in got.columns]
    if missing:
        return False, f"output lacks columns {missing} (has {got.columns})"
    if got.height != want.height:
        return False, f"{got.height} rows, reference has {want.height}"
    if got.height == 0:
        return True, "both empty"
    g = epoch_ms(got.select(cols)).sort(cols, nulls_last=True)
    w = epoch_ms(want.select(cols)).sort(cols, nulls_last=True)
    for c in exact:
        a, b = g[c], w[c].cast(g[c].dtype, strict=False) if g[c].dtype != w[c].dtype else w[c]
        bad = ~(a.eq_missing(b))
        if bad.any():
            i = int(bad.arg_max() or 0)
            return False, f"column {c!r} differs at sorted row {i}: {a[i]!r} != reference {b[i]!r}"
    for c in approx:
        a, b = g[c].cast(pl.Float64), w[c].cast(pl.Float64)
        diff = (a - b).abs()
        tol = b.abs() * REL_TOL + 1e-9
        bad = (diff > tol).fill_null(a.is_null() != b.is_null())
        if bad.any():
            i = int(bad.arg_max() or 0)
            return False, f"column {c!r} differs at sorted row {i}: {a[i]!r} vs reference {b[i]!r}"
    return True, f"{got.height} rows match"
