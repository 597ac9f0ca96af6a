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
    (sig(api=API2), Bump.MAJOR, "adds place"),
    (sig(api={**API1, "outputs": ["no", "yes"]}), Bump.MAJOR, "changes the labels"),
    (sig(api={**API1, "inputs": [{**API1["inputs"][0], "values": ["a"]}]}), Bump.MAJOR,
     "changes the values of force"),
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


def test_a_model_identical_to_any_published_release_is_refused() -> None:
    """Issue 19: auto re-published 1.0.0's model as 1.2.0, comparing only with 1.1.0."""
    existing = {**EXISTING, V("1.1.1"): sig(params={"n_estimators": 50}, data="d2")}
    for bump in ("auto", "pre"):
        with pytest.raises(PublishError, match="nothing changed: same API, classifier, "
                                               "parameters and data as 1.0.0, which is published"):
            publish.choose_version(existing, sig(), bump=bump)
    with pytest.raises(PublishError, match="refusing to publish 1.2.0: nothing changed.* as 1.0.0"):
        publish.choose_version(existing, sig(), requested="1.2.0")


def test_the_advice_names_a_version_that_is_accepted() -> None:
    """Issue 19: after 2.0.0 (adds place), 1.2.0 with place was told to publish 3.0.0, which
    was then refused as identical to 2.0.0."""
    existing = {**EXISTING, V("2.0.0"): sig(api=API2)}
    with pytest.raises(PublishError, match="nothing changed: .* as 2.0.0, which is published"):
        publish.choose_version(existing, sig(api=API2), requested="1.2.0")
    # With something new, the advice is what --bump auto gives, and it is accepted.
    new = sig(api=API2, params={"n_estimators": 9})
    with pytest.raises(PublishError, match="publish 2.1.0 instead") as refused:
        publish.choose_version(existing, new, requested="1.2.0")
    advice = str(refused.value).rsplit("publish ", 1)[1].split()[0]
    assert str(publish.choose_version(existing, new, requested=advice)) == "2.1.0"


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
    ("1.2", sig(), r"MAJOR\.MINOR\.PATCH\[-PRERELEASE\]\[\+BUILD\]"),
    ("1.2.0-rc.1", sig(api=API2), "MINOR bump .* MAJOR change; publish 2.0.0-rc.1 instead"),
    ("1.1.0+build.5", sig(data="d2"), "same precedence as 1.1.0; published versions are immutable"),
    ("1.1.0-rc.1", sig(data="d2"), "lower than 1.1.0"),
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
    versions = publish.LocalRegistry(registry).versions("crime")
    assert [str(v) for v in versions] == ["1.0.0", "2.0.0"]
    assert publish.LocalRegistry(registry).versions("nothing") == {}


def test_registry_refuses_bad_names_and_existing_versions(registry: Path) -> None:
    reg = publish.LocalRegistry(registry)
    with pytest.raises(PublishError, match="DNS label"):
        reg.publish("Crime_Model", V("1.0.0"), None, None, None)  # type: ignore[arg-type]
    with pytest.raises(PublishError, match="immutable"):
        reg.publish("crime", V("1.0.0"), None, None, None)  # type: ignore[arg-type]


def test_published_files_are_read_only(registry: Path) -> None:
    meta = json.loads((registry / "crime" / "1.0.0" / "metadata.json").read_text())
    for name in [*meta["files"], "metadata.json"]:
        assert not (registry / "crime" / "1.0.0" / name).stat().st_mode & 0o222


# --- semver 2.0.0 in full: pre-releases and build metadata ---------------------------------

A = sig()                               # 1.2.0
B = sig(params={"n_estimators": 50})    # a MINOR change from A
RELEASED = {"1.2.0": A}


def test_semver_equality_ignores_build_metadata_so_version_keys_would_collapse() -> None:
    assert V("1.0.0+a") == V("1.0.0+b") == V("1.0.0")
    assert hash(V("1.0.0+a")) == hash(V("1.0.0"))
    assert len({V("1.0.0+a"): 1, V("1.0.0+b"): 2}) == 1  # hence the registry keys by text


