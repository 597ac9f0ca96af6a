"""Autoscalers, disruption budgets and network policies on the real control plane: made
exactly as the spec says, wired to what they govern (the real controller-manager scales a
version to its autoscaler's minimum, the disruption controller counts its pods), and gone
when the spec drops them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from testkit import Kubectl, OperatorProcess, batmodel, get, wait_for, wait_model_ready

pytestmark = pytest.mark.e2e


def apply(kubectl: Kubectl, ns: str, doc: str) -> Any:
    return kubectl("apply", "-f", "-", input=doc, namespace=ns, check=False)


def absent(kubectl: Kubectl, ns: str, kind: str, name: str) -> bool:
    return kubectl("get", kind, name, namespace=ns, check=False).returncode != 0


def test_the_api_server_refuses_impossible_scaling_and_budgets(
        kubectl: Kubectl, installed: None, namespace: str, artifact_base: str) -> None:
    for extra, message in (
            ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
             "autoscaling.minReplicas must not be above maxReplicas"),
            ({"disruptionBudget": {"maxUnavailable": 0}},
             "disruptionBudget.maxUnavailable must be at least 1"),
            ({"networkPolicy": {"from": [{}]}},
             "a networkPolicy peer needs a namespaceSelector, a podSelector or both")):
        done = kubectl("apply", "--dry-run=server", "-f", "-", namespace=namespace, check=False,
                       input=batmodel(artifact_base, "1.0.0", **extra))
        assert done.returncode != 0 and message in done.stderr, done.stderr


def test_autoscaler_budget_and_policy_follow_the_spec(
        kubectl: Kubectl, operator: OperatorProcess, namespace: str, artifact_base: str) -> None:
    ns = namespace
    assert apply(kubectl, ns, batmodel(artifact_base, "1.0.0", replicas=2)).returncode == 0
    wait_model_ready(kubectl, ns, timeout=120)
    pdb = get(kubectl, ns, "pdb", "crime-v1")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {"batcomputer.io/model": "crime",
                                                       "batcomputer.io/major": "1"}}
    # The disruption controller counts the version's pods against it.
    wait_for(lambda: get(kubectl, ns, "pdb", "crime-v1").get("status", {}).get("expectedPods") == 2,
             timeout=30, what="the budget to count 2 pods")
    assert absent(kubectl, ns, "hpa", "crime-v1") and absent(kubectl, ns, "networkpolicy", "crime")

    # Autoscaled from here: the autoscaler takes over the 2 replicas (not dropped to 1) and
    # the real controller-manager raises them to its minimum of 3.
    scaled = batmodel(artifact_base, "1.0.0", replicas=2,
                      autoscaling={"minReplicas": 3, "maxReplicas": 4, "targetCPUUtilization": 60},
                      networkPolicy={"from": [{"podSelector": {"matchLabels": {"role": "web"}}},
                                              {"namespaceSelector": {"matchLabels": {"team": "apps"}}}]})
    assert apply(kubectl, ns, scaled).returncode == 0
    hpa = wait_for(lambda: get(kubectl, ns, "hpa", "crime-v1") if not absent(
        kubectl, ns, "hpa", "crime-v1") else None, timeout=30, what="the autoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "crime-v1"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 4)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    seen: list[int] = []

    def scaled_to_minimum() -> bool:
        replicas = int(get(kubectl, ns, "deployment", "crime-v1")["spec"]["replicas"])
        seen.append(replicas)
        return replicas == 3
    wait_for(scaled_to_minimum, timeout=90, interval=0.5,
             what="the autoscaler to raise crime-v1 to its minimum")
    assert min(seen) >= 2, seen  # never dropped while the operator let go of them
    deployment = json.loads(kubectl("get", "deployment", "crime-v1", "-o", "json",
                                    "--show-managed-fields", namespace=ns).stdout)
    owners = {e["manager"] for e in deployment["metadata"]["managedFields"]
              if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})}
    assert "batcomputer-operator" not in owners, owners
    policy = get(kubectl, ns, "networkpolicy", "crime")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"batcomputer.io/model": "crime"}}
    assert policy["spec"]["ingress"][0]["from"][:2] == [
        {"podSelector": {"matchLabels": {"role": "web"}}},
        {"namespaceSelector": {"matchLabels": {"team": "apps"}}}]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    # A hand-deleted budget is back within seconds.
    kubectl("delete", "pdb", "crime-v1", namespace=ns)
    wait_for(lambda: not absent(kubectl, ns, "pdb", "crime-v1"), timeout=15,
             what="the budget restored")

    # Dropped from the spec: gone, and the operator owns the replicas again.
    fixed = batmodel(artifact_base, "1.0.0", replicas=1, disruptionBudget={"enabled": False})
    assert apply(kubectl, ns, fixed).returncode == 0
    for kind, name in (("hpa", "crime-v1"), ("pdb", "crime-v1"), ("networkpolicy", "crime")):
        wait_for(lambda k=kind, n=name: absent(kubectl, ns, k, n), timeout=30,
                 what=f"{kind} {name} deleted")
    wait_for(lambda: get(kubectl, ns, "deployment", "crime-v1")["spec"]["replicas"] == 1,
             timeout=30, what="crime-v1 back to 1 replica")
    time.sleep(1)
    kubectl("delete", "bm", "crime", namespace=ns)
