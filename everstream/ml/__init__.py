"""Fresh-data machine learning on the stream: features, delayed labels, online and batch models,
a model registry on a compacted topic, scoring with hot swap, evaluation and drift (docs/ml.md).

Needs the ``ml`` extra (river, scikit-learn, lightgbm): ``pip install everstream[ml]``.
"""

from everstream.ml.evaluation import DriftAlarm, DriftMonitor, Evaluator, auc_pr, daily_metrics, precision_at_k
from everstream.ml.features import FEATURES, PAYMENT_COLUMNS, compute_features, feature_matrix, payment_features
from everstream.ml.labels import LabelStore
from everstream.ml.models import (
    DEFAULT_RULES,
    LightGBMModel,
    Model,
    RiverModel,
    Rule,
    RulesModel,
    model_from_bytes,
    train_lightgbm,
)
from everstream.ml.registry import ModelRegistry, ModelVersion
from everstream.ml.scoring import Scorer
from everstream.ml.simulation import Payments, PaymentsConfig, simulate
from everstream.ml.training import Retrainer, TrainingReport

__all__ = [
    "DEFAULT_RULES",
    "FEATURES",
    "PAYMENT_COLUMNS",
    "DriftAlarm",
    "DriftMonitor",
    "Evaluator",
    "LabelStore",
    "LightGBMModel",
    "Model",
    "ModelRegistry",
    "ModelVersion",
    "Payments",
    "PaymentsConfig",
    "Retrainer",
    "RiverModel",
    "Rule",
    "RulesModel",
    "Scorer",
    "TrainingReport",
    "auc_pr",
    "compute_features",
    "daily_metrics",
    "feature_matrix",
    "model_from_bytes",
    "payment_features",
    "precision_at_k",
    "simulate",
    "train_lightgbm",
]