def test_precedence_order_puts_pre_releases_first_and_breaks_build_ties_by_text() -> None:
    texts = ["1.0.0+b", "1.0.0", "1.0.0-rc.10", "1.0.0-alpha", "1.0.0+a", "0.9.0", "1.0.0-rc.2"]
    assert sorted(texts, key=publish.precedence_key) == [
        "0.9.0", "1.0.0-alpha", "1.0.0-rc.2", "1.0.0-rc.10", "1.0.0", "1.0.0+a", "1.0.0+b"]


def test_pre_release_and_build_versions_are_accepted() -> None:
    assert str(publish.choose_version({}, A, requested="2.0.0-rc.1")) == "2.0.0-rc.1"
    assert str(publish.choose_version(RELEASED, B, requested="1.3.0-rc.1")) == "1.3.0-rc.1"
    assert str(publish.choose_version(RELEASED, B, requested="1.3.0+build.5")) == "1.3.0+build.5"
    assert str(publish.choose_version(RELEASED, B, requested="1.3.0-rc.1+b.7")) == "1.3.0-rc.1+b.7"


def test_a_pre_release_must_be_a_valid_step_towards_its_release() -> None:
    api_change = sig(api=API2)
    assert str(publish.choose_version(RELEASED, api_change, requested="2.0.0-rc.1")) == "2.0.0-rc.1"
    with pytest.raises(PublishError, match="1.3.0-rc.1 is a MINOR bump from 1.2.0, but the API "
                                           r"changed .* publish 2.0.0-rc.1 instead"):
        publish.choose_version(RELEASED, api_change, requested="1.3.0-rc.1")
    with pytest.raises(PublishError, match="PATCH bump .* MINOR change; publish 1.3.0-beta instead"):
        publish.choose_version(RELEASED, B, requested="1.2.1-beta")
    with pytest.raises(PublishError, match="starts MAJOR 2; use 2.0.0-rc.1"):
        publish.choose_version(RELEASED, api_change, requested="2.1.0-rc.1")


def test_after_a_pre_release_come_later_pre_releases_and_the_release() -> None:
    existing = {**RELEASED, "2.0.0-rc.1": sig(api=API2)}
    for requested in ("2.0.0-rc.2", "2.0.0-rc.1.1", "2.0.0"):
        # identical to the rc, yet allowed: compared with 1.2.0, the release before it
        assert str(publish.choose_version(existing, sig(api=API2), requested=requested)) == requested
    with pytest.raises(PublishError, match="2.0.0-alpha is lower than 2.0.0-rc.1, the latest 2.x"):
        publish.choose_version(existing, sig(api=API2), requested="2.0.0-alpha")
    with pytest.raises(PublishError, match="2.1.0 starts MAJOR 2; use 2.0.0"):
        publish.choose_version(existing, sig(api=API2), requested="2.1.0")
    with pytest.raises(PublishError, match="MAJOR change, and it is the API of 2.x; publish "
                                           "2.0.0-rc.2 instead"):
        publish.choose_version(existing, sig(api=API2), requested="1.3.0-rc.1")


def test_a_release_is_compared_with_the_release_before_it_not_with_its_rc() -> None:
    existing = {**RELEASED, "1.3.0-rc.1": B}
    assert str(publish.choose_version(existing, B, requested="1.3.0")) == "1.3.0"
    assert str(publish.choose_version(existing, B)) == "1.3.0"  # auto: not "nothing changed"
    with pytest.raises(PublishError, match="refusing to publish 1.3.0: nothing changed.* as 1.2.0"):
        publish.choose_version(existing, A, requested="1.3.0")
    with pytest.raises(PublishError, match="1.2.1 is lower than 1.3.0-rc.1"):
        publish.choose_version(existing, sig(data="d2"), requested="1.2.1")
    with pytest.raises(PublishError, match="1.3.0-rc.1 is already published; .* immutable"):
        publish.choose_version(existing, B, requested="1.3.0-rc.1")


