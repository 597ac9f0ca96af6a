"""generate -> train -> artifact round trips, through the CLI as users run it."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from batcomputer.cli import main as cli
from batcomputer.errors import UserError
from batcomputer.training import features, train
from batcomputer.training.data import read_crimes


def load(folder: Path) -> tuple[object, dict[str, object], list[str], dict[str, object]]:
    with (folder / "model.pkl").open("rb") as f:
        model = pickle.load(f)
    with (folder / "lookup.pkl").open("rb") as f:
        lookup = pickle.load(f)
    with (folder / "flags.pkl").open("rb") as f:
        flags = pickle.load(f)
    return model, lookup, flags, json.loads((folder / "metadata.json").read_text())


def test_artifact_round_trip(registry: Path) -> None:
    model, lookup, flags, meta = load(registry / "crime" / "1.0.0")
    assert list(lookup) == ["force", "crime", "month"]
    assert lookup["month"] == features.NUMERIC
    assert isinstance(lookup["force"], dict) and "Kent Police" in lookup["force"]
    assert "Anti-social behaviour" not in lookup["crime"]  # no outcomes, so never trained on
    assert flags == ["not_caught", "caught"] == meta["labels"]
    row = np.array([[lookup["force"]["Kent Police"], lookup["crime"]["Drugs"], 6]], dtype=float)
    proba = model.predict_proba(row)  # type: ignore[attr-defined]
    assert proba.shape == (1, 2) and abs(proba.sum() - 1) < 1e-9
    assert model.n_jobs is None  # type: ignore[attr-defined]
    assert meta["name"] == "crime" and meta["version"] == "1.0.0"
    assert meta["schema"]["inputs"][2] == {"name": "month", "type": "integer", "minimum": 1,
                                           "maximum": 12,
                                           "description": features.FEATURES["month"].description}
    assert 0.5 < meta["metrics"]["roc_auc"] <= 1 and 0 < meta["metrics"]["positive_rate"] < 1
    assert meta["training"]["params"]["n_estimators"] == 20
    assert meta["runtime"]["scikit-learn"]
    assert meta["data"]["fingerprint"].startswith("sha256:")


def test_metadata_records_the_sha256_of_every_file(registry: Path) -> None:
    folder = registry / "crime" / "2.0.0"
    meta = json.loads((folder / "metadata.json").read_text())
    assert sorted(meta["files"]) == ["flags.json", "flags.pkl", "lookup.json", "lookup.pkl",
                                     "model.onnx", "model.pkl"]
    for name, digest in meta["files"].items():
        assert digest == "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_v1_and_v2_have_different_apis(registry: Path) -> None:
    _, lookup1, _, meta1 = load(registry / "crime" / "1.0.0")
    _, lookup2, _, meta2 = load(registry / "crime" / "2.0.0")
    assert list(lookup2) == ["force", "crime", "month", "place"]
    place = lookup2["place"]
    assert isinstance(place, dict) and "Supermarket" in place and features.OTHER in place
    assert not any(p.endswith(("Street", "Road", "Lane")) for p in place)  # rare -> Other
    assert meta1["schema"]["inputs"] != meta2["schema"]["inputs"]


def test_training_is_deterministic(tmp_path: Path, crime_data: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    for reg in ("a", "b"):
        assert cli(["-q", "train", str(crime_data), "--registry", str(tmp_path / reg),
                    "--param", "n_estimators=5"]) == 0
    a, b = tmp_path / "a" / "crime" / "1.0.0", tmp_path / "b" / "crime" / "1.0.0"
    for name in ("model.pkl", "lookup.pkl", "flags.pkl", "metadata.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((a / "metadata.json").read_text())["created"] == "2023-11-14T22:13:20Z"


def test_cli_walks_the_semver_rules(tmp_path: Path, crime_data: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    reg = str(tmp_path / "reg")
    base = ["-q", "train", str(crime_data), "--registry", reg, "--param", "n_estimators=5"]
    one_month = str(crime_data / "2024-01")
    assert cli(base) == 0
    assert cli(base) == 2
    assert "nothing changed" in capsys.readouterr().err
    assert cli([*base, "--param", "max_depth=6"]) == 0                       # 1.1.0
    assert cli([*base[:2], one_month, *base[3:], "--param", "max_depth=6"]) == 0  # 1.1.1
    assert cli([*base, "--features", "force,crime,month,place", "--version", "1.2.0"]) == 2
    assert "publish 2.0.0 instead" in capsys.readouterr().err
    assert cli([*base, "--features", "force,crime,month,place"]) == 0      # 2.0.0
    assert cli([*base, "--version", "1.0.0", "--param", "max_depth=3"]) == 2
    assert "immutable" in capsys.readouterr().err
    assert cli(["versions", reg, "crime"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table] == ["VERSION", "1.0.0", "1.1.0", "1.1.1", "2.0.0"]
    assert "force,crime,month,place" in table[-1]


def test_bad_training_options_fail_before_reading_data(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["train", str(tmp_path / "missing"), "--registry", str(tmp_path),
                "--param", "n_trees=3"]) == 2
    assert "has no parameter(s) n_trees" in capsys.readouterr().err
    assert cli(["train", str(tmp_path), "--registry", str(tmp_path), "--features", "force,age"]) == 2
    assert "unknown feature(s) ['age']" in capsys.readouterr().err


@pytest.mark.parametrize("classifier", sorted(train.CLASSIFIERS))
def test_every_classifier_trains(crime_data: Path, classifier: str) -> None:
    kept, _ = read_crimes(crime_data / "2024-01")
    trained = train.train(kept, train.TrainConfig(classifier=classifier))
    assert trained.flags == ["not_caught", "caught"]
    assert 0 <= trained.metrics["accuracy"] <= 1
    assert trained.schema["outputs"] == trained.flags


def test_parse_param() -> None:
    assert train.parse_param("max_depth=12") == ("max_depth", 12)
    assert train.parse_param("criterion=entropy") == ("criterion", "entropy")
    assert train.parse_param("max_features=null") == ("max_features", None)
    with pytest.raises(ValueError, match="key=value"):
        train.parse_param("oops")


def test_the_readme_shows_the_real_refusals(tmp_path: Path, crime_data: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The README's publishing commands, then its two refused versions, as it shows them."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    reg = str(tmp_path / "reg")
    base = ["-q", "train", str(crime_data), "--registry", reg, "--param", "n_estimators=5"]
    place = ["--features", "force,crime,month,place"]
    assert cli(base) == 0                                                       # 1.0.0
    assert cli([*base, "--param", "max_depth=12"]) == 0                         # 1.1.0
    assert cli(["-q", "train", f"{crime_data}/2024-0[1-2]/*.csv", "--registry", reg,
                "--param", "n_estimators=5", "--param", "max_depth=12"]) == 0   # 1.1.1
    assert cli([*base, *place]) == 0                                            # 2.0.0
    capsys.readouterr()
    assert cli([*base, *place, "--param", "max_depth=12", "--version", "1.2.0"]) == 2
    advice = capsys.readouterr().err.strip()
    assert advice.endswith("publish 2.1.0 instead") and advice in readme
    assert cli([*base, *place, "--version", "1.2.0"]) == 2
    same = capsys.readouterr().err.strip()
    assert "as 2.0.0, which is published" in same and same in readme


def test_cli_pre_releases_and_build_metadata(tmp_path: Path, crime_data: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    reg = str(tmp_path / "reg")
    base = ["-q", "train", str(crime_data), "--registry", reg, "--param", "n_estimators=5"]
    minor = [*base, "--param", "max_depth=6"]
    assert cli([*base, "--version", "1.0.0+build.5"]) == 0
    assert cli([*minor, "--bump", "pre"]) == 0                                # 1.1.0-rc.1
    assert cli([*minor, "--bump", "pre"]) == 0                                # 1.1.0-rc.2
    capsys.readouterr()
    assert cli([*minor, "--version", "1.0.0"]) == 2                           # before training
    assert "1.0.0 has the same precedence as 1.0.0+build.5; published versions are immutable" \
        in capsys.readouterr().err
    assert cli([*minor, "--version", "1.1"]) == 2
    assert "MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]" in capsys.readouterr().err
    assert cli([*minor, "--bump", "release"]) == 0                            # 1.1.0, same as rc.2
    assert cli([*base, "--features", "force,crime,month,place", "--version", "1.2.0-rc.1"]) == 2
    assert "publish 2.0.0-rc.1 instead" in capsys.readouterr().err
    capsys.readouterr()
    assert cli(["versions", reg, "crime"]) == 0
    table = capsys.readouterr().out.splitlines()
    order = ["1.0.0+build.5", "1.1.0-rc.1", "1.1.0-rc.2", "1.1.0"]
    assert [line.split()[0] for line in table] == ["VERSION", *order]
    assert cli(["versions", reg, "crime", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == order
    assert [m["version"] for m in listed.values()] == order


MAP_POINT = ("force", "crime", "latitude", "longitude")


def test_trains_on_latitude_and_longitude(crime_data: Path) -> None:
    kept, _ = read_crimes(crime_data / "2024-01")
    trained = train.train(kept, train.TrainConfig(features=MAP_POINT, params=(("n_estimators", 5),)))
    assert trained.model.n_features_in_ == 4
    assert [i["type"] for i in trained.schema["inputs"]] == [
        "categorical", "categorical", "number", "number"]
    assert trained.dropped == {"without a valid latitude/longitude": 0}
    assert trained.metrics["rows_train"] + trained.metrics["rows_test"] == len(kept)


def test_rows_without_a_valid_map_point_are_dropped_only_when_used(crime_data: Path) -> None:
    kept, _ = read_crimes(crime_data / "2024-01")
    kept.loc[0:3, "Latitude"] = ["", "n/a", "91", "-90.5"]
    kept.loc[4, "Longitude"] = ""
    config = train.TrainConfig(features=MAP_POINT, params=(("n_estimators", 5),))
    trained = train.train(kept, config)
    assert trained.dropped == {"without a valid latitude/longitude": 5}
    assert trained.metrics["rows_train"] + trained.metrics["rows_test"] == len(kept) - 5
    default = train.train(kept, train.TrainConfig(params=(("n_estimators", 5),)))
    assert default.dropped == {}
    assert default.metrics["rows_train"] + default.metrics["rows_test"] == len(kept)


def test_no_row_with_a_map_point_is_an_error(crime_data: Path) -> None:
    kept, _ = read_crimes(crime_data / "2024-01")
    kept["Latitude"] = ""
    with pytest.raises(UserError, match=f"0 rows left after dropping {len(kept):,} without a "
                                        "valid latitude/longitude"):
        train.train(kept, train.TrainConfig(features=MAP_POINT))


def test_linear_models_see_one_column_per_category(crime_data: Path) -> None:
    """Integer codes gave logistic regression a ROC AUC near chance (0.54): its model is
    a pipeline that one-hot encodes categories and scales numbers, inside the artifact, so
    the server sends the same encoded row to every classifier."""
    crimes = read_crimes(crime_data)[0]
    linear = train.train(crimes, train.TrainConfig(classifier="logistic-regression"))
    forest = train.train(crimes, train.TrainConfig(params=(("n_estimators", 50),)))
    steps = dict(linear.model.steps)
    assert list(steps) == ["encode", "model"]
    assert linear.model.predict_proba(linear.x_test[:3]).shape == (3, 2)
    assert linear.metrics["roc_auc"] > 0.65, linear.metrics
    assert linear.metrics["roc_auc"] > forest.metrics["roc_auc"] - 0.05, (linear.metrics,
                                                                          forest.metrics)
    assert linear.params == {"max_iter": 1000, "random_state": 42}
