"""The scorer's decision columns (the cached ``model`` column sliced per batch) and its input matrix against
plain Python, with nulls, integer/boolean/Float32 features, empty batches and batches past the cache's size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest

from everstream.log import Log
from everstream.ml import FEATURES, ModelRegistry, train_lightgbm
from everstream.ml.scoring import _matrix

DECISION_COLUMNS = ("score", "model", "model_version", "reasons", "score_latency_ms", "scored_at_ms")


def _frame(n: int, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, pl.Series] = {}
    for j, f in enumerate(FEATURES):
        vals = rng.gamma(1.0, 2.0, n)
        kind = j % 4  # the frame mixes the dtypes the feature step and users produce
        if kind == 0:
            s = pl.Series(f, vals, dtype=pl.Float64)
        elif kind == 1:
            s = pl.Series(f, np.rint(vals).astype(np.int64))
        elif kind == 2:
            s = pl.Series(f, vals.astype(np.float32))
        else:
            s = pl.Series(f, np.rint(vals).astype(np.int32))
        if n:  # a null in every column, at a different row each
            s = s.scatter(j % n, None)
        cols[f] = s
    return pl.DataFrame(list(cols.values())).with_columns(pl.int_range(0, n, dtype=pl.Int64).alias("txn_id"))


def _reference_matrix(df: pl.DataFrame) -> np.ndarray:
    """Plain Python: every cell as a float, None as NaN."""
    rows = df.select(FEATURES).rows()
    return np.array([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=np.float64).reshape(
        df.height, len(FEATURES))


@pytest.mark.parametrize("n", [0, 1, 5, 300])
def test_matrix_equals_plain_python(n: int) -> None:
    df = _frame(n)
    want = _reference_matrix(df)
    got = _matrix(df, FEATURES)
    assert got.dtype == np.float64 and got.shape == (n, len(FEATURES))
    assert np.array_equal(got, want, equal_nan=True)
    # a Boolean feature: cast, same values
    flags = df.with_columns(pl.col(FEATURES[1]).cast(pl.Boolean))
    assert np.array_equal(_matrix(flags, FEATURES), _reference_matrix(flags), equal_nan=True)


@pytest.mark.parametrize("n", [0, 5, 300, 1500])
def test_decision_columns_equal_a_plain_reference(log: Log, names: Callable[[str], str], n: int) -> None:
    rng = np.random.default_rng(8)
    x = rng.gamma(1.0, 2.0, size=(3000, len(FEATURES)))
    y = ((x[:, FEATURES.index("card_n_10m")] > 5) | (rng.random(3000) < 0.02)).astype(int)
    reg = ModelRegistry(log, names("models"))
    reg.promote("fraud", reg.register("fraud", train_lightgbm(x, y, FEATURES, rounds=20)).version)
    scorer = reg.scorer("fraud", reasons=2, explain_above=0.5)
    df = _frame(n)
    out = scorer(df)
    assert out.columns == [*df.columns, *DECISION_COLUMNS]
    assert out.select(df.columns).equals(df)  # the input columns as they were
    assert dict(out.select(DECISION_COLUMNS).schema) == {
        "score": pl.Float64, "model": pl.String, "model_version": pl.Int64, "reasons": pl.List(pl.String),
        "score_latency_ms": pl.Float64, "scored_at_ms": pl.Int64}
    model = reg.load("fraud")
    want = model.predict(_reference_matrix(df)) if n else np.zeros(0)
    assert np.allclose(out.get_column("score").to_numpy(), want)
    assert out.get_column("model").to_list() == ["fraud"] * n
    assert out.get_column("model_version").to_list() == [scorer.version] * n
    reasons = out.get_column("reasons").to_list()
    assert all(r == [] for r, s in zip(reasons, want, strict=True) if s < 0.5)  # only high scores explained
    assert all(1 <= len(r) <= 2 and set(r) <= set(FEATURES) for r, s in zip(reasons, want, strict=True) if s >= 0.5)
    assert out.get_column("score_latency_ms").n_unique() <= 1 and out.get_column("scored_at_ms").n_unique() <= 1
    # a smaller batch after a bigger one: a shorter slice of the cached model column
    assert scorer(_frame(3)).get_column("model").to_list() == ["fraud"] * 3
    # a stream that already has decision columns (scored twice): replaced in place, not duplicated
    again = scorer(out)
    assert again.columns == out.columns
    assert np.allclose(again.get_column("score").to_numpy(), want)
