"""Decomposable aggregates: a vectorized partial over a batch, a merge of partials, a finalizer.

Every aggregate is three sets of Polars expressions used inside ``group_by(...).agg(...)``:

- ``partial(name)``: over raw rows (the event-time column is ``_event_time``), giving partial
  columns named ``{name}__{part}``;
- ``merge(name)``: over rows of partial columns (from earlier batches and this one), giving the
  same partial columns;
- ``finalize(name)``: over the merged partial columns, giving the output column ``name``.

Window state is a table of partials keyed by (key, window); each batch's partials are merged
into it, and a window's partials are finalized when it fires. SQL semantics for nulls: ``sum``,
``min``, ``max``, ``mean`` ignore nulls and give null over no values; ``count()`` counts rows,
``count(col)`` non-null values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import polars as pl

from everstream.errors import ConfigError

#: The engine's event-time column (epoch ms), used by first/last.
EVENT_TIME = "_event_time"
#: The log's offset column (a quantile sample's priority hashes it, with the value and the time).
OFFSET = "_offset"
_SEED = 0x5EED


def _p(name: str, part: str) -> str:
    return f"{name}__{part}"


class Aggregate(ABC):
    """Base of every aggregate. Subclass it (or use :func:`custom`) for user-defined ones."""

    #: Input columns the aggregate reads.
    columns: tuple[str, ...] = ()

    @abstractmethod
    def partial(self, name: str) -> list[pl.Expr]: ...

    @abstractmethod
    def merge(self, name: str) -> list[pl.Expr]: ...

    @abstractmethod
    def finalize(self, name: str) -> pl.Expr: ...

    def describe(self) -> str:
        return f"{type(self).__name__.lower()}({', '.join(self.columns)})"


@dataclass(frozen=True)
class Count(Aggregate):
    column: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return () if self.column is None else (self.column,)

    def partial(self, name: str) -> list[pl.Expr]:
        e = pl.len() if self.column is None else pl.col(self.column).count()
        return [e.cast(pl.Int64).alias(_p(name, "n"))]

    def merge(self, name: str) -> list[pl.Expr]:
        return [pl.col(_p(name, "n")).sum().alias(_p(name, "n"))]

    def finalize(self, name: str) -> pl.Expr:
        return pl.col(_p(name, "n")).alias(name)


@dataclass(frozen=True)
class Sum(Aggregate):
    column: str

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def partial(self, name: str) -> list[pl.Expr]:
        c = pl.col(self.column)
        return [c.sum().alias(_p(name, "s")), c.count().cast(pl.Int64).alias(_p(name, "n"))]

    def merge(self, name: str) -> list[pl.Expr]:
        return [pl.col(_p(name, "s")).sum().alias(_p(name, "s")), pl.col(_p(name, "n")).sum().alias(_p(name, "n"))]

    def finalize(self, name: str) -> pl.Expr:
        return pl.when(pl.col(_p(name, "n")) > 0).then(pl.col(_p(name, "s"))).alias(name)


@dataclass(frozen=True)
class Min(Aggregate):
    column: str

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def partial(self, name: str) -> list[pl.Expr]:
        return [pl.col(self.column).min().alias(_p(name, "v"))]

    def merge(self, name: str) -> list[pl.Expr]:
        return [pl.col(_p(name, "v")).min().alias(_p(name, "v"))]

    def finalize(self, name: str) -> pl.Expr:
        return pl.col(_p(name, "v")).alias(name)


@dataclass(frozen=True)
class Max(Aggregate):
    column: str

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def partial(self, name: str) -> list[pl.Expr]:
        return [pl.col(self.column).max().alias(_p(name, "v"))]

    def merge(self, name: str) -> list[pl.Expr]:
        return [pl.col(_p(name, "v")).max().alias(_p(name, "v"))]

    def finalize(self, name: str) -> pl.Expr:
        return pl.col(_p(name, "v")).alias(name)


@dataclass(frozen=True)
class Mean(Aggregate):
    column: str

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def partial(self, name: str) -> list[pl.Expr]:
        c = pl.col(self.column).cast(pl.Float64)
        return [c.sum().alias(_p(name, "s")), c.count().cast(pl.Int64).alias(_p(name, "n"))]

    def merge(self, name: str) -> list[pl.Expr]:
        return [pl.col(_p(name, "s")).sum().alias(_p(name, "s")), pl.col(_p(name, "n")).sum().alias(_p(name, "n"))]

    def finalize(self, name: str) -> pl.Expr:
        n = pl.col(_p(name, "n"))
        return pl.when(n > 0).then(pl.col(_p(name, "s")) / n).alias(name)


@dataclass(frozen=True)
class First(Aggregate):
    """The value of the earliest event by event time (ties: the earliest arrival).

    ``last=True``: the latest event by event time (ties: the latest arrival, as kdb+ ``last``,
    DuckDB ``arg_max`` over arrival order and the peers do).
    """

    column: str
    last: bool = False

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def describe(self) -> str:
        return f"{'last' if self.last else 'first'}({self.column})"

    def _pick(self, value: pl.Expr, ts: pl.Expr) -> pl.Expr:
        if self.last:
            return value.filter(ts == ts.max()).last()
        return value.get(ts.arg_min())

    def partial(self, name: str) -> list[pl.Expr]:
        ts = pl.col(EVENT_TIME)
        return [
            self._pick(pl.col(self.column), ts).alias(_p(name, "v")),
            (ts.max() if self.last else ts.min()).alias(_p(name, "t")),
        ]

    def merge(self, name: str) -> list[pl.Expr]:
        t = pl.col(_p(name, "t"))
        return [self._pick(pl.col(_p(name, "v")), t).alias(_p(name, "v")),
                (t.max() if self.last else t.min()).alias(_p(name, "t"))]

    def finalize(self, name: str) -> pl.Expr:
        return pl.col(_p(name, "v")).alias(name)


@dataclass(frozen=True)
class Vwap(Aggregate):
    """Volume-weighted average price: sum(price * qty) / sum(qty)."""

    price: str
    qty: str

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.price, self.qty)

    def partial(self, name: str) -> list[pl.Expr]:
        q = pl.col(self.qty).cast(pl.Float64)
        return [(pl.col(self.price) * q).sum().alias(_p(name, "pq")), q.sum().alias(_p(name, "q"))]

    def merge(self, name: str) -> list[pl.Expr]:
        return [pl.col(_p(name, "pq")).sum().alias(_p(name, "pq")), pl.col(_p(name, "q")).sum().alias(_p(name, "q"))]

    def finalize(self, name: str) -> pl.Expr:
        q = pl.col(_p(name, "q"))
        return pl.when(q != 0).then(pl.col(_p(name, "pq")) / q).alias(name)


@dataclass(frozen=True)
class Variance(Aggregate):
    """Sample variance (ddof=1) or standard deviation, merged with Chan's parallel formula."""

    column: str
    std: bool = False

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def describe(self) -> str:
        return f"{'std' if self.std else 'var'}({self.column})"

    def partial(self, name: str) -> list[pl.Expr]:
        c = pl.col(self.column).cast(pl.Float64)
        return [
            c.count().cast(pl.Int64).alias(_p(name, "n")),
            c.mean().fill_null(0.0).alias(_p(name, "mean")),
            ((c - c.mean()) ** 2).sum().alias(_p(name, "m2")),
        ]

    def merge(self, name: str) -> list[pl.Expr]:
        n, mean, m2 = pl.col(_p(name, "n")), pl.col(_p(name, "mean")), pl.col(_p(name, "m2"))
        total = n.sum()
        grand = pl.when(total > 0).then((n * mean).sum() / total).otherwise(0.0)
        return [
            total.alias(_p(name, "n")),
            grand.alias(_p(name, "mean")),
            (m2 + n * (mean - grand) ** 2).sum().alias(_p(name, "m2")),
        ]

    def finalize(self, name: str) -> pl.Expr:
        n = pl.col(_p(name, "n"))
        var = pl.when(n > 1).then(pl.col(_p(name, "m2")) / (n - 1))
        return (var.sqrt() if self.std else var).alias(name)


