"""Training: target, classifier, hold-out metrics.

Returns a `TrainedModel` (the artifact triad plus what metadata.json records);
writing it is `publish`'s job.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from batcomputer.errors import UserError
from batcomputer.training import features
from batcomputer.training.features import Lookup

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

# Labels of predict_proba's columns, in classes_ order (target False, True).
LABELS: Final[tuple[str, str]] = ("not_caught", "caught")

# name -> (estimator class path, default parameters); imported when used, so the CLI starts fast.
CLASSIFIERS: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "random-forest": ("sklearn.ensemble.RandomForestClassifier",
                      {"n_estimators": 100, "min_samples_leaf": 25}),
    "extra-trees": ("sklearn.ensemble.ExtraTreesClassifier",
                    {"n_estimators": 100, "min_samples_leaf": 25}),
    "gradient-boosting": ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 100}),
    "logistic-regression": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
}
PARALLEL_FIT: Final[frozenset[str]] = frozenset({"random-forest", "extra-trees"})


def estimator_class(name: str) -> type[Any]:
    path, _ = CLASSIFIERS[name]
    module, _, attr = path.rpartition(".")
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls
# Parameters that change how fast a model trains or predicts, not what it predicts.
RUNTIME_PARAMS: Final[frozenset[str]] = frozenset({"n_jobs", "verbose", "warm_start"})


# Classifiers that weigh their inputs linearly: a category's integer code means nothing to
# them, so they get one column per category (and numbers on one scale), inside the saved
# model so that the server still sends the same encoded row.
LINEAR: Final[frozenset[str]] = frozenset({"logistic-regression"})


def estimator(classifier: str, params: dict[str, Any], lookup: Lookup) -> Any:
    """The unfitted estimator for the encoded input matrix (columns in lookup order)."""
    model = estimator_class(classifier)(**params)
    if classifier not in LINEAR:
        return model
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    kinds = list(lookup.values())
    categorical = [i for i, codes in enumerate(kinds) if isinstance(codes, dict)]
    numeric = [i for i, codes in enumerate(kinds) if not isinstance(codes, dict)]
    encode = ColumnTransformer([("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
                                ("numbers", StandardScaler(), numeric)])
    return Pipeline([("encode", encode), ("model", model)])


@dataclass(frozen=True)
class TrainConfig:
    features: tuple[str, ...] = features.DEFAULT_FEATURES
    classifier: str = "random-forest"
    params: tuple[tuple[str, Any], ...] = ()
    seed: int = 42
    test_size: float = 0.2
    min_place_share: float = 0.005

    def resolved_params(self) -> dict[str, Any]:
        """Defaults of the classifier overlaid by the user's, plus the seed."""
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {self.classifier!r}; "
                             f"choose from {', '.join(CLASSIFIERS)}")
        _, defaults = CLASSIFIERS[self.classifier]
        cls = estimator_class(self.classifier)
        merged = {**defaults, "random_state": self.seed, **dict(self.params)}
        valid = cls().get_params()
        unknown = sorted(set(merged) - set(valid))
        if unknown:
            raise ValueError(f"{cls.__name__} has no parameter(s) {', '.join(unknown)}")
        return dict(sorted(merged.items()))


@dataclass
class TrainedModel:
    model: Any
    lookup: Lookup
    flags: list[str]
    schema: dict[str, Any]
    classifier: str
    params: dict[str, Any]
    metrics: dict[str, float | int]
    x_train: np.ndarray | None = None
    """The encoded training inputs (what the fast form is checked on, with x_test)."""
    x_test: np.ndarray | None = None
    """The encoded hold-out inputs."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows left out because a selected feature had no usable value, by reason
    (merged into metadata's data.dropped)."""


def parse_param(text: str) -> tuple[str, Any]:
    """'max_depth=12' -> ('max_depth', 12); values are JSON, else strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"parameter {text!r} is not key=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def target(crimes: pd.DataFrame) -> np.ndarray:
    import numpy as np

    caught: np.ndarray = crimes["caught"].to_numpy(dtype=np.int64)
    return caught


def train(crimes: pd.DataFrame, config: TrainConfig) -> TrainedModel:
    params = config.resolved_params()
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split

    cls = estimator_class(config.classifier)
    raw = features.extract(crimes, config.features)
    usable, dropped = features.usable_rows(raw)
    if not usable.all():
        raw, crimes = raw[usable].reset_index(drop=True), crimes[usable]
        log.info("Dropped %s", ", ".join(f"{n:,} rows {why}" for why, n in dropped.items()))
        if crimes["caught"].nunique() < 2:
            raise UserError(f"{len(crimes):,} rows left after dropping "
                            f"{', '.join(f'{n:,} {why}' for why, n in dropped.items())}; "
                            "training needs rows of both outcomes")
    lookup = features.build_lookup(raw, min_share=config.min_place_share)
    x = features.encode(raw, lookup)
    y = target(crimes)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=config.test_size, random_state=config.seed, stratify=y)

    fit_params = dict(params)
    if config.classifier in PARALLEL_FIT and "n_jobs" not in dict(config.params):
        fit_params["n_jobs"] = -1
    log.info("Training %s(%s) on %s rows x %d features",
             cls.__name__, ", ".join(f"{k}={v}" for k, v in params.items()),
             f"{len(x_train):,}", x.shape[1])
    started = time.monotonic()
    model = estimator(config.classifier, fit_params, lookup).fit(x_train, y_train)
    log.info("Trained in %.1fs; scoring %s hold-out rows", time.monotonic() - started,
             f"{len(x_test):,}")
    proba = model.predict_proba(x_test)[:, 1]
    metrics: dict[str, float | int] = {
        "accuracy": round(float(accuracy_score(y_test, proba >= 0.5)), 6),
        "roc_auc": round(float(roc_auc_score(y_test, proba)), 6),
        "log_loss": round(float(log_loss(y_test, proba)), 6),
        "positive_rate": round(float(y_test.mean()), 6),
        "rows_train": len(x_train),
        "rows_test": len(x_test),
    }
    # A model pickled with n_jobs=-1 spins up a thread pool on every predict call.
    if hasattr(model, "n_jobs"):
        model.n_jobs = None
    flags = [LABELS[int(c)] for c in model.classes_]
    api = features.schema(lookup, flags)
    return TrainedModel(model=model, lookup=lookup, flags=flags, schema=api,
                        classifier=config.classifier,
                        params={k: v for k, v in params.items() if k not in RUNTIME_PARAMS},
                        metrics=metrics, x_train=x_train, x_test=x_test, dropped=dropped)
