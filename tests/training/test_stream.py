"""The streaming reader against `read_crimes`, the per-row split, and training on counts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from crimecsv import HEADER, row, write

from batcomputer.cli import main as cli
from batcomputer.training import aggregate, data, police, split, stream, train


def streamed(source: str | Path) -> tuple[pd.DataFrame, data.ReadReport]:
    report = data.ReadReport(files=[])
    frames = list(stream.scan(source, report))
    return pd.concat(frames, ignore_index=True), report


def same_reading(source: str | Path) -> None:
    """Both readers keep the same rows (as a multiset) and count the same drops."""
    old, old_report = data.read_crimes(source)
    new, new_report = streamed(source)
    assert new_report.summary() == old_report.summary()
    assert new_report.fingerprint == old_report.fingerprint
    assert new_report.unknown_outcomes == old_report.unknown_outcomes
    assert new_report.latin1_files == old_report.latin1_files
    assert new_report.files == old_report.files
    columns = [*data.REQUIRED_COLUMNS[:-1], *data.OPTIONAL_COLUMNS, "caught"]
    key = sorted(map(tuple, old[columns].astype(str).to_numpy().tolist()))
    assert sorted(map(tuple, new[columns].astype(str).to_numpy().tolist())) == key


def test_streaming_reads_generated_data_like_read_crimes(crime_data: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    same_reading(crime_data)
    monkeypatch.setattr(stream, "BLOCK_SIZE", 1 << 12)  # many batches per file
    same_reading(crime_data)


def test_streaming_keeps_every_rule_of_the_reader(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "BLOCK_SIZE", 1 << 10)
    write(tmp_path / "plain.csv", row(), row(outcome="Investigation complete; no suspect identified"),
          row(crime="Anti-social behaviour", outcome=""), row(outcome="Under investigation"),
          row(outcome="Abducted by aliens"), *[row(month=f"2024-0{1 + i % 9}") for i in range(40)])
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(("\r\n".join([HEADER, row(), row(outcome="Unable to prosecute suspect"), ""]))
                     .encode())
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join([HEADER, row(), ""]).encode())
    latin = tmp_path / "latin.csv"
    latin.write_bytes("\n".join([HEADER, row(location="On or near Caf\xe9"), row(), ""]).encode("latin-1"))
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("\n".join([HEADER, row(location='"On or near Shop, the ""Big"" one"'),
                                 row(location='"On or near two\nlines"'), "", "",
                                 row(crime=" Burglary ", outcome=" Offender fined "), ""]))
    short = tmp_path / "short.csv"
    short.write_text("\n".join([HEADER, row(), row()[:-1], ",".join(row().split(",")[:10]), ""]))
    same_reading(tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    ("", "file is empty"),
    ("Month,Crime type\n2024-01,Burglary\n", "x.csv:1: missing column(s) 'Reported by'"),
    ("\n".join([HEADER, row(), row(month="March 2024"), row(force=""), row(month="2024")]) + "\n",
     "x.csv:3: Month 'March 2024' is not YYYY-MM (2 such row(s) in this file)"),
    (HEADER + "\n" + row() + "\n" + row(force="") + "\n", "x.csv:3: 'Reported by' is empty"),
    (HEADER + "\n" + row() + "\n" + ",".join(row().split(",")[:9]) + "\n",
     "x.csv:3: 'Crime type' is empty"),
    (HEADER + "\n" + row() + "\n" + row() + ",extra,fields\n", "x.csv:3: not a valid CSV"),
    (HEADER + "\n" + row(crime="Anti-social behaviour", outcome="") + "\n", "no usable rows"),
    (HEADER + "\n" + row() + "\n" + row() + "\n", "same outcome"),
])
def test_bad_files_fail_with_the_readers_message(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(data.DataError) as old:
        data.read_crimes(path)
    with pytest.raises(data.DataError) as new:
        streamed(path)
    assert message in str(old.value)
    assert str(new.value) == str(old.value)


def test_a_bad_month_late_in_a_file_is_found_with_its_line(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "BLOCK_SIZE", 1 << 10)
    path = write(tmp_path / "x.csv", *[row()] * 50, row(month="2024-13"), *[row()] * 5)
    with pytest.raises(data.DataError, match=r"x.csv:52: Month '2024-13' is not YYYY-MM \(1 such"):
        streamed(path)


def test_the_split_is_per_row_and_does_not_depend_on_file_names(crime_data: Path,
                                                                 tmp_path: Path) -> None:
    shuffled = tmp_path / "copy"
    for i, path in enumerate(sorted(crime_data.rglob("*.csv"), reverse=True)):
        (shuffled / str(i % 3)).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, shuffled / str(i % 3) / f"{i}.csv")

    def held_out(source: Path, seed: int) -> set[str]:
        frame, _ = streamed(source)
        test = split.hold_out(frame["row_key"].to_numpy(), seed, 0.2)
        return set((frame["Month"] + frame["Location"] + frame["Latitude"])[test])

    a, b = held_out(crime_data, 42), held_out(shuffled, 42)
    assert a == b
    assert held_out(crime_data, 43) != a
    frame, _ = streamed(crime_data)
    assert 0.17 < split.hold_out(frame["row_key"].to_numpy(), 42, 0.2).mean() < 0.23


def test_row_keys_hash_ids_of_any_length_and_fall_back_to_file_and_line() -> None:
    ids = pa.array(["a" * 64, "b" * 64, "short", "", "", "a" * 64, "x" * 70])
    keys = split.row_keys(ids, 12345, np.array([2, 3, 4, 5, 6, 7, 8]))
    assert keys[0] == keys[5] and len(set(keys.tolist())) == 6
    again = split.row_keys(ids, 12345, np.array([2, 3, 4, 5, 6, 7, 8]))
    assert (keys == again).all()
    other_file = split.row_keys(ids, 99, np.array([2, 3, 4, 5, 6, 7, 8]))
    assert (keys[[0, 1, 2, 5, 6]] == other_file[[0, 1, 2, 5, 6]]).all()
    assert (keys[[3, 4]] != other_file[[3, 4]]).all()


def test_only_the_columns_asked_for_are_kept_and_every_check_still_runs(
        crime_data: Path, tmp_path: Path) -> None:
    whole, report = streamed(crime_data)
    some = data.ReadReport(files=[])
    frames = list(stream.scan(crime_data, some, columns=("Location",)))
    assert all(list(f.columns) == ["Location", "caught", "row_key"] for f in frames)
    only = pd.concat(frames, ignore_index=True)
    assert some.summary() == report.summary() and some.fingerprint == report.fingerprint
    assert only["row_key"].tolist() == whole["row_key"].tolist()  # the same rows, the same keys
    assert only["Location"].tolist() == whole["Location"].tolist()
    assert (only["caught"] == whole["caught"]).all()
    # The month, force and crime type are checked (and the outcome read) although not kept.
    path = write(tmp_path / "x.csv", row(), row(force=""), row(month="2024"))
    with pytest.raises(data.DataError, match="x.csv:4: Month '2024'"):
        list(stream.scan(path, columns=("Location",)))
    with pytest.raises(ValueError, match="not a column of the reader: Age"):
        list(stream.scan(path, columns=("Age",)))


def test_each_feature_needs_only_its_column(crime_data: Path) -> None:
    """What `aggregate` reads (`Feature.column`) is all each feature is extracted from."""
    from batcomputer.training import features

    whole, _ = streamed(crime_data)
    for name, feature in features.FEATURES.items():
        alone = features.extract(whole[[feature.column]], [name])
        assert alone.equals(features.extract(whole, [name])), name


def collected(source: Path, config: train.TrainConfig, **kwargs: int) -> aggregate.TrainingSet:
    return aggregate.collect(source, config, data.ReadReport(files=[]), **kwargs)


def test_counts_are_bounded_by_combinations_and_keep_every_row(crime_data: Path) -> None:
    config = train.TrainConfig()
    rows = collected(crime_data, config)
    kept, _ = data.read_crimes(crime_data)
    assert rows.weight.sum() == len(kept)
    assert rows.weight[rows.caught == 1].sum() == kept["caught"].sum()
    assert len(rows.raw) < len(kept) and rows.record["mode"] == "counts"
    assert rows.lookup == {**rows.lookup, "force": {f: i for i, f in enumerate(
        sorted(kept["Reported by"].unique()))}}
    combos = rows.raw.assign(caught=rows.caught, test=rows.test)
    assert not combos.duplicated().any()


def test_weighted_rows_train_logistic_regression_like_the_rows(crime_data: Path) -> None:
    """A row of weight n is n rows: same coefficients, and the weighted hold-out metrics
    are the per-row metrics of the expanded rows."""
    config = train.TrainConfig(classifier="logistic-regression")
    rows = collected(crime_data, config)
    trained = train.train_set(rows, config)
    counts = rows.weight.astype(int)
    expanded = aggregate.TrainingSet(raw=rows.raw.loc[rows.raw.index.repeat(counts)].reset_index(drop=True),
                                     caught=np.repeat(rows.caught, counts), weight=np.ones(counts.sum()),
                                     test=np.repeat(rows.test, counts), lookup=rows.lookup)
    by_row = train.train_set(expanded, config)
    a, b = trained.model.named_steps["model"], by_row.model.named_steps["model"]
    assert np.allclose(a.coef_, b.coef_, atol=1e-4) and np.allclose(a.intercept_, b.intercept_, atol=1e-4)
    for name in ("accuracy", "roc_auc", "log_loss", "positive_rate"):
        assert trained.metrics[name] == pytest.approx(by_row.metrics[name], abs=1e-5), name
    assert trained.metrics["rows_test"] == by_row.metrics["rows_test"] == int(rows.weight[rows.test].sum())


def test_forests_on_counts_score_like_forests_on_rows(crime_data: Path) -> None:
    """Same split: a forest on counts (a multinomial bootstrap per tree) against
    scikit-learn's forest on the expanded rows, scored on the same hold-out rows."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    config = train.TrainConfig(params=(("n_estimators", 30),))
    rows = collected(crime_data, config)
    on_counts = train.train_set(rows, config)
    assert len(on_counts.model.estimators_) == 30
    assert on_counts.model.get_params()["bootstrap"] is True
    assert on_counts.model.get_params()["min_samples_leaf"] == 25
    x = on_counts.x_train
    assert x is not None and on_counts.x_test is not None
    train_rows = ~rows.test
    counts = rows.weight[train_rows].astype(int)
    forest = RandomForestClassifier(n_estimators=30, min_samples_leaf=25, random_state=42).fit(
        np.repeat(x, counts, axis=0), np.repeat(rows.caught[train_rows], counts))
    on_rows = roc_auc_score(rows.caught[rows.test], forest.predict_proba(on_counts.x_test)[:, 1],
                            sample_weight=rows.weight[rows.test])
    assert abs(on_counts.metrics["roc_auc"] - on_rows) < 0.02, (on_counts.metrics, on_rows)
    again = train.train_set(collected(crime_data, config), config)
    assert (again.model.predict_proba(x) == on_counts.model.predict_proba(x)).all()


