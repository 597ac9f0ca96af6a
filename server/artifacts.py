"""Fetch an artifact and verify it before anything in it is unpickled.

An artifact is a folder holding metadata.json and the files it lists with their
sha256: the pickles (model.pkl, lookup.pkl, flags.pkl) and/or the pickle-free set
(model.onnx, lookup.json, flags.json). The chain of trust is:
optional pinned sha256 of metadata.json -> metadata.json -> sha256 of each file.
Only verified bytes leave this module, so nothing can change between the check
and the loading.

Storage is reached through a `Source` chosen by the URI scheme (`FETCHERS`): a path,
file://, pvc://, http(s):// or s3:// (batcomputer.objectstore). The whole fetch has one
deadline (``fetch_deadline``), on top of the per-read ``fetch_timeout``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from batcomputer import objectstore
from batcomputer.server.settings import Settings

FORMAT: Final = "batcomputer.io/artifact/v1"
PICKLED: Final[tuple[str, ...]] = ("model.pkl", "lookup.pkl", "flags.pkl")
PICKLE_FREE: Final[tuple[str, ...]] = ("model.onnx", "lookup.json", "flags.json")
METADATA: Final = "metadata.json"
MAX_METADATA_BYTES: Final = 16 * 1024**2
FILE_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CHUNK: Final = 1 << 20


class ArtifactError(Exception):
    """The artifact cannot be served; the message says why in one line."""


class DeadlineExceeded(ArtifactError):
    """The whole fetch took longer than allowed; the message names what was being read."""


class Source(Protocol):
    """Where an artifact's files come from."""

    uri: str

    def read(self, name: str, *, limit: int, deadline: float | None = None) -> bytes:
        """The file's bytes; ArtifactError if missing, unreachable, over ``limit`` bytes or
        not read by ``deadline`` (time.monotonic())."""
        ...


Fetcher = Callable[[str, Settings], Source]


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its metadata and the bytes of every file it lists."""

    uri: str
    metadata: dict[str, Any]
    metadata_digest: str
    files: dict[str, bytes]

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def redact(uri: str) -> str:
    """The URI without any user:password@ part, for messages and /api/info."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# -- sources ---------------------------------------------------------------------------------


class LocalSource:
    """A folder on a local or mounted filesystem."""

    def __init__(self, root: Path, uri: str) -> None:
        self.root = root
        self.uri = uri

    def read(self, name: str, *, limit: int, deadline: float | None = None) -> bytes:
        if not self.root.is_dir():
            raise ArtifactError(f"artifact folder {self.root} does not exist")
        path = self.root / name
        if not path.is_file():
            raise ArtifactError(f"{name} is missing from {self.uri}")
        try:
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if len(data) > limit:
            raise ArtifactError(f"{name} in {self.uri} is larger than {limit} bytes")
        return data


class HttpSource:
    """A folder served over http(s); files are downloaded into ``cache_dir``."""

    def __init__(self, base_url: str, *, timeout: float, cache_dir: Path) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.uri = redact(self.base_url)
        self.timeout = timeout
        self.cache_dir = cache_dir

    def read(self, name: str, *, limit: int, deadline: float | None = None) -> bytes:
        url = self.base_url + name
        shown = self.uri + name
        timeout = self.timeout if deadline is None else max(0.001, min(
            self.timeout, deadline - time.monotonic()))
        try:
            with requests.get(url, stream=True, timeout=(timeout, timeout)) as reply:
                if reply.status_code == 404:
                    raise ArtifactError(f"{name} not found at {shown} (HTTP 404)")
                if reply.status_code != 200:
                    raise ArtifactError(f"GET {shown} answered HTTP {reply.status_code} "
                                        f"{reply.reason or ''}".rstrip())
                declared = reply.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise ArtifactError(f"{shown} is {declared} bytes, larger than the "
                                        f"limit of {limit}")
                data = bytearray()
                # read1: at most one read from the socket, so the deadline is checked
                # between reads, however slowly the bytes come.
                while chunk := reply.raw.read1(CHUNK, decode_content=True):
                    data += chunk
                    if len(data) > limit:
                        raise ArtifactError(f"{shown} is larger than the limit of {limit} bytes")
                    if deadline is not None and time.monotonic() > deadline:
                        raise DeadlineExceeded(f"GET {shown}")
        except requests.Timeout as exc:
            if deadline is not None and time.monotonic() >= deadline - 0.01:
                raise DeadlineExceeded(f"GET {shown}") from exc
            raise ArtifactError(f"GET {shown} timed out after {timeout:g}s") from exc
        except requests.ConnectionError as exc:
            raise ArtifactError(f"GET {shown} failed: could not connect") from exc
        except requests.RequestException as exc:
            raise ArtifactError(f"GET {shown} failed: {type(exc).__name__}") from exc
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.cache_dir / name).write_bytes(data)
        return bytes(data)


class S3Source:
    """A folder-like prefix of an S3-compatible bucket (see batcomputer.objectstore)."""

    def __init__(self, uri: str, settings: Settings) -> None:
        try:
            location = objectstore.Location.parse(uri)
            config = objectstore.S3Config.from_env(endpoint=settings.s3_endpoint,
                                                   region=settings.s3_region,
                                                   timeout=settings.fetch_timeout)
        except objectstore.ObjectStoreError as exc:
            raise ArtifactError(str(exc)) from exc
        self.uri = location.uri
        self.store = objectstore.Store(location, config)

    def read(self, name: str, *, limit: int, deadline: float | None = None) -> bytes:
        try:
            return self.store.read(self.store.location.prefix + name, limit=limit,
                                   deadline=deadline)
        except objectstore.DeadlineExceeded as exc:
            raise DeadlineExceeded(f"reading {self.uri}{name}") from exc
        except objectstore.NoSuchBucket as exc:
            raise ArtifactError(str(exc)) from exc
        except objectstore.NotFound as exc:
            raise ArtifactError(f"{name} is missing from {self.uri}") from exc
        except objectstore.ObjectStoreError as exc:
            raise ArtifactError(str(exc)) from exc


