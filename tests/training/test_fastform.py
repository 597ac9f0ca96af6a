"""The fast form (model.onnx): converted for every classifier, checked, refused above the
tolerance, and publishable without any pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batcomputer.cli import main as cli
from batcomputer.training import fastform, train
from batcomputer.training.data import read_crimes

CONTINUOUS = ("force", "crime", "latitude", "longitude")


@pytest.fixture(scope="module")
def crimes(crime_data: Path) -> object:
    return read_crimes(crime_data)[0]


@pytest.mark.parametrize("classifier", sorted(train.CLASSIFIERS))
@pytest.mark.parametrize("inputs", [CONTINUOUS, ("force", "crime", "month")])
def test_every_classifier_gets_a_fast_form_within_the_tolerance(
        crimes: object, classifier: str, inputs: tuple[str, ...]) -> None:
    params = (("n_estimators", 10),) if classifier in ("random-forest", "extra-trees") else ()
    trained = train.train(crimes, train.TrainConfig(  # type: ignore[arg-type]
        features=inputs, classifier=classifier, params=params))
    assert trained.x_train is not None and trained.x_test is not None
    fast = fastform.build(trained.model, trained.lookup, trained.schema["inputs"],
                          trained.x_train, trained.x_test)
    if classifier == "gradient-boosting" and inputs == CONTINUOUS:
        # Its trees compare float64 inputs; ONNX's compare float32: the check catches the
        # training rows closer than a float32 step to a split, and refuses the form.
        assert fast.onnx is None
        assert fast.refused and "float32: largest difference" in fast.refused
        return
    assert fast.onnx is not None, fast.record
    record = fast.record
    assert record["max_abs_diff"] <= record["tolerance"] == fastform.TOLERANCE
    enumerable = "month" in inputs
    if enumerable:  # every classifier's fast form is then its table
        assert record["converter"] == fastform.TABLE_CONVERTER
        assert record["input"] == "float64" and record["max_abs_diff"] <= 1e-15
    else:
        assert record["input"] == ("float64" if classifier == "logistic-regression"
                                   else "float32")
    assert record["checked"].endswith("combinations of inputs" if enumerable
                                      else "20,000 sampled inputs")
    # Rows it was not checked on: the float32 neighbours of the training inputs' numbers,
    # where the trees split (categories are exact codes: the server sends nothing else).
    x = trained.x_train[:2000]
    numeric = [not isinstance(codes, dict) for codes in trained.lookup.values()]
    nudged = x.copy()
    nudged[:, numeric] = np.nextafter(x[:, numeric].astype(np.float32),
                                      np.float32(np.inf)).astype(np.float64)
    if enumerable:  # a month between two months is off the table's grid: no answer
        assert np.isnan(fastform.predict(fast.onnx, nudged)).all()
    for rows in (x,) if enumerable else (x, nudged):
        found = fastform.predict(fast.onnx, rows)
        assert np.abs(found - trained.model.predict_proba(rows)).max() <= fastform.TOLERANCE
        assert np.abs(found.sum(axis=1) - 1).max() <= 1e-12


def test_a_finite_input_space_is_published_as_the_table_of_its_answers() -> None:
    """`table_onnx` answers every combination with the estimator's own numbers, in
    `input_sample`'s order, and a row off the grid with NaN and label -1, never a
    neighbour's answer."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(7)
    lookup = {"a": {"x": 0, "y": 1, "z": 2}, "b": "numeric", "c": {"p": 0, "q": 1}}
    schema = [{"name": "b", "type": "integer", "minimum": 3, "maximum": 6}]
    x = np.column_stack([rng.integers(0, 3, 2000), rng.integers(3, 7, 2000),
                         rng.integers(0, 2, 2000)]).astype(np.float64)
    y = (x[:, 0] + x[:, 1] + rng.normal(0, 1, 2000) > 5).astype(int)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    fast = fastform.build(forest, lookup, schema, x[:1500], x[1500:])
    assert fast.onnx is not None and fast.record["converter"] == fastform.TABLE_CONVERTER
    assert fast.record["checked"] == "500 hold-out rows and all 24 combinations of inputs"
    import onnxruntime

    session = onnxruntime.InferenceSession(fast.onnx, providers=["CPUExecutionProvider"])
    every, _ = fastform.input_sample(lookup, schema, x)
    label, proba = session.run(["label", fastform.OUTPUT], {"inputs": every})
    assert np.array_equal(proba, forest.predict_proba(every))  # the very same numbers
    assert np.array_equal(label, forest.predict(every))
    off = np.array([[3, 4, 0], [-1, 4, 0], [0, 2, 0], [0, 7, 1], [0, 4.5, 1], [np.nan, 4, 0],
                    [0, np.inf, 0], [2, 6, 1]], dtype=np.float64)
    label, proba = session.run(["label", fastform.OUTPUT], {"inputs": off})
    assert np.isnan(proba[:-1]).all() and list(label[:-1]) == [-1] * 7
    assert np.array_equal(proba[-1], forest.predict_proba(off[-1:])[0])
    assert label[-1] == forest.predict(off[-1:])[0]
    # Codes that are not consecutive integers: the trees, as before.
    gappy = {"a": {"x": 0, "y": 2, "z": 4}, "b": "numeric", "c": {"p": 0, "q": 1}}
    spread = x.copy()
    spread[:, 0] *= 2
    forest.fit(spread, y)
    tree_form = fastform.build(forest, gappy, schema, spread[:1500], spread[1500:])
    assert tree_form.record["converter"] == fastform.FOREST_CONVERTER
    assert tree_form.record["checked"].endswith("all 24 combinations of inputs")


