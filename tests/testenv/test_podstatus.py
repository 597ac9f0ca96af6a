"""The pod status the podlet reports, from what it observed."""

from __future__ import annotations

from batcomputer.testenv.podstatus import Observation, pod_status

BASE = {"name": "server", "image": "batcomputer-server:0.1.0", "pod_ip": "10.200.0.2",
        "pod_started_at": "2026-01-01T00:00:00Z"}


def conditions(status: dict[str, object]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined,index]


def test_a_running_ready_container() -> None:
    seen = Observation(**BASE, image_id="sha256:abc", container_id="podman://k8s_x",  # type: ignore[arg-type]
                       running_since="2026-01-01T00:00:01Z", started=True, ready=True, ever_ran=True)
    status = pod_status(seen, [], "2026-01-01T00:00:02Z")
    assert status["phase"] == "Running" and status["podIP"] == "10.200.0.2"
    assert conditions(status) == {"PodScheduled": "True", "Initialized": "True",
                                  "ContainersReady": "True", "Ready": "True"}
    [container] = status["containerStatuses"]
    assert container["state"] == {"running": {"startedAt": "2026-01-01T00:00:01Z"}}
    assert container["containerID"] == "podman://k8s_x" and container["imageID"] == "sha256:abc"


def test_a_missing_image_leaves_the_pod_pending_with_the_reason() -> None:
    seen = Observation(**BASE, waiting=("ErrImageNeverPull", "image is not present"))  # type: ignore[arg-type]
    status = pod_status(seen, [], "t")
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ErrImageNeverPull", "message": "image is not present"}}
    assert conditions(status)["Ready"] == "False"


def test_a_crash_loop_keeps_the_last_exit_and_transition_times_hold_while_unchanged() -> None:
    last = {"exitCode": 3, "reason": "Error", "message": "Refusing to serve"}
    seen = Observation(**BASE, waiting=("CrashLoopBackOff", "back-off 2s"), restarts=2,  # type: ignore[arg-type]
                       last_exit=last, ever_ran=True)
    old = [{"type": "Ready", "status": "False", "lastTransitionTime": "earlier"}]
    status = pod_status(seen, old, "now")
    container = status["containerStatuses"][0]
    assert status["phase"] == "Running" and container["restartCount"] == 2
    assert container["lastState"] == {"terminated": last}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready == {"type": "Ready", "status": "False", "lastTransitionTime": "earlier",
                     "reason": "ContainersNotReady"}
