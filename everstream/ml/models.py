"""Models behind one small interface: batch (LightGBM), online (river) and a rules-only baseline.

Every model maps a float matrix (rows = events, columns = its ``features`` in order, NaN =
missing) to a fraud probability, vectorized, and can say which features pushed a score up
(``contributions``, for reason codes). Models travel through the registry as bytes
(:meth:`Model.to_bytes` / :func:`model_from_bytes`): a zlib-compressed pickle, so load artifacts
only from a registry topic you trust (as with any pickled model).
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from everstream.errors import ConfigError, ModelError


class Model:
    """Base of the models: ``predict(X)`` -> probabilities, ``contributions(X)`` -> per-feature push."""

    kind = "model"

    def __init__(self, features: tuple[str, ...]) -> None:
        if not features:
            raise ConfigError("a model needs at least one feature name")
        self.features = tuple(features)

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per row and feature, how much the feature raised the score (log-odds units); ``(n, f)``."""
        return np.zeros((len(x), len(self.features)))

    def to_bytes(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), 6)

    def check(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ModelError(f"{self.kind} model expects {len(self.features)} feature columns "
                             f"{list(self.features)}, got an array of shape {x.shape}")
        return x


def model_from_bytes(data: bytes) -> Model:
    """The model stored by :meth:`Model.to_bytes` (a registry artifact)."""
    try:
        model = pickle.loads(zlib.decompress(data))
    except Exception as e:  # corrupt or foreign artifact
        raise ModelError(f"model artifact of {len(data)} bytes could not be loaded: {type(e).__name__}: {e}; "
                         "register the model again with ModelRegistry.register") from e
    if not isinstance(model, Model):
        raise ModelError(f"model artifact holds a {type(model).__name__}, not an everstream.ml Model")
    return model


# ---------------------------------------------------------------------- LightGBM (batch)

LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 50,
    "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "max_bin": 63,
    "verbose": -1, "seed": 7, "force_col_wise": True,
}