def _local(uri: str, settings: Settings) -> Source:
    return LocalSource(Path(uri), uri)


def _file(uri: str, settings: Settings) -> Source:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ArtifactError(f"{uri}: file:// URIs must be local (file:///path)")
    return LocalSource(Path(unquote(parts.path)), uri)


def _pvc(uri: str, settings: Settings) -> Source:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise ArtifactError(f"{uri}: expected pvc://CLAIM/PATH")
    relative = unquote(parts.path).lstrip("/")
    if ".." in Path(relative).parts:
        raise ArtifactError(f"{uri}: '..' is not allowed in a pvc:// path")
    return LocalSource(settings.pvc_root / parts.netloc / relative, uri)


def _http(uri: str, settings: Settings) -> Source:
    cache = settings.cache_dir or Path(tempfile.mkdtemp(prefix="batcomputer-artifact-"))
    folder = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    return HttpSource(uri, timeout=settings.fetch_timeout, cache_dir=folder)


FETCHERS: Final[dict[str, Fetcher]] = {
    "": _local,
    "file": _file,
    "pvc": _pvc,
    "http": _http,
    "https": _http,
    "s3": S3Source,
}


def open_source(uri: str, settings: Settings) -> Source:
    if not uri:
        raise ArtifactError("no artifact given (--artifact or BATCOMPUTER_ARTIFACT)")
    scheme = urlsplit(uri).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    fetcher = FETCHERS.get(scheme)
    if fetcher is None:
        raise ArtifactError(f"{redact(uri)}: unsupported scheme {scheme}://; "
                            f"use one of: path, {', '.join(s + '://' for s in FETCHERS if s)}")
    return fetcher(uri, settings)


# -- verification ----------------------------------------------------------------------------


def fetch_verified(settings: Settings, source: Source | None = None,
                   select: Callable[[dict[str, Any]], Iterable[str]] | None = None) -> Artifact:
    """Fetch metadata.json and the files it lists, checking each link of the chain.
    ``select`` names the files that will be used (default: every file listed); the
    others are neither fetched nor returned."""
    deadline = time.monotonic() + settings.fetch_deadline
    source = source or open_source(settings.artifact, settings)
    try:
        return _fetch(source, settings, select, deadline)
    except DeadlineExceeded as exc:
        raise ArtifactError(f"fetching {source.uri} took longer than the deadline of "
                            f"{settings.fetch_deadline:g}s ({exc}); raise fetch_deadline "
                            "(BATCOMPUTER_FETCH_DEADLINE) for very large artifacts or slow "
                            "links") from exc


def _fetch(source: Source, settings: Settings,
           select: Callable[[dict[str, Any]], Iterable[str]] | None,
           deadline: float) -> Artifact:
    raw = source.read(METADATA, limit=MAX_METADATA_BYTES, deadline=deadline)
    digest = sha256(raw)
    if settings.digest is not None and digest != settings.digest:
        raise ArtifactError(f"metadata.json digest mismatch at {source.uri}: pinned "
                            f"{settings.digest}, found {digest}")
    metadata = _parse_metadata(raw, source.uri)
    if settings.version is not None and metadata["version"] != settings.version:
        raise ArtifactError(f"version mismatch: asked for {settings.version}, the artifact at "
                            f"{source.uri} is {metadata['name']} {metadata['version']}")
    files: dict[str, bytes] = {}
    wanted = set(metadata["files"] if select is None else select(metadata))
    for name, expected in sorted(metadata["files"].items()):
        if name not in wanted:
            continue
        data = source.read(name, limit=settings.max_artifact_bytes, deadline=deadline)
        found = sha256(data)
        if found != expected:
            raise ArtifactError(f"{name} digest mismatch at {source.uri}: metadata.json says "
                                f"{expected}, found {found}")
        files[name] = data
    return Artifact(uri=source.uri, metadata=metadata, metadata_digest=digest, files=files)


def _parse_metadata(raw: bytes, uri: str) -> dict[str, Any]:
    try:
        metadata = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"metadata.json at {uri} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ArtifactError(f"metadata.json at {uri} is not a JSON object")
    if metadata.get("format") != FORMAT:
        raise ArtifactError(f"metadata.json at {uri} has format {metadata.get('format')!r}, "
                            f"expected {FORMAT!r}")
    for key in ("name", "version"):
        if not isinstance(metadata.get(key), str):
            raise ArtifactError(f"metadata.json at {uri} has no {key}")
    files = metadata.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ArtifactError(f"metadata.json at {uri} has no 'files' digests")
    if not any(all(f in files for f in group) for group in (PICKLED, PICKLE_FREE)):
        raise ArtifactError(f"metadata.json at {uri} lists digests for neither "
                            f"{', '.join(PICKLE_FREE)} nor {', '.join(PICKLED)}")
    unsafe = [f for f in files if not FILE_NAME_RE.match(f) or f == METADATA]
    if unsafe:
        raise ArtifactError(f"metadata.json at {uri} lists unusable file names {unsafe}")
    return metadata
