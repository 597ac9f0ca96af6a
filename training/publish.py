"""The model registry: immutable, semver-named artifact folders.

``<registry>/<name>/<version>/`` holds model.pkl, lookup.pkl, flags.pkl and
metadata.json (which records the sha256 of the three pickles). A version is
written to a temporary folder and renamed into place, so a reader never sees
half an artifact and two publishers of the same version cannot both win.

Semver, as Batcomputer defines it:
  MAJOR  the API changed: inputs (names, order, types, accepted values) or outputs
  MINOR  same API, different classifier or parameters
  PATCH  same API and parameters, different training data
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import os
import pickle
import platform
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import semver
import sklearn

from batcomputer.errors import UserError
from batcomputer.training import features, police
from batcomputer.training.train import TrainConfig, TrainedModel

ARTIFACT_FORMAT: Final = "batcomputer.io/artifact/v1"
PICKLES: Final[tuple[str, ...]] = ("model.pkl", "lookup.pkl", "flags.pkl")
NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


class PublishError(UserError, ValueError):
    """A version that may not be published, and why."""


class Bump(enum.IntEnum):
    PATCH = 1
    MINOR = 2
    MAJOR = 3

    def apply(self, version: semver.Version) -> semver.Version:
        return {Bump.MAJOR: version.bump_major, Bump.MINOR: version.bump_minor,
                Bump.PATCH: version.bump_patch}[self]()


@dataclass(frozen=True)
class Signature:
    """What a version promises, compared to decide the bump."""

    api: dict[str, Any]
    classifier: str
    params: dict[str, Any]
    data: str

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Signature:
        return cls(api=features.api_signature(meta["schema"]),
                   classifier=meta["training"]["classifier"],
                   params=meta["training"]["params"], data=meta["data"]["fingerprint"])


def required_bump(old: Signature, new: Signature) -> tuple[Bump | None, str]:
    """The bump the change from ``old`` to ``new`` needs, and the reason in words."""
    if old.api != new.api:
        return Bump.MAJOR, "the API changed (" + _api_diff(old.api, new.api) + ")"
    if old.classifier != new.classifier:
        return Bump.MINOR, f"the classifier changed ({old.classifier} -> {new.classifier})"
    if old.params != new.params:
        changed = sorted(k for k in set(old.params) | set(new.params)
                         if old.params.get(k) != new.params.get(k))
        return Bump.MINOR, f"training parameters changed ({', '.join(changed)})"
    if old.data != new.data:
        return Bump.PATCH, "only the training data changed"
    return None, "nothing changed: same API, classifier, parameters and data"


def _api_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    old_in = {i["name"]: i for i in old["inputs"]}
    new_in = {i["name"]: i for i in new["inputs"]}
    notes = []
    if added := [n for n in new_in if n not in old_in]:
        notes.append("inputs added: " + ", ".join(added))
    if removed := [n for n in old_in if n not in new_in]:
        notes.append("inputs removed: " + ", ".join(removed))
    if changed := [n for n in new_in if n in old_in and new_in[n] != old_in[n]]:
        notes.append("inputs changed: " + ", ".join(changed))
    if not notes and list(old_in) != list(new_in):
        notes.append("input order changed")
    if old["outputs"] != new["outputs"]:
        notes.append(f"outputs {old['outputs']} -> {new['outputs']}")
    return "; ".join(notes)


def bump_between(old: semver.Version, new: semver.Version) -> Bump:
    if new.major != old.major:
        return Bump.MAJOR
    if new.minor != old.minor:
        return Bump.MINOR
    return Bump.PATCH


def parse_version(text: str) -> semver.Version:
    try:
        version = semver.Version.parse(text)
    except (ValueError, TypeError) as exc:
        raise PublishError(f"{text!r} is not a semantic version MAJOR.MINOR.PATCH") from exc
    if version.prerelease or version.build:
        raise PublishError(f"{text}: pre-release and build suffixes are not supported")
    return version


def choose_version(existing: Mapping[semver.Version, Signature], new: Signature, *,
                   requested: str | None = None, bump: str = "auto") -> semver.Version:
    """Check a requested version, or derive one, against the versions already published.

    A requested version must be new, greater than every version of its MAJOR line
    (or, for a new MAJOR, than every version), and bumped by exactly the level the
    change needs relative to the version before it.
    """
    if not existing:
        return parse_version(requested) if requested else semver.Version(1, 0, 0)
    latest = max(existing)

    if requested is None:
        if bump == "auto":
            # Same API as an existing line -> continue that line; else a new MAJOR.
            same_api = [v for v, s in existing.items() if s.api == new.api]
            base = max(same_api) if same_api else latest
            level, why = required_bump(existing[base], new)
            if level is None:
                raise PublishError(f"refusing to publish: {why} compared with {base}")
            if level is Bump.MAJOR:
                return latest.bump_major()
            return level.apply(_latest_in_major(existing, base.major))
        try:
            level = Bump[bump.upper()]
        except KeyError as exc:
            raise PublishError(f"--bump must be auto, major, minor or patch, not {bump!r}") from exc
        base = latest
        requested = str(latest.bump_major() if level is Bump.MAJOR else level.apply(latest))

    version = parse_version(requested)
    if version in existing:
        raise PublishError(f"{version} is already published; published versions are immutable")
    line = [v for v in existing if v.major == version.major]
    if line:
        base = max(line)
        if version < base:
            raise PublishError(f"{version} is lower than {base}, the latest {version.major}.x; "
                               f"publish a version above it")
    else:
        base = latest
        if version < latest:
            raise PublishError(f"{version} starts a new MAJOR below the latest version {latest}")
        if version.minor or version.patch:
            raise PublishError(f"{version} starts MAJOR {version.major}; "
                               f"use {version.major}.0.0")
    level, why = required_bump(existing[base], new)
    if level is None:
        raise PublishError(f"refusing to publish {version}: {why} compared with {base}")
    given = bump_between(base, version)
    if given != level:
        wanted = latest.bump_major() if level is Bump.MAJOR else level.apply(base)
        raise PublishError(
            f"{version} is a {given.name} bump from {base}, but {why}, which is a "
            f"{level.name} change; publish {wanted} instead"
        )
    return version


def _latest_in_major(existing: Mapping[semver.Version, Signature], major: int) -> semver.Version:
    return max(v for v in existing if v.major == major)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def created_time() -> str:
    """Now, or SOURCE_DATE_EPOCH for reproducible artifacts."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch
              else dt.datetime.now(dt.UTC).replace(microsecond=0))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DataSummary:
    fingerprint: str
    files: int
    rows_read: int
    rows_used: int
    dropped: dict[str, int]


