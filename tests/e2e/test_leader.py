"""Two operator replicas, one active: the standby takes the Lease and finishes a change when
the active one dies mid-way (SIGKILL, as when its node goes), on the real control plane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from testkit import Kubectl, batmodel, get, served_versions, wait_for, wait_model_ready

from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import OperatorProcess

pytestmark = pytest.mark.e2e
LEASE_SECONDS = 6


def holder(kubectl: Kubectl, lease: str) -> str | None:
    found = kubectl("get", "lease", lease, "-n", "batcomputer-system", "-o",
                    "jsonpath={.spec.holderIdentity}", check=False)
    return found.stdout.strip() or None if found.returncode == 0 else None


@pytest.fixture
def replicas(control_plane: ControlPlane, kubectl: Kubectl, installed: None, namespace: str,
             tmp_path: Path) -> Iterator[dict[str, OperatorProcess]]:
    lease = f"operator-{namespace}"
    made = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        made[name] = OperatorProcess(
            control_plane, kubectl, tmp_path / name, namespaces=namespace, resync_seconds=5,
            name=f"operator-{namespace}-{name}",
            env={"BATCOMPUTER_OPERATOR_LEADER_ELECTION": "true", "POD_NAME": name,
                 "BATCOMPUTER_OPERATOR_LEASE_NAME": lease,
                 "BATCOMPUTER_OPERATOR_LEASE_SECONDS": str(LEASE_SECONDS)})
    yield made
    for process in made.values():
        process.stop()


def test_a_standby_takes_over_within_seconds_when_the_active_operator_dies(
        control_plane: ControlPlane, kubectl: Kubectl, namespace: str, artifact_base: str,
        replicas: dict[str, OperatorProcess]) -> None:
    lease = f"operator-{namespace}"
    a, b = replicas["a"], replicas["b"]
    a.start()
    wait_for(lambda: holder(kubectl, lease) == "a", timeout=30, what="a to lead")
    b.start()
    # The standby answers its health probe (so the kubelet keeps it) and does nothing else.
    health = b.env["BATCOMPUTER_OPERATOR_LIVENESS_ENDPOINT"]
    standby: Any = wait_for(lambda: _get(health), timeout=30, what="b's standby health")
    assert standby.json() == {"standby": True}
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.0.0", replicas=1), namespace=namespace)
    wait_model_ready(kubectl, namespace)
    assert holder(kubectl, lease) == "a" and "Leading" not in b.log.read_text()

    # A change, and the active replica dies at once (no clean-up, as with its node).
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.1.0", replicas=1), namespace=namespace)
    killed = time.monotonic()
    a.kill()
    wait_for(lambda: holder(kubectl, lease) == "b", timeout=LEASE_SECONDS * 4, interval=0.2,
             what="b to take the Lease")
    took_over = time.monotonic() - killed

    def converged() -> bool:
        bm = get(kubectl, namespace, "bm", "crime")
        return (bm.get("status", {}).get("serving") == "1.1.0"
                and served_versions(control_plane, namespace, "crime-v1") == {"1.1.0"})
    wait_for(converged, timeout=120, interval=0.2, what="b to finish the roll to 1.1.0")
    finished = time.monotonic() - killed
    print(f"\n  takeover {took_over:.1f} s after SIGKILL (Lease {LEASE_SECONDS} s); "
          f"1.1.0 serving {finished:.1f} s after it")
    assert took_over <= LEASE_SECONDS + 4
    # A clean stop lets the Lease go at once.
    b.stop()
    wait_for(lambda: holder(kubectl, lease) is None, timeout=10, what="the Lease released")
    kubectl("delete", "bm", "crime", namespace=namespace)


def _get(url: str) -> requests.Response | None:
    try:
        reply = requests.get(url, timeout=1)
    except requests.RequestException:
        return None
    return reply if reply.status_code == 200 else None
