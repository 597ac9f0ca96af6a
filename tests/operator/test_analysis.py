"""Canary analysis from the servers' own /metrics text."""

from __future__ import annotations

from batcomputer.operator.analysis import Snapshot, delta, judge, p99_ms, parse, shift, total
from batcomputer.operator.spec import Analysis

TEXT = """\
# HELP batcomputer_http_requests_total HTTP requests by route and status
# TYPE batcomputer_http_requests_total counter
batcomputer_http_requests_total{route="/api/predict",status="200"} 90.0
batcomputer_http_requests_total{route="/api/predict",status="503"} 6.0
batcomputer_http_requests_total{route="/api/predict",status="422"} 4.0
batcomputer_http_requests_total{route="/healthz",status="200"} 1000.0
# HELP batcomputer_http_request_duration_seconds Time spent handling a request, by route
# TYPE batcomputer_http_request_duration_seconds histogram
batcomputer_http_request_duration_seconds_bucket{le="0.001",route="/api/predict"} 50.0
batcomputer_http_request_duration_seconds_bucket{le="0.01",route="/api/predict"} 98.0
batcomputer_http_request_duration_seconds_bucket{le="0.1",route="/api/predict"} 100.0
batcomputer_http_request_duration_seconds_bucket{le="+Inf",route="/api/predict"} 100.0
batcomputer_http_request_duration_seconds_count{route="/api/predict"} 100.0
batcomputer_http_request_duration_seconds_sum{route="/api/predict"} 0.5
# HELP batcomputer_prediction_probability_total Predicted probabilities
# TYPE batcomputer_prediction_probability_total counter
batcomputer_prediction_probability_total{bin="0.1",label="caught"} 30.0
batcomputer_prediction_probability_total{bin="0.8",label="caught"} 60.0
batcomputer_prediction_probability_total{bin="0.1",label="not_caught"} 60.0
batcomputer_prediction_probability_total{bin="0.8",label="not_caught"} 30.0
"""


def test_a_servers_metrics_become_a_snapshot() -> None:
    snap = parse(TEXT)
    assert (snap.requests, snap.errors) == (100.0, 6.0)
    assert snap.latency == {"0.001": 50.0, "0.01": 98.0, "0.1": 100.0, "+Inf": 100.0}
    assert snap.bins["caught"][1] == 30.0 and snap.bins["caught"][8] == 60.0
    assert Snapshot.from_dict(snap.to_dict()) == snap


def test_deltas_sum_over_pods_and_never_go_negative() -> None:
    both = total([parse(TEXT), parse(TEXT)])
    assert both.requests == 200.0 and both.bins["caught"][8] == 120.0
    assert delta(parse(TEXT), both).requests == 0.0  # a restarted pod's counters fell back


def test_p99_is_interpolated_in_its_bucket() -> None:
    p99 = p99_ms({"0.001": 50.0, "0.01": 98.0, "0.1": 100.0, "+Inf": 100.0})
    assert p99 is not None and abs(p99 - 55.0) < 1e-6  # rank 99: half-way into 0.01-0.1
    assert p99_ms({}) is None


def test_shift_is_the_largest_total_variation_distance() -> None:
    same = {"caught": [0, 1, 0, 0, 0, 0, 0, 0, 3, 0]}
    assert shift(same, {"caught": [0, 2, 0, 0, 0, 0, 0, 0, 6, 0]}) == 0.0
    assert shift(same, {"caught": [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]}) == 1.0
    assert shift(same, {}) is None


def snap(requests: float, errors: float = 0, slow: bool = False, bins: list[float] | None = None) -> Snapshot:
    latency = ({"0.01": requests * 0.5, "0.1": requests * 0.9, "0.5": requests, "+Inf": requests}
               if slow else {"0.001": requests, "+Inf": requests})
    return Snapshot(requests, errors, latency, {"caught": bins or [0, 0, 0, 0, 0, 0, 0, 0, requests, 0]})


def test_each_gate_fails_with_its_figures_and_a_quiet_candidate_waits() -> None:
    gates = Analysis(min_requests=20, max_error_rate=0.01, max_latency_p99_ms=50, max_prediction_shift=0.1)
    current = snap(200)
    assert judge(snap(10), current, gates).outcome == "wait"
    failed = judge(snap(40, errors=5), current, gates)
    assert (failed.outcome, failed.message) == ("fail", "error rate 12.5% > 1.0% (5 of 40 requests)")
    slow = judge(snap(40, slow=True), current, gates)
    assert slow.outcome == "fail" and slow.message.startswith("latency p99 ") and "> 50 ms" in slow.message
    moved = judge(snap(40, bins=[40, 0, 0, 0, 0, 0, 0, 0, 0, 0]), current, gates)
    assert moved.outcome == "fail" and moved.message.startswith("prediction shift 1.000 > 0.1")
    good = judge(snap(40), current, gates)
    assert good.outcome == "pass" and good.figures["requests"] == 40 and good.figures["predictionShift"] == 0
