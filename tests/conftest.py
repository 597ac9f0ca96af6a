"""Shared fixtures: small generated data sets and trained artifacts, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batcomputer.cli import main as cli
from batcomputer.testenv.cluster import ControlPlane


@pytest.fixture(scope="session")
def crime_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    assert cli(["-q", "generate-data", str(out), "--seed", "7", "--months", "3",
                "--rows-per-file", "40"]) == 0
    return out


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, crime_data: Path) -> Path:
    """crime 1.0.0 (force, crime, month) and 2.0.0 (+ place), 20 trees each."""
    reg = tmp_path_factory.mktemp("registry")
    common = [str(crime_data), "--registry", str(reg), "--param", "n_estimators=20"]
    assert cli(["-q", "train", *common, "--version", "1.0.0"]) == 0
    assert cli(["-q", "train", *common, "--version", "2.0.0",
                "--features", "force,crime,month,place"]) == 0
    return reg


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The real local control plane (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler, kwok and the podlet), started once per session. Fails, never
    skips, when it cannot start."""
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), tie_to_parent=True)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()

