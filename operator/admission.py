"""The admission review of BatModels: what the CRD schema cannot check because it needs
the artifacts themselves.

For each entry that is new or changed, and whose artifact is reachable over http(s), the
webhook reads its metadata.json (bounded in size and time) and refuses:
- a digest pin that does not match metadata.json;
- an artifact that declares another version than the entry names;
- a new MINOR/PATCH in a live MAJOR whose API differs from the version it replaces
  (the apps of that MAJOR would break): publish it as a new MAJOR instead;
- an artifact that only has pickles, unless the entry allows them (allowPickle).
An artifact that cannot be read now (pvc://, or a registry that is down) is allowed with
a warning: the server checks the same at start, against its MAJOR's recorded API, and
refuses to serve, so the roll stalls and the old pods keep serving.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from batcomputer import apicontract

MAX_METADATA_BYTES: Final = 1024**2
PICKLE_FREE: Final = ("model.onnx", "lookup.json", "flags.json")
FETCH_SECONDS: Final = 5.0

Fetch = Callable[[str], bytes]
"""metadata.json of an http(s) artifact folder; raises OSError or ValueError."""


@dataclass
class Review:
    problems: list[str] = field(default_factory=list)
    """Why the object is refused; empty to allow it."""
    warnings: list[str] = field(default_factory=list)
    """Shown to the admin (kubectl prints them) either way."""


def _entries(body: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """Listed entries by MAJOR (as text, as the CRD compares them)."""
    versions = ((body or {}).get("spec") or {}).get("versions") or []
    return {str(e.get("version", "")).split(".")[0]: e for e in versions if isinstance(e, Mapping)}


def review(old: Mapping[str, Any] | None, new: Mapping[str, Any], fetch: Fetch) -> Review:
    out = Review()
    before, after = _entries(old), _entries(new)
    highest = max((int(m) for m in (*before, *after) if m.isdigit()), default=0)
    metadata: dict[str, Mapping[str, Any] | None] = {}

    def read(entry: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
        artifact = str(entry.get("artifact", ""))
        if artifact not in metadata:
            metadata[artifact] = _read(artifact, fetch, out, where)
        return metadata[artifact]

    for major, entry in after.items():
        previous = before.get(major)
        if previous is not None and all(previous.get(k) == entry.get(k)
                                        for k in ("version", "artifact", "digest", "allowPickle")):
            continue  # unchanged: it was reviewed when it was listed
        version = str(entry.get("version", ""))
        where = f"{version} ({entry.get('artifact')})"
        meta = read(entry, where)
        if meta is None:
            continue
        raw, parsed = meta["raw"], meta["parsed"]
        digest = entry.get("digest")
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if digest and digest != actual:
            out.problems.append(f"{where}: the digest pin {digest} does not match its "
                                f"metadata.json ({actual}); pin {actual} if this is the "
                                "artifact you mean")
            continue
        if str(parsed.get("version")) != version:
            out.problems.append(f"{where}: the artifact is version {parsed.get('version')}, "
                                f"not {version}; list it as {parsed.get('version')} or fix "
                                "the artifact location")
            continue
        files = parsed.get("files") if isinstance(parsed.get("files"), Mapping) else {}
        if entry.get("allowPickle") is not True and not all(f in files for f in PICKLE_FREE):
            out.problems.append(
                f"{where}: the artifact has no pickle-free form ({', '.join(PICKLE_FREE)}), "
                "and its server would have to unpickle model.pkl, which runs code from the "
                "file: republish it with the training CLI, or set allowPickle: true on this "
                "entry if you trust it")
            continue
        if previous is None or str(previous.get("version")) == version:
            continue
        old_meta = read(previous, f"{previous.get('version')} ({previous.get('artifact')})")
        if old_meta is None:
            continue
        old_api = apicontract.api_of(old_meta["parsed"].get("schema") or {})
        new_api = apicontract.api_of(parsed.get("schema") or {})
        if apicontract.fingerprint(old_api) != apicontract.fingerprint(new_api):
            changes = "; ".join(apicontract.changes(old_api, new_api))
            out.problems.append(
                f"{version} changes the API of MAJOR {major} ({changes}) that "
                f"{previous.get('version')} serves: publish it as {highest + 1}.0.0 and list "
                f"it as its own entry beside MAJOR {major}")
    return out


def _read(artifact: str, fetch: Fetch, out: Review, where: str) -> Mapping[str, Any] | None:
    if urlsplit(artifact).scheme not in ("http", "https"):
        out.warnings.append(f"{where}: not checked at admission (only http(s) artifacts are "
                            "read here); its server checks it before it serves")
        return None
    try:
        raw = fetch(artifact.rstrip("/") + "/metadata.json")
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise ValueError("metadata.json is not a JSON object")
    except (OSError, ValueError) as exc:
        out.warnings.append(f"{where}: metadata.json could not be read ({exc}); not checked "
                            "at admission, its server checks it before it serves")
        return None
    return {"raw": raw, "parsed": parsed}


def fetch_metadata(url: str, limit: int = MAX_METADATA_BYTES, seconds: float = FETCH_SECONDS) -> bytes:
    """GET ``url`` within ``seconds`` in all, at most ``limit`` bytes."""
    deadline = time.monotonic() + seconds
    chunks, size = [], 0
    with urllib.request.urlopen(url, timeout=seconds) as response:  # noqa: S310 (http(s) only)
        while chunk := response.read(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise ValueError(f"metadata.json is larger than {limit} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"metadata.json took longer than {seconds:g}s")
            chunks.append(chunk)
    return b"".join(chunks)
