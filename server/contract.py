"""The API a version must keep: a MAJOR's apps depend on it, so a MINOR or PATCH that
changes it must not serve (whatever version number it was published under)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batcomputer import apicontract
from batcomputer.server.artifacts import ArtifactError
from batcomputer.server.model import Model

MAX_BYTES = 1024**2


def expected(path: Path | None) -> dict[str, Any] | None:
    """The expectation in ``path``, or None when there is none (no file: the first
    version of a MAJOR defines its API)."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes()[:MAX_BYTES])
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"the expected API in {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not str(data.get("fingerprint", "")).startswith("sha256:"):
        raise ArtifactError(f"the expected API in {path} has no fingerprint")
    return data


def check(model: Model, expectation: dict[str, Any] | None) -> None:
    """Refuse (ArtifactError, with what changed and what to do) a model whose API is not
    the expected one."""
    if expectation is None:
        return
    served = apicontract.fingerprint(model.api)
    if served == expectation["fingerprint"]:
        return
    major = expectation.get("major", model.version.split(".")[0])
    since = expectation.get("version", "its first version")
    old = expectation.get("api")
    what = "; ".join(apicontract.changes(old, model.api)) if isinstance(old, dict) else ""
    raise ArtifactError(
        f"{model.version} changes the API of MAJOR {major} "
        f"({what or 'fingerprint ' + served + ' instead of ' + str(expectation['fingerprint'])}) "
        f"that {since} serves: apps of MAJOR {major} would break. Publish it as a new MAJOR "
        f"and list it as its own entry; this version will not serve")
