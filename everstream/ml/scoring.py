"""Scoring as an engine step: vectorized batch prediction with hot swap and a decision record per event.

``stream.score(registry, "fraud")`` (or ``stream.map_batches(registry.scorer("fraud"))``) adds
to every event:

- ``score`` (fraud probability), ``model`` (name) and ``model_version`` (the version that
  produced this score: every score records its version);
- ``reasons``: the top contributing features (list of names, largest push first) for events
  scored at or above ``explain_above`` — the decisions that need explaining (declines,
  reviews). TreeSHAP costs far more than the prediction itself, so it is computed for those
  rows only, at most ``explain_max`` per micro-batch (the highest scores); other lists are empty;
- ``score_latency_ms``: the step's time for the event's micro-batch (model lookup, prediction,
  reason codes), and ``scored_at_ms`` (wall clock).

The features themselves are in the record already (the step keeps the stream's columns), so the
output written with ``.to("decisions")`` is the decision record: features, version, score,
reasons, latency. Hot swap: at most every ``refresh_s`` seconds (wall clock) the scorer re-reads
the registry topic; a newly promoted version is loaded and used from the next micro-batch on.
No batch is held back or dropped while the swap happens (the swap is between two batches).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from everstream.errors import ConfigError, RegistryError
from everstream.ml.features import feature_matrix
from everstream.ml.models import Model

if TYPE_CHECKING:
    from everstream.ml.registry import ModelRegistry


class Scorer:
    """The scoring function of a ``map_batches`` step (callable on a Polars frame)."""

    def __init__(self, registry: ModelRegistry, name: str, *, reasons: int = 3, explain_above: float = 0.5,
                 explain_max: int = 200, refresh_s: float = 0.05, wait_s: float = 0.0) -> None:
        if reasons < 0:
            raise ConfigError(f"score(reasons={reasons}): give the number of reason codes per event (>= 0)")
        if not 0.0 <= explain_above <= 1.0:
            raise ConfigError(f"score(explain_above={explain_above}): give a probability in [0, 1]")
        self.registry, self.name = registry, name
        self.reasons, self.explain_above, self.refresh_s = reasons, explain_above, refresh_s
        self.explain_max = explain_max
        self.model: Model | None = None
        self.version: int | None = None
        self.swaps = 0
        self._checked = 0.0
        self._wait_s = wait_s
        self._names: pl.Series | None = None

    def __repr__(self) -> str:
        return f"Scorer({self.name!r}, version={self.version})"

    def current(self) -> tuple[Model, int]:
        """The model to use now, re-reading the registry at most every ``refresh_s`` (hot swap)."""
        now = time.monotonic()
        if self.model is None or now - self._checked >= self.refresh_s:
            self._checked = now
            self.registry.refresh()
            champ = self.registry.champion(self.name)
            deadline = now + self._wait_s
            while champ is None and time.monotonic() < deadline:
                time.sleep(0.05)
                self.registry.refresh()
                champ = self.registry.champion(self.name)
            if champ is None:
                raise RegistryError(
                    f"no promoted version of model {self.name!r} in registry topic {self.registry.topic!r}: "
                    f"register one and promote it (registry.promote({self.name!r}, version)) before scoring")
            if champ.version != self.version:
                self.model = self.registry.load(self.name, champ.version)
                self.version = champ.version
                self._names = pl.Series("reason", list(self.model.features), dtype=pl.String)
                self.swaps += 1
        assert self.model is not None and self.version is not None
        return self.model, self.version

    def __call__(self, df: pl.DataFrame) -> pl.DataFrame:
        t0 = time.perf_counter()
        model, version = self.current()
        x = feature_matrix(df, model.features).to_numpy()
        score = model.predict(x)
        reasons = self._reasons(model, x, score)
        latency = (time.perf_counter() - t0) * 1000.0
        return df.with_columns(
            pl.Series("score", score, dtype=pl.Float64),
            pl.lit(self.name, dtype=pl.String).alias("model"),
            pl.lit(version, dtype=pl.Int64).alias("model_version"),
            reasons,
            pl.lit(latency, dtype=pl.Float64).alias("score_latency_ms"),
            pl.lit(int(time.time() * 1000), dtype=pl.Int64).alias("scored_at_ms"),
        )

    def _reasons(self, model: Model, x: np.ndarray, score: np.ndarray) -> pl.Series:
        """Top ``reasons`` features by positive contribution, for rows at or above ``explain_above``."""
        n = len(score)
        empty = pl.Series("reasons", [[]] * 0, dtype=pl.List(pl.String))
        if self.reasons == 0 or self._names is None:
            return pl.repeat([], n, dtype=pl.List(pl.String), eager=True).alias("reasons") if n else empty
        rows = np.flatnonzero(score >= self.explain_above)
        if len(rows) > self.explain_max:  # bound the cost per batch: explain the highest scores
            rows = np.sort(rows[np.argsort(-score[rows], kind="stable")[: self.explain_max]])
        k = min(self.reasons, len(model.features))
        out = pl.repeat([], n, dtype=pl.List(pl.String), eager=True).alias("reasons") if n else empty
        if not len(rows):
            return out
        contrib = model.contributions(x[rows])
        top = np.argsort(-contrib, axis=1)[:, :k]
        positive = np.take_along_axis(contrib, top, axis=1) > 0
        names = self._names.gather(pl.Series(top.ravel()))  # one gather, no Python object per row
        frame = pl.DataFrame({"row": np.repeat(rows, k), "name": names, "keep": positive.ravel()})
        lists = frame.filter(pl.col("keep")).group_by("row", maintain_order=True).agg(pl.col("name"))
        full = pl.DataFrame({"row": np.arange(n)}).join(lists, on="row", how="left").sort("row")
        return full.get_column("name").fill_null(pl.lit([], dtype=pl.List(pl.String))).alias("reasons")


__all__ = ["Scorer"]
