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
    assert record["input"] == ("float64" if classifier == "logistic-regression" else "float32")
    enumerable = "month" in inputs
    assert record["checked"].endswith("combinations of inputs" if enumerable
                                      else "20,000 sampled inputs")
    # Rows it was not checked on: the float32 neighbours of the training inputs' numbers,
    # where the trees split (categories are exact codes: the server sends nothing else).
    x = trained.x_train[:2000]
    numeric = [not isinstance(codes, dict) for codes in trained.lookup.values()]
    nudged = x.copy()
    nudged[:, numeric] = np.nextafter(x[:, numeric].astype(np.float32),
                                      np.float32(np.inf)).astype(np.float64)
    for rows in (x, nudged):
        found = fastform.predict(fast.onnx, rows)
        assert np.abs(found - trained.model.predict_proba(rows)).max() <= fastform.TOLERANCE
        assert np.abs(found.sum(axis=1) - 1).max() <= 1e-12


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
    assert publish(crime_data, tmp_path / "a", "--fast-form-tolerance", "0") == 0
    meta = json.loads((tmp_path / "a" / "crime" / "1.0.0" / "metadata.json").read_text())
    assert "model.onnx" not in meta["files"] and "model.pkl" in meta["files"]
    assert "above the tolerance 0" in meta["fast_form"]["refused"]
    assert not (tmp_path / "a" / "crime" / "1.0.0" / "model.onnx").exists()
    # Without pickles there would be nothing to serve: refused, nothing published.
    assert publish(crime_data, tmp_path / "b", "--fast-form-tolerance", "0", "--no-pickle") != 0
    assert "--no-pickle needs the fast form" in capsys.readouterr().err
    assert not (tmp_path / "b" / "crime" / "1.0.0").exists()
