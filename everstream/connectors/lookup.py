"""External tables for lookup joins: a Parquet file or a DuckDB table, behind a bounded cache.

``stream.join_lookup(table, by="account")`` calls ``table.get(keys)`` once per micro-batch with
the batch's distinct keys. :class:`CachedLookup` answers from a cache of at most ``max_keys``
keys (least recently used evicted first; misses are cached too, so an unknown key is not fetched
again and again), entries expire ``ttl`` seconds after they were fetched, and the keys not in the
cache are fetched in **one** query per batch (DuckDB over the Parquet file or the table, the keys
passed as an Arrow table, never spliced into SQL). Everything is columnar: no Python object per
event or per key.

PostgreSQL: not included, because no PostgreSQL driver (psycopg) is a dependency of this
package; subclass :class:`CachedLookup` and implement ``fetch(keys)`` with one
``SELECT ... WHERE key = ANY(%s)`` to add it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from everstream.errors import ConfigError

_LOADED, _USED, _FOUND = "_lk_loaded", "_lk_used", "_lk_found"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class CachedLookup:
    """A keyed external table with a bounded LRU/TTL cache; subclasses implement :meth:`fetch`.

    ``key``: the table's key column(s). ``max_keys``: cache bound (keys, found or not).
    ``ttl``: seconds an entry stays valid (None: until evicted or :meth:`invalidate`).
    ``clock``: monotonic seconds (tests pass a manual clock).
    """

    def __init__(self, key: str | Sequence[str], *, max_keys: int = 100_000, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.key = [key] if isinstance(key, str) else list(key)
        if not self.key or not all(isinstance(k, str) and k for k in self.key):
            raise ConfigError(f"lookup key={key!r}: give the table's key column name(s)")
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError(f"lookup max_keys={max_keys!r} must be a positive integer")
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"lookup ttl={ttl!r} must be positive seconds (or None)")
        self.max_keys, self.ttl, self._clock = max_keys, ttl, clock
        self._cache: pl.DataFrame | None = None
        self._lock = threading.Lock()
        self.hits = self.misses = self.fetches = 0

    def fetch(self, keys: pl.DataFrame) -> pl.DataFrame:
        """The table's rows for ``keys`` (distinct key rows): key columns plus values, one row per key."""
        raise NotImplementedError

    def invalidate(self) -> None:
        """Forget every cached entry (the next batches fetch again)."""
        with self._lock:
            self._cache = None

    @property
    def cached_keys(self) -> int:
        return 0 if self._cache is None else self._cache.height

    def get(self, keys: pl.DataFrame) -> pl.DataFrame:
        """Rows for those of ``keys`` the table has (from the cache, fetching the rest in one query)."""
        missing = [k for k in self.key if k not in keys.columns]
        if missing:
            raise ConfigError(f"lookup keys frame lacks {missing}; it has {keys.columns}")
        keys = keys.select(self.key).unique()
        with self._lock:
            now = self._clock()
            cache = self._cache
            if cache is not None and self.ttl is not None:
                cache = cache.filter(pl.col(_LOADED) > now - self.ttl)
            if cache is not None and cache.height:
                cached = keys.join(cache.select(self.key), on=self.key, how="semi", nulls_equal=True)
                todo = keys.join(cache.select(self.key), on=self.key, how="anti", nulls_equal=True)
            else:
                cached, todo = keys.head(0), keys
            self.hits += cached.height
            self.misses += todo.height
            if todo.height:
                fetched = self._fetched(todo, now)
                cache = fetched if cache is None or cache.is_empty() else pl.concat([cache, fetched],
                                                                                   how="diagonal_relaxed")
            assert cache is not None
            cache = cache.join(keys.with_columns(pl.lit(True).alias("_lk_hit")), on=self.key, how="left",
                               nulls_equal=True, maintain_order="left")
            cache = cache.with_columns(pl.when(pl.col("_lk_hit")).then(pl.lit(now)).otherwise(pl.col(_USED))
                                       .alias(_USED)).drop("_lk_hit")
            rows = cache.join(keys, on=self.key, how="semi", nulls_equal=True).filter(pl.col(_FOUND))
            if cache.height > self.max_keys:  # after answering: a batch may have more keys than the cache
                cache = cache.sort(_USED, descending=True, maintain_order=True).head(self.max_keys)
            self._cache = cache
            return rows.drop(_LOADED, _USED, _FOUND)

    def _fetched(self, todo: pl.DataFrame, now: float) -> pl.DataFrame:
        self.fetches += 1
        got = self.fetch(todo)
        lost = [k for k in self.key if k not in got.columns]
        if lost:
            raise ConfigError(f"{self!r}: the table has no key column(s) {lost} (columns: {got.columns})")
        got = got.unique(self.key, keep="last").with_columns(pl.lit(True).alias(_FOUND))
        casts = [pl.col(k).cast(got.schema[k]) for k in self.key if todo.schema[k] != got.schema[k]]
        todo = todo.with_columns(casts) if casts else todo
        entries = todo.join(got, on=self.key, how="left", nulls_equal=True)  # misses: values null, found null
        return entries.with_columns(pl.col(_FOUND).fill_null(False), pl.lit(now).alias(_LOADED),
                                    pl.lit(now).alias(_USED))


