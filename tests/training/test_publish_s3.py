"""Publishing to an S3-compatible registry (a real SeaweedFS on loopback): the same
artifacts, the same semver rules, and nothing published is ever overwritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import semver
from conftest import S3, environment

from batcomputer import objectstore
from batcomputer.cli import main as cli
from batcomputer.training import publish
from batcomputer.training.publish import PublishError


def registry(s3: S3, location: str, identity: object) -> publish.S3Registry:
    return publish.S3Registry(location, objectstore.S3Config.from_env(s3.env(identity)))  # type: ignore[arg-type]


def test_the_cli_publishes_complete_verifiable_versions(s3: S3, s3_registry: str) -> None:
    reader = registry(s3, s3_registry, s3.reader)
    versions = reader.versions("crime")
    assert list(versions) == ["1.0.0"]
    meta = versions["1.0.0"]
    store = reader.store
    prefix = store.location.prefix + "crime/1.0.0/"
    for name, digest in meta["files"].items():
        data = store.read(prefix + name, limit=1 << 30)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    assert set(store.folders(prefix.rsplit("/", 2)[0] + "/")) == {"1.0.0"}


def test_versions_and_the_cli_read_the_bucket(s3: S3, s3_registry: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with environment(s3.env(s3.reader)):
        assert cli(["versions", s3_registry, "crime", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert list(listed) == ["1.0.0"]
        assert cli(["versions", s3_registry, "nothing"]) == 1
        assert "No versions of 'nothing' in s3://models/registry" in capsys.readouterr().err


def test_a_published_version_is_never_overwritten(s3: S3, s3_registry: str, crime_data: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with environment(s3.env(s3.admin)):
        assert cli(["-q", "train", str(crime_data), "--registry", s3_registry,
                    "--param", "n_estimators=20", "--version", "1.0.0"]) == 2
        assert "1.0.0 is already published; published versions are immutable" in \
            capsys.readouterr().err
        assert cli(["-q", "train", str(crime_data), "--registry", s3_registry,
                    "--param", "n_estimators=20"]) == 2
        assert "nothing changed" in capsys.readouterr().err
    reg = registry(s3, s3_registry, s3.admin)
    before = reg.store.read(reg.store.location.prefix + "crime/1.0.0/metadata.json", limit=1 << 20)
    # A publisher that raced past every check still cannot replace a file: the store
    # refuses the conditional write of the first one.
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "flags.json").write_text("[]")
    (staging / "metadata.json").write_text("{}")
    with pytest.raises(PublishError, match="published by someone else meanwhile"):
        reg._commit("crime", semver.Version.parse("1.0.0"), staging)
    after = reg.store.read(reg.store.location.prefix + "crime/1.0.0/metadata.json", limit=1 << 20)
    assert before == after


def test_an_interrupted_publish_is_not_a_version_and_blocks_its_number(s3: S3) -> None:
    reg = registry(s3, "s3://models/interrupted", s3.admin)
    reg.store.put_new("interrupted/crime/3.0.0/flags.json", b"[]")  # no metadata.json
    assert reg.versions("crime") == {}
    with pytest.raises(PublishError, match="interrupted/crime/3.0.0 exists; published versions "
                                           "are immutable"):
        reg.publish("crime", semver.Version.parse("3.0.0"), None, None, None)  # type: ignore[arg-type]


def test_a_reader_cannot_publish_and_nothing_is_left_behind(s3: S3, crime_data: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with environment(s3.env(s3.reader)):
        assert cli(["-q", "train", str(crime_data), "--registry", "s3://models/readers",
                    "--param", "n_estimators=5"]) == 2
    error = capsys.readouterr().err
    assert "access denied to s3://models/readers/crime/1.0.0/flags.json (AccessDenied)" in error
    assert s3.reader.secret_key not in error
    assert registry(s3, "s3://models/readers", s3.admin).version_folders("crime") == []


def test_registry_locations(s3: S3) -> None:
    assert isinstance(publish.open_registry("some/folder"), publish.LocalRegistry)
    with environment(s3.env(s3.reader)):
        assert isinstance(publish.open_registry("s3://models/x"), publish.S3Registry)
    with pytest.raises(PublishError, match="use a folder or s3://BUCKET/PREFIX"):
        publish.open_registry("gs://models/x")
