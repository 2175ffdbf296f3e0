"""everstream: a streaming data platform for financial services, in one Python package."""

from typing import TYPE_CHECKING, Any

from everstream.errors import EverstreamError
from everstream.log import EmbeddedLog, Log, TopicSpec, open_log

if TYPE_CHECKING:
    from everstream import cep as cep
    from everstream.cep import pattern
    from everstream.engine import (
        App,
        KeyedProcess,
        approx_count_distinct,
        count,
        count_distinct,
        count_window,
        cumulative,
        custom,
        ewma,
        first,
        hopping,
        last,
        max,
        mean,
        median,
        min,
        quantile,
        rolling_count,
        rolling_max,
        rolling_mean,
        rolling_min,
        rolling_sum,
        session,
        std,
        sum,
        time_since_last,
        tumbling,
        var,
        vwap,
    )

# The engine (and Polars) load on first use, so `import everstream` and the CLI stay quick.
_ENGINE = frozenset(
    ["App", "KeyedProcess", "approx_count_distinct", "count", "count_distinct", "count_window", "cumulative",
     "custom", "ewma", "first", "hopping", "last", "max", "mean", "median", "min", "quantile", "rolling_count",
     "rolling_max", "rolling_mean", "rolling_min", "rolling_sum", "session", "std", "sum", "time_since_last",
     "tumbling", "var", "vwap"]
)


def __getattr__(name: str) -> Any:
    if name in ("cep", "pattern"):  # complex event processing: es.pattern(...), es.cep.skip_past_last_event()
        import everstream.cep as cep

        return cep if name == "cep" else cep.pattern
    if name in _ENGINE:
        from everstream import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'everstream' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "App",
    "EmbeddedLog",
    "EverstreamError",
    "KeyedProcess",
    "Log",
    "TopicSpec",
    "__version__",
    "approx_count_distinct",
    "count",
    "count_distinct",
    "count_window",
    "cumulative",
    "custom",
    "ewma",
    "first",
    "hopping",
    "last",
    "max",
    "mean",
    "median",
    "min",
    "open_log",
    "pattern",
    "quantile",
    "rolling_count",
    "rolling_max",
    "rolling_mean",
    "rolling_min",
    "rolling_sum",
    "session",
    "std",
    "sum",
    "time_since_last",
    "tumbling",
    "var",
    "vwap",
]
