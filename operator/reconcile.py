"""One level-based reconcile: desired -> apply -> prune -> observe -> status.

The same function runs on create, update, resume, the periodic resync and on
changes to a child, so the outcome depends only on the spec and what exists.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from batcomputer.operator import desired, labels, spec, status
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


def reconcile(body: Mapping[str, Any], api: Api, settings: Settings, *, full: bool = True) -> Outcome:
    """``full`` applies every child (drift repair); otherwise only missing or changed ones."""
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
            applied[key] = _apply(api, obj, existing.get(key), events, full)
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
    serving = status.serving_version(model, current_major, versions)
    before = current["metadata"].get("labels", {}).get(labels.MODEL_VERSION) if current else None
    applied[stable_key] = _apply(api, desired.stable_service(model, serving), current, events, full,
                                 announce=False)
    if current is None:
        events.append(Event("Normal", "Created", f"Created stable Service {model.name} -> {serving.version}"))
    elif before != str(serving.version):
        events.append(Event("Normal", "Promoted",
                            f"Stable Service {model.name} now routes to {serving.version} (was {before})"))

    for key, obj in existing.items():
        if key not in applied:
            api.delete(obj)
            retired = obj["metadata"].get("labels", {}).get(labels.MODEL_VERSION, "")
            events.append(Event("Normal", "Deleted", f"Deleted {key[0]} {key[1]} (retired {retired})"))

    new_status = status.model_status(model, versions, serving, previous, now(), settings)
    events += _transitions(previous, new_status)
    if _changed(previous, new_status):
        api.patch_status(model.namespace, model.name, new_status)
    return Outcome(new_status, events)


def _apply(api: Api, obj: Obj, live: Obj | None, events: list[Event], full: bool,
           announce: bool = True) -> Obj:
    kind, name = obj["kind"], obj["metadata"]["name"]
    version = obj["metadata"]["labels"].get(labels.MODEL_VERSION, "")
    live_version = (live or {}).get("metadata", {}).get("labels", {}).get(labels.MODEL_VERSION)
    if live is not None and not full and live_version == version:
        return live
    result = api.apply(obj)
    if not announce:
        return result
    if live is None:
        events.append(Event("Normal", "Created", f"Created {kind} {name} for {version}"))
    elif live_version != version and kind == "Deployment":
        events.append(Event("Normal", "Updated", f"Rolling {kind} {name} from {live_version} to {version}"))
    elif live_version != version:
        events.append(Event("Normal", "Updated", f"Updated {kind} {name} for {version}"))
    elif _drifted(live, result):
        events.append(Event("Normal", "Repaired", f"Restored {kind} {name} (changed by hand)"))
    return result


def _rolled_out(deployment: Obj) -> bool:
    st = deployment.get("status") or {}
    want = deployment.get("spec", {}).get("replicas", 1)
    return bool(st.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
                and st.get("replicas", 0) == st.get("updatedReplicas", 0) == want
                and st.get("readyReplicas", 0) == st.get("availableReplicas", 0) == want)


def _drifted(live: Obj, result: Obj) -> bool:
    if live["kind"] == "Deployment":
        return bool(live["metadata"].get("generation") != result["metadata"].get("generation"))
    return bool(live["metadata"].get("resourceVersion") != result["metadata"].get("resourceVersion"))


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
