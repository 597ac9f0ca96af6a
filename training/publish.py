"""The model registry: immutable, semver-named artifact folders.

``<registry>/<name>/<version>/`` holds metadata.json, which records the sha256 of
every other file:
  model.onnx              the fast form (see fastform), when it passed its check
  lookup.json, flags.json the inputs and labels as plain JSON
  model.pkl, lookup.pkl, flags.pkl   the pickles (DESIGN section 3), unless --no-pickle
A server that refuses pickles serves model.onnx + the JSON files. A registry is a folder
or an S3-compatible bucket (s3://bucket/prefix); either way a reader never sees half an
artifact and two publishers of the same version cannot both win (see LocalRegistry and
S3Registry).

Semver, as Batcomputer defines it:
  MAJOR  the API changed: inputs (names, order, types, accepted values) or outputs
  MINOR  same API, different classifier or parameters
  PATCH  same API and parameters, different training data

Semver 2.0.0 in full: X.Y.Z-PRERELEASE is a draft of X.Y.Z and sorts before it; its
X.Y.Z must be a valid step from the latest release below it, like the release would be.
+BUILD metadata is kept in the folder name but ignored for precedence, so 1.0.0+b is
refused when 1.0.0 or 1.0.0+a is published.
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import semver
import sklearn

from batcomputer import apicontract, objectstore
from batcomputer.errors import UserError
from batcomputer.training import fastform, police
from batcomputer.training.fastform import FastForm
from batcomputer.training.train import TrainConfig, TrainedModel

ARTIFACT_FORMAT: Final = "batcomputer.io/artifact/v1"
PICKLES: Final[tuple[str, ...]] = ("model.pkl", "lookup.pkl", "flags.pkl")
JSON_FILES: Final[tuple[str, ...]] = ("lookup.json", "flags.json")
METADATA: Final = "metadata.json"
NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
VERSION_FORMAT: Final = "MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. 1.4.2, 2.0.0-rc.1 or 1.1.0+build.5"
PRE_RELEASE: Final = "rc"  # --bump pre starts X.Y.Z-rc.1, then bumps the last number
BUMPS: Final = ("auto", "major", "minor", "patch", "pre", "release")


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
        return cls(api=apicontract.api_of(meta["schema"]),
                   classifier=meta["training"]["classifier"],
                   params=meta["training"]["params"], data=meta["data"]["fingerprint"])


def required_bump(old: Signature, new: Signature) -> tuple[Bump | None, str]:
    """The bump the change from ``old`` to ``new`` needs, and the reason in words."""
    if old.api != new.api:
        return Bump.MAJOR, "the API changed (" + "; ".join(apicontract.changes(old.api, new.api)) + ")"
    if old.classifier != new.classifier:
        return Bump.MINOR, f"the classifier changed ({old.classifier} -> {new.classifier})"
    if old.params != new.params:
        changed = sorted(k for k in set(old.params) | set(new.params)
                         if old.params.get(k) != new.params.get(k))
        return Bump.MINOR, f"training parameters changed ({', '.join(changed)})"
    if old.data != new.data:
        return Bump.PATCH, "only the training data changed"
    return None, "nothing changed: same API, classifier, parameters and data"


def bump_between(old: semver.Version, new: semver.Version) -> Bump:
    if new.major != old.major:
        return Bump.MAJOR
    if new.minor != old.minor:
        return Bump.MINOR
    return Bump.PATCH


def parse_version(text: str) -> semver.Version:
    if not semver.Version.is_valid(text):
        raise PublishError(f"{text!r} is not a semantic version: use {VERSION_FORMAT}")
    return semver.Version.parse(text)


def precedence_key(text: str) -> tuple[semver.Version, str]:
    """Sort key: semver precedence (build metadata ignored), ties broken by the text."""
    return semver.Version.parse(text), text


Published = Mapping[str, Signature] | Mapping[semver.Version, Signature]
_Entry = tuple[semver.Version, Signature]


def choose_version(existing: Published, new: Signature, *, requested: str | None = None,
                   bump: str = "auto") -> semver.Version:
    """Check a requested version, or derive one, against the versions already published.

    A requested version must not share its precedence with a published one (build
    metadata does not count), must be greater than every version of its MAJOR line
    (or, for a new MAJOR, than every version), and its release X.Y.Z must be bumped by
    exactly the level the change needs relative to the latest *release* below it.
    Pre-releases are drafts of their release: they never serve as that base, so a
    release may be identical to its last pre-release.
    """
    published = sorted(((parse_version(str(v)), s) for v, s in existing.items()),
                       key=lambda e: precedence_key(str(e[0])))
    version = parse_version(requested) if requested else _derive(published, new, bump)
    if published:
        _check(published, new, version)
    return version


def _derive(published: list[_Entry], new: Signature, bump: str) -> semver.Version:
    if bump in ("auto", "pre"):
        refuse_republishing(published, new)
    if bump not in BUMPS:
        raise PublishError(f"--bump must be one of {', '.join(BUMPS)}, not {bump!r}")
    if bump == "release":
        released = [v for v, _ in published if not v.prerelease]
        pending = [v for v, _ in published if v.prerelease and v.finalize_version() not in released]
        if not pending:
            raise PublishError("--bump release: there is no unreleased pre-release; publish one "
                               "with --bump pre or --version X.Y.Z-rc.1")
        return pending[-1].finalize_version()
    releases = [(v, s) for v, s in published if not v.prerelease]
    if not releases:  # nothing released yet: the first release
        target = published[-1][0].finalize_version() if published else semver.Version(1, 0, 0)
    else:
        latest = releases[-1][0]
        if bump in ("auto", "pre"):
            # Same API as a released line -> continue that line; else a new MAJOR.
            same_api = [e for e in releases if e[1].api == new.api]
            base, base_sig = same_api[-1] if same_api else releases[-1]
            level, why = required_bump(base_sig, new)
            if level is None:
                raise PublishError(f"refusing to publish: {why} compared with {base}")
        else:
            level, base = Bump[bump.upper()], latest
        target = (latest.bump_major() if level is Bump.MAJOR else
                  level.apply(max(v for v, _ in releases if v.major == base.major)))
    return _next_pre(published, target) if bump == "pre" else target


def _next_pre(published: list[_Entry], release: semver.Version,
              first: str = f"{PRE_RELEASE}.1") -> semver.Version:
    """The next pre-release of ``release``: after its latest one, else ``release-first``."""
    pres = [v for v, _ in published if v.prerelease and v.finalize_version() == release]
    return pres[-1].bump_prerelease() if pres else release.replace(prerelease=first)


def refuse_republishing(published: list[_Entry], new: Signature,
                        version: semver.Version | None = None) -> None:
    """Refuse a model identical to a published release (same API, classifier, parameters
    and data), whichever release of whichever line it is: it would be the same model
    under a second number."""
    for release, signature in reversed(published):
        if not release.prerelease and signature == new:
            raise PublishError(f"refusing to publish{f' {version}' if version else ''}: nothing "
                               f"changed: same API, classifier, parameters and data as "
                               f"{release}, which is published")


def _check(published: list[_Entry], new: Signature, version: semver.Version) -> None:
    refuse_published([v for v, _ in published], version)
    line = [v for v, _ in published if v.major == version.major]
    if line and version < line[-1]:
        raise PublishError(f"{version} is lower than {line[-1]}, the latest {version.major}.x; "
                           f"publish a version above it")
    latest = published[-1][0]
    if not line and version < latest:
        raise PublishError(f"{version} starts a new MAJOR below the latest version {latest}")
    target = version.finalize_version()
    below = [e for e in published if not e[0].prerelease and e[0] < target]
    in_line = [e for e in below if e[0].major == version.major]
    if not in_line and (version.minor or version.patch):
        raise PublishError(f"{version} starts MAJOR {version.major}; use "
                           f"{_like(version, semver.Version(version.major, 0, 0), published)}")
    refuse_republishing(published, new, version)
    if not below:
        return  # nothing released before it: like a first version
    base, base_sig = (in_line or below)[-1]
    level, why = required_bump(base_sig, new)
    if level is None:
        raise PublishError(f"refusing to publish {version}: {why} compared with {base}")
    given = bump_between(base, target)
    if given != level:
        # The advice is what --bump auto gives, which these rules accept; it refuses
        # itself (saying why) when there is nothing new to publish.
        wanted = _derive(published, new, "auto")
        line_of = (f", and it is the API of {wanted.major}.x" if wanted.major != version.major
                   and wanted.major in {v.major for v, _ in published} else "")
        raise PublishError(
            f"{version} is a {given.name} bump from {base}, but {why}, which is a "
            f"{level.name} change{line_of}; publish {_like(version, wanted, published)} instead"
        )


def _like(version: semver.Version, release: semver.Version,
          published: list[_Entry]) -> semver.Version:
    """Advice in kind: ``release``, or its next pre-release when ``version`` is one."""
    return _next_pre(published, release, version.prerelease) if version.prerelease else release


def refuse_published(published: Iterable[semver.Version], version: semver.Version) -> None:
    """Refuse a version with the precedence of a published one (build metadata ignored)."""
    for old in published:
        if old == version:
            same = ("is already published" if str(old) == str(version)
                    else f"has the same precedence as {old}")
            raise PublishError(f"{version} {same}; published versions are immutable")


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
    """A registry: ``<root>/<name>/<version>/`` in a folder (`LocalRegistry`) or an
    S3-compatible bucket (`S3Registry`); `open_registry` picks one from the location."""

    location: str

    def version_folders(self, name: str) -> list[str]:
        """Every version folder of ``name`` that exists, published or not."""
        raise NotImplementedError

    def read_metadata(self, name: str, version: str) -> dict[str, Any] | None:
        """The version's metadata.json; None while it has none (not published)."""
        raise NotImplementedError

    def _commit(self, name: str, version: semver.Version, staging: Path) -> str:
        """Put the staged files in place as one version, or refuse; where it now is."""
        raise NotImplementedError

    def versions(self, name: str) -> dict[str, dict[str, Any]]:
        """Metadata by version folder name, in precedence order (ties by the text).

        Keyed by the text, not by ``semver.Version``: Versions that differ only in build
        metadata are equal and hash alike, so 1.0.0+a and 1.0.0+b would collapse.
        """
        found = {}
        for version in self.version_folders(name):
            meta = self.read_metadata(name, version) if semver.Version.is_valid(version) else None
            if meta is not None:
                found[version] = meta
        return {v: found[v] for v in sorted(found, key=precedence_key)}

    def signatures(self, name: str) -> dict[str, Signature]:
        return {v: Signature.from_metadata(m) for v, m in self.versions(name).items()}

    def publish(self, name: str, version: semver.Version, trained: TrainedModel,
                config: TrainConfig, data: DataSummary, fast: FastForm | None = None,
                *, pickles: bool = True) -> str:
        """Write the version. ``fast`` is the checked ONNX form (or why there is none);
        without ``pickles`` the artifact needs none, so it must have a fast form."""
        if not pickles and (fast is None or fast.onnx is None):
            why = f": {fast.refused}" if fast is not None and fast.refused else ""
            raise PublishError("--no-pickle needs the fast form (model.onnx), which this model "
                               f"does not have{why}")
        if not NAME_RE.match(name):
            raise PublishError(f"model name {name!r} must be a DNS label (a-z, 0-9, '-'), "
                               "at most 40 characters, as it names Kubernetes objects")
        folders = self.version_folders(name)
        if str(version) in folders:
            raise PublishError(f"{self.location}/{name}/{version} exists; published versions "
                               "are immutable")
        refuse_published((semver.Version.parse(f) for f in folders if semver.Version.is_valid(f)),
                         version)
        staging = self._staging(name, version)
        try:
            written = _write_files(staging, trained, fast, pickles=pickles)
            meta = metadata(name, version, trained, config, data,
                            {f: sha256_file(staging / f) for f in written}, fast)
            (staging / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            return self._commit(name, version, staging)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _staging(self, name: str, version: semver.Version) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"batcomputer-{name}-{version}-"))