@dataclass(frozen=True)
class CountDistinct(Aggregate):
    """Exact number of distinct non-null values (state: the set of values per window)."""

    column: str

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def partial(self, name: str) -> list[pl.Expr]:
        return [pl.col(self.column).drop_nulls().unique().alias(_p(name, "set"))]

    def merge(self, name: str) -> list[pl.Expr]:
        return [pl.col(_p(name, "set")).explode().drop_nulls().unique().alias(_p(name, "set"))]

    def finalize(self, name: str) -> pl.Expr:
        return pl.col(_p(name, "set")).list.len().cast(pl.Int64).alias(name)


@dataclass(frozen=True)
class ApproxCountDistinct(Aggregate):
    """Distinct count by a K-minimum-values sketch: the ``k`` smallest 64-bit hashes of the values.

    Exact while a window holds at most ``k`` distinct values; above, the estimate
    ``(k - 1) * 2**64 / (k-th smallest hash)`` has a relative standard error of about
    ``1 / sqrt(k - 2)`` (k=4096: 1.6 %). Partials merge by keeping the k smallest of their union,
    so the state per window is at most k integers whatever the volume.
    """

    column: str
    k: int = 4096

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def describe(self) -> str:
        return f"approx_count_distinct({self.column}, k={self.k})"

    def partial(self, name: str) -> list[pl.Expr]:
        h = pl.col(self.column).drop_nulls().hash(seed=_SEED).unique()
        return [h.bottom_k(self.k).alias(_p(name, "kmv"))]

    def merge(self, name: str) -> list[pl.Expr]:
        h = pl.col(_p(name, "kmv")).explode().drop_nulls().unique()
        return [h.bottom_k(self.k).alias(_p(name, "kmv"))]

    def finalize(self, name: str) -> pl.Expr:
        sketch = pl.col(_p(name, "kmv"))
        n = sketch.list.len()
        kth = sketch.list.max().cast(pl.Float64)
        estimate = ((self.k - 1) * 2.0**64 / kth).round(0).cast(pl.Int64)
        return pl.when(n < self.k).then(n.cast(pl.Int64)).otherwise(estimate).alias(name)


