"""What reconciles cost: an unchanged model's resyncs read the operator's watch caches and
write nothing; reconciles that watches start read no BatModel; kopf writes nothing on
BatModels; a drifted field is still repaired at once, with one write."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from testkit import Kubectl, OperatorProcess, batmodel, get, wait_for, wait_model_ready

pytestmark = pytest.mark.e2e

WRITES = ("create", "update", "patch", "apply", "delete")


def requests_by_verb(operator: OperatorProcess) -> dict[str, float]:
    counts: dict[str, float] = {}
    reconciles = 0.0
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.name == "batcomputer_operator_api_requests_total":
                verb = sample.labels["verb"]
                counts[verb] = counts.get(verb, 0) + sample.value
                if verb == "get":
                    key = f"get {sample.labels['resource']}"
                    counts[key] = counts.get(key, 0) + sample.value
            if sample.name == "batcomputer_operator_reconciles_total":
                reconciles += sample.value
    counts["reconciles"] = reconciles
    return counts


def test_resyncs_of_an_unchanged_model_write_nothing_and_drift_is_repaired(
        kubectl: Kubectl, operator: OperatorProcess, namespace: str, artifact_base: str) -> None:
    created = wait_for(lambda: requests_by_verb(operator), timeout=30, what="operator metrics")
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.0.0", replicas=1),
            namespace=namespace)
    wait_model_ready(kubectl, namespace, timeout=120)
    # Reconciles that a watch started (the new model, its children's and pods' changes)
    # start from the BatModel as last seen; only the resync reads it afresh.
    converged = requests_by_verb(operator)
    reconciles = converged["reconciles"] - created.get("reconciles", 0)
    reads = converged.get("get batmodels", 0) - created.get("get batmodels", 0)
    assert reads < reconciles, (reads, reconciles)
    # kopf writes nothing on BatModels: no progress or last-handled annotations.
    annotations = get(kubectl, namespace, "bm", "crime")["metadata"].get("annotations") or {}
    assert not [k for k in annotations if "kopf" in k or "last-handled" in k], annotations
    time.sleep(3)  # the echoes of its own writes
    before = requests_by_verb(operator)
    time.sleep(7)  # three resyncs (every 2 s here)
    after = requests_by_verb(operator)
    grew = {verb: after.get(verb, 0) - before.get(verb, 0) for verb in after}
    assert grew["reconciles"] >= 3, grew
    assert all(grew.get(verb, 0) == 0 for verb in WRITES), sorted(grew.items())
    assert grew.get("list", 0) == 0, grew  # children and pods come from the watch caches
    # Each resync reads the BatModel; the only other read is the webhook registration's
    # check, once per resync period.
    assert grew.get("get batmodels", 0) <= grew["reconciles"], grew
    assert grew.get("get", 0) == grew.get("get batmodels", 0) + grew.get(
        "get validatingwebhookconfigurations", 0), grew

    # A hand edit of a field the operator owns is undone within 2 s.
    kubectl("patch", "deployment", "crime-v1", "--type=json", "-p",
            '[{"op": "replace", "path": "/spec/revisionHistoryLimit", "value": 9}]',
            namespace=namespace)
    edited = time.monotonic()
    wait_for(lambda: get(kubectl, namespace, "deployment", "crime-v1")["spec"][
        "revisionHistoryLimit"] == 3, timeout=10, what="drift repaired")
    assert time.monotonic() - edited < 2.5
    kubectl("delete", "bm", "crime", namespace=namespace)
