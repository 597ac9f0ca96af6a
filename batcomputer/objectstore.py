"""S3-compatible object storage: the one place that talks to it (through MinIO's client).

Artifacts and registries live under ``s3://BUCKET/PREFIX/``. Where the store is and who
we are come from the standard AWS settings, read once by `S3Config.from_env`:
  endpoint     BATCOMPUTER_S3_ENDPOINT, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (a URL;
               default AWS, https://s3.amazonaws.com)
  region       AWS_REGION or AWS_DEFAULT_REGION (default: asked of the bucket)
  credentials  the first of: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
               a profile of the shared credentials file (AWS_PROFILE,
               AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials); a web-identity token
               (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, as EKS and other clusters
               inject it); container credentials (AWS_CONTAINER_CREDENTIALS_*); the
               instance metadata service, unless AWS_EC2_METADATA_DISABLED=true, in which
               case requests are anonymous (public buckets).

Errors are `ObjectStoreError`s whose message says what to fix, never a secret.
"""

from __future__ import annotations

import configparser
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from batcomputer.errors import UserError

DEFAULT_ENDPOINT: Final = "https://s3.amazonaws.com"
CHUNK: Final = 1 << 20
ACCESS_CODES: Final = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                 "InvalidToken", "ExpiredToken", "AllAccessDisabled"})


class ObjectStoreError(UserError):
    """A request that failed, in one line that says why."""


class NotFound(ObjectStoreError):
    """The key (or bucket) does not exist."""


class NoSuchBucket(NotFound):
    """The bucket itself does not exist."""


class DeadlineExceeded(ObjectStoreError):
    """A read that went on past its deadline."""


class AlreadyExists(ObjectStoreError):
    """A write-once key that someone already wrote."""


@dataclass(frozen=True)
class Location:
    """``s3://bucket/prefix/``: a bucket and a folder-like prefix ('' or ending in '/')."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> Location:
        parts = urlsplit(uri)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise ObjectStoreError(f"{uri}: expected s3://BUCKET/PREFIX/")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ObjectStoreError(f"{uri}: an s3:// URI has no credentials, query or "
                                   "fragment; credentials come from the environment or a Secret")
        prefix = parts.path.strip("/")
        if ".." in prefix.split("/") or "//" in prefix:
            raise ObjectStoreError(f"{uri}: empty or '..' path segments are not allowed")
        return cls(parts.netloc, prefix + "/" if prefix else "")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def child(self, *names: str) -> Location:
        return Location(self.bucket, self.prefix + "".join(n.strip("/") + "/" for n in names))


@dataclass(frozen=True)
class S3Config:
    endpoint: str = DEFAULT_ENDPOINT
    region: str | None = None
    timeout: float = 30.0
    """Seconds to connect, and between bytes."""
    credentials: Any = None
    """A minio credentials provider, or None for anonymous requests."""
    credentials_source: str = "no credentials (anonymous requests)"
    """Where the credentials came from, for messages (never their value)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, endpoint: str | None = None,
                 region: str | None = None, timeout: float = 30.0) -> S3Config:
        env = os.environ if env is None else env
        endpoint = (endpoint or env.get("BATCOMPUTER_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3")
                    or env.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT)
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ObjectStoreError(f"S3 endpoint {endpoint!r} must be http(s)://HOST[:PORT]")
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        provider, source = _credentials(env, region)
        return cls(endpoint.rstrip("/"), region, timeout, provider, source)


def _credentials(env: Mapping[str, str], region: str | None) -> tuple[Any, str]:
    """The standard AWS chain, first match wins; the provider and where it came from."""
    from minio.credentials.providers import IamAwsProvider, StaticProvider

    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key or secret:
        if not (key and secret):
            raise ObjectStoreError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set "
                                   "together")
        return StaticProvider(key, secret, env.get("AWS_SESSION_TOKEN") or None), "environment"
    profile = env.get("AWS_PROFILE") or "default"
    path = Path(env.get("AWS_SHARED_CREDENTIALS_FILE")
                or Path(env.get("HOME", "~")).expanduser() / ".aws" / "credentials")
    parser = configparser.ConfigParser()
    if parser.read(path) and parser.has_section(profile):
        section = parser[profile]
        if section.get("aws_access_key_id") and section.get("aws_secret_access_key"):
            return (StaticProvider(section["aws_access_key_id"], section["aws_secret_access_key"],
                                   section.get("aws_session_token") or None),
                    f"profile {profile} of {path}")
    elif env.get("AWS_PROFILE"):
        raise ObjectStoreError(f"AWS_PROFILE={profile} but {path} has no such profile")
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        if not env.get("AWS_ROLE_ARN"):
            raise ObjectStoreError("AWS_WEB_IDENTITY_TOKEN_FILE is set without AWS_ROLE_ARN")
        return (IamAwsProvider(token_file=env["AWS_WEB_IDENTITY_TOKEN_FILE"],
                               role_arn=env["AWS_ROLE_ARN"], region=region,
                               custom_endpoint=env.get("AWS_ENDPOINT_URL_STS") or None,
                               http_client=_pool(5.0)),
                "web identity")
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return IamAwsProvider(http_client=_pool(5.0)), "container credentials"
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None, "no credentials (anonymous requests)"
    return (IamAwsProvider(custom_endpoint=env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or None,
                           http_client=_pool(1.0, retries=1)),
            "instance metadata")


