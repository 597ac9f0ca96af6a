"""batcomputer.objectstore against a real S3-compatible server (SeaweedFS on loopback),
plus the credential chain and URI rules as pure functions."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import S3

from batcomputer import objectstore
from batcomputer.objectstore import AlreadyExists, Location, NotFound, ObjectStoreError, S3Config, Store

# -- locations and configuration (no server) ----------------------------------------------


def test_locations_are_a_bucket_and_a_folder_prefix() -> None:
    assert Location.parse("s3://models/registry/crime") == Location("models", "registry/crime/")
    assert Location.parse("s3://models") == Location("models", "")
    assert Location.parse("S3://models/a/").uri == "s3://models/a/"
    assert Location.parse("s3://models/a").child("crime", "1.0.0").prefix == "a/crime/1.0.0/"
    for bad in ("s3:///nobucket", "http://models/a", "s3://models/a/../b", "s3://models/a//b",
                "s3://key:secret@models/a", "s3://models/a?region=x"):
        with pytest.raises(ObjectStoreError):
            Location.parse(bad)


def test_endpoint_and_region_come_from_the_standard_variables() -> None:
    none = {"AWS_EC2_METADATA_DISABLED": "true"}
    assert S3Config.from_env(none).endpoint == "https://s3.amazonaws.com"
    assert S3Config.from_env({**none, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"}).endpoint == \
        "http://127.0.0.1:9000"
    assert S3Config.from_env({**none, "AWS_ENDPOINT_URL": "http://a:1",
                              "AWS_ENDPOINT_URL_S3": "http://b:2"}).endpoint == "http://b:2"
    assert S3Config.from_env({**none, "AWS_ENDPOINT_URL_S3": "http://b:2",
                              "BATCOMPUTER_S3_ENDPOINT": "https://c"}).endpoint == "https://c"
    assert S3Config.from_env({**none, "AWS_DEFAULT_REGION": "eu-west-2"}).region == "eu-west-2"
    assert S3Config.from_env({**none, "AWS_REGION": "eu-west-1",
                              "AWS_DEFAULT_REGION": "eu-west-2"}).region == "eu-west-1"
    with pytest.raises(ObjectStoreError, match="must be http"):
        S3Config.from_env({**none, "BATCOMPUTER_S3_ENDPOINT": "127.0.0.1:9000"})


def test_the_credential_chain_takes_the_first_source_and_never_shows_secrets(tmp_path: Path) -> None:
    profile = tmp_path / "credentials"
    profile.write_text("[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n"
                       "[ci]\naws_access_key_id = CIKEY\naws_secret_access_key = cisecret\n")
    base = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": str(profile)}
    env = S3Config.from_env({**base, "AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "s"})
    assert env.credentials_source == "environment"
    assert env.credentials.retrieve().access_key == "ENVKEY"
    assert "s" not in repr(env.credentials_source)
    default = S3Config.from_env(base)
    assert default.credentials.retrieve().access_key == "FILEKEY"
    assert default.credentials_source == f"profile default of {profile}"
    assert S3Config.from_env({**base, "AWS_PROFILE": "ci"}).credentials.retrieve().secret_key == \
        "cisecret"
    with pytest.raises(ObjectStoreError, match="no such profile"):
        S3Config.from_env({**base, "AWS_PROFILE": "nope"})
    with pytest.raises(ObjectStoreError, match="must be set together"):
        S3Config.from_env({**base, "AWS_ACCESS_KEY_ID": "ENVKEY"})
    nothing = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "x")}
    anonymous = S3Config.from_env(nothing)
    assert anonymous.credentials is None and "anonymous" in anonymous.credentials_source
    token = tmp_path / "token"
    token.write_text("eyJ.jwt.token")
    web = S3Config.from_env({**nothing, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
                             "AWS_ROLE_ARN": "arn:aws:iam::1:role/models"})
    assert web.credentials_source == "web identity"
    with pytest.raises(ObjectStoreError, match="without AWS_ROLE_ARN"):
        S3Config.from_env({**nothing, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token)})
    metadata = S3Config.from_env({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "x")})
    assert metadata.credentials_source == "instance metadata"  # never called in tests


# -- a real S3 server ---------------------------------------------------------------------


def store(s3: S3, identity: object, prefix: str = "", **config: object) -> Store:
    env = s3.env(identity)  # type: ignore[arg-type]
    return Store(Location(s3.bucket, prefix), S3Config.from_env(env, **config))  # type: ignore[arg-type]


def test_write_once_read_and_list(s3: S3) -> None:
    admin = store(s3, s3.admin)
    admin.put_new("objects/a/1.0.0/one.json", b'{"one": 1}', "application/json")
    admin.put_new("objects/a/2.0.0/two", b"2")
    admin.put_new("objects/b/x", b"x")
    assert admin.read("objects/a/1.0.0/one.json", limit=100) == b'{"one": 1}'
    assert admin.exists("objects/a/2.0.0/two") and not admin.exists("objects/a/3.0.0/two")
    assert admin.folders("objects/") == ["a", "b"]
    assert admin.folders("objects/a/") == ["1.0.0", "2.0.0"]
    assert admin.folders("objects/none/") == []
    with pytest.raises(AlreadyExists, match="objects/b/x already exists"):
        admin.put_new("objects/b/x", b"y")
    assert admin.read("objects/b/x", limit=10) == b"x"
    with pytest.raises(ObjectStoreError, match="larger than the limit of 5"):
        admin.read("objects/a/1.0.0/one.json", limit=5)


def test_the_server_refuses_a_second_write_even_when_the_check_is_raced(
        s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = store(s3, s3.admin)
    admin.put_new("race/key", b"first")
    monkeypatch.setattr(Store, "exists", lambda self, key: False)  # as if both checked at once
    with pytest.raises(AlreadyExists):
        admin.put_new("race/key", b"second")
    assert admin.read("race/key", limit=10) == b"first"


def test_errors_say_what_is_wrong_without_secrets(s3: S3) -> None:
    store(s3, s3.admin).put_new("errors/key", b"k")
    with pytest.raises(NotFound, match="s3://models/errors/nope not found"):
        store(s3, s3.reader).read("errors/nope", limit=10)
    with pytest.raises(NotFound, match="bucket 'nothere' does not exist at http://127.0.0.1"):
        Store(Location("nothere", ""), S3Config.from_env(s3.env(s3.admin))).read("k", limit=1)
    wrong = {**s3.env(s3.reader), "AWS_SECRET_ACCESS_KEY": "not-the-secret-at-all"}
    with pytest.raises(ObjectStoreError, match=r"access denied to s3://models/errors/key "
                                               r"\(SignatureDoesNotMatch\) with credentials from "
                                               r"environment") as denied:
        Store(Location(s3.bucket, ""), S3Config.from_env(wrong)).read("errors/key", limit=10)
    assert "not-the-secret" not in str(denied.value)
    with pytest.raises(ObjectStoreError, match=r"access denied .*\(AccessDenied\)"):
        store(s3, s3.reader).put_new("errors/written-by-reader", b"r")
    with pytest.raises(ObjectStoreError, match="access denied .* with no credentials"):
        store(s3, None).read("errors/key", limit=10)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_unreachable_and_silent_endpoints(s3: S3, silent_port: int) -> None:
    env = s3.env(s3.admin)
    closed = Store(Location("models", ""), S3Config.from_env({**env, "BATCOMPUTER_S3_ENDPOINT":
                                                              "http://127.0.0.1:9"}))
    with pytest.raises(ObjectStoreError, match="could not connect to http://127.0.0.1:9"):
        closed.read("k", limit=1)
    silent = Store(Location("models", ""), S3Config.from_env(
        {**env, "BATCOMPUTER_S3_ENDPOINT": f"http://127.0.0.1:{silent_port}"}, timeout=0.3))
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match="timed out after 0.3s"):
        silent.read("k", limit=1)
    assert time.monotonic() - started < 10  # a few retries of 0.3 s, not minutes


def test_a_read_past_its_deadline_stops(s3: S3) -> None:
    admin = store(s3, s3.admin)
    admin.put_new("deadline/big", b"x" * (3 * objectstore.CHUNK))
    with pytest.raises(objectstore.DeadlineExceeded):
        admin.read("deadline/big", limit=10 * objectstore.CHUNK, deadline=time.monotonic() - 1)


def test_web_identity_tokens_are_exchanged_at_sts(s3: S3, tmp_path: Path) -> None:
    """The token file a cluster mounts is sent to STS (AssumeRoleWithWebIdentity) and the
    temporary credentials it answers sign the requests. STS here is a stand-in on loopback
    that hands out the reader's keys; the bucket is the real server."""
    seen: list[dict[str, list[str]]] = []

    class Sts(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(parse_qs(urlsplit(self.path).query))
            body = STS_ANSWER.format(key=s3.reader.access_key, secret=s3.reader.secret_key).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    sts = ThreadingHTTPServer(("127.0.0.1", 0), Sts)
    threading.Thread(target=sts.serve_forever, daemon=True).start()
    try:
        token = tmp_path / "token"
        token.write_text("eyJhbGciOi.projected.token")
        env = {**s3.env(None), "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
               "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/model-reader",
               "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{sts.server_address[1]}"}
        store(s3, s3.admin).put_new("identity/key", b"by token")
        config = S3Config.from_env(env)
        assert config.credentials_source == "web identity"
        assert Store(Location(s3.bucket, ""), config).read("identity/key", limit=100) == b"by token"
    finally:
        sts.shutdown()
        sts.server_close()
    assert seen[0]["Action"] == ["AssumeRoleWithWebIdentity"]
    assert seen[0]["WebIdentityToken"] == ["eyJhbGciOi.projected.token"]
    assert seen[0]["RoleArn"] == ["arn:aws:iam::123456789012:role/model-reader"]


STS_ANSWER = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{key}</AccessKeyId>
<SecretAccessKey>{secret}</SecretAccessKey><SessionToken></SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"""
