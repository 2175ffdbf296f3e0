"""The stream engine: a Python API that builds an immutable plan, and a runtime that runs it.

```python
import everstream as es
import polars as pl

app = es.App("market")
trades = app.stream("trades").with_watermark("ts", max_delay="2s", idle_timeout="5s")
bars = trades.window(es.tumbling("1m"), by="symbol").agg(
    open=es.first("price"), high=es.max("price"), low=es.min("price"), close=es.last("price"),
    volume=es.sum("qty"), vwap=es.vwap("price", "qty"), trades=es.count(),
)
bars.to("bars_1m")
app.run(es.EmbeddedLog("./data"), until_idle=True)
```
"""

from everstream.engine.aggregates import (
    Aggregate,
    approx_count_distinct,
    count,
    count_distinct,
    custom,
    first,
    last,
    mean,
    median,
    quantile,
    std,
    var,
    vwap,
)
from everstream.engine.aggregates import max_ as max
from everstream.engine.aggregates import min_ as min
from everstream.engine.aggregates import sum_ as sum
from everstream.engine.app import App
from everstream.engine.features import (
    Feature,
    ewma,
    rolling_count,
    rolling_max,
    rolling_mean,
    rolling_min,
    rolling_sum,
    time_since_last,
)
from everstream.engine.joins import Lookup
from everstream.engine.plan import Plan, Step
from everstream.engine.process import KeyedProcess, ProcessContext
from everstream.engine.runtime import Runner, RunResult, dead_letter_topic_of, late_topic_of
from everstream.engine.stream import KeyedStream, Stream, WindowedStream
from everstream.engine.windows import (
    Count,
    Cumulative,
    Hopping,
    Session,
    Tumbling,
    count_window,
    cumulative,
    hopping,
    session,
    tumbling,
)

__all__ = [
    "Aggregate",
    "App",
    "Count",
    "Cumulative",
    "Feature",
    "Hopping",
    "KeyedProcess",
    "KeyedStream",
    "Lookup",
    "Plan",
    "ProcessContext",
    "RunResult",
    "Runner",
    "Session",
    "Step",
    "Stream",
    "Tumbling",
    "WindowedStream",
    "approx_count_distinct",
    "count",
    "count_distinct",
    "count_window",
    "cumulative",
    "custom",
    "dead_letter_topic_of",
    "ewma",
    "first",
    "hopping",
    "last",
    "late_topic_of",
    "max",
    "mean",
    "median",
    "min",
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
