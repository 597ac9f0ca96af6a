"""The README as a newcomer follows it, on a local cluster of its own: the training
chapter's commands, then every block of the `cluster` session (tests/readme.py) in README
order in the same terminal and folder: `testenv up`, installing the operator from its
image with `kubectl apply -k manifests/`, serving the registry over HTTP, the BatModel's
releases, reaching a server, its log, a refused change, promotion and roll-back, the admin
commands, uninstalling and `testenv down`."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from readme import Shell, blocks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REGISTRY_PORT = 8000
"""The port the README serves its registry on."""


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readme_walkthrough_runs_on_a_local_cluster(tmp_path: Path) -> None:
    assert port_free(REGISTRY_PORT), f"port {REGISTRY_PORT} is taken: the README serves its registry there"
    runnable = blocks((REPO / "README.md").read_text())
    training = [b for b in runnable if b.session == "training"]
    cluster = [b for b in runnable if b.session == "cluster"]
    assert len(cluster) >= 8
    # The checkout's folders the commands name; the rest is made by the commands.
    for name in ("crds", "manifests"):
        (tmp_path / name).symlink_to(REPO / name)
    state = tmp_path / "testenv"
    try:
        with Shell(tmp_path, BATCOMPUTER_TESTENV_DIR=str(state)) as shell:
            for block in training + cluster:
                shell.run(block, timeout=300)
    finally:
        if state.exists():  # a block failed before `testenv down`
            subprocess.run([sys.executable, "-m", "batcomputer.cli", "testenv", "--dir",
                            str(state), "down"], check=False, capture_output=True)
    assert not state.exists()