def _pool(timeout: float, retries: int = 3) -> Any:
    import urllib3

    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout),
                               retries=urllib3.Retry(total=retries, backoff_factor=0.2,
                                                     status_forcelist=[500, 502, 503, 504]))


class Store:
    """Reads, write-once writes and listings under one bucket's prefix."""

    def __init__(self, location: Location, config: S3Config) -> None:
        from minio import Minio

        self.location = location
        self.config = config
        parts = urlsplit(config.endpoint)
        self.client = Minio(parts.netloc, secure=parts.scheme == "https", region=config.region,
                            credentials=config.credentials, http_client=_pool(config.timeout))

    def _where(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    def read(self, key: str, *, limit: int, deadline: float | None = None) -> bytes:
        """The object's bytes, refused over ``limit`` bytes or past ``deadline`` (monotonic)."""
        response = None
        try:
            response = self.client.get_object(self.location.bucket, key)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise ObjectStoreError(f"{self._where(key)} is {declared} bytes, larger than "
                                       f"the limit of {limit}")
            data = bytearray()
            # read1: at most one read from the socket, so the deadline is checked between
            # reads, however slowly the bytes come.
            while chunk := response.read1(CHUNK):
                data += chunk
                if len(data) > limit:
                    raise ObjectStoreError(f"{self._where(key)} is larger than the limit of "
                                           f"{limit} bytes")
                _check(deadline, self._where(key))
            return bytes(data)
        except ObjectStoreError:
            raise
        except Exception as exc:
            raise self._explain(exc, key) from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.location.bucket, key)
            return True
        except Exception as exc:
            error = self._explain(exc, key)
            if isinstance(error, NotFound) and not isinstance(error, NoSuchBucket):
                return False
            raise error from exc

    def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write ``key`` only if it does not exist: AlreadyExists otherwise.

        The request carries ``If-None-Match: *`` (a conditional write: AWS S3, MinIO, Ceph
        and SeaweedFS refuse it atomically with 412). A store that ignores the header is
        still checked first, which leaves only a narrow race."""
        if self.exists(key):
            raise AlreadyExists(f"{self._where(key)} already exists")
        headers: dict[str, str | list[str] | tuple[str]] = {"If-None-Match": "*",
                                                            "Content-Type": content_type}
        try:
            # put_object() would turn If-None-Match into user metadata (x-amz-meta-*);
            # the single-request PutObject takes the header as given.
            self.client._put_object(self.location.bucket, key, data, headers=headers)
        except Exception as exc:
            raise self._explain(exc, key) from exc

    def folders(self, prefix: str) -> list[str]:
        """The names of the 'folders' directly under ``prefix`` (which ends in '/')."""
        try:
            found = self.client.list_objects(self.location.bucket, prefix=prefix)
            return sorted(o.object_name[len(prefix):].rstrip("/") for o in found if o.is_dir)
        except Exception as exc:
            raise self._explain(exc, prefix) from exc

    def _explain(self, exc: Exception, key: str) -> ObjectStoreError:
        import urllib3.exceptions as http
        from minio.error import InvalidResponseError, S3Error, ServerError

        where, bucket, endpoint = self._where(key), self.location.bucket, self.config.endpoint
        if isinstance(exc, S3Error):
            code = exc.code or ""
            if code == "NoSuchBucket":
                return NoSuchBucket(f"bucket {bucket!r} does not exist at {endpoint}")
            if code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound") or \
                    exc.response.status == 404:
                return NotFound(f"{where} not found")
            if code == "PreconditionFailed" or exc.response.status == 412:
                return AlreadyExists(f"{where} already exists")
            if code in ACCESS_CODES or exc.response.status == 403:
                return ObjectStoreError(
                    f"access denied to {where} ({code or 'HTTP 403'}) with "
                    f"{_source(self.config.credentials_source)}: check the access key, secret and the "
                    "bucket's policy")
            return ObjectStoreError(f"{where}: {code or exc.response.status} {exc.message or ''}"
                                    .rstrip())
        if isinstance(exc, InvalidResponseError | ServerError):
            return ObjectStoreError(f"{where}: {endpoint} answered {exc}".splitlines()[0])
        reason = exc.reason if isinstance(exc, http.MaxRetryError) else exc
        # NewConnectionError is also a ConnectTimeoutError: refused connections first.
        if isinstance(reason, http.NewConnectionError | http.ProtocolError | ConnectionError):
            return ObjectStoreError(f"{where}: could not connect to {endpoint}")
        if isinstance(reason, http.TimeoutError | TimeoutError):
            return ObjectStoreError(f"{where}: {endpoint} timed out after "
                                    f"{self.config.timeout:g}s")
        if isinstance(exc, ValueError):  # the credential providers' failures
            return ObjectStoreError(f"{where}: no usable credentials from "
                                    f"{self.config.credentials_source}: {exc}")
        return ObjectStoreError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0])


def _source(source: str) -> str:
    return source if source.startswith("no ") else f"credentials from {source}"


def _check(deadline: float | None, where: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(f"{where}: past the deadline")