class LocalRegistry(Registry):
    """A registry folder. A version is written to a hidden folder beside its place and
    renamed into it, so a reader never sees half an artifact and of two publishers of
    the same version only one wins."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def version_folders(self, name: str) -> list[str]:
        folder = self.root / name
        return sorted(c.name for c in folder.iterdir() if not c.name.startswith(".")) \
            if folder.is_dir() else []

    def read_metadata(self, name: str, version: str) -> dict[str, Any] | None:
        path = self.root / name / version / METADATA
        return json.loads(path.read_text()) if path.is_file() else None

    def _staging(self, name: str, version: semver.Version) -> Path:
        parent = self.root / name
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{version}-", dir=parent))

    def _commit(self, name: str, version: semver.Version, staging: Path) -> str:
        target = self.root / name / str(version)
        for child in staging.iterdir():
            child.chmod(0o444)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError as exc:
            raise PublishError(f"{target} was published by someone else meanwhile") from exc
        return str(target)


class S3Registry(Registry):
    """A registry under ``s3://bucket/prefix/``. Objects are written once each, with a
    conditional write (If-None-Match: *), in a fixed order with metadata.json last: a
    version is published when its metadata.json exists, a second publisher of the same
    version is refused at its first file, and nothing is ever overwritten."""

    def __init__(self, uri: str, config: objectstore.S3Config | None = None) -> None:
        location = objectstore.Location.parse(uri)
        self.store = objectstore.Store(location, config or objectstore.S3Config.from_env())
        self.location = location.uri.rstrip("/")

    def _key(self, *parts: str) -> str:
        return self.store.location.prefix + "/".join(parts)

    def version_folders(self, name: str) -> list[str]:
        return self.store.folders(self._key(name) + "/")

    def read_metadata(self, name: str, version: str) -> dict[str, Any] | None:
        try:
            raw = self.store.read(self._key(name, version, METADATA), limit=16 * 1024**2)
        except objectstore.NoSuchBucket:
            raise
        except objectstore.NotFound:
            return None
        return json.loads(raw)  # type: ignore[no-any-return]

    def _commit(self, name: str, version: semver.Version, staging: Path) -> str:
        names = sorted(c.name for c in staging.iterdir() if c.name != METADATA) + [METADATA]
        for index, filename in enumerate(names):
            data = (staging / filename).read_bytes()
            kind = "application/json" if filename.endswith(".json") else "application/octet-stream"
            try:
                self.store.put_new(self._key(name, str(version), filename), data, kind)
            except objectstore.AlreadyExists as exc:
                where = f"{self.location}/{name}/{version}/"
                if index == 0:
                    raise PublishError(f"{where} was published by someone else meanwhile") from exc
                raise PublishError(f"{where}{filename} appeared while publishing: another "
                                   "publisher is writing this version") from exc
        return f"{self.location}/{name}/{version}/"


def open_registry(location: str) -> Registry:
    """The registry at ``location``: s3://bucket/prefix or a folder."""
    if location.lower().startswith("s3://"):
        return S3Registry(location)
    if "://" in location:
        raise PublishError(f"registry {location!r}: use a folder or s3://BUCKET/PREFIX")
    return LocalRegistry(location)


