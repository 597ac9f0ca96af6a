"""Shared fixtures: small generated data sets and trained artifacts, built once per session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from batcomputer.cli import main as cli
from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.s3 import Identity, S3Server

# S3 clients in tests find credentials only where a test puts them: never a user's
# ~/.aws, never the instance metadata service (169.254.169.254 is not loopback).
for _name in [n for n in os.environ if n.startswith("AWS_")]:
    del os.environ[_name]
os.environ.update(AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE=os.devnull)


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



@dataclass(frozen=True)
class S3:
    """A real S3-compatible server (SeaweedFS) on loopback with a private bucket
    ``models``: ``admin`` may do anything, ``reader`` only read and list ``models``."""

    server: S3Server
    admin: Identity
    reader: Identity
    bucket: str = "models"

    def env(self, identity: Identity | None) -> dict[str, str]:
        return self.server.env(identity)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    admin = Identity.new("admin", "Admin", "Read", "Write", "List", "Tagging")
    reader = Identity.new("reader", "Read:models", "List:models")
    with S3Server(tmp_path_factory.mktemp("s3"), (admin, reader)) as server:
        server.make_bucket("models", admin)
        yield S3(server, admin, reader)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block (for in-process CLI runs)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@pytest.fixture(scope="session")
def s3_registry(s3: S3, crime_data: Path) -> str:
    """s3://models/registry with crime 1.0.0 (force, crime, month; 20 trees), published
    by the training CLI as a data scientist would."""
    location = f"s3://{s3.bucket}/registry"
    with environment(s3.env(s3.admin)):
        assert cli(["-q", "train", str(crime_data), "--registry", location, "--param",
                    "n_estimators=20", "--version", "1.0.0"]) == 0
    return location