@dataclass(frozen=True)
class Quantile(Aggregate):
    """A quantile from a mergeable uniform sample: the ``k`` events with the smallest random priority.

    The priority is a hash of (value, event time, offset), so a window's sample is the same
    whatever the batching. Exact (linear interpolation, like DuckDB's ``quantile_cont``) while a
    window holds at most ``k`` values; above, the rank error has a standard deviation of about
    ``sqrt(q * (1 - q) / k)`` (k=2048, median: 1.1 % of the window's events).
    """

    column: str
    q: float
    k: int = 2048

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.column,)

    def describe(self) -> str:
        return f"quantile({self.column}, {self.q}, k={self.k})"

    def partial(self, name: str) -> list[pl.Expr]:
        v = pl.col(self.column).cast(pl.Float64)
        prio = pl.struct(v, pl.col(EVENT_TIME), pl.col(OFFSET)).hash(seed=_SEED)
        sample = pl.struct(prio.alias("p"), v.alias("v")).filter(v.is_not_null())
        return [sample.bottom_k_by(sample.struct.field("p"), self.k).alias(_p(name, "sample"))]

    def merge(self, name: str) -> list[pl.Expr]:
        s = pl.col(_p(name, "sample")).explode().drop_nulls()
        return [s.bottom_k_by(s.struct.field("p"), self.k).alias(_p(name, "sample"))]

    def finalize(self, name: str) -> pl.Expr:
        values = pl.col(_p(name, "sample")).list.eval(pl.element().struct.field("v").quantile(self.q, "linear"))
        return values.list.first().alias(name)


MergeOp = Literal["sum", "min", "max"] | Callable[[pl.Expr], pl.Expr]


@dataclass(frozen=True, eq=False)
class Custom(Aggregate):
    """A user-defined decomposable aggregate (see :func:`custom`)."""

    partials: tuple[tuple[str, pl.Expr, MergeOp], ...]
    final: Callable[[dict[str, pl.Expr]], pl.Expr]
    inputs: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.inputs

    def partial(self, name: str) -> list[pl.Expr]:
        return [e.alias(_p(name, part)) for part, e, _ in self.partials]

    def merge(self, name: str) -> list[pl.Expr]:
        out = []
        for part, _, op in self.partials:
            c = pl.col(_p(name, part))
            e = getattr(c, op)() if isinstance(op, str) else op(c)
            out.append(e.alias(_p(name, part)))
        return out

    def finalize(self, name: str) -> pl.Expr:
        return self.final({part: pl.col(_p(name, part)) for part, _, _ in self.partials}).alias(name)


