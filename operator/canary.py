"""PURE: one MAJOR's canary, as a state machine kept in ``status.canaries``.

With ``spec.rollout.strategy: Canary``, a new version within a MAJOR does not replace the
running one in place. The MAJOR's Deployment ``<model>-v<M>`` keeps the current version
with all its replicas, and a second Deployment ``<model>-v<M>-canary`` runs the candidate
beside it. Both carry the MAJOR's pod labels, so the MAJOR's Service (and the stable one,
if the MAJOR is promoted) spread traffic over both by ready pods: with N current pods and
c candidate pods the candidate gets c / (N + c), so c = round(N * step / (100 - step)),
at least 1. The current version never loses a pod, so capacity never dips.

Each step lasts ``interval`` from the moment the step's candidate pods are Ready; then it
is judged (`analysis.judge`) on what each version did during the step. A pass moves to
the next step; after the last one the canary completes: the MAJOR's Deployment takes the
candidate's template while paused (so it starts no pods), the canary Deployment is deleted
with its pods orphaned, the Deployment controller adopts the candidate's ReplicaSet as the
one matching its template, and once unpaused it scales the old pods down as usual: no
candidate pod is restarted. A failure (a gate, or candidate pods
that crash) aborts: the canary Deployment goes and every request returns to the current
version; the abort stays in status until the spec names another version. The annotation
``batcomputer.io/canary`` = ``promote`` or ``abort`` decides by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import semver

from batcomputer.operator import analysis, labels
from batcomputer.operator.spec import ModelSpec, VersionSpec
from batcomputer.operator.status import pod_ready

ACTION_ANNOTATION = f"{labels.GROUP}/canary"
Obj = dict[str, Any]


@dataclass(frozen=True)
class Served:
    """The version a MAJOR serves now, as history recorded it."""

    version: str
    artifact: str
    digest: str | None = None
    allow_pickle: bool = False


@dataclass
class Plan:
    """What reconcile should make of one MAJOR under a canary."""

    state: Obj | None
    """The new status.canaries entry (None: no canary for this MAJOR)."""
    main: VersionSpec | None = None
    """The version the MAJOR's own Deployment runs (None: the spec's, as without a canary)."""
    canary_replicas: int | None = None
    """Replicas of <model>-v<M>-canary; None: it should not exist."""
    orphan_canary: bool = False
    """Delete <model>-v<M>-canary leaving its pods, for the MAJOR's Deployment to adopt."""
    pause_main: bool = False
    """Hold the MAJOR's Deployment (paused) while it takes the candidate's template, so
    that it adopts the candidate's ReplicaSet instead of starting new pods."""
    status: Obj = field(default_factory=dict)
    """Overrides of the version's status entry (phase, reason, message, serving)."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None
    clear_action: bool = False


def candidate_replicas(replicas: int, weight: int) -> int:
    """Candidate pods beside ``replicas`` current ones for a ``weight`` % share."""
    return max(1, round(replicas * weight / (100 - weight)))


def _failing(pod: Obj) -> str | None:
    for status in pod.get("status", {}).get("containerStatuses", []) or []:
        last = (status.get("lastState") or {}).get("terminated") or {}
        if last.get("exitCode"):
            return (f"candidate pods fail: exit code {last['exitCode']}: "
                    f"{(last.get('message') or '').strip()}").rstrip(": ")
    return None


def plan(model: ModelSpec, version: VersionSpec, state: Mapping[str, Any] | None,
         current: Served | None, pods: Sequence[Obj], canary_exists: bool,
         scrape: Callable[[Sequence[Obj]], analysis.Snapshot], now_iso: str, now: float) -> Plan:
    """``pods``: the MAJOR's pods; ``canary_exists``: whether <model>-v<M>-canary exists;
    ``scrape``: the summed metrics of some pods; ``now``: seconds (wall clock)."""
    rollout = model.rollout
    candidate = str(version.version)
    action = (model.annotations or {}).get(ACTION_ANNOTATION, "")
    if state is not None and state.get("candidate") != candidate:
        if current is not None and candidate == current.version:
            return Plan(None, canary_replicas=None, events=[(
                "Normal", "CanaryCancelled",
                f"Canary {state.get('candidate')} cancelled: the spec is back on {candidate}")])
        state = None  # another candidate: start afresh
    if state is None:
        if not rollout.canary or current is None or current.version == candidate:
            return Plan(None)
        state = {"major": version.major, "current": current.version,
                 "currentArtifact": current.artifact, "candidate": candidate,
                 "phase": "Running", "step": 0, "weight": rollout.steps[0], "since": now_iso}
        if current.digest:
            state["currentDigest"] = current.digest
        if current.allow_pickle:
            state["currentAllowPickle"] = True
        events = [("Normal", "CanaryStarted",
                   f"Canary {candidate} started beside {current.version} at {rollout.steps[0]} % "
                   f"of MAJOR {version.major}'s traffic")]
    else:
        state = dict(state)
        events = []
    out = Plan(state=state, events=events)
    current_spec = VersionSpec(semver.Version.parse(state["current"]), state["currentArtifact"],
                               state.get("currentDigest"), state.get("currentAllowPickle") is True)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    candidates = [p for p in live if labels.version_of(p) == candidate]
    currents = [p for p in live if labels.version_of(p) == state["current"]]
    ready_c, ready_cur = sum(map(pod_ready, candidates)), sum(map(pod_ready, currents))
    share = ready_c / (ready_c + ready_cur) if ready_c + ready_cur else 0.0
    state["share"] = f"{ready_c} of {ready_c + ready_cur} ready pods ({share:.0%})"
    phase = state["phase"]

    if phase == "Running" and action in ("promote", "abort"):
        out.clear_action = True
        if action == "abort":
            return _abort(out, state, current_spec, f"canary {candidate} aborted by hand at "
                                                    f"{state['weight']} %")
        state["phase"] = phase = "Completing"
        out.events.append(("Normal", "CanaryPromoted", f"Canary {candidate} promoted by hand at "
                                                       f"{state['weight']} %"))
    if phase == "Aborted":
        return _abort(out, state, current_spec, str(state.get("message", "")), again=True)
    if phase == "Completing":
        if canary_exists:
            # Paused, the MAJOR's Deployment takes the candidate's template without rolling;
            # once the canary Deployment is gone its ReplicaSet is an orphan that matches
            # that template, which the Deployment adopts as its new one.
            out.main, out.pause_main, out.orphan_canary, out.requeue_after = None, True, True, 1.0
        else:
            # The MAJOR's Deployment takes the candidate's template and adopts its pods.
            out.main = None
            if not currents and ready_c >= model.replicas:
                out.state = None
                out.events.append(("Normal", "CanaryCompleted",
                                   f"Canary {candidate} completed: it serves all of MAJOR "
                                   f"{version.major}, on the canary's own pods"))
                return out
            out.requeue_after = 1.0
        out.status = {"phase": "Progressing", "reason": "CanaryCompleting",
                      "message": f"canary {candidate} passed; its pods become MAJOR "
                                 f"{version.major}'s ({state['share']})",
                      "serving": state["current"] if currents else candidate}
        state["message"] = out.status["message"]
        return out

    # Running.
    weight = int(state["weight"])
    want = candidate_replicas(model.replicas, weight)
    out.main, out.canary_replicas = current_spec, want
    failure = next((f for p in candidates if (f := _failing(p))), None)
    if failure:
        return _abort(out, state, current_spec, f"canary {candidate} aborted at {weight} %: {failure}")
    step_text = f"step {state['step'] + 1} of {len(rollout.steps)}"
    if ready_c < want:
        state.pop("stepStartedAt", None)
        out.requeue_after = 2.0
        detail = f"starting {want - ready_c} candidate pod(s)"
    elif "stepStartedAt" not in state:
        state["stepStartedAt"] = now
        state["stepStarted"] = now_iso
        state["baseline"] = {"candidate": scrape(candidates).to_dict(),
                             "current": scrape(currents).to_dict()}
        out.requeue_after = rollout.interval
        detail = f"judged in {rollout.interval:g}s"
    elif now - float(state["stepStartedAt"]) < rollout.interval:
        left = rollout.interval - (now - float(state["stepStartedAt"]))
        out.requeue_after = min(left, 5.0)
        detail = f"judged in {left:.0f}s"
    else:
        base = state.get("baseline") or {}
        verdict = analysis.judge(
            analysis.delta(scrape(candidates), analysis.Snapshot.from_dict(base.get("candidate"))),
            analysis.delta(scrape(currents), analysis.Snapshot.from_dict(base.get("current"))),
            rollout.analysis)
        state["figures"] = verdict.figures
        if verdict.outcome == "fail":
            return _abort(out, state, current_spec,
                          f"canary {candidate} aborted at {weight} %: {verdict.message}")
        if verdict.outcome == "wait":
            out.requeue_after = 2.0
            detail = verdict.message
        elif state["step"] + 1 < len(rollout.steps):
            state["step"] += 1
            state["weight"] = rollout.steps[state["step"]]
            for key in ("stepStartedAt", "stepStarted", "baseline"):
                state.pop(key, None)
            out.canary_replicas = candidate_replicas(model.replicas, state["weight"])
            out.events.append(("Normal", "CanaryStep",
                               f"Canary {candidate} passed {weight} % ({verdict.message}); now "
                               f"{state['weight']} %"))
            out.requeue_after = 1.0
            step_text = f"step {state['step'] + 1} of {len(rollout.steps)}"
            detail = "starting its pods"
        else:
            state["phase"] = "Completing"
            out.events.append(("Normal", "CanaryPassed",
                               f"Canary {candidate} passed every step ({verdict.message}); "
                               "completing"))
            out.requeue_after = 0.5
            detail = "passed every step; completing"
    message = (f"canary {candidate} at {state['weight']} % ({state['share']}), {step_text}: "
               f"{detail}; {state['current']} serves the rest")
    state["message"] = message
    out.status = {"phase": "Progressing", "reason": "Canary", "message": message,
                  "serving": state["current"]}
    return out


def _abort(out: Plan, state: Obj, current_spec: VersionSpec, message: str, again: bool = False) -> Plan:
    if not again:
        out.events.append(("Warning", "CanaryAborted", message))
    state["phase"], state["message"] = "Aborted", message
    for key in ("stepStartedAt", "baseline"):
        state.pop(key, None)
    out.state, out.main, out.canary_replicas = state, current_spec, None
    out.status = {"phase": "Degraded", "reason": "CanaryAborted",
                  "message": f"{message}; {state['current']} serves all of it",
                  "serving": state["current"]}
    return out
