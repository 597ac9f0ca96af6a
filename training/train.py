"""Training: target, classifier, hold-out metrics.

Returns a `TrainedModel` (the artifact triad plus what metadata.json records);
writing it is `publish`'s job.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from batcomputer.errors import UserError
from batcomputer.training import features
from batcomputer.training.features import Lookup

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from batcomputer.training.aggregate import TrainingSet

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
    aggregation: dict[str, Any] = field(default_factory=dict)
    """How streamed rows became the training set (`aggregate`), for metadata.json's
    training.aggregation; empty when the model was trained on the rows themselves."""


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
    return _finish(model, lookup, config, params, x_train, x_test, y_test, None, dropped)


def train_set(data: TrainingSet, config: TrainConfig) -> TrainedModel:
    """Train on a streamed training set (`aggregate.collect`): rows weighted by how many
    rows of the data they stand for, hold-out rows chosen per row before counting."""
    import numpy as np

    params = config.resolved_params()
    test = data.test
    y = data.caught
    if len(np.unique(y[~test])) < 2 or not test.any():
        raise UserError(f"{int(data.weight.sum()):,} usable rows: training needs rows of both "
                        "outcomes in the training set and a hold-out set")
    x = features.encode(data.raw, data.lookup)
    fit_params = dict(params)
    if config.classifier in PARALLEL_FIT and "n_jobs" not in dict(config.params):
        fit_params["n_jobs"] = -1
    log.info("Training %s(%s) on %s rows (%s distinct, weighted) x %d features",
             estimator_class(config.classifier).__name__,
             ", ".join(f"{k}={v}" for k, v in params.items()),
             f"{int(data.weight[~test].sum()):,}", f"{int((~test).sum()):,}", x.shape[1])
    started = time.monotonic()
    model = estimator(config.classifier, fit_params, data.lookup)
    fit_weighted(model, config.classifier, x[~test], y[~test], data.weight[~test], seed=config.seed)
    log.info("Trained in %.1fs; scoring %s hold-out rows", time.monotonic() - started,
             f"{int(data.weight[test].sum()):,}")
    trained = _finish(model, data.lookup, config, params, x[~test], x[test], y[test],
                      data.weight[test], data.dropped, rows_train=int(data.weight[~test].sum()))
    trained.aggregation = data.record
    return trained


def fit_weighted(model: Any, classifier: str, x: np.ndarray, y: np.ndarray, weight: np.ndarray,
                 *, seed: int) -> None:
    """Fit on rows that each stand for ``weight`` identical rows.

    Logistic regression and gradient boosting minimise a sum of per-row losses, so a row
    of weight n is n rows: the objective is the same. (HistGradientBoosting still counts
    rows, not weights, for ``min_samples_leaf`` and its early-stopping split.)

    A forest's tree sees a bootstrap of the rows: drawn one by one, N draws put
    Multinomial(N, weight / N) rows into the cells, so each tree is fitted on exactly that
    draw, which gives the trees the distribution they have on the rows themselves. Without
    bootstrap every tree gets the counts. ``min_samples_leaf`` counts rows, so it becomes
    the same number of rows by weight (``min_weight_fraction_leaf``) and 1 distinct row.
    The forest fits its first tree; the others, the trees it would grow (`_fit_trees`), are
    fitted on ``n_jobs`` threads while the next draws are made.
    """
    import math

    import numpy as np

    if classifier not in PARALLEL_FIT:
        if classifier in LINEAR:
            _fit_pipeline_weighted(model, x, y, weight)
        else:
            model.fit(x, y, sample_weight=weight)
        return
    user = model.get_params()
    if user.get("oob_score"):
        raise UserError("oob_score needs the rows themselves: train with --engine memory")
    total = int(weight.sum())
    draws = total
    if user["bootstrap"] and user["max_samples"] is not None:
        max_samples = user["max_samples"]
        draws = max_samples if isinstance(max_samples, int) else max(1, round(max_samples * total))
    leaf = user["min_samples_leaf"]
    leaf_rows = leaf if isinstance(leaf, int) else math.ceil(leaf * draws)
    tree_total = draws if user["bootstrap"] else total
    # One tree per fit call: joblib's pool would only add its start-up and polling.
    model.set_params(bootstrap=False, max_samples=None, min_samples_leaf=1, warm_start=True, n_jobs=None,
                     # scikit-learn's ceiling: at 0.5 no split is possible anyway.
                     min_weight_fraction_leaf=min(0.5, max(user["min_weight_fraction_leaf"],
                                                           leaf_rows / tree_total)))
    rng = np.random.default_rng(seed)
    share = weight / weight.sum()

    def drawn() -> np.ndarray:
        return rng.multinomial(draws, share).astype(np.float64) if user["bootstrap"] else weight

    n_trees = user["n_estimators"]
    model.set_params(n_estimators=1)
    model.fit(x, y, sample_weight=drawn())
    if user["class_weight"] is None:
        # The other trees are fitted as the forest would fit them (the same parameters and
        # the seeds it would give them), on as many threads as n_jobs says: a tree's fit
        # runs without the GIL, so two cores fit twice as many trees.
        _fit_trees(model, x, y, (drawn() for _ in range(n_trees - 1)),
                   threads=_threads(user["n_jobs"]))
    else:  # the forest weighs the classes itself: one tree per fit call
        for trees in range(2, n_trees + 1):
            model.set_params(n_estimators=trees)
            model.fit(x, y, sample_weight=drawn())
    # The fitted trees are what they are; the estimator again says what the user asked for.
    model.set_params(**{k: user[k] for k in ("bootstrap", "max_samples", "min_samples_leaf",
                                              "min_weight_fraction_leaf", "warm_start", "n_jobs")})


def _threads(n_jobs: int | None) -> int:
    from joblib import effective_n_jobs

    return max(1, int(effective_n_jobs(n_jobs)))


def _fit_trees(forest: Any, x: np.ndarray, y: np.ndarray, weights: Iterator[np.ndarray], *,
               threads: int) -> None:
    """Add a tree per entry of ``weights`` to a fitted ``forest`` (grown with warm_start),
    each fitted on its weights: what ``forest.fit`` with a larger ``n_estimators`` gives,
    tree for tree (the same parameters, the same seeds), but with weights per tree. The
    weights are drawn (in order) while the trees before them are fitted; at most twice
    ``threads`` of them are held at once."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    import numpy as np
    from sklearn.base import clone
    from sklearn.utils import check_random_state

    first = forest.estimators_[0]
    seeds = check_random_state(forest.random_state)
    seeds.randint(np.iinfo(np.int32).max)  # the first tree's seed
    x32 = np.asarray(x, dtype=np.float32)  # what the forest gives its trees
    fitted: list[Any] = []
    pending: deque[Future[Any]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="tree") as pool:
        for w in weights:
            tree = clone(first).set_params(random_state=seeds.randint(np.iinfo(np.int32).max))
            pending.append(pool.submit(tree.fit, x32, y, sample_weight=w))
            if len(pending) >= 2 * threads:
                fitted.append(pending.popleft().result())
        fitted.extend(f.result() for f in pending)
    forest.estimators_.extend(fitted)
    forest.set_params(n_estimators=len(forest.estimators_))


