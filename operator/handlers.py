"""kopf wiring only: every trigger runs the same reconcile for the BatModel concerned.

Admission: with a webhook configured, BatModels are reviewed at create and update
(`admission`): artifacts that declare another version, break a digest pin or change
their MAJOR's API are refused.

Triggers: the BatModel's own changes (as the watch lists them at start, then its spec,
annotations or deletion); changes to its children, seen by the operator's watch caches
(k8s.Informer; hand edits are undone within a second); changes to its pods that are not
Ready (a crash, an image or scheduling failure reaches the status within a second); and
the resync schedule. What watches report queues the model's name for WORKERS threads
(`controller.Controller.request`): BatModel changes and child changes each in a queue of
their own. Reconciles read children and pods from those caches, and those that a watch
started read the BatModel as last seen (the watch's, or the answer to the operator's own
status write); the resync reads it afresh. So an unchanged model costs one read per
resync and no write. Only a watching handler is registered for BatModels (no kopf
create/update/resume, timer or deletion handler), so kopf writes nothing on them: no
progress annotations and no finalizer. A BatModel deleted while the operator is down goes
at once, and garbage collection removes its children.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any, Final

import kopf

from batcomputer.operator import admission, k8s, labels, leader, metrics, status, webhook
from batcomputer.operator.controller import Controller
from batcomputer.operator.settings import Settings

log = logging.getLogger(__name__)

TRIGGERS: Final = frozenset({"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
                             "HorizontalPodAutoscaler", "Pod"})
"""The kinds whose changes start a reconcile of their model (its API records, ConfigMaps,
are repaired by the periodic resync)."""
WORKERS: Final = 16
"""Threads reconciling what watches report, for each of the two queues (BatModel changes,
child changes). A reconcile mostly waits for the API server (a new model's is 5 applies, a
status patch and an Event)."""


def build_registry(config: Settings, kube: k8s.Kube) -> tuple[kopf.OperatorRegistry, Controller]:
    registry = kopf.OperatorRegistry()
    # Events are posted by operator.k8s, not kopf.info/warn: reconciles also run in the
    # resync and pod-watch threads, outside kopf's handler context.
    controller = Controller(kube, config, lambda body, event: kube.post_event(
        body, event.type, event.reason, event.message))
    stop = threading.Event()
    resource = (labels.GROUP, labels.VERSION, labels.PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # No change-detecting kopf handler is registered (see `on_model`), so kopf keeps no
        # progress or diff-base annotations on BatModels and posts no Events of its own.
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 8
        if config.webhook:
            settings.admission.server, ca_bundle = webhook.server(config)
            hook = webhook.configuration(config, ca_bundle)

            def keep_registered() -> None:
                while not stop.is_set():
                    kube.register_webhook(hook)
                    stop.wait(config.resync_seconds)
            threading.Thread(target=keep_registered, name="webhook", daemon=True).start()
        threading.Thread(target=controller.resync_forever, args=(stop,), name="resync",
                         daemon=True).start()
        # Changes are queued by name for workers, so that a burst for one model coalesces
        # into one reconcile instead of holding up the watch that reported it. Reconciles
        # mostly wait for the API server: many workers keep it busy.
        for i in range(WORKERS):
            for spec in (True, False):
                threading.Thread(target=controller.work, args=(stop, spec),
                                 name=f"{'models' if spec else 'children'}-{i}",
                                 daemon=True).start()
        # Watch caches of the children and pods: reconciles read them instead of listing,
        # and their changes start reconciles.
        kube.start_informers(config.namespaces, stop, on_change)
        if config.metrics_port:
            try:
                metrics.serve(config.metrics_port, config.metrics_addr,
                              controller.queue_depth, controller.tracked)
            except OSError as exc:
                log.error("Cannot serve metrics on %s:%s: %s", config.metrics_addr,
                          config.metrics_port, exc)

    @kopf.on.cleanup(registry=registry)
    def shutdown(**_: Any) -> None:
        stop.set()
        for queue in controller.queues.values():
            queue.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as operator.k8s: in a pod, the API server named by
        # KUBERNETES_SERVICE_HOST/PORT with the mounted token (kopf's own service-account
        # login assumes https://kubernetes.default.svc resolves, which needs cluster DNS);
        # elsewhere the kubeconfig.
        return kopf.login_via_client(**kwargs)

    if config.webhook:
        # Reviews run on threads of their own: kopf's handler threads may all be busy
        # reconciling (say, 200 models created at once), and the API server is waiting.
        reviewers = concurrent.futures.ThreadPoolExecutor(max_workers=4,
                                                          thread_name_prefix="admission")

        # Registered with the API server by webhook.configuration (failurePolicy Ignore).
        @kopf.on.validate(*resource, id=webhook.HANDLER, operations=["CREATE", "UPDATE"],
                          ignore_failures=True, registry=registry)
        async def review(body: kopf.Body, warnings: list[str], **kwargs: Any) -> None:
            result = await asyncio.get_running_loop().run_in_executor(
                reviewers, admission.review, kwargs.get("old"), body, admission.fetch_metadata)
            warnings.extend(result.warnings)
            if result.problems:
                raise kopf.AdmissionError("; ".join(result.problems), code=422)

    @kopf.on.event(*resource, registry=registry)
    def on_model(event: kopf.RawEvent, type: str | None, **_: Any) -> None:
        """Every BatModel the watch reports (those listed at start, then each change):
        remembered (reconciles start from it) and, when it changed in what a reconcile
        acts on (`Controller.changed`), reconciled. A watching handler, not kopf's
        create/update/resume handlers: those keep progress and the last-handled spec in
        annotations, two to four more writes of each BatModel per change."""
        obj: dict[str, Any] = dict(event["object"])
        meta: dict[str, Any] = obj["metadata"]
        if type == "DELETED":
            kube.forget_model(obj)
            controller.forget(meta["namespace"], meta["name"])
            return
        kube.remember_model(obj)
        if controller.changed(obj):
            # On the workers, not kopf's handler thread: kopf keeps each event, and all
            # its bookkeeping, until the handler returns (a thousand models created at
            # once were 50 MB of waiting events).
            controller.request(meta["namespace"], meta["name"], spec=True)

    def on_change(kind: str, event_type: str, obj: dict[str, Any]) -> None:
        """A child or pod changed (the cache already has it). A child changed or deleted:
        repair it and refresh status; our own writes arrive here too and find nothing to
        do. A pod: only when it tells something new (status.pod_needs_attention)."""
        meta = obj.get("metadata", {})
        model = (meta.get("labels") or {}).get(labels.MODEL)
        if not model or kind not in TRIGGERS:
            return
        if kind == "Pod" and not status.pod_needs_attention(event_type, obj):
            return
        controller.request(meta["namespace"], model)

    return registry, controller


def run_operator(settings: Settings) -> None:
    api = k8s.api_client()
    kube = k8s.Kube(api, settings.field_manager, settings.pod_address_map)
    registry, _ = build_registry(settings, kube)
    lead: k8s.Leadership | None = None
    if settings.leader_election:
        # Several replicas, one active: wait for the Lease (answering health probes), then
        # keep it; losing it ends the process, whose container restarts as a standby.
        lead = k8s.Leadership(api, settings.operator_namespace, settings.lease_name,
                                 leader.identity(), settings.lease_seconds)
        with leader.StandbyHealth(settings.liveness_endpoint):
            lead.acquire()
        lead.keep(lambda: os._exit(3))
    try:
        kopf.run(registry=registry, standalone=True, clusterwide=not settings.namespaces,
                 namespaces=settings.namespaces, liveness_endpoint=settings.liveness_endpoint)
    finally:
        if lead is not None:
            lead.release()
