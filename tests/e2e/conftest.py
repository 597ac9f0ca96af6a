"""End-to-end fixtures: the real control plane, the operator as its own process with its
ServiceAccount's token, and model artifacts from `batcomputer train` served over HTTP."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import Kubectl, OperatorProcess

from batcomputer.cli import main as cli
from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import install, serve_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory, crime_data: Path) -> Path:
    """crime 1.0.0, 1.1.0 (other parameters) and 2.0.0 (adds the place input)."""
    reg = tmp_path_factory.mktemp("e2e-registry")
    base = ["-q", "train", str(crime_data), "--registry", str(reg), "--param", "n_estimators=10"]
    assert cli([*base, "--version", "1.0.0"]) == 0
    assert cli([*base, "--version", "1.1.0", "--param", "max_depth=8"]) == 0
    assert cli([*base, "--version", "2.0.0", "--features", "force,crime,month,place"]) == 0
    # Served to non-root containers (uid 10001) from a PersistentVolume: readable by all,
    # as an admin prepares a volume (pytest makes its folders private).
    reg.chmod(0o755)
    return reg


@pytest.fixture(scope="session")
def artifact_base(control_plane: ControlPlane, model_registry: Path) -> str:
    """The registry over HTTP, stopped with the control plane."""
    return serve_files(control_plane, model_registry)


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane)


@pytest.fixture(scope="session")
def installed(kubectl: Kubectl) -> None:
    """The CRD, namespace and RBAC from crds/ and manifests/, as an admin installs them."""
    install(kubectl, REPO)


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> str:
    name = f"e2e-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane, kubectl: Kubectl, installed: None, namespace: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(control_plane, kubectl, tmp_path_factory.mktemp("operator"),
                              namespaces=namespace)
    process.start()
    yield process
    process.stop()
    if os.environ.get("BATCOMPUTER_E2E_SHOW_LOG"):
        print(process.tail(200))
