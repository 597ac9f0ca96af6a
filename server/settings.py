"""Typed server settings, read once from the environment (BATCOMPUTER_*) and flags.

Flags override the environment; the result is validated and passed to whoever
needs it (artifact loading, the app factory, gunicorn). Nothing reads the
environment after this.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import semver

ENV_PREFIX: Final = "BATCOMPUTER_"
DIGEST_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
WORKER_CLASSES: Final = ("gevent", "sync", "gthread")


class SettingsError(ValueError):
    """A setting that cannot be used, and why."""


@dataclass(frozen=True)
class Settings:
    artifact: str = ""
    """Artifact URI: a local folder, file://, http(s)://, pvc://claim/path, s3://bucket/prefix/."""
    version: str | None = None
    """Refuse to serve unless the artifact's metadata has exactly this version."""
    digest: str | None = None
    """Optional pin: sha256:<hex> of the artifact's metadata.json."""
    expected_api: Path | None = None
    """A JSON file with the API this version must keep ({"fingerprint", "api", "version",
    "major"}: what its MAJOR serves). Refuse to serve an artifact with another API. A
    missing file means no expectation yet (the first version of a MAJOR defines it)."""
    model_name: str | None = None
    """The name served in /api/info and metrics (default: the artifact's name)."""
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 2
    """Gunicorn worker processes."""
    worker_class: str = "gevent"
    """gunicorn's worker model: gevent (default: every connection is a greenlet, so slow
    or idle clients hold nothing that others need; measured in bench/server.py), sync
    (one request at a time per worker: a client that sends its body slowly blocks the
    worker, and two of them stop the health checks), or gthread (``threads`` per worker)."""
    threads: int = 1
    """Threads per gthread worker (more than 1 with worker_class sync selects gthread)."""
    worker_connections: int = 1000
    """Most simultaneous connections per gevent worker."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS; none by default. '*' must be asked for explicitly."""
    cache_dir: Path | None = None
    """Where http(s) artifacts are downloaded (default: a new temporary folder)."""
    pvc_root: Path = Path("/mnt/pvc")
    """pvc://CLAIM/PATH is read from <pvc_root>/CLAIM/PATH (the claim's mount point)."""
    fetch_timeout: float = 30.0
    """Seconds to connect to, and between bytes from, an http(s) or S3 artifact server."""
    fetch_deadline: float = 600.0
    """Seconds the whole fetch (metadata.json and every file) may take."""
    s3_endpoint: str | None = None
    """The S3-compatible store for s3:// artifacts, http(s)://HOST[:PORT] (default
    AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, then AWS). Credentials come from the standard
    AWS variables, profile, web-identity token or instance role (batcomputer.objectstore)."""
    s3_region: str | None = None
    """The bucket's region (default AWS_REGION, AWS_DEFAULT_REGION, then asked of the bucket)."""
    max_artifact_bytes: int = 2 * 1024**3
    """Largest artifact file accepted from a fetcher."""
    max_body_bytes: int = 1024**2
    """Largest request body; larger ones get 413."""
    max_batch: int = 1000
    """Most rows in one batch request; more get 413."""
    allow_pickle: bool = True
    """Whether an artifact's pickles may be loaded. Unpickling runs code from the file, so
    the image turns this off: only the pickle-free form (model.onnx, lookup.json,
    flags.json) is served, and an artifact without it is refused. Artifacts with the
    pickle-free form are served from it either way."""
    memo_limit: int = 2_000_000
    """Precompute every prediction when the input space has at most this many
    combinations (0 turns memoisation off)."""
    log_level: str = "info"
    termination_log: Path = Path("/dev/termination-log")
    """Where the reason for refusing to serve is also written, when that file exists
    (Kubernetes provides it; the pod's status then shows the reason, without log noise)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from BATCOMPUTER_* variables, then ``overrides`` (flags; None = unset)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        if self.digest is not None and not DIGEST_RE.match(self.digest):
            raise SettingsError(f"digest {self.digest!r} is not sha256:<64 lowercase hex digits>")
        if self.version is not None and not semver.Version.is_valid(self.version):
            raise SettingsError(f"version {self.version!r} is not a semantic version "
                                "MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port {self.port} is not in 0-65535")
        if self.worker_class not in WORKER_CLASSES:
            raise SettingsError(f"worker_class {self.worker_class!r} is not one of "
                                f"{', '.join(WORKER_CLASSES)}")
        for name in ("workers", "threads", "max_body_bytes", "max_batch", "max_artifact_bytes",
                     "worker_connections"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.memo_limit < 0:
            raise SettingsError("memo_limit must be 0 (off) or more")
        if self.fetch_timeout <= 0 or self.fetch_deadline <= 0:
            raise SettingsError("fetch_timeout and fetch_deadline must be positive")
        if self.log_level.lower() not in {"debug", "info", "warning", "error", "critical"}:
            raise SettingsError(f"log_level {self.log_level!r} is not debug, info, warning, "
                                "error or critical")


def _parse(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return _boolean(raw)
        if "tuple" in kind:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if "Path" in kind:
            return Path(raw)
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return raw


TRUE: Final = frozenset({"1", "true", "yes", "on"})
FALSE: Final = frozenset({"0", "false", "no", "off"})


def _boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text not in TRUE | FALSE:
        raise ValueError(f"expected true or false, not {raw!r}")
    return text in TRUE
