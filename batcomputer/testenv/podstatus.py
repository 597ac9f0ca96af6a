"""PURE: a pod's status, as a kubelet reports it, from what the podlet observed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Observation:
    """What the podlet knows of a pod's one container at a moment."""

    name: str
    image: str
    pod_ip: str
    pod_started_at: str
    image_id: str = ""
    container_id: str = ""
    running_since: str | None = None
    """When the current run started; None when the container is not running."""
    waiting: tuple[str, str] | None = None
    """(reason, message) when it is not running: CrashLoopBackOff, ErrImageNeverPull..."""
    started: bool = False
    ready: bool = False
    restarts: int = 0
    last_exit: dict[str, Any] | None = None
    ever_ran: bool = False


def condition(old: dict[str, dict[str, Any]], kind: str, ok: bool, now: str,
              reason: str = "") -> dict[str, Any]:
    """A pod condition that keeps its lastTransitionTime while its status is unchanged."""
    status = "True" if ok else "False"
    previous = old.get(kind, {})
    since = previous.get("lastTransitionTime") if previous.get("status") == status else None
    out: dict[str, Any] = {"type": kind, "status": status, "lastTransitionTime": since or now}
    if reason and not ok:
        out["reason"] = reason
    return out


def pod_status(seen: Observation, old_conditions: list[dict[str, Any]], now: str) -> dict[str, Any]:
    old = {c["type"]: c for c in old_conditions}
    if seen.running_since is not None:
        state: dict[str, Any] = {"running": {"startedAt": seen.running_since}}
    else:
        reason, message = seen.waiting or ("ContainerCreating", "")
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    container: dict[str, Any] = {
        "name": seen.name, "image": seen.image, "imageID": seen.image_id,
        "containerID": seen.container_id if seen.running_since is not None else "",
        "ready": seen.ready, "started": seen.started, "restartCount": seen.restarts,
        "state": state,
    }
    if seen.last_exit:
        container["lastState"] = {"terminated": seen.last_exit}
    not_ready = "ContainersNotReady"
    return {
        # A container that never got to run (missing image, bad config) leaves the pod Pending.
        "phase": "Running" if seen.ever_ran else "Pending",
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": seen.pod_ip, "podIPs": [{"ip": seen.pod_ip}], "startTime": seen.pod_started_at,
        "conditions": [condition(old, "PodScheduled", True, now),
                       condition(old, "Initialized", True, now),
                       condition(old, "ContainersReady", seen.ready, now, not_ready),
                       condition(old, "Ready", seen.ready, now, not_ready)],
        "containerStatuses": [container],
    }