def test_same_precedence_as_a_published_version_is_refused() -> None:
    existing = {"1.0.0": A, "1.1.0+a": B}
    for requested, other in (("1.0.0+b", "1.0.0"), ("1.1.0+b", "1.1.0\\+a"), ("1.1.0", "1.1.0\\+a")):
        with pytest.raises(PublishError, match=f"{requested.replace('+', '.')} has the same "
                                               f"precedence as {other}; published versions are "
                                               "immutable"):
            publish.choose_version(existing, sig(params={"n_estimators": 7}), requested=requested)


@pytest.mark.parametrize(("existing", "new", "expected"), [
    ({}, A, "1.0.0-rc.1"),
    (RELEASED, B, "1.3.0-rc.1"),
    (RELEASED, sig(data="d2"), "1.2.1-rc.1"),
    (RELEASED, sig(api=API2), "2.0.0-rc.1"),
    ({**RELEASED, "1.3.0-rc.1": B}, B, "1.3.0-rc.2"),
    ({**RELEASED, "1.3.0-rc.1": B}, sig(params={"n_estimators": 9}), "1.3.0-rc.2"),
    ({**RELEASED, "1.3.0-beta.2": B}, B, "1.3.0-beta.3"),
    ({**RELEASED, "1.3.0-rc.1": B}, sig(api=API2), "2.0.0-rc.1"),
    ({"1.0.0-rc.1": A}, A, "1.0.0-rc.2"),
])
def test_bump_pre(existing: dict[str, Signature], new: Signature, expected: str) -> None:
    assert str(publish.choose_version(existing, new, bump="pre")) == expected


def test_bump_pre_refuses_when_nothing_changed() -> None:
    with pytest.raises(PublishError, match="nothing changed"):
        publish.choose_version(RELEASED, A, bump="pre")


def test_bump_release_publishes_the_latest_pending_pre_release() -> None:
    existing = {**RELEASED, "1.3.0-rc.1": B, "1.3.0-rc.2+b.1": B}
    assert str(publish.choose_version(existing, B, bump="release")) == "1.3.0"
    assert str(publish.choose_version({"1.0.0-rc.1": A}, A, bump="release")) == "1.0.0"
    with pytest.raises(PublishError, match="PATCH change; publish 1.2.1 instead"):
        publish.choose_version(existing, sig(data="d2"), bump="release")
    for done in ({**existing, "1.3.0+x": B}, RELEASED, {}):
        with pytest.raises(PublishError, match="no unreleased pre-release; publish one with --bump pre"):
            publish.choose_version(done, B, bump="release")
    with pytest.raises(PublishError, match="--bump must be one of auto, .* pre, release"):
        publish.choose_version(existing, B, bump="rc")


def test_registry_keeps_versions_that_differ_only_in_build_metadata(registry: Path,
                                                                     tmp_path: Path) -> None:
    meta = (registry / "crime" / "1.0.0" / "metadata.json").read_text()
    for name in ("1.0.0+b", "1.0.0", "1.0.0-rc.1", "1.0.0+a", "0.9.0", "not-a-version"):
        (tmp_path / "crime" / name).mkdir(parents=True)
        (tmp_path / "crime" / name / "metadata.json").write_text(meta)
    reg = publish.LocalRegistry(tmp_path)
    order = ["0.9.0", "1.0.0-rc.1", "1.0.0", "1.0.0+a", "1.0.0+b"]
    assert list(reg.versions("crime")) == order
    assert list(signatures := reg.signatures("crime")) == order
    with pytest.raises(PublishError, match="1.0.0.c has the same precedence as 1.0.0;"):
        publish.choose_version(signatures, A, requested="1.0.0+c")
    with pytest.raises(PublishError, match="1.0.0.c has the same precedence as 1.0.0; .*immutable"):
        reg.publish("crime", V("1.0.0+c"), None, None, None)  # type: ignore[arg-type]
