"""Prometheus metrics, correct under several gunicorn workers.

With a multiprocess directory, every process writes its values to memory-mapped
files there and /metrics aggregates them all (prometheus_client's multiprocess
mode; PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is first
imported, which `batcomputer serve` does). Without one (tests, a single
process), a private registry is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                          2.5)
UNMATCHED: Final = "<unmatched>"


class Metrics:
    """Request, latency, prediction and model-info metrics."""

    content_type: Final = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None and not getattr(values.ValueClass, "_multiprocess",
                                                        False):
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client "
                               "is imported for multiprocess metrics")
        # In multiprocess mode the metrics live in files, not in a registry.
        self._registry = None if multiprocess_dir is not None else CollectorRegistry()
        registry = self._registry
        self.requests = Counter("batcomputer_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=registry)
        self.latency = Histogram("batcomputer_http_request_duration_seconds",
                                 "Time spent handling a request, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.predictions = Counter("batcomputer_predictions",
                                   "Rows predicted, by model and version", ["model", "version"],
                                   registry=registry)
        self.probability = Counter(
            "batcomputer_prediction_probability",
            "Predicted probabilities by label, counted in bins of width 0.1 (bin = lower edge): "
            "the distribution a canary's predictions are compared on",
            ["label", "bin"], registry=registry)
        self.model_info = Gauge("batcomputer_model_info",
                                "The model served (always 1; the labels carry the information)",
                                ["model", "version", "mode", "metadata_digest"],
                                multiprocess_mode="max", registry=registry)
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def set_model(self, model: str, version: str, mode: str, digest: str) -> None:
        self.model_info.labels(model, version, mode, digest).set(1)

    def count_predictions(self, model: str, version: str) -> Counter:
        """The counter child to increment by the number of rows predicted."""
        return self.predictions.labels(model, version)

    def probability_recorder(self, labels: Sequence[str]) -> Callable[[np.ndarray], None]:
        """A function that counts answers' probability bins ([rows, labels] of 0-9)."""
        children = [[self.probability.labels(label, f"{b / 10:.1f}") for b in range(10)]
                    for label in labels]

        def record(bins: np.ndarray) -> None:
            if len(bins) == 1:  # one row: one increment per label
                for column, b in enumerate(bins[0].tolist()):
                    children[column][b].inc()
                return
            for column in range(bins.shape[1]):
                counts = np.bincount(bins[:, column], minlength=10)
                for b in np.flatnonzero(counts).tolist():
                    children[column][b].inc(int(counts[b]))
        return record

    def observe(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)


def worker_exited(multiprocess_dir: Path, pid: int) -> None:
    """Gunicorn child_exit hook: drop the live gauges of a dead worker."""
    multiprocess.mark_process_dead(pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]
