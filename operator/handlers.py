"""kopf wiring only: every trigger runs the same reconcile for the BatModel concerned."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any, cast

import kopf

from batcomputer.operator import k8s, labels
from batcomputer.operator.reconcile import Outcome, reconcile
from batcomputer.operator.settings import Settings

log = logging.getLogger(__name__)


def build_registry(config: Settings, kube: k8s.Kube) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
    waiting: set[tuple[str, str]] = set()
    guard = threading.Lock()
    resource = (labels.GROUP, labels.VERSION, labels.PLURAL)

    def run(body: kopf.Body | dict[str, Any], full: bool) -> Outcome:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if not full:
            # Coalesce bursts of child events: one quick reconcile waiting per model is
            # enough, since it reads everything afresh when it starts.
            with guard:
                if key in waiting:
                    return Outcome(status={})
                waiting.add(key)
        with locks[key]:
            if not full:
                with guard:
                    waiting.discard(key)
            # Triggers may carry a body older than our last status write: read it afresh.
            fresh = kube.batmodel(meta["namespace"], meta["name"])
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return Outcome(status={})
            outcome = reconcile(fresh, kube, config, full=full)
        for event in outcome.events:
            (kopf.warn if event.type == "Warning" else kopf.info)(
                cast(kopf.Body, fresh), reason=event.reason, message=event.message)
            log.info("%s/%s: %s", meta["namespace"], meta["name"], event.message)
        return outcome

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Handler progress lives in annotations, so status is ours alone.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=labels.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=labels.GROUP, key="last-handled-configuration")
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 8

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as operator.k8s: in a pod, the API server named by
        # KUBERNETES_SERVICE_HOST/PORT with the mounted token (kopf's own service-account
        # login assumes https://kubernetes.default.svc resolves, which needs cluster DNS);
        # elsewhere the kubeconfig.
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, field="spec", registry=registry)
    def on_spec(body: kopf.Body, **_: Any) -> None:
        run(body, full=True)

    @kopf.timer(*resource, interval=config.resync_seconds, sharp=False, registry=registry)
    def resync(body: kopf.Body, **_: Any) -> None:
        run(body, full=True)

    @kopf.on.event("apps", "v1", "deployments", labels={labels.MANAGED_BY: labels.MANAGER},
                   registry=registry)
    @kopf.on.event("", "v1", "services", labels={labels.MANAGED_BY: labels.MANAGER},
                   registry=registry)
    def on_child(body: kopf.Body, type: str | None, **_: Any) -> None:
        """A child changed or was deleted: refresh status and put back what is missing.
        (The initial listing is covered by resume; hand edits of fields are undone by the
        full reconcile of the periodic resync.)"""
        if type is None or (type == "MODIFIED" and body.get("kind") == "Service"):
            return
        meta = body["metadata"]
        model = meta.get("labels", {}).get(labels.MODEL)
        if not model:
            return
        run({"metadata": {"namespace": meta["namespace"], "name": model}}, full=False)

    return registry


def run_operator(settings: Settings) -> None:
    kube = k8s.Kube(k8s.api_client(), settings.field_manager)
    registry = build_registry(settings, kube)
    kopf.run(registry=registry, standalone=True, clusterwide=not settings.namespaces,
             namespaces=settings.namespaces, liveness_endpoint=settings.liveness_endpoint)
