"""Input checks and predictions: memoised answers equal the model's own, over every input."""

from __future__ import annotations

import itertools
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batcomputer.server.artifacts import fetch_verified
from batcomputer.server.errors import InvalidInput
from batcomputer.server.model import Input, Model, load_model, reset_n_jobs
from batcomputer.server.settings import Settings


def every_row(model: Model) -> list[dict[str, Any]]:
    axes = []
    for item in model.inputs:
        grid = item.grid()
        assert grid is not None
        axes.append(grid[0])
    return [dict(zip(model.names, combo, strict=True)) for combo in itertools.product(*axes)]


def reference(artifact: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    """predict_proba of the pickled model itself, encoded straight from lookup.pkl."""
    estimator = pickle.loads((artifact / "model.pkl").read_bytes())
    lookup = pickle.loads((artifact / "lookup.pkl").read_bytes())
    x = np.array([[float(codes[r[n]]) if isinstance(codes, dict) else float(r[n])
                   for n, codes in lookup.items()] for r in rows])
    return np.asarray(estimator.predict_proba(x))


@pytest.mark.parametrize(("version", "memo_limit", "isolate", "mode"), [
    ("1.0.0", 2_000_000, False, "memoised"),
    ("1.0.0", 2_000_000, True, "memoised"),
    ("1.0.0", 0, False, "estimator"),
    ("2.0.0", 2_000_000, False, "memoised"),
])
@pytest.mark.parametrize("form", ["onnx", "pickle"])
def test_predictions_match_the_estimator_over_every_combination(
        server_registry: Path, pickled: Callable[[str], Path], version: str, memo_limit: int,
        isolate: bool, mode: str, form: str) -> None:
    """The pickles give the estimator's own numbers; the fast form is within the difference
    its publisher measured (on every combination, for 1.0.0) and the tolerance."""
    published = server_registry / "crime" / version
    artifact = published if form == "onnx" else pickled(version)
    model = load_model(fetch_verified(Settings(artifact=str(artifact))), memo_limit=memo_limit,
                       isolate=isolate)
    assert (model.mode, model.runtime) == (mode, "onnxruntime" if form == "onnx"
                                           else "scikit-learn")
    fast = model.metadata["fast_form"]
    limit = 1e-9 if form == "pickle" else fast["max_abs_diff"] + 1e-12
    assert fast["max_abs_diff"] <= fast["tolerance"] == 1e-6
    rows = every_row(model)
    assert len(rows) == model.combinations
    expected = reference(published, rows)
    answers = model.predict_many(rows)
    batch = np.array([[r[label] for label in model.labels] for r in answers])
    assert np.abs(batch - expected).max() <= (limit if "all" in fast["checked"] else 1e-6)
    assert np.abs(batch.sum(axis=1) - 1).max() <= 1e-12
    assert json.loads(model.predict_many_json(rows)) == answers  # the JSON the server sends
    # One by one: every row where that is cheap, else a spread sample (the batch had all).
    step = 1 if mode == "memoised" and len(rows) < 10_000 else 97
    singles = np.array([[model.predict_one(r)[label] for label in model.labels]
                        for r in rows[::step]])
    assert np.array_equal(singles, batch[::step])


@pytest.mark.parametrize("render_limit", [250_000, 0])
@pytest.mark.parametrize("memo_limit", [2_000_000, 0])
def test_json_answers_are_json_dumps_byte_for_byte(v1: Path, monkeypatch: pytest.MonkeyPatch,
                                                   render_limit: int, memo_limit: int) -> None:
    from batcomputer.server import model as model_module

    monkeypatch.setattr(model_module, "RENDER_LIMIT", render_limit)
    model = load_model(fetch_verified(Settings(artifact=str(v1))), memo_limit=memo_limit)
    rows = every_row(model)[::50]
    assert model.predict_one_json(rows[0]) == json.dumps(model.predict_one(rows[0])).encode()
    assert model.predict_many_json(rows) == json.dumps(model.predict_many(rows)).encode()
    with pytest.raises(InvalidInput, match="row 1: crime: unknown value"):
        model.predict_many_json([rows[0], {**rows[0], "crime": "Jaywalking"}])


@pytest.mark.parametrize("render_limit", [250_000, 0])
@pytest.mark.parametrize("memo_limit", [2_000_000, 0])
def test_every_mode_records_the_probability_bins_of_its_answers(
        v1: Path, monkeypatch: pytest.MonkeyPatch, render_limit: int, memo_limit: int) -> None:
    """The canary's prediction-shift gate reads these: an estimator-mode model that did not
    record them would pass that gate unjudged."""
    from batcomputer.server import model as model_module

    monkeypatch.setattr(model_module, "RENDER_LIMIT", render_limit)
    model = load_model(fetch_verified(Settings(artifact=str(v1))), memo_limit=memo_limit)
    rows = every_row(model)[::50]
    recorded: list[np.ndarray] = []
    model.predict_one_json(rows[0], recorded.append)
    model.predict_many_json(rows[:3], recorded.append)
    expected = model_module.probability_bins(np.array(
        [list(model.predict_one(r).values()) for r in [rows[0], *rows[:3]]]))
    assert np.array_equal(np.concatenate(recorded), expected)


def test_memo_limit_switches_to_the_estimator(v1: Path) -> None:
    artifact = fetch_verified(Settings(artifact=str(v1)))
    size = load_model(artifact).combinations
    assert size is not None
    assert load_model(artifact, memo_limit=size).mode == "memoised"
    assert load_model(artifact, memo_limit=size - 1).mode == "estimator"


def test_integral_floats_are_integers(model_v1: Model) -> None:
    row = every_row(model_v1)[5]
    as_float = {**row, "month": float(row["month"])}
    assert model_v1.predict_one(as_float) == model_v1.predict_one(row)


@pytest.mark.parametrize(("change", "message"), [
    ({"crime": "Jaywalking"}, r'crime: unknown value "Jaywalking"; accepted values: "'),
    ({"crime": 3}, "crime must be a string, one of the accepted values, not the number 3"),
    ({"crime": None}, "crime must be a string.*not null"),
    ({"force": ["Kent Police"]}, "force must be a string.*not an array"),
    ({"force": {"name": "Kent Police"}}, "force must be a string.*not an object"),
    ({"month": True}, "month must be an integer from 1 to 12, not a boolean"),
    ({"month": "3"}, "month must be an integer from 1 to 12, not the string \"3\""),
    ({"month": 13}, "month must be an integer from 1 to 12, not 13"),
    ({"month": 0}, "month must be an integer from 1 to 12, not 0"),
    ({"month": 2.5}, "month must be an integer from 1 to 12, not 2.5"),
    ({"month": float("nan")}, "month must be a finite number"),
    ({"month": float("inf")}, "month must be a finite number"),
    ({"month": 10**40}, "month must be an integer"),
    ({"extra": 1}, "unexpected input.*extra.*accepted: force, crime, month"),
])
def test_invalid_inputs_say_what_to_fix(model_v1: Model, change: dict[str, Any],
                                        message: str) -> None:
    row = {**every_row(model_v1)[0], **change}
    for mode_model in (model_v1,):
        with pytest.raises(InvalidInput, match=message):
            mode_model.predict_one(row)
        with pytest.raises(InvalidInput, match="row 1: " + message):
            mode_model.predict_many([every_row(model_v1)[0], row])


def test_missing_inputs_are_named(model_v1: Model) -> None:
    with pytest.raises(InvalidInput, match="missing input.*: month; required: force, crime, month"):
        model_v1.predict_one({"force": "x", "crime": "y"})
    with pytest.raises(InvalidInput, match="expected a JSON object"):
        model_v1.predict_many([["Kent Police", "Shoplifting", 3]])


def test_long_category_lists_are_shortened(model_v1: Model) -> None:
    with pytest.raises(InvalidInput, match=r"and \d+ more \(GET /api/predict/params\)"):
        model_v1.predict_one({**every_row(model_v1)[0], "force": "Gotham City Police"})


def test_unbounded_numeric_input_uses_the_estimator() -> None:
    item = Input("speed", "number", minimum=0)
    assert item.grid() is None
    assert item.encode(12.5, "") == 12.5
    with pytest.raises(InvalidInput, match="speed must be a number from 0 to 3.40282e.38, not -1"):
        item.encode(-1, "")


@pytest.mark.parametrize("value", [3.5e38, -1e308, 10**41, -(10**41)])
def test_numbers_the_model_cannot_take_are_refused_by_name_and_range(value: float) -> None:
    """Valid JSON numbers beyond float32 (what scikit-learn's trees compare in) used to
    reach the estimator and give a 500."""
    with pytest.raises(InvalidInput, match=r"^latitude must be a number from -3.40282e\+38 to "
                                           r"3.40282e\+38, not -?\d"):
        Input("latitude", "number").encode(value, "")
    assert Input("latitude", "number").encode(3.4e38, "") == 3.4e38


def test_an_estimator_model_answers_the_whole_documented_range() -> None:
    from sklearn.tree import DecisionTreeClassifier

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    estimator = DecisionTreeClassifier(random_state=0).fit(x, [0, 0, 1, 1])
    model = Model(name="m", version="1.0.0", inputs=[Input("x", "number")], labels=["no", "yes"],
                  metadata={}, estimator=estimator)
    for edge in (-3.4028234663852886e38, 3.4028234663852886e38, 0.5, 10**38):
        assert set(model.predict_one({"x": edge})) == {"no", "yes"}
    with pytest.raises(InvalidInput, match="row 1: x must be a number from"):
        model.predict_many([{"x": 1}, {"x": 1e39}])


def test_n_jobs_is_reset_everywhere() -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    forest = RandomForestClassifier(n_jobs=-1)
    reset_n_jobs(forest)
    assert forest.n_jobs is None
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_jobs=4))
    reset_n_jobs(pipeline)
    assert pipeline[-1].n_jobs is None
    reset_n_jobs(object())  # no get_params: nothing to do


def test_info_and_params_describe_the_inputs(model_v1: Model) -> None:
    params = model_v1.params()
    assert list(params) == ["force", "crime", "month"]
    assert params["month"] == {"type": "integer", "minimum": 1, "maximum": 12,
                               "description": params["month"]["description"]}
    assert "Kent Police" in params["force"]["values"]
    info = model_v1.info()
    assert (info["name"], info["version"], info["labels"]) == ("crime", "1.0.0",
                                                               ["not_caught", "caught"])
    assert info["prediction"] == {"mode": "memoised", "combinations": model_v1.combinations,
                                  "runtime": "onnxruntime"}
    assert info["metadata"]["format"] == "batcomputer.io/artifact/v1"
