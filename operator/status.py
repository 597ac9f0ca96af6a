"""PURE: what the observed children say about each version, and the BatModel's status.

Phases of a version: Pending (no Deployment yet), Progressing (rolling out),
Ready (every desired replica runs this version and is ready), Degraded (its pods
fail or the rollout passed its deadline; the previous pods keep serving).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from batcomputer.operator import conditions, desired, labels
from batcomputer.operator.settings import Settings
from batcomputer.operator.spec import ModelSpec, VersionSpec

FAILING_WAIT_REASONS: Final = frozenset({"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff",
                                         "CreateContainerConfigError", "InvalidImageName",
                                         "CreateContainerError", "RunContainerError"})


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def _pod_failure(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a pod's container is failing rather than starting."""
    if _pod_ready(pod):
        return None
    for status in pod.get("status", {}).get("containerStatuses", []):
        waiting = status.get("state", {}).get("waiting") or {}
        last = (status.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in FAILING_WAIT_REASONS or (last and last.get("exitCode")):
            reason = waiting.get("reason") or "ContainerFailed"
            detail = (last.get("message") or waiting.get("message") or "").strip()
            code = f" (exit code {last['exitCode']})" if last.get("exitCode") else ""
            return reason, f"pod {pod['metadata']['name']}: container failed{code}: {detail}".rstrip(": ")
    return None


def version_status(model: ModelSpec, version: VersionSpec, deployment: dict[str, Any] | None,
                   pods: Sequence[dict[str, Any]] | None, settings: Settings) -> dict[str, Any]:
    """``pods=None``: the Deployment's status says it is fully rolled out; trust it."""
    name = desired.child_name(model.name, version.major)
    st = (deployment or {}).get("status", {})
    out: dict[str, Any] = {
        "version": str(version.version), "major": version.major, "deployment": name,
        "service": name, "endpoint": desired.endpoint(model, name, settings),
        "replicas": model.replicas, "readyReplicas": int(st.get("readyReplicas", 0)),
        "updatedReplicas": int(st.get("updatedReplicas", 0)),
    }
    if deployment is None:
        return {**out, "phase": "Pending", "reason": "Creating", "message": "creating Deployment"}
    # Pods of the Deployment's current template (same version with another digest or
    # resources is another revision), by the hash annotation on the template.
    revision = (deployment.get("spec", {}).get("template", {}).get("metadata", {})
                .get("annotations", {}).get(labels.TEMPLATE_HASH))
    mine = [p for p in pods or [] if p["metadata"].get("labels", {}).get(labels.MAJOR) == str(version.major)
            and (p["metadata"].get("annotations") or {}).get(labels.TEMPLATE_HASH) == revision
            and not p["metadata"].get("deletionTimestamp")]
    ready_mine = (sum(1 for p in mine if _pod_ready(p)) if pods is not None
                  else int(st.get("readyReplicas", 0)))
    others = [p for p in pods or [] if p["metadata"].get("labels", {}).get(labels.MAJOR) == str(version.major)
              and p not in mine and _pod_ready(p)]
    keeps = (f"; {len(others)} pod(s) of the previous version keep serving" if others else "")
    failures = [f for p in mine if (f := _pod_failure(p))]
    progressing: dict[str, Any] = next(
        (c for c in st.get("conditions", []) if c.get("type") == "Progressing"), {})
    if failures:
        reason, message = failures[0]
        return {**out, "phase": "Degraded", "reason": reason, "message": message + keeps}
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return {**out, "phase": "Degraded", "reason": "ProgressDeadlineExceeded",
                "message": (progressing.get("message") or "rollout stalled") + keeps}
    observed = int(st.get("observedGeneration", 0)) >= int(deployment["metadata"].get("generation", 1))
    rolled_out = (observed and out["updatedReplicas"] >= model.replicas
                  and int(st.get("replicas", 0)) == model.replicas
                  and int(st.get("availableReplicas", 0)) >= model.replicas
                  and ready_mine >= model.replicas)
    if rolled_out:
        reason = "ScaledToZero" if model.replicas == 0 else "Available"
        return {**out, "phase": "Ready", "reason": reason,
                "message": f"{ready_mine}/{model.replicas} replicas ready"}
    return {**out, "phase": "Progressing", "reason": "RollingOut",
            "message": f"{ready_mine}/{model.replicas} replicas of {version.version} ready" + keeps}


def serving_version(model: ModelSpec, current_major: int | None,
                    versions: Sequence[dict[str, Any]]) -> VersionSpec:
    """The version the stable Service routes to. A promotion takes effect only once the
    promoted version is Ready; until then the stable Service keeps its current target,
    so a bad version never takes traffic from a good one."""
    promoted = model.promoted
    ready = {v["major"] for v in versions if v["phase"] == "Ready"}
    current = model.by_major(current_major) if current_major is not None else None
    if promoted.major in ready or current is None or current.major == promoted.major:
        return promoted
    return current


def model_status(model: ModelSpec, versions: Sequence[dict[str, Any]], serving: VersionSpec,
                 previous: dict[str, Any], now: str, settings: Settings) -> dict[str, Any]:
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    gen = model.generation
    degraded = [v for v in versions if v["phase"] == "Degraded"]
    moving = [v for v in versions if v["phase"] in ("Pending", "Progressing")]
    all_ready = len(degraded) == len(moving) == 0
    pending_promotion = serving.major != model.promoted.major

    if degraded:
        first = degraded[0]
        conds = conditions.set_condition(conds, type="Degraded", status=True, reason=first["reason"],
                                         message="; ".join(f"{v['version']}: {v['message']}"
                                                           for v in degraded),
                                         generation=gen, now=now)
    else:
        conds = conditions.set_condition(conds, type="Degraded", status=False, reason="AsExpected",
                                         message="no version is failing", generation=gen, now=now)
    if moving or pending_promotion:
        messages = [f"{v['version']}: {v['message']}" for v in moving]
        if pending_promotion:
            messages.append(f"promotion of {model.promoted.version} waits for it to be Ready; "
                            f"the stable Service still routes to {serving.version}")
        conds = conditions.set_condition(conds, type="Progressing", status=True,
                                         reason="PromotionPending" if pending_promotion and not moving
                                         else "RollingOut", message="; ".join(messages),
                                         generation=gen, now=now)
    else:
        conds = conditions.set_condition(conds, type="Progressing", status=False,
                                         reason="RolloutComplete",
                                         message="every version is rolled out", generation=gen, now=now)
    if all_ready and not pending_promotion:
        conds = conditions.set_condition(conds, type="Ready", status=True, reason="AllVersionsReady",
                                         message=f"{len(versions)} version(s) ready; stable Service "
                                                 f"serves {serving.version}", generation=gen, now=now)
    else:
        waiting = [f"{v['version']} is {v['phase']}" for v in versions if v["phase"] != "Ready"]
        if pending_promotion:
            waiting.append(f"promoted {model.promoted.version} is not serving yet")
        conds = conditions.set_condition(conds, type="Ready", status=False,
                                         reason="VersionsNotReady", message="; ".join(waiting),
                                         generation=gen, now=now)
    order = {"Ready": 0, "Progressing": 1, "Degraded": 2}
    conds.sort(key=lambda c: order.get(c["type"], 9))
    ready_count = sum(1 for v in versions if v["phase"] == "Ready")
    return {
        "observedGeneration": gen,
        "promoted": str(model.promoted.version),
        "serving": str(serving.version),
        "endpoint": desired.endpoint(model, model.name, settings),
        "versions": list(versions),
        "summary": {"versions": ",".join(v["version"] for v in versions),
                    "ready": f"{ready_count}/{len(versions)}"},
        "conditions": conds,
    }


def invalid_status(generation: int, problems: Sequence[str], previous: dict[str, Any],
                   now: str, reason: str = "InvalidSpec") -> dict[str, Any]:
    """A spec the operator refuses to act on: existing children are left as they are."""
    conds = list(previous.get("conditions") or [])
    message = "; ".join(problems)
    conds = conditions.set_condition(conds, type="Degraded", status=True, reason=reason,
                                     message=message, generation=generation, now=now)
    conds = conditions.set_condition(conds, type="Ready", status=False, reason=reason,
                                     message="the spec cannot be applied; running versions are "
                                             "left as they were", generation=generation, now=now)
    conds = conditions.set_condition(conds, type="Progressing", status=False, reason=reason,
                                     message="waiting for a valid spec", generation=generation, now=now)
    order = {"Ready": 0, "Progressing": 1, "Degraded": 2}
    conds.sort(key=lambda c: order.get(c["type"], 9))
    return {"observedGeneration": generation, "conditions": conds}
