"""From a stream of rows to a training set whose size is bounded by combinations, not rows.

When every selected feature is categorical or a small integer (force, crime, month, place),
rows with the same inputs, outcome and side of the hold-out split are one row of the
training set, weighted by how many they are: the 80 million rows of the police.uk archive
become tens of thousands. Which side of the split a row is on is drawn per row, from its
key (`split`), before rows are counted, so hold-out metrics are per-row metrics.

What training on counts gives (see `train.fit_weighted`): the same objective for logistic
regression and for gradient boosting's loss (a weight of n is n identical rows); for the
forests, the same distribution of trees, since a bootstrap of N rows drawn one by one puts
Multinomial(N, count / N) rows in each cell, which is what each tree is given.

Continuous features (latitude, longitude) have as many values as rows, so rows cannot be
counted together: the training set is then a uniform sample of at most ``sample_rows``
rows, the ones with the smallest draws (a bottom-k sample, deterministic and bounded while
streaming), and metadata.json says so (``training.aggregation``).

A feature with rare values folded into "Other" (place) needs their counts over all rows
before rows can be counted together, so it costs a first pass that counts only them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from batcomputer.training import features, split, stream
from batcomputer.training.data import ReadReport, Source
from batcomputer.training.features import Lookup

if TYPE_CHECKING:
    import pandas as pd

    from batcomputer.training.train import TrainConfig

log = logging.getLogger(__name__)

SAMPLE_ROWS: Final = 1_000_000
CONSOLIDATE: Final = 200_000
"""Partial counts are merged whenever this many have piled up."""
OUTCOME: Final = "_caught"
TEST: Final = "_test"
COUNT: Final = "_rows"
DRAW: Final = "_draw"


@dataclass
class TrainingSet:
    raw: pd.DataFrame
    """Feature values (as `features.extract` gives them), one row per combination or sampled row."""
    caught: np.ndarray
    weight: np.ndarray
    """How many rows of the data each row stands for."""
    test: np.ndarray
    lookup: Lookup
    dropped: dict[str, int] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    """What metadata.json records as ``training.aggregation``."""


def aggregatable(names: tuple[str, ...]) -> bool:
    return all(features.FEATURES[n].kind != "number" for n in names)


def _usable(frame: pd.DataFrame, names: tuple[str, ...],
            dropped: dict[str, int]) -> tuple[pd.DataFrame, np.ndarray]:
    raw = features.extract(frame, names)
    usable, lost = features.usable_rows(raw)
    for why, n in lost.items():
        dropped[why] = dropped.get(why, 0) + n
    if usable.all():
        return raw, np.ones(len(raw), dtype=bool)
    return raw[usable].reset_index(drop=True), usable


def _columns(names: tuple[str, ...]) -> tuple[str, ...]:
    """The police.uk columns the features are extracted from (the only ones read)."""
    return tuple(dict.fromkeys(features.FEATURES[n].column for n in names))


def _rare_lookups(source: Source, config: TrainConfig, progress: bool) -> Lookup:
    """The first pass: count the values of features whose rare values become "Other"."""

    rare = tuple(n for n in config.features if features.FEATURES[n].rare_to_other)
    if not rare:
        return {}
    checked = rare + tuple(n for n in config.features if features.FEATURES[n].kind == "number")
    counts: dict[str, pd.Series] = {}
    total = 0
    # Its warnings (Latin-1 files, unknown outcomes) are the second pass's to give.
    for frame in stream.scan(source, ReadReport(files=[]), progress=progress,
                             label="Pass 1/2: read", warn=False, columns=_columns(checked)):
        raw, _ = _usable(frame, checked, {})
        total += len(raw)
        for name in rare:
            found = raw[name].value_counts()
            counts[name] = found if name not in counts else counts[name].add(found, fill_value=0)
    return {name: features.lookup_from_counts(name, counts[name].astype("int64"), total,
                                              min_share=config.min_place_share)
            for name in rare}


def _fold_rare(raw: pd.DataFrame, rare: Lookup) -> None:
    for name, codes in rare.items():
        assert isinstance(codes, dict)
        raw[name] = raw[name].where(raw[name].isin(list(codes)), features.OTHER)


def collect(source: Source, config: TrainConfig, report: ReadReport, *,
            sample_rows: int = SAMPLE_ROWS, progress: bool = False) -> TrainingSet:
    """Stream ``source`` into a training set (filling ``report`` as `data.read_crimes` does)."""
    import pandas as pd

    if sample_rows < 1:
        raise ValueError(f"the sample must hold at least one row, not {sample_rows:,}")
    names = config.features
    rare = _rare_lookups(source, config, progress)
    counting = aggregatable(names)
    categorical = [n for n in names if features.FEATURES[n].kind == "categorical" and n not in rare]
    seen: dict[str, set[str]] = {n: set() for n in categorical}
    dropped: dict[str, int] = {}
    parts: list[pd.DataFrame] = []
    held = 0
    sample: pd.DataFrame | None = None
    usable_rows = 0
    label = "Pass 2/2: read" if rare else "Read"
    batches: Iterator[pd.DataFrame] = stream.scan(source, report, progress=progress, label=label,
                                                  columns=_columns(names))
    for frame in batches:
        raw, usable = _usable(frame, names, dropped)
        if not len(raw):
            continue
        usable_rows += len(raw)
        keys = frame["row_key"].to_numpy()[usable]
        _fold_rare(raw, rare)
        for name in categorical:
            seen[name].update(raw[name].unique().tolist())
        raw[OUTCOME] = frame["caught"].to_numpy()[usable]
        raw[TEST] = split.hold_out(keys, config.seed, config.test_size)
        if counting:
            parts.append(raw.groupby(list(raw.columns), sort=False).size().reset_index(name=COUNT))
            held += len(parts[-1])
            if held > CONSOLIDATE and len(parts) > 1:
                parts = [_merge(parts)]
                held = len(parts[0])
        else:
            raw[DRAW] = split.uniform(keys, config.seed, split.SAMPLE)
            sample = _bottom(raw if sample is None else pd.concat([sample, raw], ignore_index=True),
                             sample_rows)
    # What the batches used is free now; hand it back before training needs memory of its own.
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if dropped and sum(dropped.values()):
        log.info("Dropped %s", ", ".join(f"{n:,} rows {why}" for why, n in dropped.items()))
    if counting:
        keys = [*names, OUTCOME, TEST]
        counts = _merge(parts).sort_values(keys, kind="stable").reset_index(drop=True) if parts else None
        table = counts if counts is not None else pd.DataFrame(columns=[*names, OUTCOME, TEST, COUNT])
        weight = table[COUNT].to_numpy(dtype=np.float64)
        record: dict[str, Any] = {
            "mode": "counts", "rows": usable_rows, "combinations": len(table),
            "passes": 2 if rare else 1, "split": "per row, by a hash of its Crime ID and the seed"}
    else:
        table = (sample.sort_values(DRAW, kind="stable").reset_index(drop=True) if sample is not None
                 else pd.DataFrame(columns=[*names, OUTCOME, TEST, DRAW]))
        weight = np.ones(len(table))
        record = {
            "mode": "sample", "rows": usable_rows, "sample_rows": len(table), "limit": sample_rows,
            "passes": 2 if rare else 1, "split": "per row, by a hash of its Crime ID and the seed",
            "why": f"{', '.join(n for n in names if features.FEATURES[n].kind == 'number')} "
                   "are continuous, so rows cannot be counted together: a uniform sample of the "
                   "rows (the smallest hash draws) is trained on, and scored on its hold-out rows"}
    raw_out = table[list(names)].reset_index(drop=True)
    lookup: Lookup = {}
    for name in names:
        if name in rare:
            lookup[name] = rare[name]
        elif name in seen:
            lookup[name] = {v: i for i, v in enumerate(sorted(seen[name]))}
        else:
            lookup[name] = features.NUMERIC
    return TrainingSet(raw=raw_out, caught=table[OUTCOME].to_numpy(dtype=np.int64), weight=weight,
                       test=table[TEST].to_numpy(dtype=bool), lookup=lookup,
                       dropped=dropped, record=record)


def _merge(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Partial counts summed per combination."""
    import pandas as pd

    both = pd.concat(parts, ignore_index=True)
    keys = [c for c in both.columns if c != COUNT]
    merged: pd.DataFrame = both.groupby(keys, sort=False)[COUNT].sum().reset_index()
    return merged


def _bottom(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` rows with the smallest draws."""
    if len(rows) <= k:
        return rows
    draws = rows[DRAW].to_numpy()
    keep = np.argpartition(draws, k - 1)[:k]
    return rows.iloc[np.sort(keep)].reset_index(drop=True)
