"""Reason codes and the scoring step's batch path, against LightGBM's own outputs and plain Python."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest

from everstream.log import Log
from everstream.ml import FEATURES, ModelRegistry, feature_matrix, train_lightgbm


def _model_and_data(n: int = 4000) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.gamma(1.0, 2.0, size=(n, len(FEATURES)))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the default branches
    y = ((x[:, FEATURES.index("card_n_10m")] > 5) | (rng.random(n) < 0.02)).astype(int)
    return train_lightgbm(x, y, FEATURES, rounds=40), x


def test_path_contributions_add_up_to_lightgbms_raw_score_and_survive_the_registry() -> None:
    """Per leaf tables give, with the roots' bias, exactly LightGBM's raw score, for every row."""
    model, x = _model_and_data()
    c = model.contributions(x[:500])  # type: ignore[attr-defined]
    _, _, bias = model.path_table()  # type: ignore[attr-defined]
    raw = model.booster.predict(x[:500], raw_score=True)  # type: ignore[attr-defined]
    assert c.shape == (500, len(FEATURES))
    assert np.allclose(c.sum(axis=1) + bias, raw, atol=1e-9)
    # the signal feature dominates the attributions of the rows it makes fraud
    hot = x[:500, FEATURES.index("card_n_10m")] > 8
    assert hot.any() and (np.argmax(c[hot], axis=1) == FEATURES.index("card_n_10m")).mean() > 0.9
    exact = model.shap_contributions(x[:50])  # type: ignore[attr-defined]
    assert np.allclose(exact.sum(axis=1) + model.booster.predict(x[:50], pred_contrib=True)[:, -1], raw[:50])  # type: ignore[attr-defined]
    assert model.contributions(x[:0]).shape == (0, len(FEATURES))  # type: ignore[attr-defined]


@pytest.mark.parametrize("exact", [False, True])
def test_scorer_reasons_equal_a_per_row_python_reference(log: Log, names: Callable[[str], str], exact: bool) -> None:
    """The scorer's list column: for rows at or above explain_above (at most explain_max, the highest), the
    names of the top-k positive contributions, largest first; empty lists elsewhere; decision columns added."""
    model, x = _model_and_data()
    reg = ModelRegistry(log, names("models"))
    reg.promote("fraud", reg.register("fraud", model).version)  # type: ignore[arg-type]
    frame = pl.DataFrame({f: x[:300, j] for j, f in enumerate(FEATURES)}).with_columns(
        pl.int_range(0, 300, dtype=pl.Int64).alias("txn_id"))
    scorer = reg.scorer("fraud", reasons=3, explain_above=0.3, explain_max=25, exact_reasons=exact)
    out = scorer(frame)
    m = reg.load("fraud")
    xm = feature_matrix(frame).to_numpy()
    score = m.predict(xm)
    assert np.allclose(out.get_column("score").to_numpy(), score)
    explain = [i for i in np.argsort(-score, kind="stable")[:25] if score[i] >= 0.3]
    contrib = m.shap_contributions(xm) if exact else m.contributions(xm)  # type: ignore[attr-defined]
    want: list[list[str]] = []
    for i in range(300):
        if i in explain:
            order = sorted(range(len(FEATURES)), key=lambda j: -contrib[i, j])[:3]
            want.append([FEATURES[j] for j in order if contrib[i, j] > 0])
        else:
            want.append([])
    assert out.get_column("reasons").to_list() == want
    assert any(want) and set(out.columns) >= {"txn_id", "model", "model_version", "score_latency_ms", "scored_at_ms"}
    assert out.get_column("model_version").unique().to_list() == [1]
    empty = scorer(frame.head(0))
    assert empty.height == 0 and empty.schema["reasons"] == pl.List(pl.String)
    # batches nobody in is explained take a cached all-empty column: right length and type at any size,
    # and an explained batch after them is still exact
    calm = frame.filter(pl.Series(score < 0.3))
    for rows in (calm.head(5), pl.concat([calm] * 12), calm.head(1)):  # 12 x ~270 rows: past the cache
        got = scorer(rows)
        assert got.schema["reasons"] == pl.List(pl.String)
        assert got.get_column("reasons").to_list() == [[]] * rows.height
    assert scorer(frame).get_column("reasons").to_list() == want