def test_rounding_thresholds_down_keeps_every_decision() -> None:
    """For float32 inputs (what scikit-learn's trees compare), x <= t == x <= floor32(t)."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    x = rng.normal(52, 1, (4000, 2))
    y = (x[:, 0] + rng.normal(0, 0.5, 4000) > 52).astype(int)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    twin = fastform._floor_thresholds(forest)
    thresholds = np.concatenate([t.tree_.threshold for t in forest.estimators_])
    moved = np.concatenate([t.tree_.threshold for t in twin.estimators_])
    assert not np.array_equal(thresholds, moved)  # it did change them...
    probes = []
    for t in thresholds[thresholds != -2][:300]:
        t32 = np.float32(t)
        probes += [np.nextafter(t32, np.float32(-np.inf)), t32, np.nextafter(t32, np.float32(np.inf))]
    grid = np.array([[p, q] for p in probes[:120] for q in probes[120:240]], dtype=np.float64)
    assert np.array_equal(forest.predict_proba(grid), twin.predict_proba(grid))  # ...not a decision
    assert fastform._floor_thresholds(object()) is None


@pytest.mark.parametrize("classifier", ["random-forest", "extra-trees"])
def test_forests_are_converted_node_for_node_as_skl2onnx_converts_them(classifier: str) -> None:
    """`forest_onnx` builds from the trees' arrays what skl2onnx builds node by node (from
    the copy with thresholds rounded down): the same operator with the same attributes."""
    import onnx
    from onnx import helper

    rng = np.random.default_rng(5)
    x = np.column_stack([rng.integers(0, 40, 3000), rng.normal(52, 1, 3000)])
    y = (x[:, 0] / 40 + x[:, 1] + rng.normal(0, 0.5, 3000) > 52.5).astype(int)
    forest = train.estimator_class(classifier)(n_estimators=4, min_samples_leaf=5,
                                               random_state=0).fit(x, y)
    ours = onnx.load_from_string(fastform.forest_onnx(forest, 2))
    theirs = onnx.load_from_string(fastform._convert(fastform._floor_thresholds(forest), 2,
                                                     "float32")[0])
    assert len(ours.graph.node) == len(theirs.graph.node) == 1
    mine, skl = ours.graph.node[0], theirs.graph.node[0]
    assert (mine.op_type, mine.domain, list(mine.input), list(mine.output)) == \
        (skl.op_type, skl.domain, list(skl.input), list(skl.output))
    assert [a.name for a in mine.attribute] == [a.name for a in skl.attribute]
    for a, b in zip(mine.attribute, skl.attribute, strict=True):
        assert helper.get_attribute_value(a) == helper.get_attribute_value(b), a.name
    assert (ours.graph.input, ours.graph.output) == (theirs.graph.input, theirs.graph.output)
    found = fastform.predict(fastform.forest_onnx(forest, 2), x)
    assert np.abs(found - forest.predict_proba(x)).max() <= fastform.TOLERANCE
    fast = fastform.build(forest, {"a": "numeric", "b": "numeric"}, [], x, x[:100])
    assert fast.record["converter"] == fastform.FOREST_CONVERTER
    assert fastform._binary_forest(forest)
    assert not fastform._binary_forest(forest.estimators_[0])


def test_floor_float32() -> None:
    values = np.array([0.1, -0.1, 1.0, 52.000001, -3.4e38])
    floored = fastform.floor_float32(values)
    assert np.array_equal(floored.astype(np.float32).astype(np.float64), floored)
    assert (floored <= values).all()
    assert (np.nextafter(floored.astype(np.float32), np.float32(np.inf)) > values).all()


def publish(crime_data: Path, registry: Path, *flags: str) -> int:
    return cli(["-q", "train", str(crime_data), "--registry", str(registry), "--param",
                "n_estimators=10", "--version", "1.0.0", *flags])


def test_no_pickle_publishes_only_the_pickle_free_form(crime_data: Path, tmp_path: Path) -> None:
    assert publish(crime_data, tmp_path, "--no-pickle", "--features", ",".join(CONTINUOUS)) == 0
    folder = tmp_path / "crime" / "1.0.0"
    meta = json.loads((folder / "metadata.json").read_text())
    assert sorted(meta["files"]) == ["flags.json", "lookup.json", "model.onnx"]
    assert sorted(p.name for p in folder.iterdir()) == ["flags.json", "lookup.json",
                                                        "metadata.json", "model.onnx"]
    assert json.loads((folder / "flags.json").read_text()) == ["not_caught", "caught"]
    lookup = json.loads((folder / "lookup.json").read_text())
    assert list(lookup) == list(CONTINUOUS) and lookup["latitude"] == "numeric"
    assert meta["fast_form"]["file"] == "model.onnx"
    assert meta["schema"]["inputs"][2]["minimum"] == -90


def test_a_fast_form_above_the_tolerance_is_not_published(
        crime_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Inputs with numbers, not a table: a forest summed in float32 is within 1e-6, not 0.
    assert publish(crime_data, tmp_path / "a", "--fast-form-tolerance", "0",
                   "--features", ",".join(CONTINUOUS)) == 0
    meta = json.loads((tmp_path / "a" / "crime" / "1.0.0" / "metadata.json").read_text())
    assert "model.onnx" not in meta["files"] and "model.pkl" in meta["files"]
    assert "above the tolerance 0" in meta["fast_form"]["refused"]
    assert not (tmp_path / "a" / "crime" / "1.0.0" / "model.onnx").exists()
    # Without pickles there would be nothing to serve: refused, nothing published.
    assert publish(crime_data, tmp_path / "b", "--fast-form-tolerance", "0", "--no-pickle",
                   "--features", ",".join(CONTINUOUS)) != 0
    assert "--no-pickle needs the fast form" in capsys.readouterr().err
    assert not (tmp_path / "b" / "crime" / "1.0.0").exists()
