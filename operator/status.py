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


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def _first_sentence(text: str) -> str:
    """The scheduler's message without its preemption postscript."""
    return text.split(" preemption:", 1)[0].strip()


def _pod_failure(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a pod cannot start or its container fails, rather than
    starting. Messages name no pod and carry no timestamps, so they stay the same while
    the cause does (conditions and events are compared on them)."""
    if pod_ready(pod):
        return None
    st = pod.get("status", {})
    scheduled: dict[str, Any] = next(
        (c for c in st.get("conditions", []) if c.get("type") == "PodScheduled"), {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return "Unschedulable", f"pod cannot be scheduled: {_first_sentence(scheduled.get('message', ''))}"
    for status in st.get("containerStatuses", []):
        waiting = status.get("state", {}).get("waiting") or {}
        last = (status.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in FAILING_WAIT_REASONS or (last and last.get("exitCode")):
            reason = waiting.get("reason") or "ContainerFailed"
            detail = (last.get("message") or waiting.get("message") or "").strip()
            if reason == "CrashLoopBackOff" and last:
                detail = (last.get("message") or "").strip()  # not the back-off delay
            code = f" (exit code {last['exitCode']})" if last.get("exitCode") else ""
            return reason, f"container failed{code}: {detail}".rstrip(": ")
    return None


def _plural(count: int, what: str) -> str:
    return f"{count} {what}" if count == 1 else f"{count} {what}s"


def version_status(model: ModelSpec, version: VersionSpec, deployment: dict[str, Any] | None,
                   pods: Sequence[dict[str, Any]] | None, settings: Settings) -> dict[str, Any]:
    """``pods=None``: the Deployment's status says it is fully rolled out; trust it.

    ``serving`` is the version the MAJOR's ready pods run now: the new version only once
    its pods are Ready and the old ones are gone ("" when no pod is ready).
    ``rolledOut`` is the Deployment's own account: every replica updated and available."""
    name = desired.child_name(model.name, version.major)
    st = (deployment or {}).get("status", {})
    want = model.replicas
    out: dict[str, Any] = {
        "version": str(version.version), "major": version.major, "deployment": name,
        "service": name, "endpoint": desired.endpoint(model, name, settings),
        "v2Endpoint": desired.v2_endpoint(model, name, settings),
        "replicas": want, "readyReplicas": int(st.get("readyReplicas", 0)),
        "updatedReplicas": int(st.get("updatedReplicas", 0)),
    }
    if deployment is None:
        return {**out, "serving": "", "rolledOut": False, "phase": "Pending", "reason": "Creating",
                "message": "creating Deployment"}
    # Pods of the Deployment's current template (same version with another digest or
    # resources is another revision), by the hash annotation on the template.
    revision = (deployment.get("spec", {}).get("template", {}).get("metadata", {})
                .get("annotations", {}).get(labels.TEMPLATE_HASH))
    of_major = [p for p in pods or []
                if p["metadata"].get("labels", {}).get(labels.MAJOR) == str(version.major)
                and not p["metadata"].get("deletionTimestamp")]
    mine = [p for p in of_major
            if (p["metadata"].get("annotations") or {}).get(labels.TEMPLATE_HASH) == revision]
    others = [p for p in of_major if p not in mine and pod_ready(p)]
    ready_mine = (sum(1 for p in mine if pod_ready(p)) if pods is not None
                  else int(st.get("readyReplicas", 0)))
    observed = int(st.get("observedGeneration", 0)) >= int(deployment["metadata"].get("generation", 1))
    rolled_out = (observed and out["updatedReplicas"] >= want and int(st.get("replicas", 0)) == want
                  and int(st.get("availableReplicas", 0)) >= want and ready_mine >= want
                  and not others)
    old_versions = sorted({labels.version_of(p) for p in others})
    if rolled_out or (ready_mine and not others):
        serving = str(version.version)
    else:
        serving = ",".join(v for v in old_versions if v)
    out.update(serving=serving, rolledOut=rolled_out)
    keeps = (f"; {_plural(len(others), 'pod')} of {', '.join(old_versions) or 'the previous version'} "
             "keep serving" if others else "")
    counts = (f"{out['updatedReplicas']}/{want} updated to {version.version}, "
              f"{ready_mine}/{want} ready")
    failures = [f for p in mine if (f := _pod_failure(p))]
    progressing: dict[str, Any] = next(
        (c for c in st.get("conditions", []) if c.get("type") == "Progressing"), {})
    if failures:
        reason, message = failures[0]
        return {**out, "phase": "Degraded", "reason": reason, "message": f"{message} ({counts}){keeps}"}
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return {**out, "phase": "Degraded", "reason": "ProgressDeadlineExceeded",
                "message": f"rollout made no progress for {settings.progress_deadline_seconds}s "
                           f"({counts}){keeps}"}
    if rolled_out:
        reason = "ScaledToZero" if want == 0 else "Available"
        return {**out, "phase": "Ready", "reason": reason, "message": f"{ready_mine}/{want} replicas ready"}
    return {**out, "phase": "Progressing", "reason": "RollingOut", "message": counts + keeps}


def serving_version(model: ModelSpec, current_major: int | None,
                    versions: Sequence[dict[str, Any]]) -> VersionSpec:
    """The version whose MAJOR the stable Service routes to. A promotion to another MAJOR
    takes effect only once the promoted version is Ready; until then the stable Service
    keeps its current target, so a bad version never takes traffic from a good one."""
    promoted = model.promoted
    ready = {v["major"] for v in versions if v["phase"] == "Ready"}
    current = model.by_major(current_major) if current_major is not None else None
    if promoted.major in ready or current is None or current.major == promoted.major:
        return promoted
    return current


def served_by(versions: Sequence[dict[str, Any]], major: int) -> str:
    """What the pods of a MAJOR serve now ("" when none is ready)."""
    return next((str(v.get("serving", "")) for v in versions if v["major"] == major), "")


def model_status(model: ModelSpec, versions: Sequence[dict[str, Any]], target: VersionSpec,
                 previous: dict[str, Any], now: str, settings: Settings) -> dict[str, Any]:
    """``target``: the version whose MAJOR the stable Service routes to."""
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    gen = model.generation
    serving = served_by(versions, target.major)
    degraded = [v for v in versions if v["phase"] == "Degraded"]
    unfinished = [v for v in versions if not v.get("rolledOut")]
    stalled = [v for v in unfinished if v["reason"] == "ProgressDeadlineExceeded"]
    all_ready = all(v["phase"] == "Ready" for v in versions)
    pending_promotion = target.major != model.promoted.major

    if degraded:
        first = degraded[0]
        conds = conditions.set_condition(conds, type="Degraded", status=True, reason=first["reason"],
                                         message="; ".join(f"{v['version']}: {v['message']}"
                                                           for v in degraded),
                                         generation=gen, now=now)
    else:
        conds = conditions.set_condition(conds, type="Degraded", status=False, reason="AsExpected",
                                         message="no version is failing", generation=gen, now=now)
    # Progressing follows the Deployments' real rollouts: a roll whose new pods crash is
    # still in progress (the old pods serve), and one past its deadline has stopped.
    messages = [f"{v['version']}: {v['message']}" for v in unfinished]
    if pending_promotion:
        messages.append(f"promotion of {model.promoted.version} waits for it to be Ready; "
                        f"the stable Service still routes to {serving or target.version}")
    if stalled:
        conds = conditions.set_condition(conds, type="Progressing", status=False,
                                         reason="ProgressDeadlineExceeded", message="; ".join(messages),
                                         generation=gen, now=now)
    elif messages:
        conds = conditions.set_condition(conds, type="Progressing", status=True,
                                         reason="PromotionPending" if pending_promotion and not unfinished
                                         else "RollingOut", message="; ".join(messages),
                                         generation=gen, now=now)
    else:
        conds = conditions.set_condition(conds, type="Progressing", status=False,
                                         reason="RolloutComplete",
                                         message="every version is rolled out", generation=gen, now=now)
    if all_ready and not pending_promotion:
        conds = conditions.set_condition(conds, type="Ready", status=True, reason="AllVersionsReady",
                                         message=f"{len(versions)} version(s) ready; stable Service "
                                                 f"serves {serving}", generation=gen, now=now)
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
        "serving": serving,
        "endpoint": desired.endpoint(model, model.name, settings),
        "v2Endpoint": desired.v2_endpoint(model, model.name, settings),
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


def terminating_status(previous: dict[str, Any], now: str) -> dict[str, Any]:
    """A BatModel being deleted (foreground deletion waits for its children to go)."""
    gen = int(previous.get("observedGeneration", 0))
    conds = conditions.set_condition(list(previous.get("conditions") or []), type="Ready",
                                     status=False, reason="Terminating",
                                     message="being deleted: its Deployments and Services are "
                                             "removed by garbage collection", generation=gen, now=now)
    order = {"Ready": 0, "Progressing": 1, "Degraded": 2}
    conds.sort(key=lambda c: order.get(c["type"], 9))
    return {**previous, "conditions": conds}


def pod_needs_attention(event_type: str, pod: dict[str, Any]) -> bool:
    """Whether a pod's change can change a version's status beyond what its Deployment's
    own status will say: a pod that is not Ready (starting, failing, unschedulable). A
    Ready pod's changes show in the Deployment's ready counts."""
    if event_type == "DELETED" or pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    return not pod_ready(pod)
