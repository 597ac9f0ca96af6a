"""The canary state machine, step by step, from dicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import semver

from batcomputer.operator import canary
from batcomputer.operator.analysis import Snapshot
from batcomputer.operator.spec import Analysis, ModelSpec, Rollout, VersionSpec

CANDIDATE = VersionSpec(semver.Version.parse("1.2.0"), "http://r/1.2.0/")
ROLLOUT = Rollout(strategy="Canary", steps=(10, 50), interval=60,
                  analysis=Analysis(min_requests=10, max_error_rate=0.01))
MODEL = ModelSpec(name="crime", namespace="ns", uid="u", generation=2, versions=(CANDIDATE,),
                  promoted=CANDIDATE, replicas=9, rollout=ROLLOUT)
CURRENT = canary.Served("1.1.0", "http://r/1.1.0/", "sha256:" + "c" * 64)


def pod(version: str, ready: bool = True, crashed: bool = False, requests: float = 0,
        errors: float = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if crashed:
        status["containerStatuses"] = [{"lastState": {"terminated": {"exitCode": 3,
                                                                    "message": "Refusing to serve: x"}}}]
    return {"metadata": {"name": f"p-{version}", "labels": {"batcomputer.io/version": version}},
            "status": status, "snapshot": Snapshot(requests, errors, {"0.001": requests, "+Inf": requests},
                                                   {"caught": [0, 0, 0, 0, 0, 0, 0, 0, requests, 0]})}


def scrape(pods: Sequence[dict[str, Any]]) -> Snapshot:
    from batcomputer.operator.analysis import total
    return total(p["snapshot"] for p in pods)


def step(state: dict[str, Any] | None, pods: list[dict[str, Any]], now: float, exists: bool = True,
         model: ModelSpec = MODEL) -> canary.Plan:
    return canary.plan(model, CANDIDATE, state, CURRENT, pods, exists, scrape, f"t{now:g}", now)


def test_shares_are_exact_by_ready_pods_and_the_current_version_keeps_every_pod() -> None:
    assert [canary.candidate_replicas(9, w) for w in (10, 50)] == [1, 9]  # 1/10 and 9/18
    assert canary.candidate_replicas(2, 10) == 1  # never zero: 1/3 = 33 %, said in status


def test_a_good_candidate_steps_through_and_completes_on_its_own_pods() -> None:
    currents = [pod("1.1.0", requests=100) for _ in range(9)]
    first = step(None, currents, 0, exists=False)
    assert first.state is not None and first.state["phase"] == "Running"
    assert (first.main and str(first.main.version), first.canary_replicas) == ("1.1.0", 1)
    assert first.main is not None and first.main.digest == CURRENT.digest
    assert first.events[0][1] == "CanaryStarted" and first.requeue_after == 2.0
    ready = [*currents, pod("1.2.0", requests=0)]
    started = step(first.state, ready, 1)
    assert started.state is not None and started.state["stepStartedAt"] == 1
    assert started.state["share"] == "1 of 10 ready pods (10%)" and started.requeue_after == 60
    assert "canary 1.2.0 at 10 % (1 of 10 ready pods (10%)), step 1 of 2" in started.status["message"]
    assert step(started.state, ready, 30).requeue_after == 5.0  # not yet
    later = [*(pod("1.1.0", requests=200) for _ in range(9)), pod("1.2.0", requests=20)]
    passed = step(started.state, later, 61)
    assert passed.state is not None and (passed.state["step"], passed.state["weight"]) == (1, 50)
    assert passed.canary_replicas == 9 and passed.events[0][1] == "CanaryStep"
    half = [*later[:9], *(pod("1.2.0", requests=20) for _ in range(9))]
    again = step(passed.state, half, 62)
    more = [*(pod("1.1.0", requests=300) for _ in range(9)), *(pod("1.2.0", requests=40) for _ in range(9))]
    done = step(again.state, more, 200)
    assert done.state is not None and done.state["phase"] == "Completing"
    orphaning = step(done.state, more, 201, exists=True)
    # Paused on the candidate's template while the canary's ReplicaSet is orphaned.
    assert orphaning.orphan_canary and orphaning.pause_main and orphaning.main is None
    adopting = step(done.state, more, 202, exists=False)
    assert adopting.main is None and adopting.canary_replicas is None and adopting.state is not None
    finished = step(done.state, more[9:], 203, exists=False)
    assert finished.state is None and finished.events[-1][1] == "CanaryCompleted"


def test_a_gate_aborts_once_and_stays_aborted_until_the_spec_changes() -> None:
    currents = [pod("1.1.0", requests=100) for _ in range(9)]
    started = step(step(None, currents, 0, exists=False).state, [*currents, pod("1.2.0")], 1)
    bad = step(started.state, [*currents, pod("1.2.0", requests=40, errors=5)], 62)
    assert bad.state is not None and bad.state["phase"] == "Aborted" and bad.canary_replicas is None
    assert bad.events == [("Warning", "CanaryAborted", "canary 1.2.0 aborted at 10 %: error rate "
                                                       "12.5% > 1.0% (5 of 40 requests)")]
    assert bad.status["phase"] == "Degraded" and bad.status["serving"] == "1.1.0"
    still = step(bad.state, currents, 70)
    assert still.events == [] and still.state is not None and still.state["phase"] == "Aborted"
    back = dataclasses.replace(MODEL, versions=(VersionSpec(semver.Version.parse("1.1.0"), "http://r/1.1.0/"),))
    cancelled = canary.plan(back, back.versions[0], bad.state, CURRENT, currents, False, scrape, "t", 80)
    assert cancelled.state is None and cancelled.events[0][1] == "CanaryCancelled"


def test_crashing_candidate_pods_abort_and_the_annotation_decides_by_hand() -> None:
    currents = [pod("1.1.0") for _ in range(9)]
    first = step(None, currents, 0, exists=False)
    crashed = step(first.state, [*currents, pod("1.2.0", ready=False, crashed=True)], 5)
    assert crashed.state is not None and crashed.state["phase"] == "Aborted"
    assert "candidate pods fail: exit code 3: Refusing to serve: x" in crashed.events[0][2]
    promote = dataclasses.replace(MODEL, annotations={canary.ACTION_ANNOTATION: "promote"})
    by_hand = step(first.state, currents, 5, model=promote)
    assert by_hand.clear_action and by_hand.state is not None and by_hand.state["phase"] == "Completing"
    abort = dataclasses.replace(MODEL, annotations={canary.ACTION_ANNOTATION: "abort"})
    stopped = step(first.state, currents, 5, model=abort)
    assert stopped.clear_action and stopped.state is not None and stopped.state["phase"] == "Aborted"
    assert stopped.events[0][2] == "canary 1.2.0 aborted by hand at 10 %"


def test_no_canary_without_the_strategy_or_anything_serving() -> None:
    rolling = dataclasses.replace(MODEL, rollout=Rollout())
    assert canary.plan(rolling, CANDIDATE, None, CURRENT, [], False, scrape, "t", 0).state is None
    assert canary.plan(MODEL, CANDIDATE, None, None, [], False, scrape, "t", 0).state is None
