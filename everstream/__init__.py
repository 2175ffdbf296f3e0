"""everstream: a streaming data platform for financial services, in one Python package."""

from typing import TYPE_CHECKING, Any

from everstream.errors import EverstreamError
from everstream.log import EmbeddedLog, Log, TopicSpec, open_log

if TYPE_CHECKING:
    from everstream.engine import (
        App,
        count,
        count_distinct,
        custom,
        first,
        hopping,
        last,
        max,
        mean,
        min,
        session,
        std,
        sum,
        tumbling,
        var,
        vwap,
    )

# The engine (and Polars) load on first use, so `import everstream` and the CLI stay quick.
_ENGINE = frozenset(
    ["App", "count", "count_distinct", "custom", "first", "hopping", "last", "max", "mean", "min",
     "session", "std", "sum", "tumbling", "var", "vwap"]
)


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from everstream import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'everstream' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "App",
    "EmbeddedLog",
    "EverstreamError",
    "Log",
    "TopicSpec",
    "__version__",
    "count",
    "count_distinct",
    "custom",
    "first",
    "hopping",
    "last",
    "max",
    "mean",
    "min",
    "open_log",
    "session",
    "std",
    "sum",
    "tumbling",
    "var",
    "vwap",
]
