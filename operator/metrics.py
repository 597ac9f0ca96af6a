"""The operator's own Prometheus metrics: reconciles, their duration and failures, the
requests its Kubernetes client makes (by verb and resource), and the resync queue.

Served on their own port (``metrics_port``, /metrics), beside kopf's liveness endpoint.
kopf's own requests (its watch of BatModels) go through its own client and are not
counted here; the API server's apiserver_request_total
counts everything (bench/operator.py reads both).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY: Final = CollectorRegistry(auto_describe=True)

RECONCILES: Final = Counter("batcomputer_operator_reconciles", "Reconciles, by result (ok, failed)",
                            ["result"], registry=REGISTRY)
RECONCILE_SECONDS: Final = Histogram(
    "batcomputer_operator_reconcile_duration_seconds", "Time one reconcile of one model took",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
API_REQUESTS: Final = Counter(
    "batcomputer_operator_api_requests", "Requests to the Kubernetes API by the operator's "
    "client, by verb (get, list, watch, create, apply, patch, update, delete) and resource",
    ["verb", "resource"], registry=REGISTRY)
API_ERRORS: Final = Counter("batcomputer_operator_api_errors",
                            "Requests to the Kubernetes API that failed, by HTTP status "
                            "(0: no answer)", ["code"], registry=REGISTRY)
QUEUE: Final = Gauge("batcomputer_operator_queue_depth",
                     "Models whose reconcile is due now and not yet run", registry=REGISTRY)
MODELS: Final = Gauge("batcomputer_operator_models", "BatModels the operator tracks",
                      registry=REGISTRY)

# /api/v1/namespaces/NS/pods/NAME/status, /apis/apps/v1/deployments, ...
PATH_RE: Final = re.compile(r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/[^/]+)?/(?P<rest>.*)$")


def request_kind(method: str, url: str, content_type: str | None) -> tuple[str, str]:
    """(verb, resource) of one request, as the API server names them."""
    parts = urlsplit(url)
    match = PATH_RE.match(parts.path)
    segments = match.group("rest").split("/") if match else []
    resource = segments[0] if segments and segments[0] else "namespaces"
    if len(segments) >= 3 and segments[2]:
        resource = f"{resource}/{segments[2]}"  # a subresource: status, scale, log...
    named = len(segments) >= 2 and bool(segments[1])
    method = method.upper()
    if method == "GET":
        verb = "watch" if parse_qs(parts.query).get("watch") in (["true"], ["1"]) else (
            "get" if named else "list")
    elif method == "PATCH":
        verb = "apply" if (content_type or "").startswith("application/apply-patch") else "patch"
    else:
        verb = {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
    return verb, resource


def count_request(method: str, url: str, content_type: str | None) -> None:
    API_REQUESTS.labels(*request_kind(method, url, content_type)).inc()


def serve(port: int, address: str, queue_depth: Callable[[], int],
          models: Callable[[], int]) -> None:
    """Serve /metrics on ``address``:``port`` from a daemon thread."""
    QUEUE.set_function(queue_depth)
    MODELS.set_function(models)
    start_http_server(port, addr=address, registry=REGISTRY)
