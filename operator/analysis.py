"""PURE: a canary step's verdict, from the servers' own Prometheus metrics.

The operator reads `/metrics` of every pod of both versions (no Prometheus server needed),
sums them per version (`Snapshot`), and at the end of a step compares what happened
during the step (`delta` from the snapshot taken when the step began):

- requests and errors: ``batcomputer_http_requests_total{route="/api/predict"}``, an error
  being a 5xx answer;
- latency: ``batcomputer_http_request_duration_seconds`` of /api/predict, p99 interpolated
  in its buckets as PromQL's histogram_quantile does;
- predictions: ``batcomputer_prediction_probability_total{label, bin}``, the predicted
  probability of each label counted in bins of 0.1; the shift is the total-variation
  distance between the two versions' distributions (half the sum of absolute differences
  of the bin shares), the largest over labels: 0 for the same behaviour, 1 for disjoint.

Counters of a pod that restarted mid-step go back to zero; deltas are clamped at zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from batcomputer.operator.spec import Analysis

ROUTE = "/api/predict"
BINS = 10


@dataclass
class Snapshot:
    requests: float = 0.0
    errors: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    """Cumulative bucket counts by upper bound ("0.005", ..., "+Inf")."""
    bins: dict[str, list[float]] = field(default_factory=dict)
    """Label -> count per probability bin."""

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency": dict(self.latency),
                "bins": {k: list(v) for k, v in self.bins.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> Snapshot:
        raw = raw or {}
        return cls(float(raw.get("requests", 0)), float(raw.get("errors", 0)),
                   {str(k): float(v) for k, v in (raw.get("latency") or {}).items()},
                   {str(k): [float(x) for x in v] for k, v in (raw.get("bins") or {}).items()})


def parse(text: str) -> Snapshot:
    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "batcomputer_http_requests_total" and labels.get("route") == ROUTE:
                snap.requests += sample.value
                if labels.get("status", "").startswith("5"):
                    snap.errors += sample.value
            elif (sample.name == "batcomputer_http_request_duration_seconds_bucket"
                  and labels.get("route") == ROUTE):
                le = _le(labels.get("le", "+Inf"))
                snap.latency[le] = snap.latency.get(le, 0.0) + sample.value
            elif sample.name == "batcomputer_prediction_probability_total":
                index = min(int(round(float(labels.get("bin", "0")) * BINS)), BINS - 1)
                counts = snap.bins.setdefault(labels.get("label", ""), [0.0] * BINS)
                counts[index] += sample.value
    return snap


def _le(text: str) -> str:
    return "+Inf" if text in ("+Inf", "inf") else f"{float(text):g}"


def total(snaps: Iterable[Snapshot]) -> Snapshot:
    out = Snapshot()
    for snap in snaps:
        out.requests += snap.requests
        out.errors += snap.errors
        for le, count in snap.latency.items():
            out.latency[le] = out.latency.get(le, 0.0) + count
        for label, counts in snap.bins.items():
            mine = out.bins.setdefault(label, [0.0] * BINS)
            for i, count in enumerate(counts):
                mine[i] += count
    return out


def delta(now: Snapshot, then: Snapshot) -> Snapshot:
    """What happened between two snapshots (never negative)."""
    return Snapshot(
        requests=max(now.requests - then.requests, 0.0), errors=max(now.errors - then.errors, 0.0),
        latency={le: max(count - then.latency.get(le, 0.0), 0.0) for le, count in now.latency.items()},
        bins={label: [max(c - p, 0.0) for c, p in zip(counts, then.bins.get(label, [0.0] * BINS),
                                                      strict=True)]
              for label, counts in now.bins.items()})


def p99_ms(latency: Mapping[str, float]) -> float | None:
    """The 99th percentile from cumulative buckets, interpolated within its bucket."""
    buckets = sorted(((float(le) if le != "+Inf" else float("inf")), count)
                     for le, count in latency.items())
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = 0.99 * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound * 1000  # as histogram_quantile: the highest finite bound
            inside = count - lower_count
            fraction = (rank - lower_count) / inside if inside else 1.0
            return (lower_bound + (bound - lower_bound) * fraction) * 1000
        lower_bound, lower_count = bound, count
    return None


def shift(a: Mapping[str, list[float]], b: Mapping[str, list[float]]) -> float | None:
    """Largest total-variation distance between the two, over labels with data in both."""
    distances = []
    for label, counts in a.items():
        other = b.get(label)
        if not other or sum(counts) <= 0 or sum(other) <= 0:
            continue
        total_a, total_b = sum(counts), sum(other)
        distances.append(0.5 * sum(abs(x / total_a - y / total_b)
                                   for x, y in zip(counts, other, strict=True)))
    return max(distances) if distances else None


@dataclass(frozen=True)
class Verdict:
    outcome: str
    """pass | wait | fail"""
    message: str
    figures: dict[str, Any]


def judge(candidate: Snapshot, current: Snapshot, gates: Analysis) -> Verdict:
    """A step's verdict from what each version did during it."""
    rate = candidate.errors / candidate.requests if candidate.requests else 0.0
    p99 = p99_ms(candidate.latency)
    moved = shift(candidate.bins, current.bins)
    figures: dict[str, Any] = {
        "requests": int(candidate.requests), "currentRequests": int(current.requests),
        "errorRate": round(rate, 4),
        "currentErrorRate": round(current.errors / current.requests, 4) if current.requests else 0.0,
        "latencyP99Ms": None if p99 is None else round(p99, 2),
        "currentLatencyP99Ms": None if (q := p99_ms(current.latency)) is None else round(q, 2),
        "predictionShift": None if moved is None else round(moved, 4)}
    if gates.max_error_rate is not None and candidate.requests and rate > gates.max_error_rate:
        return Verdict("fail", f"error rate {rate:.1%} > {gates.max_error_rate:.1%} "
                               f"({int(candidate.errors)} of {int(candidate.requests)} requests)",
                       figures)
    if candidate.requests < max(gates.min_requests, 1):
        return Verdict("wait", f"waiting for {max(gates.min_requests, 1)} requests to the candidate "
                               f"(has {int(candidate.requests)})", figures)
    if gates.max_latency_p99_ms is not None and p99 is not None and p99 > gates.max_latency_p99_ms:
        return Verdict("fail", f"latency p99 {p99:.1f} ms > {gates.max_latency_p99_ms:g} ms", figures)
    if gates.max_prediction_shift is not None and moved is not None and moved > gates.max_prediction_shift:
        return Verdict("fail", f"prediction shift {moved:.3f} > {gates.max_prediction_shift:g} "
                               "(total-variation distance of the predicted probabilities)", figures)
    summary = f"{int(candidate.requests)} requests, error rate {rate:.1%}"
    if p99 is not None:
        summary += f", p99 {p99:.1f} ms"
    if moved is not None:
        summary += f", prediction shift {moved:.3f}"
    return Verdict("pass", summary, figures)
