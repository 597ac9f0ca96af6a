"""Fetching (path, file://, pvc://, http) and the verification chain before unpickling."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from conftest import S3

from batcomputer import objectstore
from batcomputer.server.artifacts import ArtifactError, fetch_verified, redact, sha256
from batcomputer.server.model import load_model, needed_files
from batcomputer.server.settings import Settings


def verified(uri: str | Path, **settings: object) -> object:
    return fetch_verified(Settings(artifact=str(uri), **settings))  # type: ignore[arg-type]


# -- sources --------------------------------------------------------------------------------


def test_local_path_and_file_uri_give_the_same_verified_files(v1: Path) -> None:
    by_path = fetch_verified(Settings(artifact=str(v1)))
    by_uri = fetch_verified(Settings(artifact=v1.as_uri()))
    assert by_path.files == by_uri.files
    assert set(by_path.files) == {"model.pkl", "lookup.pkl", "flags.pkl", "model.onnx",
                                  "lookup.json", "flags.json"}
    assert by_path.version == "1.0.0" and by_path.name == "crime"
    assert by_path.metadata_digest == sha256((v1 / "metadata.json").read_bytes())


def test_pvc_uri_reads_the_claim_mount(server_registry: Path) -> None:
    settings = Settings(artifact="pvc://model-store/crime/1.0.0/", pvc_root=server_registry.parent)
    store = server_registry.parent / "model-store"
    store.symlink_to(server_registry)
    assert fetch_verified(settings).version == "1.0.0"
    with pytest.raises(ArtifactError, match="'..' is not allowed"):
        fetch_verified(Settings(artifact="pvc://model-store/../etc", pvc_root=store))


def test_http_fetch_downloads_into_the_cache(http_root: str, tmp_path: Path) -> None:
    artifact = fetch_verified(Settings(artifact=f"{http_root}/crime/1.0.0",
                                       cache_dir=tmp_path))
    assert artifact.version == "1.0.0"
    cached = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert cached == {"metadata.json", "model.pkl", "lookup.pkl", "flags.pkl", "model.onnx",
                      "lookup.json", "flags.json"}


def test_only_the_selected_files_are_fetched(http_root: str, tmp_path: Path) -> None:
    """A server that refuses pickles never downloads them."""
    settings = Settings(artifact=f"{http_root}/crime/1.0.0", cache_dir=tmp_path,
                        allow_pickle=False)
    artifact = fetch_verified(settings, select=partial(needed_files, allow_pickle=False))
    assert set(artifact.files) == {"model.onnx", "lookup.json", "flags.json"}
    cached = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert cached == {"metadata.json", "model.onnx", "lookup.json", "flags.json"}


def test_http_fetch_without_content_length(http_root: str, tmp_path: Path) -> None:
    artifact = fetch_verified(Settings(artifact=f"{http_root}/nolength/crime/1.0.0/",
                                       cache_dir=tmp_path))
    assert artifact.version == "1.0.0"


def test_http_404_is_a_clear_error(http_root: str, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"metadata.json not found .*HTTP 404"):
        fetch_verified(Settings(artifact=f"{http_root}/crime/9.9.9/", cache_dir=tmp_path))


def test_http_timeout_is_a_clear_error(http_root: str, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="timed out after 0.3s"):
        fetch_verified(Settings(artifact=f"{http_root}/slow/crime/1.0.0/", cache_dir=tmp_path,
                                fetch_timeout=0.3))


@pytest.mark.parametrize("prefix", ["", "/nolength"])
def test_http_size_limit(http_root: str, tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ArtifactError, match="larger than the limit of 1000"):
        fetch_verified(Settings(artifact=f"{http_root}{prefix}/crime/1.0.0/", cache_dir=tmp_path,
                                max_artifact_bytes=1000))


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="failed: could not connect"):
        fetch_verified(Settings(artifact="http://127.0.0.1:9/crime/1.0.0/", cache_dir=tmp_path))


def test_the_whole_fetch_has_a_deadline(http_root: str, tmp_path: Path) -> None:
    """A server that keeps sending, slowly, never trips the per-read timeout; the
    deadline still ends the fetch."""
    started = time.monotonic()
    with pytest.raises(ArtifactError, match=r"took longer than the deadline of 1.5s \(GET "
                                            r"http://127.0.0.1:\d+/drip/crime/1.0.0/"):
        verified(f"{http_root}/drip/crime/1.0.0/", cache_dir=tmp_path, fetch_deadline=1.5)
    assert time.monotonic() - started < 5


# -- s3:// (a real SeaweedFS on loopback) -------------------------------------------------


def test_s3_artifacts_verify_like_local_ones(s3: S3, s3_registry: str, registry: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.env(s3.reader).items():
        monkeypatch.setenv(name, value)
    artifact = fetch_verified(Settings(artifact=f"{s3_registry}/crime/1.0.0/"))
    assert artifact.uri == f"{s3_registry}/crime/1.0.0/" and artifact.version == "1.0.0"
    assert set(artifact.files) == set(artifact.metadata["files"])
    # The same model as the local registry's 1.0.0 (same data, seed and parameters).
    local = fetch_verified(Settings(artifact=str(registry / "crime" / "1.0.0")))
    assert artifact.metadata["data"] == local.metadata["data"]
    with pytest.raises(ArtifactError, match=r"metadata.json is missing from s3://models/registry/"
                                            r"crime/9.9.9/"):
        fetch_verified(Settings(artifact=f"{s3_registry}/crime/9.9.9/"))
    with pytest.raises(ArtifactError, match="access denied to s3://nothere/"):
        fetch_verified(Settings(artifact="s3://nothere/crime/1.0.0/"))  # not the reader's
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.admin.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.admin.secret_key)
    with pytest.raises(ArtifactError, match="bucket 'nothere' does not exist"):
        fetch_verified(Settings(artifact="s3://nothere/crime/1.0.0/"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(ArtifactError, match="access denied to s3://models/registry/crime/1.0.0/"
                                            "metadata.json") as denied:
        fetch_verified(Settings(artifact=f"{s3_registry}/crime/1.0.0/"))
    assert "wrong-secret-value" not in str(denied.value)


def test_s3_objects_are_checked_against_metadata(s3: S3, s3_registry: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.env(s3.admin).items():
        monkeypatch.setenv(name, value)
    source = fetch_verified(Settings(artifact=f"{s3_registry}/crime/1.0.0/"))
    store = objectstore.Store(objectstore.Location.parse(f"{s3_registry}/tampered/1.0.0/"),
                              objectstore.S3Config.from_env())
    for name, data in source.files.items():
        store.put_new(store.location.prefix + name, b"tampered" if name == "lookup.json" else data)
    store.put_new(store.location.prefix + "metadata.json", json.dumps(source.metadata).encode())
    with pytest.raises(ArtifactError, match="lookup.json digest mismatch at s3://models/registry/"
                                            "tampered/1.0.0/"):
        fetch_verified(Settings(artifact=f"{s3_registry}/tampered/1.0.0/"))


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ArtifactError, match=r"unsupported scheme gs://; use one of: path, "
                                            r"file://, pvc://, http://, https://, s3://"):
        verified("gs://bucket/crime/1.0.0/")


def test_missing_folder_and_empty_uri(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        verified(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="no artifact given"):
        verified("")


def test_credentials_are_redacted() -> None:
    assert redact("https://user:secret@host:8443/m/1.0.0/") == "https://host:8443/m/1.0.0/"
    assert redact("/models/crime") == "/models/crime"


# -- the verification chain -----------------------------------------------------------------


def test_pinned_digest_is_accepted(v1: Path) -> None:
    pin = sha256((v1 / "metadata.json").read_bytes())
    assert verified(v1, digest=pin)


def test_pinned_digest_mismatch_is_refused(v1: Path) -> None:
    with pytest.raises(ArtifactError, match="metadata.json digest mismatch"):
        verified(v1, digest="sha256:" + "0" * 64)


def test_tampered_metadata_is_refused_by_the_pin(v1: Path,
                                                 artifact_copy: Callable[..., Path]) -> None:
    pin = sha256((v1 / "metadata.json").read_bytes())

    def retitle(folder: Path) -> None:
        meta = json.loads((folder / "metadata.json").read_text())
        meta["metrics"]["accuracy"] = 0.99
        (folder / "metadata.json").write_text(json.dumps(meta))

    with pytest.raises(ArtifactError, match="metadata.json digest mismatch"):
        verified(artifact_copy(retitle), digest=pin)


def test_version_mismatch_is_refused(v1: Path) -> None:
    with pytest.raises(ArtifactError, match="version mismatch: asked for 1.0.1.*crime 1.0.0"):
        verified(v1, version="1.0.1")
    assert verified(v1, version="1.0.0")


def test_changed_file_is_refused_before_unpickling(artifact_copy: Callable[..., Path]) -> None:
    folder = artifact_copy(lambda f: (f / "model.pkl").write_bytes(b"not the model"))
    with pytest.raises(ArtifactError, match="model.pkl digest mismatch"):
        verified(folder)


def test_missing_file_is_refused(artifact_copy: Callable[..., Path]) -> None:
    folder = artifact_copy(lambda f: (f / "flags.pkl").unlink())
    with pytest.raises(ArtifactError, match="flags.pkl is missing"):
        verified(folder)


def test_metadata_must_list_a_whole_form(artifact_copy: Callable[..., Path]) -> None:
    def drop(folder: Path) -> None:
        meta = json.loads((folder / "metadata.json").read_text())
        del meta["files"]["lookup.pkl"], meta["files"]["lookup.json"]
        (folder / "metadata.json").write_text(json.dumps(meta))

    with pytest.raises(ArtifactError, match="lists digests for neither model.onnx, lookup.json, "
                                            "flags.json nor model.pkl, lookup.pkl, flags.pkl"):
        verified(artifact_copy(drop))


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"format": "other/v9"}', "has format 'other/v9'"),
])
def test_bad_metadata_is_refused(artifact_copy: Callable[..., Path], content: bytes,
                                 message: str) -> None:
    folder = artifact_copy(lambda f: (f / "metadata.json").write_bytes(content))
    with pytest.raises(ArtifactError, match=message):
        verified(folder)


def test_path_like_file_names_are_refused(artifact_copy: Callable[..., Path]) -> None:
    def escape(folder: Path) -> None:
        meta = json.loads((folder / "metadata.json").read_text())
        meta["files"]["../../etc/passwd"] = "sha256:" + "0" * 64
        (folder / "metadata.json").write_text(json.dumps(meta))

    with pytest.raises(ArtifactError, match="unusable file names"):
        verified(artifact_copy(escape))


def test_corrupt_pickle_with_valid_digest_fails_to_load(
        artifact_copy: Callable[..., Path]) -> None:
    folder = artifact_copy(lambda f: (f / "model.pkl").write_bytes(b"\x80\x05garbage"),
                           pickled=True)
    artifact = fetch_verified(Settings(artifact=str(folder)))  # the digests match...
    with pytest.raises(ArtifactError, match="model.pkl .* cannot be unpickled"):
        load_model(artifact)  # ...but the pickle does not load


@pytest.mark.parametrize("isolate", [False, True])
def test_pickle_without_predict_proba_is_refused(artifact_copy: Callable[..., Path],
                                                 isolate: bool) -> None:
    folder = artifact_copy(lambda f: (f / "model.pkl").write_bytes(pickle.dumps({"a": 1})),
                           pickled=True)
    with pytest.raises(ArtifactError, match="has no predict_proba"):
        load_model(fetch_verified(Settings(artifact=str(folder))), isolate=isolate)


def test_labels_must_match_the_model_classes(artifact_copy: Callable[..., Path]) -> None:
    folder = artifact_copy(lambda f: (f / "flags.pkl").write_bytes(pickle.dumps(["only"])),
                           pickled=True)
    with pytest.raises(ArtifactError, match="1 labels but the model has 2 classes"):
        load_model(fetch_verified(Settings(artifact=str(folder))), memo_limit=0)


def test_other_scikit_learn_version_is_refused(artifact_copy: Callable[..., Path]) -> None:
    import sklearn

    def older(folder: Path) -> None:
        data = (folder / "model.pkl").read_bytes()
        fake = "0" * len(sklearn.__version__)  # same length keeps the pickle well-formed
        assert sklearn.__version__.encode() in data
        (folder / "model.pkl").write_bytes(data.replace(sklearn.__version__.encode(),
                                                        fake.encode()))

    folder = artifact_copy(older, pickled=True)
    with pytest.raises(ArtifactError, match=f"pickled with scikit-learn 0+; this server has "
                                            f"{sklearn.__version__}"):
        load_model(fetch_verified(Settings(artifact=str(folder))), memo_limit=0)


# -- the pickle-free form and safe mode --------------------------------------------------------


def test_safe_mode_refuses_an_artifact_that_needs_pickles(
        artifact_copy: Callable[..., Path]) -> None:
    folder = artifact_copy(pickled=True)
    artifact = fetch_verified(Settings(artifact=str(folder)))
    with pytest.raises(ArtifactError, match=r"crime 1.0.0 has no pickle-free form \(model.onnx, "
                                            r"lookup.json, flags.json\).*does not unpickle "
                                            r"\(BATCOMPUTER_ALLOW_PICKLE=false\).*allowPickle"):
        load_model(artifact, allow_pickle=False)
    assert load_model(artifact, allow_pickle=True).runtime == "scikit-learn"


def test_safe_mode_serves_the_pickle_free_form_and_never_reads_a_pickle(
        artifact_copy: Callable[..., Path]) -> None:
    """The pickles here would run code if loaded; their digests even match."""
    bomb = pickle.dumps(Exception("unpickled!"))  # stands in for any object: never loaded

    def arm(folder: Path) -> None:
        for name in ("model.pkl", "lookup.pkl", "flags.pkl"):
            (folder / name).write_bytes(bomb)

    folder = artifact_copy(arm, resign=True)
    settings = Settings(artifact=str(folder), allow_pickle=False)
    artifact = fetch_verified(settings, select=partial(needed_files, allow_pickle=False))
    assert not any(name.endswith(".pkl") for name in artifact.files)
    for memo_limit in (2_000_000, 0):
        model = load_model(artifact, allow_pickle=False, memo_limit=memo_limit)
        assert model.runtime == "onnxruntime"
        assert model.estimator_class == "sklearn.ensemble._forest.RandomForestClassifier"
        assert model.predict_one({"force": "Kent Police", "crime": "Burglary", "month": 3})


def test_a_pickle_free_artifact_needs_no_pickle_anywhere(
        artifact_copy: Callable[..., Path]) -> None:
    def strip(folder: Path) -> None:
        for name in ("model.pkl", "lookup.pkl", "flags.pkl"):
            (folder / name).unlink()

    folder = artifact_copy(strip, resign=True)
    artifact = fetch_verified(Settings(artifact=str(folder)))
    assert load_model(artifact, allow_pickle=True).runtime == "onnxruntime"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("model.onnx", b"not onnx", "model.onnx at .* cannot be loaded"),
    ("lookup.json", b"{not json", "lookup.json at .* is not valid JSON"),
    ("lookup.json", b"[]", "lookup.json at .* is not a non-empty mapping"),
    ("flags.json", b'["only"]', "flags.json has 1 labels but model.onnx gives 2 probabilities"),
    ("flags.json", b'"caught"', "flags.json at .* is not a list of labels"),
])
def test_a_broken_pickle_free_form_is_refused(artifact_copy: Callable[..., Path], name: str,
                                              content: bytes, message: str) -> None:
    folder = artifact_copy(lambda f: (f / name).write_bytes(content), resign=True)
    with pytest.raises(ArtifactError, match=message):
        load_model(fetch_verified(Settings(artifact=str(folder))), memo_limit=0)