class Registry:
    """A registry folder: ``<root>/<name>/<version>/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self, name: str) -> dict[semver.Version, dict[str, Any]]:
        folder = self.root / name
        found: dict[semver.Version, dict[str, Any]] = {}
        if not folder.is_dir():
            return found
        for child in folder.iterdir():
            meta_path = child / "metadata.json"
            if not meta_path.is_file():
                continue
            try:
                version = semver.Version.parse(child.name)
            except ValueError:
                continue
            found[version] = json.loads(meta_path.read_text())
        return dict(sorted(found.items()))

    def signatures(self, name: str) -> dict[semver.Version, Signature]:
        return {v: Signature.from_metadata(m) for v, m in self.versions(name).items()}

    def publish(self, name: str, version: semver.Version, trained: TrainedModel,
                config: TrainConfig, data: DataSummary) -> Path:
        if not NAME_RE.match(name):
            raise PublishError(f"model name {name!r} must be a DNS label (a-z, 0-9, '-'), "
                               "at most 40 characters, as it names Kubernetes objects")
        target = self.root / name / str(version)
        if target.exists():
            raise PublishError(f"{target} exists; published versions are immutable")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            for filename, obj in zip(PICKLES, (trained.model, trained.lookup, trained.flags),
                                     strict=True):
                with (staging / filename).open("wb") as handle:
                    pickle.dump(obj, handle, protocol=5)
            meta = metadata(name, version, trained, config, data,
                            {f: sha256_file(staging / f) for f in PICKLES})
            (staging / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            for child in staging.iterdir():
                child.chmod(0o444)
            staging.chmod(0o755)
            try:
                staging.rename(target)
            except OSError as exc:
                raise PublishError(f"{target} was published by someone else meanwhile") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target


def metadata(name: str, version: semver.Version, trained: TrainedModel, config: TrainConfig,
             data: DataSummary, files: dict[str, str]) -> dict[str, Any]:
    estimator = type(trained.model)
    return {
        "format": ARTIFACT_FORMAT,
        "name": name,
        "version": str(version),
        "created": created_time(),
        "schema": trained.schema,
        "labels": trained.flags,
        "target": {
            "name": "caught",
            "definition": "a suspect was identified and formally dealt with (charged, "
                          "cautioned, fined, penalty notice, community resolution); open "
                          "outcomes are excluded",
            "caught_outcomes": sorted(police.CAUGHT_OUTCOMES),
            "not_caught_outcomes": sorted(police.NOT_CAUGHT_OUTCOMES),
        },
        "training": {
            "classifier": trained.classifier,
            "estimator": f"{estimator.__module__}.{estimator.__qualname__}",
            "params": trained.params,
            "features": list(config.features),
            "seed": config.seed,
            "test_size": config.test_size,
        },
        "metrics": trained.metrics,
        "data": {
            "fingerprint": data.fingerprint,
            "files": data.files,
            "rows_read": data.rows_read,
            "rows_used": data.rows_used,
            "dropped": data.dropped,
        },
        "runtime": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "files": files,
    }