# ---------------------------------------------------------------------- constructors


def count(column: str | None = None) -> Count:
    """Number of events (or of non-null values of ``column``)."""
    return Count(column)


def sum_(column: str) -> Sum:
    """Sum of ``column`` (null when the window holds no value)."""
    return Sum(_name(column))


def min_(column: str) -> Min:
    """Smallest value of ``column``."""
    return Min(_name(column))


def max_(column: str) -> Max:
    """Largest value of ``column``."""
    return Max(_name(column))


def mean(column: str) -> Mean:
    """Arithmetic mean of ``column``."""
    return Mean(_name(column))


def first(column: str) -> First:
    """Value of ``column`` at the earliest event time in the window (the open of a bar)."""
    return First(_name(column))


def last(column: str) -> First:
    """Value of ``column`` at the latest event time in the window (the close of a bar)."""
    return First(_name(column), last=True)


def vwap(price: str, qty: str) -> Vwap:
    """Volume-weighted average price: ``sum(price * qty) / sum(qty)``."""
    return Vwap(_name(price), _name(qty))


def var(column: str) -> Variance:
    """Sample variance (ddof=1) of ``column``."""
    return Variance(_name(column))


def std(column: str) -> Variance:
    """Sample standard deviation (ddof=1) of ``column``."""
    return Variance(_name(column), std=True)


def count_distinct(column: str) -> CountDistinct:
    """Exact number of distinct values of ``column``."""
    return CountDistinct(_name(column))


def approx_count_distinct(column: str, k: int = 4096) -> ApproxCountDistinct:
    """Approximate number of distinct values (KMV sketch; exact up to ``k`` distinct values)."""
    return ApproxCountDistinct(_name(column), _size(k, "approx_count_distinct"))


def quantile(column: str, q: float, k: int = 2048) -> Quantile:
    """The ``q``-quantile of ``column`` from a mergeable sample of ``k`` events (exact up to ``k``)."""
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
        raise ConfigError(f"quantile(q={q!r}): q must be a number between 0 and 1, e.g. 0.99")
    return Quantile(_name(column), float(q), _size(k, "quantile"))


def median(column: str, k: int = 2048) -> Quantile:
    """The median of ``column`` (see :func:`quantile`)."""
    return quantile(column, 0.5, k)


def _size(k: int, where: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 16:
        raise ConfigError(f"{where}(k={k!r}): the sketch size k must be an integer >= 16 (larger: more exact)")
    return k


def custom(
    partials: dict[str, tuple[pl.Expr, MergeOp]],
    finalize: Callable[[dict[str, pl.Expr]], pl.Expr],
    columns: tuple[str, ...] = (),
) -> Custom:
    """A user-defined aggregate: named partials ``{part: (over_rows, merge)}`` and a finalizer.

    ``over_rows`` is a Polars aggregation over a batch's rows; ``merge`` combines partials
    (``"sum"``, ``"min"``, ``"max"`` or a function of the partial column); ``finalize`` gets the
    merged partials by name. The price range of a window::

        es.custom({"hi": (pl.col("price").max(), "max"), "lo": (pl.col("price").min(), "min")},
                  finalize=lambda p: p["hi"] - p["lo"])
    """
    if not partials:
        raise ConfigError("custom aggregate needs at least one partial: {name: (expression, merge)}")
    for part, (_, op) in partials.items():
        if isinstance(op, str) and op not in ("sum", "min", "max"):
            raise ConfigError(f"custom aggregate partial {part!r}: merge {op!r} must be sum, min, max or a function")
    return Custom(tuple((part, e, op) for part, (e, op) in partials.items()), finalize, tuple(columns))


def _name(column: str) -> str:
    if not isinstance(column, str) or not column:
        raise ConfigError(f"aggregate column must be a column name (str), got {column!r}")
    return column
