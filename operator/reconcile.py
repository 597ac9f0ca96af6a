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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from batcomputer import apicontract
from batcomputer.operator import analysis, canary, desired, drift, history, labels, spec, status
from batcomputer.operator.errors import Rejected
from batcomputer.operator.settings import Settings

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class Api(Protocol):
    """What reconcile needs from the cluster (batcomputer.operator.k8s.Kube)."""

    def apply(self, obj: Obj) -> Obj: ...
    def children(self, namespace: str, model: str, owner_uid: str) -> dict[tuple[str, str], Obj]: ...
    def pods(self, namespace: str, model: str) -> list[Obj]: ...
    def delete(self, obj: Obj, orphan: bool = False) -> None: ...
    def patch_status(self, namespace: str, name: str, status: Obj) -> None: ...
    def patch_batmodel(self, namespace: str, name: str, patch: Obj) -> Obj: ...
    def pod_metrics(self, pod: Obj) -> str | None: ...
    def pod_info(self, pod: Obj) -> Obj | None: ...
    def may_ask(self, key: str) -> bool: ...
    def hand_over_replicas(self, deployment: Obj) -> None: ...


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: Obj
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    """Reconcile again this soon (a canary step is due), not only at the next resync."""


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
    canaries = {int(c["major"]): c for c in previous.get("canaries") or []}
    pods: list[Obj] | None = None
    if model.rollout.canary or canaries:
        pods = api.pods(model.namespace, model.name)
    plans = _canary_plans(model, api, previous, canaries, existing, pods or [])

    def listed_pods() -> list[Obj]:
        nonlocal pods
        if pods is None:
            pods = api.pods(model.namespace, model.name)
        return pods

    records = _api_records(model, api, previous, existing, listed_pods)
    try:
        for obj in _children(model, settings, plans, records):
            key = (obj["kind"], obj["metadata"]["name"])
            live = existing.get(key)
            if (live is not None and key[0] == "Deployment" and "replicas" not in obj["spec"]
                    and owns_replicas(live, settings.field_manager)):
                # Autoscaled from now on: keep today's replicas for the autoscaler to take
                # over, rather than dropping them (and the pods) to the default of 1.
                api.hand_over_replicas(live)
            applied[key] = _apply(api, obj, live, events)
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
    if pods is None and not rolled_out:
        pods = api.pods(model.namespace, model.name)
    versions = [status.version_status(model, v, applied.get(("Deployment", desired.child_name(
        model.name, v.major))), pods, settings) for v in model.versions]
    for entry in versions:
        plan = plans.get(entry["major"])
        if plan is not None and plan.status:
            entry.update(plan.status, rolledOut=False)
        if plan is not None:
            events += [Event(*e) for e in plan.events]

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
    before = labels.version_of(current) if current else None
    applied[stable_key] = _apply(api, desired.stable_service(model, target, serving), current, events,
                                 announce=False)
    if current is None:
        events.append(Event("Normal", "Created", f"Created stable Service {model.name} -> MAJOR "
                                                 f"{target.major} ({target.version})"))
    elif serving and before and before != serving:
        events.append(Event("Normal", "Promoted",
                            f"Stable Service {model.name} now routes to {serving} (was {before})"))

    adopting = {desired.canary_name(model.name, major) for major, plan in plans.items()
                if plan.orphan_canary}
    for key, obj in existing.items():
        if key not in applied:
            if key[1] in adopting:
                # Its pods stay, for the MAJOR's Deployment to adopt.
                api.delete(obj, orphan=True)
                continue
            api.delete(obj)
            if obj["metadata"].get("labels", {}).get(labels.COMPONENT) == "canary":
                continue  # the canary's end is its own event
            retired = labels.version_of(obj)
            events.append(Event("Normal", "Deleted", f"Deleted {key[0]} {key[1]} (retired {retired})"))
    if any(plan.clear_action for plan in plans.values()):
        api.patch_batmodel(model.namespace, model.name,
                           {"metadata": {"annotations": {canary.ACTION_ANNOTATION: None}}})

    new_status = status.model_status(model, versions, target, previous, now(), settings)
    new_status["canaries"] = [plan.state for plan in plans.values() if plan.state is not None]
    new_status["summary"]["canary"] = ", ".join(
        f"{c['candidate']} {'at ' + str(c['weight']) + ' %' if c['phase'] == 'Running' else c['phase']}"
        for c in new_status["canaries"])
    serving_now = {history.target(v["major"]): str(v.get("serving", "")) for v in versions}
    serving_now[history.STABLE] = str(new_status["serving"])
    new_status["history"] = history.update(
        previous.get("history") or [], serving_now,
        {str(v.version): {"artifact": v.artifact, "digest": v.digest,
                          "allowPickle": v.allow_pickle} for v in model.versions}, now(),
        how={history.target(int(c["major"])): "after a canary"
             for c in canaries.values() if c.get("phase") == "Completing"})
    events += _transitions(previous, new_status)
    if _changed(previous, new_status):
        api.patch_status(model.namespace, model.name, new_status)
    delays = [plan.requeue_after for plan in plans.values() if plan.requeue_after is not None]
    return Outcome(new_status, combine(events), min(delays) if delays else None)


COMBINED: Final = ("Created", "Deleted", "Pending", "Progressing", "Ready")
"""Reasons whose Events of one reconcile are posted as one: a new model makes five or
more objects at once and its versions change phase together, and each Event is a write
the API server must take. Warnings are each said on their own."""


