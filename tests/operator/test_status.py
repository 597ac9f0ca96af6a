from __future__ import annotations

from typing import Any

import semver

from batcomputer.operator import status
from batcomputer.operator.settings import Settings
from batcomputer.operator.spec import ModelSpec, VersionSpec

V1 = VersionSpec(semver.Version.parse("1.1.0"), "http://a/1.1.0/")
V2 = VersionSpec(semver.Version.parse("2.0.0"), "http://a/2.0.0/")
MODEL = ModelSpec(name="crime", namespace="ns", uid="u", generation=5, versions=(V1, V2),
                  promoted=V2, replicas=2)
S = Settings()


def deployment(ready: int = 2, updated: int = 2, replicas: int = 2, generation: int = 2,
               observed: int = 2, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "spec": {"template": {"metadata": {"annotations": {"batcomputer.io/template-hash": "new"}}}},
            "status": {"observedGeneration": observed, "replicas": replicas, "readyReplicas": ready,
                       "updatedReplicas": updated, "availableReplicas": ready,
                       "conditions": conditions or []}}


def pod(version: str, ready: bool, name: str = "p", waiting: str | None = None,
        exit_code: int | None = None, message: str = "", revision: str = "") -> dict[str, Any]:
    cs: dict[str, Any] = {"state": {"waiting": {"reason": waiting}} if waiting else {"running": {}}}
    if exit_code is not None:
        cs["lastState"] = {"terminated": {"exitCode": exit_code, "message": message}}
    revision = revision or ("new" if version == "1.1.0" else "old")
    return {"metadata": {"name": name, "labels": {"batcomputer.io/version": version,
                                                  "batcomputer.io/major": version[0]},
                         "annotations": {"batcomputer.io/template-hash": revision}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [cs]}}


def test_no_deployment_is_pending() -> None:
    st = status.version_status(MODEL, V1, None, [], S)
    assert st["phase"] == "Pending" and st["endpoint"] == "http://crime-v1.ns.svc/api/predict"
    assert st["v2Endpoint"] == "http://crime-v1.ns.svc/v2/models/crime/infer"


def test_ready_when_every_replica_runs_this_version() -> None:
    st = status.version_status(MODEL, V1, deployment(), [pod("1.1.0", True), pod("1.1.0", True)], S)
    assert (st["phase"], st["reason"], st["readyReplicas"]) == ("Ready", "Available", 2)


def test_progressing_while_old_pods_still_serve() -> None:
    st = status.version_status(MODEL, V1, deployment(updated=1, replicas=3),
                               [pod("1.0.0", True), pod("1.0.0", True), pod("1.1.0", False)], S)
    assert st["phase"] == "Progressing" and not st["rolledOut"]
    assert st["message"] == "1/2 updated to 1.1.0, 0/2 ready; 2 pods of 1.0.0 keep serving"
    assert st["serving"] == "1.0.0"  # the new version serves once it has replaced the old pods


def test_same_version_with_another_template_is_another_revision() -> None:
    st = status.version_status(MODEL, V1, deployment(updated=1, replicas=3),
                               [pod("1.1.0", True, revision="old"), pod("1.1.0", True, revision="old"),
                                pod("1.1.0", False, waiting="CrashLoopBackOff", exit_code=3,
                                    message="digest mismatch")], S)
    assert st["phase"] == "Degraded"
    assert st["message"].endswith("2 pods of 1.1.0 keep serving")


def test_unobserved_generation_is_not_ready() -> None:
    st = status.version_status(MODEL, V1, deployment(generation=3, observed=2),
                               [pod("1.1.0", True), pod("1.1.0", True)], S)
    assert st["phase"] == "Progressing"


def test_crashing_pods_degrade_with_their_message() -> None:
    st = status.version_status(
        MODEL, V1, deployment(updated=1, replicas=3),
        [pod("1.0.0", True), pod("1.0.0", True),
         pod("1.1.0", False, name="bad", waiting="CrashLoopBackOff", exit_code=3,
             message="Refusing to serve: digest mismatch")], S)
    assert st["phase"] == "Degraded" and st["reason"] == "CrashLoopBackOff"
    # No pod name and no timestamp: the message stays the same while the cause does.
    assert st["message"] == ("container failed (exit code 3): Refusing to serve: digest mismatch "
                             "(1/2 updated to 1.1.0, 0/2 ready); 2 pods of 1.0.0 keep serving")
    assert st["serving"] == "1.0.0" and not st["rolledOut"]


def test_a_pod_that_cannot_be_scheduled_says_why() -> None:
    unschedulable = pod("1.1.0", False)
    unschedulable["status"] = {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": '0/2 nodes are available: persistentvolumeclaim "model-store" not found. '
                   "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."}]}
    st = status.version_status(MODEL, V1, deployment(ready=0, updated=1, replicas=1), [unschedulable], S)
    assert (st["phase"], st["reason"]) == ("Degraded", "Unschedulable")
    assert st["message"].startswith('pod cannot be scheduled: 0/2 nodes are available: '
                                    'persistentvolumeclaim "model-store" not found. (1/2 updated')
    assert st["serving"] == ""


def test_progress_deadline_degrades() -> None:
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet has timed out progressing."}
    st = status.version_status(MODEL, V1, deployment(ready=0, conditions=[cond]), [], S)
    assert (st["phase"], st["reason"]) == ("Degraded", "ProgressDeadlineExceeded")


