"""The kubelet's probe rules, as the podlet applies them."""

from __future__ import annotations

from batcomputer.testenv.probes import ContainerProbes

HTTP = {"httpGet": {"path": "/", "port": 8080}}


def test_without_probes_a_running_container_is_started_and_ready() -> None:
    state = ContainerProbes.for_container({"name": "c"}, started_at=0)
    assert state.started and state.ready and state.due(100) == []


def test_readiness_waits_for_the_initial_delay_and_follows_the_thresholds() -> None:
    container = {"readinessProbe": {**HTTP, "initialDelaySeconds": 5, "periodSeconds": 2,
                                    "successThreshold": 2, "failureThreshold": 2}}
    state = ContainerProbes.for_container(container, started_at=100)
    assert state.started and not state.ready
    assert state.due(104) == []
    [probe] = state.due(105)
    state.record(probe, True, 105)
    assert not state.ready and state.due(106) == []  # one success of two; next at 107
    state.record(state.due(107)[0], True, 107)
    assert state.ready
    state.record(state.due(109)[0], False, 109)
    assert state.ready  # one failure of two
    state.record(state.due(111)[0], False, 111)
    assert not state.ready and state.failed is None  # readiness never restarts


def test_startup_gates_liveness_and_readiness_and_gives_up_after_its_threshold() -> None:
    container = {"startupProbe": {**HTTP, "periodSeconds": 1, "failureThreshold": 3},
                 "livenessProbe": {**HTTP, "periodSeconds": 10}, "readinessProbe": HTTP}
    state = ContainerProbes.for_container(container, started_at=0)
    assert not state.started and [p.kind for p in state.due(0)] == ["startup"]
    for t in (0, 1):
        state.record(state.due(t)[0], False, t, "connection refused")
    assert state.failed is None
    state.record(state.due(2)[0], False, 2, "connection refused")
    assert state.failed == "Startup probe failed: connection refused" and state.due(10) == []


def test_liveness_failures_after_start_ask_for_a_restart() -> None:
    container = {"startupProbe": {**HTTP, "periodSeconds": 1},
                 "livenessProbe": {**HTTP, "periodSeconds": 10, "failureThreshold": 2},
                 "readinessProbe": {**HTTP, "periodSeconds": 2}}
    state = ContainerProbes.for_container(container, started_at=0)
    state.record(state.due(0)[0], True, 0)
    assert state.started and not state.ready
    assert [p.kind for p in state.due(0)] == ["liveness", "readiness"]
    for probe in state.due(0):
        state.record(probe, True, 0)
    assert state.ready
    state.record(state.due(10)[0], False, 10, "HTTP probe failed with statuscode: 500")
    assert state.failed is None
    [liveness] = [p for p in state.due(20) if p.kind == "liveness"]
    state.record(liveness, False, 20, "HTTP probe failed with statuscode: 500")
    assert state.failed == "Liveness probe failed: HTTP probe failed with statuscode: 500"
    assert not state.ready