class LightGBMModel(Model):
    """A gradient-boosted tree ensemble.

    Reason codes (:meth:`contributions`) are path attributions (Saabas, "treeinterpreter"): along the
    path from each tree's root to the leaf an event falls in, every split adds the change of the
    node value to its feature. The attribution of a leaf depends on the leaf alone, so it is a
    table computed once per model, and the contributions of a batch are one ``pred_leaf`` call (as
    cheap as ``predict``) plus a gather-and-sum in NumPy; they add up, with the trees' root values,
    to the raw score exactly. TreeSHAP (``pred_contrib``, :meth:`shap_contributions`) costs about
    2.5 ms per event here, 15x a prediction: too slow for the decisions of live traffic.
    """

    kind = "lightgbm"

    def __init__(self, booster: Any, features: tuple[str, ...], threads: int = 1) -> None:
        super().__init__(features)
        self.booster = booster
        self.threads = threads
        self._paths: tuple[np.ndarray, np.ndarray, float] | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(self.check(x), num_threads=self.threads))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per row and feature, the path attribution in log-odds (see the class doc); ``(n, features)``."""
        if not len(x):
            return np.zeros((0, len(self.features)))
        table, base, _ = self.path_table()
        leaves = np.asarray(self.booster.predict(self.check(x), num_threads=self.threads, pred_leaf=True),
                            dtype=np.int64).reshape(len(x), -1)
        return np.asarray(table[leaves + base].sum(axis=1))

    def shap_contributions(self, x: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions (LightGBM ``pred_contrib``): exact Shapley values, far slower."""
        if not len(x):
            return np.zeros((0, len(self.features)))
        got = np.asarray(self.booster.predict(self.check(x), num_threads=self.threads, pred_contrib=True))
        return got[:, :-1]  # the last column is the expected value

    def path_table(self) -> tuple[np.ndarray, np.ndarray, float]:
        """``(table, base, bias)``: row ``base[t] + leaf`` of ``table`` is the per-feature attribution of leaf
        ``leaf`` of tree ``t``; ``bias`` is the sum of the trees' root values (computed once, from the dump)."""
        if self._paths is None:
            trees = self.booster.dump_model()["tree_info"]
            nf = len(self.features)
            sizes = [int(t["num_leaves"]) for t in trees]
            base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            table = np.zeros((int(sum(sizes)), nf))
            bias = 0.0
            for t, tree in enumerate(trees):
                root = tree["tree_structure"]
                if "leaf_value" in root:  # a single-leaf tree: a constant
                    bias += float(root["leaf_value"])
                    continue
                bias += float(root["internal_value"])
                todo: list[tuple[dict[str, Any], np.ndarray]] = [(root, np.zeros(nf))]
                while todo:
                    node, acc = todo.pop()
                    for side in ("left_child", "right_child"):
                        child = node[side]
                        value = child["leaf_value"] if "leaf_value" in child else child["internal_value"]
                        mine = acc.copy()
                        mine[int(node["split_feature"])] += float(value) - float(node["internal_value"])
                        if "leaf_value" in child:
                            table[base[t] + int(child["leaf_index"])] = mine
                        else:
                            todo.append((child, mine))
            self._paths = (table, base, bias)
        return self._paths

    def __getstate__(self) -> dict[str, Any]:  # the booster as its text model: portable across versions
        return {"model": self.booster.model_to_string(), "features": self.features, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import lightgbm as lgb

        self.features, self.threads = tuple(state["features"]), int(state["threads"])
        self.booster = lgb.Booster(model_str=state["model"])
        self._paths = None


def train_lightgbm(x: np.ndarray, y: np.ndarray, features: tuple[str, ...], *, rounds: int = 150,
                   threads: int = 1, params: dict[str, Any] | None = None) -> LightGBMModel:
    """Fit a LightGBM classifier on ``x`` (rows, ``features``) and labels ``y`` (0/1).

    One thread by default: on a shared machine OpenMP threads spin-wait on busy cores and run
    several times slower than one thread (measured here: 60k rows, 1.4 s with 1 thread, 7-13 s with 2).
    """
    import lightgbm as lgb

    if len(x) != len(y):
        raise ConfigError(f"train_lightgbm: {len(x)} feature rows but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ModelError(f"train_lightgbm: the {len(y)} training labels are all {int(y[0]) if len(y) else '-'}; "
                         "widen the training window or wait for chargebacks to arrive")
    p = {**LIGHTGBM_PARAMS, "num_threads": threads, **(params or {})}
    booster = lgb.train(p, lgb.Dataset(x, label=y, feature_name=list(features), free_raw_data=True),
                        num_boost_round=rounds)
    return LightGBMModel(booster, features)


# ---------------------------------------------------------------------- river (online)


def _squash(x: np.ndarray) -> np.ndarray:
    """Signed log1p with NaN as 0: heavy-tailed amounts and counts on a scale SGD can learn from."""
    return np.asarray(np.nan_to_num(np.sign(x) * np.log1p(np.abs(x)), nan=0.0))


class RiverModel(Model):
    """An online river classifier that learns from labelled events as they arrive.

    ``kind="logreg"``: logistic regression on signed-log inputs, learning and predicting
    mini-batches (vectorized, ``learn_many``/``predict_proba_many``); reason codes are the
    weights times the inputs. ``kind="forest"``: an adaptive random forest
    (``ARFClassifier``), learning and predicting one event at a time (no reason codes).
    """

    def __init__(self, features: tuple[str, ...], kind: str = "logreg", seed: int = 7) -> None:
        from river import forest, linear_model, optim

        super().__init__(features)
        if kind not in ("logreg", "forest"):
            raise ConfigError(f"RiverModel(kind={kind!r}): use 'logreg' or 'forest'")
        self.kind = f"river_{kind}"
        self._forest = kind == "forest"
        self.learned = 0
        self.pipeline: Any
        if self._forest:
            self.pipeline = forest.ARFClassifier(n_models=5, seed=seed)
        else:
            # inputs are squashed (signed log1p) rather than scaled: river's running StandardScaler
            # can turn a variance negative under learn_many and fail
            self.pipeline = linear_model.LogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4)

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        """Learn from labelled rows (in the order they became labelled)."""
        import pandas as pd

        x = _squash(self.check(x))
        if not len(x):
            return
        if self._forest:
            for row, label in zip(x, y, strict=True):
                self.pipeline.learn_one(dict(zip(self.features, row.tolist(), strict=True)), bool(label))
        else:
            for start in range(0, len(x), 256):  # mini-batches: SGD steps of a sensible size
                frame = pd.DataFrame(x[start:start + 256], columns=list(self.features))
                self.pipeline.learn_many(frame, pd.Series(y[start:start + 256].astype(bool)))
        self.learned += len(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        import pandas as pd

        x = _squash(self.check(x))
        if not len(x):
            return np.zeros(0)
        if self._forest:
            return np.array([self.pipeline.predict_proba_one(dict(zip(self.features, r.tolist(), strict=True)))
                             .get(True, 0.0) for r in x])
        proba = self.pipeline.predict_proba_many(pd.DataFrame(x, columns=list(self.features)))
        return np.asarray(proba[True], dtype=np.float64) if True in proba.columns else np.zeros(len(x))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        if self._forest or not len(x):
            return np.zeros((len(x), len(self.features)))
        z = _squash(self.check(x))
        w = np.array([self.pipeline.weights.get(f, 0.0) for f in self.features])
        return np.asarray(z * w)


# ---------------------------------------------------------------------- rules (baseline)


@dataclass(frozen=True)
class Rule:
    """One hand-written rule: ``feature`` compared with ``threshold`` adds ``weight`` to the score."""

    feature: str
    threshold: float
    weight: float
    above: bool = True

    def hits(self, column: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return column > self.threshold if self.above else column < self.threshold


#: What a fraud team writes on day one: big amount for the card, velocity, new device, small-amount tests.
DEFAULT_RULES = (
    Rule("card_amount_z", 3.0, 2.0),
    Rule("card_n_10m", 3.0, 2.0),
    Rule("card_new_device", 0.5, 1.0),
    Rule("amount", 1_000.0, 1.0),
    Rule("device_new_cards_24h", 2.0, 1.5),
    Rule("amount", 3.0, 0.5, above=False),
)


@dataclass
class RulesModel(Model):
    """A rules-only baseline: the score is a squashed sum of the weights of the rules that hit."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    features: tuple[str, ...] = field(default=())  # type: ignore[assignment]
    kind = "rules"

    def __post_init__(self) -> None:
        if not self.rules:
            raise ConfigError("RulesModel needs at least one Rule")
        Model.__init__(self, tuple(dict.fromkeys(r.feature for r in self.rules)))

    def _hits(self, x: np.ndarray) -> np.ndarray:
        idx = {f: i for i, f in enumerate(self.features)}
        out = np.zeros((len(x), len(self.features)))
        for r in self.rules:
            i = idx[r.feature]
            out[:, i] += np.where(r.hits(x[:, i]), r.weight, 0.0)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        total = self._hits(self.check(x)).sum(axis=1)
        return np.asarray(1.0 / (1.0 + np.exp(-(total - 3.0))))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self._hits(self.check(x))


__all__ = ["DEFAULT_RULES", "LIGHTGBM_PARAMS", "LightGBMModel", "Model", "RiverModel", "Rule", "RulesModel",
           "model_from_bytes", "train_lightgbm"]
