"""Naming the operator's API requests as the API server does (verb, resource)."""

from __future__ import annotations

import pytest

from batcomputer.operator.metrics import request_kind

BASE = "https://127.0.0.1:6443"


@pytest.mark.parametrize(("method", "path", "content_type", "expected"), [
    ("GET", "/apis/apps/v1/namespaces/ns/deployments?labelSelector=a%3Db", None,
     ("list", "deployments")),
    ("GET", "/apis/apps/v1/namespaces/ns/deployments/crime-v1", None, ("get", "deployments")),
    ("GET", "/api/v1/pods?watch=true&labelSelector=x", None, ("watch", "pods")),
    ("GET", "/api/v1/namespaces/ns/pods?watch=1", None, ("watch", "pods")),
    ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/crime-v1?fieldManager=m",
     "application/apply-patch+yaml", ("apply", "deployments")),
    ("PATCH", "/apis/batcomputer.io/v1alpha1/namespaces/ns/batmodels/crime/status",
     "application/merge-patch+json", ("patch", "batmodels/status")),
    ("POST", "/api/v1/namespaces/ns/events", "application/json", ("create", "events")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/op", None, ("update", "leases")),
    ("DELETE", "/api/v1/namespaces/ns/services/crime-v2", None, ("delete", "services")),
    ("GET", "/api/v1/namespaces/ns", None, ("get", "namespaces")),
    ("GET", "/apis/autoscaling/v2/horizontalpodautoscalers", None,
     ("list", "horizontalpodautoscalers")),
])
def test_requests_are_named_by_verb_and_resource(method: str, path: str, content_type: str | None,
                                                 expected: tuple[str, str]) -> None:
    assert request_kind(method, BASE + path, content_type) == expected
