"""Server test fixtures: two small artifacts (built once) and helpers to tamper with copies."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from batcomputer.cli import main as cli
from batcomputer.server.artifacts import PICKLE_FREE, fetch_verified, sha256
from batcomputer.server.model import Model, load_model
from batcomputer.server.settings import Settings


@pytest.fixture(scope="session")
def server_registry(registry: Path) -> Path:
    """crime 1.0.0 (force, crime, month) and crime 2.0.0 (+ place): tests/conftest.py."""
    return registry


@pytest.fixture(scope="session")
def v1(server_registry: Path) -> Path:
    return server_registry / "crime" / "1.0.0"


@pytest.fixture(scope="session")
def v2(server_registry: Path) -> Path:
    return server_registry / "crime" / "2.0.0"


@pytest.fixture(scope="session")
def continuous(crime_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crime 1.0.0 on force, crime, latitude (-90 to 90) and longitude (-180 to 180): inputs
    that cannot be enumerated, answered through onnxruntime."""
    reg = tmp_path_factory.mktemp("continuous-registry")
    assert cli(["-q", "train", str(crime_data), "--registry", str(reg), "--param", "n_estimators=20",
                "--version", "1.0.0", "--features", "force,crime,latitude,longitude"]) == 0
    return reg / "crime" / "1.0.0"


@pytest.fixture(scope="session")
def model_v1(v1: Path) -> Model:
    return load_model(fetch_verified(Settings(artifact=str(v1))))


def copy_artifact(source: Path, folder: Path, edit: Callable[[Path], None] | None = None, *,
                  resign: bool = False, pickled: bool = False) -> Path:
    """A writable copy of an artifact; ``resign=True`` rewrites metadata.json's digests
    after the copy is changed, so only the change itself is wrong. ``pickled=True`` drops
    the pickle-free form (model.onnx, lookup.json, flags.json): an artifact as published
    before it existed, or by a model with no fast form."""
    shutil.copytree(source, folder)
    for child in folder.iterdir():
        child.chmod(0o644)
    if pickled:
        for name in PICKLE_FREE:
            (folder / name).unlink()
        resign = True
    if edit is not None:
        edit(folder)
    if resign:
        meta = json.loads((folder / "metadata.json").read_text())
        meta["files"] = {name: sha256((folder / name).read_bytes())
                         for name in meta["files"] if (folder / name).exists()}
        (folder / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


@pytest.fixture
def artifact_copy(tmp_path: Path, v1: Path) -> Callable[..., Path]:
    """A writable copy of 1.0.0 (see `copy_artifact`)."""
    return partial(copy_artifact, v1, tmp_path / "artifact")


@pytest.fixture(scope="session")
def pickled(server_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A pickles-only copy of a version of crime (see `copy_artifact`)."""
    root = tmp_path_factory.mktemp("pickled")

    def make(version: str) -> Path:
        folder = root / version
        if not folder.exists():
            copy_artifact(server_registry / "crime" / version, folder, pickled=True)
        return folder

    return make


class Handler(SimpleHTTPRequestHandler):
    """Serves a folder; /slow/... answers late, /nolength/... has no Content-Length,
    /drip/... sends 1 KiB every 0.1 s (never slow enough for a read timeout)."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/slow/"):
            time.sleep(1.5)
            self.path = self.path.removeprefix("/slow")
        if self.path.startswith("/drip/"):
            path = Path(self.directory) / self.path.removeprefix("/drip/")
            data = path.read_bytes() if path.is_file() else b""
            self.send_response(200 if data else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):
                for start in range(0, len(data), 1024):
                    self.wfile.write(data[start:start + 1024])
                    self.wfile.flush()
                    time.sleep(0.1)
            return
        if self.path.startswith("/nolength/"):
            path = Path(self.directory) / self.path.removeprefix("/nolength/")
            if not path.is_file():
                self.send_error(404)
                return
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(path.read_bytes())
            return
        super().do_GET()


@pytest.fixture
def http_root(server_registry: Path) -> Iterator[str]:
    """An http:// URL serving the registry folder from a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(server_registry)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