def _fit_pipeline_weighted(pipeline: Any, x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> None:
    """The weights reach the scaler too (its mean and spread are those of the rows), by
    scikit-learn's metadata routing, on for this fit only."""
    import sklearn

    with sklearn.config_context(enable_metadata_routing=True):
        for _, transformer, _ in pipeline.named_steps["encode"].transformers:
            if hasattr(transformer, "partial_fit"):  # StandardScaler takes weights; OneHotEncoder none
                transformer.set_fit_request(sample_weight=True)
        pipeline.named_steps["model"].set_fit_request(sample_weight=True)
        pipeline.fit(x, y, sample_weight=weight)


def _finish(model: Any, lookup: Lookup, config: TrainConfig, params: dict[str, Any],
            x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            w_test: np.ndarray | None, dropped: dict[str, int],
            rows_train: int | None = None) -> TrainedModel:
    """Score the hold-out rows (each standing for ``w_test`` rows, when given) and
    assemble what publish writes."""
    import numpy as np
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    proba = model.predict_proba(x_test)[:, 1]
    rows_test = len(x_test) if w_test is None else int(w_test.sum())
    metrics: dict[str, float | int] = {
        "accuracy": round(float(accuracy_score(y_test, proba >= 0.5, sample_weight=w_test)), 6),
        "roc_auc": round(float(roc_auc_score(y_test, proba, sample_weight=w_test)), 6),
        "log_loss": round(float(log_loss(y_test, proba, sample_weight=w_test)), 6),
        "positive_rate": round(float(np.average(y_test, weights=w_test)), 6),
        "rows_train": len(x_train) if rows_train is None else rows_train,
        "rows_test": rows_test,
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
