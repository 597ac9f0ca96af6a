"""The images, run as a user with Docker would run them (here with podman): the server
image serves the same answers as the code it was built from, with a read-only root, as
a non-root user, with every capability dropped. The images are built by `make images`
(hack/build-images.sh), which `make test` runs first."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from testkit import wait_for

from batcomputer.cli import project_version
from batcomputer.server.artifacts import fetch_verified
from batcomputer.server.model import load_model
from batcomputer.server.settings import Settings
from batcomputer.testenv.cluster import free_port, images
from batcomputer.testenv.runtime import podman_environment

pytestmark = pytest.mark.e2e

VERSION = project_version()


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check,
                          env=podman_environment(), timeout=300)


@pytest.fixture(scope="module")
def built() -> list[str]:
    return images()


@pytest.fixture(scope="module")
def served(built: list[str], registry: Path) -> Iterator[str]:
    registry.chmod(0o755)  # mounted into a container that runs as uid 10001
    port = free_port()
    name = f"batcomputer-image-test-{port}"
    podman("run", "--detach", "--rm", "--name", name, "--network", "host", "--read-only",
           "--read-only-tmpfs=false", "--tmpfs", "/tmp", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", "--mount",
           f"type=bind,source={registry},destination=/models,ro=true",
           "--env", "BATCOMPUTER_ARTIFACT=/models/crime/1.0.0", "--env", "BATCOMPUTER_HOST=127.0.0.1",
           "--env", f"BATCOMPUTER_PORT={port}", "--env", "BATCOMPUTER_WORKERS=1",
           f"batcomputer-server:{VERSION}")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/readyz", timeout=1).status_code == 200, timeout=60,
                 what="the server container to be ready")
        yield name
    finally:
        podman("rm", "--force", "--time", "2", name, check=False)


def test_both_images_are_built_for_this_version(built: list[str]) -> None:
    assert built == [f"batcomputer-server:{VERSION}", f"batcomputer-operator:{VERSION}"]
    for image in built:
        config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
        assert config["User"] == "10001:10001" and config["Entrypoint"] == ["batcomputer"]


def test_the_server_image_answers_as_the_code_it_was_built_from(served: str, registry: Path) -> None:
    port = next(e.split("=")[1] for e in json.loads(podman("inspect", served).stdout)[0]["Config"]["Env"]
                if e.startswith("BATCOMPUTER_PORT="))
    url = f"http://127.0.0.1:{port}"
    model = load_model(fetch_verified(Settings(artifact=str(registry / "crime" / "1.0.0"))))
    params = requests.get(url + "/api/predict/params", timeout=5).json()
    assert params == json.loads(json.dumps(model.params()))
    months = range(params["month"]["minimum"], params["month"]["maximum"] + 1)
    rows = [dict(zip(["force", "crime", "month"], combo, strict=True))
            for combo in itertools.islice(itertools.product(
                params["force"]["values"], params["crime"]["values"], months), 0, None, 7)]
    got = requests.post(url + "/api/predict", json=rows, timeout=30)
    assert got.status_code == 200
    assert got.json() == json.loads(model.predict_many_json(rows))
    assert requests.post(url + "/api/predict", json={"force": "Gotham PD"}, timeout=5).status_code == 422
    info = requests.get(url + "/api/info", timeout=5).json()
    assert info["prediction"]["runtime"] == "onnxruntime"  # the fast form, no pickle


def test_the_server_image_refuses_to_unpickle_by_default(built: list[str], registry: Path,
                                                          tmp_path: Path) -> None:
    """An artifact with pickles only (published before the pickle-free form existed)."""
    old = tmp_path / "crime" / "1.0.0"
    shutil.copytree(registry / "crime" / "1.0.0", old)
    meta = json.loads((old / "metadata.json").read_text())
    for name in ("model.onnx", "lookup.json", "flags.json"):
        (old / name).chmod(0o644)
        (old / name).unlink()
        del meta["files"][name]
    (old / "metadata.json").chmod(0o644)
    (old / "metadata.json").write_text(json.dumps(meta))
    for folder in (tmp_path, tmp_path / "crime", old):
        folder.chmod(0o755)
    run = podman("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                 "--mount", f"type=bind,source={tmp_path},destination=/models,ro=true",
                 "--env", "BATCOMPUTER_ARTIFACT=/models/crime/1.0.0", f"batcomputer-server:{VERSION}",
                 check=False)
    assert run.returncode != 0
    assert "has no pickle-free form" in run.stderr + run.stdout
    assert "BATCOMPUTER_ALLOW_PICKLE=false" in run.stderr + run.stdout


def test_the_server_container_is_confined(served: str) -> None:
    who = podman("exec", served, "python", "-c",
                 "import os; print(os.getuid(), os.getgid()); open('/x', 'w')", check=False)
    assert who.stdout.split() == ["10001", "10001"]
    assert "Read-only file system" in who.stderr
    status = podman("exec", served, "grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