class DuckDBLookup(CachedLookup):
    """A table (or view) in a DuckDB database: a file path (opened read-only) or an open connection
    (e.g. the mart's), so updates made through that connection are seen once entries expire."""

    def __init__(self, database: str | Path | duckdb.DuckDBPyConnection, table: str, key: str | Sequence[str],
                 *, columns: Sequence[str] | None = None, **cache: Any) -> None:
        super().__init__(key, **cache)
        self.table = table
        self.columns = list(columns) if columns is not None else None
        if isinstance(database, duckdb.DuckDBPyConnection):
            self._con, self._own = database, False
        else:
            self._con, self._own = duckdb.connect(str(database), read_only=True), True

    def __repr__(self) -> str:
        return f"DuckDBLookup({self.table!r}, key={self.key})"

    def _source(self) -> str:
        return ".".join(_quote(part) for part in self.table.split("."))

    def _select(self) -> str:
        if self.columns is None:
            return "t.*"
        return ", ".join(f"t.{_quote(c)}" for c in dict.fromkeys([*self.key, *self.columns]))

    def fetch(self, keys: pl.DataFrame) -> pl.DataFrame:
        on = " AND ".join(f"t.{_quote(k)} = k.{_quote(k)}" for k in self.key)
        cur = self._con.cursor()
        try:
            cur.register("__lookup_keys", keys.to_arrow())
            got = cur.sql(f"SELECT {self._select()} FROM {self._source()} t SEMI JOIN __lookup_keys k ON {on}")
            df = pl.from_arrow(got.to_arrow_table())
        finally:
            cur.close()
        assert isinstance(df, pl.DataFrame)
        return df

    def close(self) -> None:
        if self._own:
            self._con.close()


class ParquetLookup(DuckDBLookup):
    """A Parquet file (or glob) as a lookup table; ``refresh`` seconds: how often to check whether the
    file changed (its modification time); when it did, the cache is dropped and keys fetched anew."""

    def __init__(self, path: str | Path, key: str | Sequence[str], *, columns: Sequence[str] | None = None,
                 refresh: float | None = 60.0, **cache: Any) -> None:
        self.path = Path(path)
        super().__init__(duckdb.connect(), "lookup", key, columns=columns, **cache)
        self._own = True
        self.refresh = refresh
        self._checked = self._clock()
        self._mtime = self._stat()

    def __repr__(self) -> str:
        return f"ParquetLookup({str(self.path)!r}, key={self.key})"

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime_ns / 1e9
        except OSError:
            return None  # a glob, or not there yet: DuckDB reports it on fetch

    def _source(self) -> str:
        return "read_parquet(" + "'" + str(self.path).replace("'", "''") + "')"

    def get(self, keys: pl.DataFrame) -> pl.DataFrame:
        if self.refresh is not None and self._clock() - self._checked >= self.refresh:
            self._checked = self._clock()
            mtime = self._stat()
            if mtime != self._mtime:
                self._mtime = mtime
                self.invalidate()
        return super().get(keys)


__all__ = ["CachedLookup", "DuckDBLookup", "ParquetLookup"]