def _write_files(folder: Path, trained: TrainedModel, fast: FastForm | None, *,
                 pickles: bool) -> list[str]:
    """Every file of the artifact but metadata.json; their names."""
    written = []
    for filename, value in zip(JSON_FILES, (trained.lookup, trained.flags), strict=True):
        (folder / filename).write_text(json.dumps(value, indent=1) + "\n")
        written.append(filename)
    if fast is not None and fast.onnx is not None:
        (folder / fastform.FILE).write_bytes(fast.onnx)
        written.append(fastform.FILE)
    if pickles:
        for filename, obj in zip(PICKLES, (trained.model, trained.lookup, trained.flags),
                                 strict=True):
            with (folder / filename).open("wb") as handle:
                pickle.dump(obj, handle, protocol=5)
            written.append(filename)
    return sorted(written)


def metadata(name: str, version: semver.Version, trained: TrainedModel, config: TrainConfig,
             data: DataSummary, files: dict[str, str],
             fast: FastForm | None = None) -> dict[str, Any]:
    estimator = type(trained.model)
    return {
        "format": ARTIFACT_FORMAT,
        "name": name,
        "version": str(version),
        "created": created_time(),
        "schema": trained.schema,
        # What the MAJOR's apps depend on: the operator and the servers refuse a version of
        # this MAJOR with another fingerprint.
        "api_fingerprint": apicontract.fingerprint(apicontract.api_of(trained.schema)),
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
            **({"aggregation": trained.aggregation} if trained.aggregation else {}),
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
        "fast_form": fast.record if fast is not None else {"refused": "not built"},
        "files": files,
    }