def versions(v1: str, v2: str) -> list[dict[str, Any]]:
    return [{"version": "1.1.0", "major": 1, "phase": v1, "reason": "R1", "message": "m1",
             "endpoint": "http://crime-v1.ns.svc/api/predict", "rolledOut": v1 == "Ready",
             "serving": "1.1.0" if v1 == "Ready" else ""},
            {"version": "2.0.0", "major": 2, "phase": v2, "reason": "R2", "message": "m2",
             "endpoint": "http://crime-v2.ns.svc/api/predict", "rolledOut": v2 == "Ready",
             "serving": "2.0.0" if v2 == "Ready" else ""}]


def test_promotion_waits_for_the_promoted_version_to_be_ready() -> None:
    assert status.serving_version(MODEL, 1, versions("Ready", "Progressing")) is V1
    assert status.serving_version(MODEL, 1, versions("Ready", "Degraded")) is V1
    assert status.serving_version(MODEL, 1, versions("Ready", "Ready")) is V2
    assert status.serving_version(MODEL, None, versions("Ready", "Pending")) is V2  # first creation
    assert status.serving_version(MODEL, 3, versions("Ready", "Pending")) is V2  # retired major


def cond(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == kind)


def test_model_status_all_ready() -> None:
    st = status.model_status(MODEL, versions("Ready", "Ready"), V2, {}, "t1", S)
    assert st["observedGeneration"] == 5 and st["promoted"] == st["serving"] == "2.0.0"
    assert st["summary"] == {"versions": "1.1.0,2.0.0", "ready": "2/2"}
    assert st["endpoint"] == "http://crime.ns.svc/api/predict"
    assert [c["type"] for c in st["conditions"]] == ["Ready", "Progressing", "Degraded"]
    assert (cond(st, "Ready")["status"], cond(st, "Progressing")["status"],
            cond(st, "Degraded")["status"]) == ("True", "False", "False")
    assert all(c["observedGeneration"] == 5 for c in st["conditions"])


def test_model_status_degraded_and_pending_promotion() -> None:
    st = status.model_status(MODEL, versions("Ready", "Degraded"), V1, {}, "t1", S)
    assert cond(st, "Ready")["status"] == "False"
    assert cond(st, "Degraded")["reason"] == "R2" and "2.0.0: m2" in cond(st, "Degraded")["message"]
    assert cond(st, "Progressing")["reason"] == "RollingOut"
    assert cond(st, "Progressing")["message"] == ("2.0.0: m2; promotion of 2.0.0 waits for it to be "
                                                  "Ready; the stable Service still routes to 1.1.0")
    assert st["serving"] == "1.1.0" and st["summary"]["ready"] == "1/2"


def test_transition_times_are_kept_across_reconciles() -> None:
    first = status.model_status(MODEL, versions("Ready", "Ready"), V2, {}, "t1", S)
    second = status.model_status(MODEL, versions("Ready", "Ready"), V2, first, "t2", S)
    assert {c["lastTransitionTime"] for c in second["conditions"]} == {"t1"}
    third = status.model_status(MODEL, versions("Ready", "Progressing"), V2, second, "t3", S)
    assert cond(third, "Ready")["lastTransitionTime"] == "t3"
    assert cond(third, "Degraded")["lastTransitionTime"] == "t1"


def test_invalid_status() -> None:
    st = status.invalid_status(7, ["spec.replicas must be an integer"], {}, "t")
    assert st["observedGeneration"] == 7
    assert cond(st, "Degraded")["reason"] == "InvalidSpec"
    assert cond(st, "Degraded")["message"] == "spec.replicas must be an integer"


def test_a_rolled_out_deployment_is_trusted_without_pods() -> None:
    st = status.version_status(MODEL, V1, deployment(), None, S)
    assert (st["phase"], st["message"]) == ("Ready", "2/2 replicas ready")


def test_a_stalled_minor_roll_is_progressing_and_serves_the_old_version() -> None:
    """1.1.0's new pods crash while 1.0.0's pods serve: not "rolled out", not "serving 1.1.0"."""
    crashing = pod("1.1.0", False, waiting="CrashLoopBackOff", exit_code=3, message="Refusing to serve: x")
    v1 = status.version_status(MODEL, V1, deployment(ready=2, updated=1, replicas=3),
                               [pod("1.0.0", True), pod("1.0.0", True), crashing], S)
    v2 = status.version_status(MODEL, V2, deployment(), None, S)
    one_major = ModelSpec(name="crime", namespace="ns", uid="u", generation=5, versions=(V1, V2),
                          promoted=V1, replicas=2)
    st = status.model_status(one_major, [v1, v2], V1, {}, "t", S)
    assert st["serving"] == "1.0.0"
    assert (cond(st, "Progressing")["status"], cond(st, "Progressing")["reason"]) == ("True", "RollingOut")
    assert "1/2 updated to 1.1.0, 0/2 ready" in cond(st, "Progressing")["message"]
    assert cond(st, "Degraded")["status"] == "True" and cond(st, "Ready")["status"] == "False"


def test_a_roll_past_its_deadline_stops_progressing() -> None:
    deadline = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    v1 = status.version_status(MODEL, V1, deployment(ready=0, updated=1, conditions=[deadline]), [], S)
    st = status.model_status(MODEL, [v1], V1, {}, "t", S)
    assert (cond(st, "Progressing")["status"], cond(st, "Progressing")["reason"]) == (
        "False", "ProgressDeadlineExceeded")
    assert "rollout made no progress for 300s (1/2 updated to 1.1.0, 0/2 ready)" in v1["message"]
