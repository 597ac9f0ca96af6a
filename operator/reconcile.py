"""One level-based reconcile: desired -> apply what differs -> prune -> observe -> status.

The same function runs on create, update, resume, the periodic resync and on
changes to a child or pod, so the outcome depends only on the spec and what exists.
A child is applied only when it is missing, was made from another spec (its
desired-hash annotation differs) or was edited by hand (`drift.differences`); an
unchanged model costs reads only, and the operator's own writes cause no further work.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from batcomputer.operator import desired, drift, history, labels, spec, status
from batcomputer.operator.errors import Rejected
from batcomputer.operator.settings import Settings

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class Api(Protocol):
    """What reconcile needs from the cluster (batcomputer.operator.k8s.Kube)."""

    def apply(self, obj: Obj) -> Obj: ...
    def children(self, namespace: str, model: str, owner_uid: str) -> dict[tuple[str, str], Obj]: ...
    def pods(self, namespace: str, model: str) -> list[Obj]: ...
    def delete(self, obj: Obj) -> None: ...
    def patch_status(self, namespace: str, name: str, status: Obj) -> None: ...


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: Obj
    events: list[Event] = field(default_factory=list)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile(body: Mapping[str, Any], api: Api, settings: Settings) -> Outcome:
    meta = body["metadata"]
    previous: Obj = dict(body.get("status") or {})
    try:
        model = spec.parse(body, settings.default_replicas)
    except spec.SpecError as exc:
        outcome = Outcome(status.invalid_status(int(meta.get("generation", 0)), exc.problems,
                                                previous, now()))
        if _changed(previous, outcome.status) or previous.get("observedGeneration") != meta.get("generation"):
            outcome.events.append(Event("Warning", "InvalidSpec", str(exc)))
        api.patch_status(meta["namespace"], meta["name"], outcome.status)
        return outcome

    events: list[Event] = []
    existing = api.children(model.namespace, model.name, model.uid)
    applied: dict[tuple[str, str], Obj] = {}
    try:
        for obj in desired.versioned_children(model, settings):
            key = (obj["kind"], obj["metadata"]["name"])
            applied[key] = _apply(api, obj, existing.get(key), events)
    except Rejected as exc:
        # Keep everything else as it is (no pruning on a half-applied spec).
        outcome = Outcome(status.invalid_status(model.generation, [str(exc)], previous, now(),
                                                reason="Rejected"), events)
        if _changed(previous, outcome.status):
            outcome.events.append(Event("Warning", "Rejected", str(exc)))
            api.patch_status(model.namespace, model.name, outcome.status)
        return outcome

    # Pods tell why a version is not ready; when every Deployment is rolled out, skip them.
    rolled_out = all(_rolled_out(obj) for key, obj in applied.items() if key[0] == "Deployment")
    pods = None if rolled_out else api.pods(model.namespace, model.name)
    versions = [status.version_status(model, v, applied.get(("Deployment", desired.child_name(
        model.name, v.major))), pods, settings) for v in model.versions]

    stable_key = ("Service", model.name)
    current = existing.get(stable_key)
    current_major = None
    if current is not None:
        major = current["spec"].get("selector", {}).get(labels.MAJOR, "")
        current_major = int(major) if major.isdigit() else None
    target = status.serving_version(model, current_major, versions)
    # What the stable Service's pods run now: within a MAJOR, the old version until the
    # new one has replaced every pod. "Promoted" is said when that changes.
    serving = status.served_by(versions, target.major)
    before = current["metadata"].get("labels", {}).get(labels.MODEL_VERSION) if current else None
    applied[stable_key] = _apply(api, desired.stable_service(model, target, serving), current, events,
                                 announce=False)
    if current is None:
        events.append(Event("Normal", "Created", f"Created stable Service {model.name} -> MAJOR "
                                                 f"{target.major} ({target.version})"))
    elif serving and before and before != serving:
        events.append(Event("Normal", "Promoted",
                            f"Stable Service {model.name} now routes to {serving} (was {before})"))

    for key, obj in existing.items():
        if key not in applied:
            api.delete(obj)
            retired = obj["metadata"].get("labels", {}).get(labels.MODEL_VERSION, "")
            events.append(Event("Normal", "Deleted", f"Deleted {key[0]} {key[1]} (retired {retired})"))

    new_status = status.model_status(model, versions, target, previous, now(), settings)
    serving_now = {history.target(v["major"]): str(v.get("serving", "")) for v in versions}
    serving_now[history.STABLE] = str(new_status["serving"])
    new_status["history"] = history.update(
        previous.get("history") or [], serving_now,
        {str(v.version): {"artifact": v.artifact, "digest": v.digest} for v in model.versions}, now())
    events += _transitions(previous, new_status)
    if _changed(previous, new_status):
        api.patch_status(model.namespace, model.name, new_status)
    return Outcome(new_status, events)


def _apply(api: Api, obj: Obj, live: Obj | None, events: list[Event], announce: bool = True) -> Obj:
    """Apply ``obj`` if ``live`` is missing, from another spec, or edited by hand."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    version = obj["metadata"]["labels"].get(labels.MODEL_VERSION, "")
    if live is None:
        result = api.apply(obj)
        if announce:
            events.append(Event("Normal", "Created", f"Created {kind} {name} for {version}"))
        return result
    live_version = live.get("metadata", {}).get("labels", {}).get(labels.MODEL_VERSION)
    if desired.desired_hash(live) != desired.desired_hash(obj):
        # Made from another spec: an update the admin asked for, not a repair.
        result = api.apply(obj)
        if announce and live_version != version:
            verb = "Rolling" if kind == "Deployment" else "Updated"
            detail = f"from {live_version} to {version}" if kind == "Deployment" else f"for {version}"
            events.append(Event("Normal", "Updated", f"{verb} {kind} {name} {detail}"))
        return result
    edited = drift.differences(obj, live)
    if not edited:
        return live
    result = api.apply(obj)
    # Server-side apply leaves an object whose only "difference" was a normalised value
    # untouched: then nobody edited it.
    if result["metadata"].get("resourceVersion") != live["metadata"].get("resourceVersion"):
        fields = ", ".join(edited[:3]) + (f" and {len(edited) - 3} more" if len(edited) > 3 else "")
        events.append(Event("Warning", "Repaired", f"Restored {kind} {name}: {fields} changed by hand"))
    return result


def _rolled_out(deployment: Obj) -> bool:
    """The Deployment's own status says every replica is updated and available."""
    st = deployment.get("status") or {}
    want = deployment.get("spec", {}).get("replicas", 1)
    return bool(st.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
                and st.get("replicas", 0) == st.get("updatedReplicas", 0) == want
                and st.get("readyReplicas", 0) == st.get("availableReplicas", 0) == want)


def _changed(previous: Obj, new: Obj) -> bool:
    return any(previous.get(k) != v for k, v in new.items())


def _transitions(previous: Obj, new: Obj) -> list[Event]:
    """An Event when a version changes phase."""
    before = {v["version"]: v.get("phase") for v in previous.get("versions") or []}
    out = []
    for v in new.get("versions", []):
        if before.get(v["version"]) != v["phase"]:
            kind = "Warning" if v["phase"] == "Degraded" else "Normal"
            out.append(Event(kind, v["reason"] if kind == "Warning" else v["phase"],
                             f"{v['version']} is {v['phase']}: {v['message']}"))
    return out
