"""Complex event processing: the pattern API and the NFA matcher (``stream.match(pattern, by=...)``).

```python
import everstream as es
import polars as pl

card_testing = (es.pattern("small").where(pl.col("amount") < 2).times(3, None)
                .followed_by("big").where(pl.col("amount") > 500)
                .within("10m").after_match(es.cep.skip_past_last_event()))
alerts = app.stream("payments").with_watermark("ts", max_delay="2s").match(card_testing, by="card")
```

See :mod:`everstream.cep.pattern` for the exact semantics and :func:`find` for the same matching
over a whole DataFrame.
"""

from everstream.cep.operator import TIMED_OUT_AT, find
from everstream.cep.pattern import (
    MATCH_END,
    MATCH_START,
    PATTERN,
    AfterMatch,
    Pattern,
    Stage,
    begin,
    no_skip,
    pattern,
    skip_past_last_event,
    skip_to_first,
    skip_to_last,
    skip_to_next,
)

__all__ = [
    "MATCH_END",
    "MATCH_START",
    "PATTERN",
    "TIMED_OUT_AT",
    "AfterMatch",
    "Pattern",
    "Stage",
    "begin",
    "find",
    "no_skip",
    "pattern",
    "skip_past_last_event",
    "skip_to_first",
    "skip_to_last",
    "skip_to_next",
]
