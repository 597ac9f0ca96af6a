"""Semver rules and the registry (pure: signatures are plain values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import semver

from batcomputer.training import publish
from batcomputer.training.publish import Bump, PublishError, Signature

V = semver.Version.parse
API1: dict[str, Any] = {"inputs": [{"name": "force", "type": "categorical", "values": ["a", "b"]}],
                        "outputs": ["not_caught", "caught"]}
API2: dict[str, Any] = {"inputs": [*API1["inputs"], {"name": "place", "type": "categorical",
                                                      "values": ["x"]}],
                        "outputs": API1["outputs"]}


def sig(api: dict[str, Any] = API1, classifier: str = "random-forest",
        params: dict[str, Any] | None = None, data: str = "d1") -> Signature:
    return Signature(api=api, classifier=classifier, params=params or {"n_estimators": 100},
                     data=data)


@pytest.mark.parametrize(("new", "bump", "why"), [
    (sig(api=API2), Bump.MAJOR, "inputs added: place"),
    (sig(api={**API1, "outputs": ["no", "yes"]}), Bump.MAJOR, "outputs"),
    (sig(api={**API1, "inputs": [{**API1["inputs"][0], "values": ["a"]}]}), Bump.MAJOR,
     "inputs changed: force"),
    (sig(classifier="extra-trees"), Bump.MINOR, "classifier changed"),
    (sig(params={"n_estimators": 50}), Bump.MINOR, "parameters changed (n_estimators)"),
    (sig(data="d2"), Bump.PATCH, "only the training data"),
    (sig(), None, "nothing changed"),
])
def test_required_bump(new: Signature, bump: Bump | None, why: str) -> None:
    level, reason = publish.required_bump(sig(), new)
    assert level is bump
    assert why in reason


def test_api_change_outranks_params_and_data() -> None:
    level, _ = publish.required_bump(sig(), sig(api=API2, params={"n_estimators": 5}, data="d9"))
    assert level is Bump.MAJOR


EXISTING = {V("1.0.0"): sig(), V("1.1.0"): sig(params={"n_estimators": 50})}


@pytest.mark.parametrize(("new", "expected"), [
    (sig(params={"n_estimators": 50}, data="d2"), "1.1.1"),  # data only, vs the 1.1.0 line head
    (sig(params={"n_estimators": 10}), "1.2.0"),
    (sig(classifier="extra-trees"), "1.2.0"),
    (sig(api=API2), "2.0.0"),
])
def test_auto_bump(new: Signature, expected: str) -> None:
    assert str(publish.choose_version(EXISTING, new)) == expected


def test_auto_bump_continues_the_line_with_the_same_api() -> None:
    existing = {**EXISTING, V("2.0.0"): sig(api=API2)}
    assert str(publish.choose_version(existing, sig(data="d2", params={"n_estimators": 50}))) == "1.1.1"
    assert str(publish.choose_version(existing, sig(api=API2, data="d3"))) == "2.0.1"
    api3 = {**API1, "outputs": ["a", "b", "c"]}
    assert str(publish.choose_version(existing, sig(api=api3))) == "3.0.0"


def test_auto_refuses_when_nothing_changed() -> None:
    with pytest.raises(PublishError, match="nothing changed"):
        publish.choose_version(EXISTING, sig(params={"n_estimators": 50}))


def test_first_version_defaults_to_1_0_0() -> None:
    assert str(publish.choose_version({}, sig())) == "1.0.0"
    assert str(publish.choose_version({}, sig(), requested="0.3.0")) == "0.3.0"


@pytest.mark.parametrize(("requested", "new", "message"), [
    ("1.1.0", sig(data="d2"), "immutable"),
    ("1.0.5", sig(data="d2"), "lower than 1.1.0, the latest 1.x"),
    ("1.2.0", sig(api=API2), "is a MINOR bump from 1.1.0, but the API changed .* publish 2.0.0"),
    ("1.1.1", sig(classifier="extra-trees"), "PATCH bump .* MINOR change; publish 1.2.0"),
    ("1.2.0", sig(params={"n_estimators": 50}, data="d2"), "MINOR bump .* PATCH change; publish 1.1.1"),
    ("2.0.0", sig(params={"n_estimators": 50}, data="d2"), "MAJOR bump .* PATCH change"),
    ("2.1.0", sig(api=API2), "use 2.0.0"),
    ("1.2.0", sig(params={"n_estimators": 50}), "nothing changed"),
    ("v1.2", sig(), "not a semantic version"),
    ("1.2.0-rc.1", sig(), "pre-release"),
])
def test_manual_versions_that_break_the_rules_are_refused(requested: str, new: Signature,
                                                          message: str) -> None:
    with pytest.raises(PublishError, match=message):
        publish.choose_version(EXISTING, new, requested=requested)


def test_manual_versions_that_follow_the_rules() -> None:
    assert str(publish.choose_version(EXISTING, sig(api=API2), requested="2.0.0")) == "2.0.0"
    assert str(publish.choose_version(EXISTING, sig(params={"n_estimators": 50}, data="d2"),
                                      requested="1.1.3")) == "1.1.3"
    existing = {**EXISTING, V("3.0.0"): sig(api=API2)}
    with pytest.raises(PublishError, match="new MAJOR below the latest version 3.0.0"):
        publish.choose_version(existing, sig(api={**API1, "outputs": ["x"]}), requested="2.0.0")


def test_explicit_bump_levels_are_checked_too() -> None:
    assert str(publish.choose_version(EXISTING, sig(params={"n_estimators": 7}), bump="minor")) == "1.2.0"
    with pytest.raises(PublishError, match="PATCH bump .* MINOR change"):
        publish.choose_version(EXISTING, sig(params={"n_estimators": 7}), bump="patch")


def test_registry_lists_versions_sorted(registry: Path) -> None:
    versions = publish.Registry(registry).versions("crime")
    assert [str(v) for v in versions] == ["1.0.0", "2.0.0"]
    assert publish.Registry(registry).versions("nothing") == {}


def test_registry_refuses_bad_names_and_existing_versions(registry: Path) -> None:
    reg = publish.Registry(registry)
    with pytest.raises(PublishError, match="DNS label"):
        reg.publish("Crime_Model", V("1.0.0"), None, None, None)  # type: ignore[arg-type]
    with pytest.raises(PublishError, match="immutable"):
        reg.publish("crime", V("1.0.0"), None, None, None)  # type: ignore[arg-type]


def test_published_files_are_read_only(registry: Path) -> None:
    meta = json.loads((registry / "crime" / "1.0.0" / "metadata.json").read_text())
    for name in [*meta["files"], "metadata.json"]:
        assert not (registry / "crime" / "1.0.0" / name).stat().st_mode & 0o222
