"""The admin commands against the real control plane: status, promote, and rollback in
one command from status.history, which survives an operator restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testkit import Kubectl, OperatorProcess, batmodel, get, served_versions, wait_for, wait_model_ready

from batcomputer.testenv.cluster import ControlPlane

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def admin(cp: ControlPlane, *args: str, kubectl_plugin: bool = False) -> subprocess.CompletedProcess[str]:
    """As a user runs them: with the kubeconfig, from the shell."""
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig_path),
           "PATH": f"{BIN}{os.pathsep}{cp.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = ["kubectl", "batmodel", *args] if kubectl_plugin else [str(BIN / "batcomputer"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def history(kubectl: Kubectl, ns: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = get(kubectl, ns, "bm", "crime").get("status", {}).get("history") or []
    return entries


def test_rollback_promote_and_history_across_an_operator_restart(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        artifact_base: str) -> None:
    ns = namespace
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.0.0", replicas=1), namespace=ns)
    wait_model_ready(kubectl, ns)
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.1.0", replicas=1), namespace=ns)
    wait_model_ready(kubectl, ns)
    wait_for(lambda: served_versions(control_plane, ns, "crime-v1") == {"1.1.0"}, what="1.1.0 serving")
    wait_for(lambda: any(e["version"] == "1.1.0" for e in history(kubectl, ns)), what="history")

    # One command back to what served before, artifact included.
    done = admin(control_plane, "rollback", "crime", "--major", "1", "-n", ns)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"Rolling MAJOR 1 of crime back to 1.0.0 "
                                   f"(from {artifact_base}/crime/1.0.0/)")
    bm = wait_model_ready(kubectl, ns)
    assert bm["spec"]["versions"] == [{"version": "1.0.0", "artifact": f"{artifact_base}/crime/1.0.0/"}]
    wait_for(lambda: served_versions(control_plane, ns, "crime-v1") == {"1.0.0"}, what="1.0.0 back")

    # History is in status: an operator restart keeps it and adds nothing twice.
    wait_for(lambda: [e["version"] for e in history(kubectl, ns) if e["target"] == "v1"]
             == ["1.0.0", "1.1.0", "1.0.0"], what="three v1 entries")
    before = history(kubectl, ns)
    operator.kill()
    operator.start()
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.0.0", "2.0.0", promoted="1.0.0",
                                               replicas=1), namespace=ns)
    wait_model_ready(kubectl, ns)
    after = history(kubectl, ns)
    assert after[:len(before)] == before
    assert [(e["target"], e["version"]) for e in after[len(before):]] == [("v2", "2.0.0")]

    # Promote by command; status shows what serves and the history.
    done = admin(control_plane, "promote", "crime", "2.0.0", "-n", ns)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: get(kubectl, ns, "bm", "crime")["status"].get("serving") == "2.0.0",
             what="stable endpoint on 2.0.0")
    shown = admin(control_plane, "status", "crime", "-n", ns, kubectl_plugin=True)
    assert shown.returncode == 0, shown.stderr
    assert f"BatModel {ns}/crime   promoted 2.0.0, stable endpoint serves 2.0.0" in shown.stdout
    assert "stable  2.0.0" in shown.stdout and "(promoted)" in shown.stdout

    # ... and back, without naming the version.
    done = admin(control_plane, "rollback", "crime", "-n", ns)
    assert done.returncode == 0 and "the stable endpoint of crime back to 1.0.0" in done.stdout
    wait_for(lambda: get(kubectl, ns, "bm", "crime")["status"].get("serving") == "1.0.0",
             what="stable endpoint back on 1.0.0")
    refused = admin(control_plane, "promote", "crime", "9.9.9", "-n", ns)
    assert refused.returncode == 2 and "9.9.9 is not listed" in refused.stderr
    missing = admin(control_plane, "status", "nothing", "-n", ns)
    assert missing.returncode == 2 and f"BatModel {ns}/nothing not found" in missing.stderr