def combine(events: list[Event]) -> list[Event]:
    """``events`` with those of each COMBINED reason joined into one, where the first was."""
    out: list[Event] = []
    joined: dict[str, int] = {}
    for event in events:
        if event.reason not in COMBINED or event.type != "Normal":
            out.append(event)
        elif event.reason in joined:
            first = out[joined[event.reason]]
            rest = event.message.removeprefix(f"{event.reason} ")
            out[joined[event.reason]] = Event(first.type, first.reason, f"{first.message}; {rest}")
        else:
            joined[event.reason] = len(out)
            out.append(event)
    return out


def _canary_plans(model: spec.ModelSpec, api: Api, previous: Obj, canaries: dict[int, Obj],
                  existing: dict[tuple[str, str], Obj], pods: list[Obj]) -> dict[int, canary.Plan]:
    """A canary plan for each MAJOR that has or should have one."""
    if not model.rollout.canary and not canaries:
        return {}
    serving = {e["target"]: e for e in previous.get("history") or [] if not e.get("until")}

    def scrape(some: Any) -> analysis.Snapshot:
        return analysis.total(analysis.parse(text) for pod in some
                              if (text := api.pod_metrics(pod)) is not None)

    plans = {}
    for version in model.versions:
        entry = serving.get(history.target(version.major))
        current = (canary.Served(entry["version"], entry["artifact"], entry.get("digest"),
                                 entry.get("allowPickle") is True)
                   if entry and entry.get("artifact") else None)
        of_major = [p for p in pods if (p["metadata"].get("labels") or {}).get(labels.MAJOR)
                    == str(version.major)]
        exists = ("Deployment", desired.canary_name(model.name, version.major)) in existing
        plans[version.major] = canary.plan(model, version, canaries.get(version.major), current,
                                           of_major, exists, scrape, now(), time.time())
    return plans


def _api_records(model: spec.ModelSpec, api: Api, previous: Obj,
                 existing: dict[tuple[str, str], Obj], pods: Callable[[], list[Obj]]) -> dict[int, Obj]:
    """Each MAJOR's API record: kept once made; else learned from a ready pod of the version
    that serves the MAJOR now (status.history), which is how the MAJOR's first version
    defines the API that its later MINOR and PATCH versions must keep."""
    serving = {e["target"]: e["version"] for e in previous.get("history") or [] if not e.get("until")}
    records = {}
    for version in model.versions:
        record = desired.recorded_api(existing.get(("ConfigMap", desired.child_name(
            model.name, version.major))))
        served = serving.get(history.target(version.major))
        if record is None and served and api.may_ask(
                f"{model.namespace}/{model.name}/{version.major}/{served}"):
            record = _learn_api(api, version.major, served, pods())
        if record is not None:
            records[version.major] = record
    return records


def _learn_api(api: Api, major: int, version: str, pods: list[Obj]) -> Obj | None:
    candidates = [p for p in pods if (p["metadata"].get("labels") or {}).get(labels.MAJOR) == str(major)
                  and labels.version_of(p) == version and status.pod_ready(p)
                  and not p["metadata"].get("deletionTimestamp")]
    for pod in candidates[:2]:
        info = api.pod_info(pod)
        served = (info or {}).get("api")
        if (info and info.get("version") == version and isinstance(served, dict)
                and info.get("api_fingerprint") == apicontract.fingerprint(served)):
            return {"fingerprint": info["api_fingerprint"], "api": served, "version": version,
                    "major": major}
    return None


def _children(model: spec.ModelSpec, settings: Settings, plans: dict[int, canary.Plan],
              records: dict[int, Obj]) -> list[Obj]:
    """Desired children: a canary keeps its MAJOR's Deployment on the current version and
    adds the candidate's Deployment beside it."""
    out: list[Obj] = []
    for major, record in records.items():
        out.append(desired.api_record(model, major, record))
    for version in model.versions:
        plan = plans.get(version.major)
        main = plan.main if plan is not None and plan.main is not None else version
        out.append(desired.deployment(model, main, settings,
                                      paused=plan is not None and plan.pause_main))
        out.append(desired.version_service(model, version))
        if plan is not None and plan.canary_replicas is not None:
            out.append(desired.canary_deployment(model, version, settings, plan.canary_replicas))
        out += [obj for obj in (desired.autoscaler(model, version),
                                desired.disruption_budget(model, version)) if obj is not None]
    policy = desired.network_policy(model, settings)
    if policy is not None:
        out.append(policy)
    return out


def _apply(api: Api, obj: Obj, live: Obj | None, events: list[Event], announce: bool = True) -> Obj:
    """Apply ``obj`` if ``live`` is missing, from another spec, or edited by hand."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    version = labels.version_of(obj)
    if live is None:
        result = api.apply(obj)
        if announce:
            events.append(Event("Normal", "Created", f"Created {kind} {name} for {version}"))
        return result
    live_version = labels.version_of(live)
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


def owns_replicas(deployment: Obj, manager: str) -> bool:
    """Whether ``manager``'s server-side applies own the Deployment's spec.replicas."""
    return any(entry.get("manager") == manager and entry.get("operation") == "Apply"
               and "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
               for entry in deployment["metadata"].get("managedFields") or [])


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