@pytest.mark.filterwarnings("ignore:class_weight presets")  # warm start's, as before
@pytest.mark.parametrize("classifier", ["random-forest", "extra-trees"])
def test_trees_fitted_on_threads_are_the_forests_own(classifier: str) -> None:
    """`fit_weighted` fits the trees after the first on threads; they are the trees the
    forest grows itself (warm start, one tree per fit call, the same weights), whatever
    the number of threads, and a class weight takes the forest's own path."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 12, (400, 3)).astype(np.float64)
    y = (x.sum(axis=1) + rng.normal(0, 3, 400) > 16).astype(np.int64)
    weight = rng.integers(1, 50, 400).astype(np.float64)
    params = {"n_estimators": 9, "min_samples_leaf": 25, "random_state": 3}
    cls = train.estimator_class(classifier)

    def grown(**extra: object) -> object:
        model = cls(**params, **extra)
        train.fit_weighted(model, classifier, x, y, weight, seed=1)
        return model

    def by_the_forest() -> object:
        model = grown(n_jobs=1)
        draws = np.random.default_rng(1)
        reference = cls(**params).set_params(
            warm_start=True, min_samples_leaf=1, bootstrap=False,
            min_weight_fraction_leaf=model.estimators_[0].min_weight_fraction_leaf)
        bootstrap = cls().get_params()["bootstrap"]  # extra-trees: no bootstrap, the counts
        for trees in range(1, 10):
            drawn = (draws.multinomial(int(weight.sum()), weight / weight.sum()).astype(float)
                     if bootstrap else weight)
            reference.set_params(n_estimators=trees).fit(x, y, sample_weight=drawn)
        return reference

    def trees(model: Any) -> list[tuple[list[float], list[float], list[int]]]:
        return [(t.tree_.threshold.tolist(), t.tree_.value.ravel().tolist(),
                 t.tree_.feature.tolist()) for t in model.estimators_]

    expected = trees(by_the_forest())
    for model in (grown(n_jobs=1), grown(n_jobs=2), grown(n_jobs=-1)):
        assert model.get_params()["n_jobs"] in (1, 2, -1)  # type: ignore[attr-defined]
        assert trees(model) == expected
    balanced = grown(class_weight="balanced")
    assert len(balanced.estimators_) == 9  # type: ignore[attr-defined]
    assert trees(balanced) != expected


@pytest.mark.parametrize("classifier", sorted(train.CLASSIFIERS))
def test_every_classifier_trains_on_counts(crime_data: Path, classifier: str) -> None:
    config = train.TrainConfig(classifier=classifier, features=("force", "crime", "month", "place"))
    rows = collected(crime_data / "2024-01", config)
    assert rows.record["passes"] == 2
    trained = train.train_set(rows, config)
    assert 0.5 < trained.metrics["roc_auc"] <= 1
    kept, _ = data.read_crimes(crime_data / "2024-01")
    memory = train.train(kept, config)
    assert trained.lookup == memory.lookup and trained.schema == memory.schema


def test_continuous_inputs_train_on_a_bounded_sample(crime_data: Path) -> None:
    config = train.TrainConfig(features=("force", "crime", "latitude", "longitude"),
                               params=(("n_estimators", 5),))
    rows = collected(crime_data, config, sample_rows=500)
    assert rows.record["mode"] == "sample" and rows.record["sample_rows"] == len(rows.raw) == 500
    assert rows.record["rows"] > 500 and (rows.weight == 1).all()
    again = collected(crime_data, config, sample_rows=500)
    assert again.raw.equals(rows.raw)
    assert train.train_set(rows, config).aggregation["mode"] == "sample"
    everything = collected(crime_data, config)
    assert everything.record["sample_rows"] == everything.record["rows"]


def test_cli_streams_by_default_and_records_how(tmp_path: Path, crime_data: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    reg = tmp_path / "reg"
    with caplog.at_level(logging.INFO):
        assert cli(["train", str(crime_data), "--registry", str(reg), "--param", "n_estimators=5"]) == 0
    assert "Read 132/132 files" in caplog.text and "rows/s" in caplog.text
    meta = json.loads((reg / "crime" / "1.0.0" / "metadata.json").read_text())
    assert meta["training"]["aggregation"]["mode"] == "counts"
    _, report = data.read_crimes(crime_data)
    assert meta["data"]["rows_used"] == report.rows_kept
    assert meta["metrics"]["rows_train"] + meta["metrics"]["rows_test"] == report.rows_kept
    assert cli(["-q", "train", str(crime_data), "--registry", str(tmp_path / "m"), "--engine",
                "memory", "--param", "n_estimators=5"]) == 0
    memory = json.loads((tmp_path / "m" / "crime" / "1.0.0" / "metadata.json").read_text())
    assert "aggregation" not in memory["training"]
    assert memory["data"] == meta["data"]


def test_files_fail_in_order_although_the_next_is_read_ahead(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", row(), row(month="2024-3"))
    (tmp_path / "b.csv").write_text("")
    with pytest.raises(data.DataError) as old:
        data.read_crimes(tmp_path)
    with pytest.raises(data.DataError) as new:
        streamed(tmp_path)
    assert str(new.value) == str(old.value) and "a.csv:3: Month '2024-3'" in str(new.value)
    scan = stream.scan(tmp_path / "a.csv")
    scan.close()  # a consumer that stops early leaves no thread behind


def test_files_checked_together_keep_their_own_lines_columns_and_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small files are checked in groups: each file still has its own lines, its own missing
    columns and its own errors, in file order; a large file between them is read in blocks."""
    no_map = ",".join(c for c in police.STREET_COLUMNS if c not in ("Latitude", "Longitude"))
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder / "a.csv", *[row()] * 3, row(crime="Drugs", outcome="Unable to prosecute suspect"))
    (folder / "b.csv").write_text("\n".join(
        [no_map, *[",".join(f for i, f in enumerate(row().split(",")) if i not in (4, 5))] * 2,
         ""]))
    write(folder / "c.csv", row(outcome=""), row(crime="Robbery"),
          *[row(outcome="Investigation complete; no suspect identified")] * 3)
    write(folder / "d.csv", *[row(force="Surrey Police")] * 60)
    write(folder / "e.csv", row(), row(crime="Drugs", outcome="Offender fined"))
    monkeypatch.setattr(stream, "READ_AHEAD", 2000)  # d.csv is a large file
    monkeypatch.setattr(stream, "BLOCK_SIZE", 1 << 10)
    same_reading(folder)
    new, _ = streamed(folder)
    assert (new["Latitude"] == "").sum() == 2  # b.csv's rows, as read_crimes has them
    write(folder / "e.csv", row(), row(crime=""))
    with pytest.raises(data.DataError, match=r"e.csv:3: 'Crime type' is empty"):
        streamed(folder)
    write(folder / "b.csv", row(), row(), row(month="2024-3"), row(month="x"))
    with pytest.raises(data.DataError) as old:
        data.read_crimes(folder)
    with pytest.raises(data.DataError) as streamed_error:
        streamed(folder)
    assert str(streamed_error.value) == str(old.value)
    assert "b.csv:4: Month '2024-3' is not YYYY-MM (2 such row(s) in this file)" in str(old.value)


def test_a_second_pass_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a.csv", *[row(outcome="Abducted by aliens")] * 3, row(),
          row(outcome="Unable to prosecute suspect"))
    (tmp_path / "b.csv").write_bytes("\n".join([HEADER, row(location="On or near Caf\xe9"), ""])
                                     .encode("latin-1"))
    config = train.TrainConfig(features=("force", "crime", "place"))
    with caplog.at_level(logging.WARNING):
        rows = collected(tmp_path, config)
    assert rows.record["passes"] == 2
    assert caplog.text.count("Abducted by aliens") == 1
    assert caplog.text.count("is not UTF-8") == 1
