"""The only module that talks to the Kubernetes API.

Children are written with server-side apply under one field manager, forcing
ownership of the fields we set, so hand edits of those fields are undone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, Final

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from batcomputer.operator import labels, metrics
from batcomputer.operator.desired import SERVER_PORT
from batcomputer.operator.errors import Rejected

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def api_client() -> client.ApiClient:
    """In-cluster credentials in a pod, else the kubeconfig ($KUBECONFIG or ~/.kube/config);
    every request it makes is counted (operator.metrics)."""
    try:
        config.load_incluster_config()
        api = client.ApiClient()
    except config.ConfigException:
        api = config.new_client_from_config()
    return counted(api)


def counted(api: client.ApiClient) -> client.ApiClient:
    """Count each request by verb and resource, and each failure by status."""
    send = api.rest_client.request

    def request(method: str, url: str, headers: Obj | None = None, *args: Any,
                **kwargs: Any) -> Any:
        metrics.count_request(method, url, (headers or {}).get("Content-Type"))
        try:
            return send(method, url, headers, *args, **kwargs)
        except ApiException as exc:
            metrics.API_ERRORS.labels(str(exc.status or 0)).inc()
            raise
        except Exception:
            metrics.API_ERRORS.labels("0").inc()
            raise

    api.rest_client.request = request  # type: ignore[method-assign]
    return api


class Cooldown:
    """Keys that rest for ``seconds`` after `start` (bounded: forgets all past 10,000)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until: dict[str, float] = {}

    def cooling(self, key: str) -> bool:
        return time.monotonic() < self.until.get(key, 0.0)

    def start(self, key: str) -> None:
        if len(self.until) > 10_000:
            self.until.clear()
        self.until[key] = time.monotonic() + self.seconds


CHILD_KINDS: Final = ("Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
                      "PodDisruptionBudget", "NetworkPolicy")
"""What the operator makes for a BatModel: Deployments and Services per version, API
records (ConfigMaps), and, as the spec asks, autoscalers, disruption budgets and a
NetworkPolicy."""


REPLICAS_HANDOFF: Final = "batcomputer-autoscaling-handoff"
"""The field manager that holds a Deployment's replicas between the operator and its new
autoscaler."""


class Kube:
    def __init__(self, api: client.ApiClient, field_manager: str,
                 pod_address_map: tuple[tuple[str, str], ...] = ()) -> None:
        self.field_manager = field_manager
        self.pod_address_map = pod_address_map
        self._silent = Cooldown(60)
        """Pods that did not answer /api/info, by uid."""
        self._asked = Cooldown(10)
        """MAJORs whose pods were asked for their API."""
        self.informers: dict[str, list[Informer]] = {}
        """Watch caches by kind, once `start_informers` ran (else every read lists)."""
        self.models = Newest()
        """The BatModels as last seen: by the operator's watch (`remember_model`) or in the
        answer to its own writes."""
        self.dynamic = DynamicClient(api)
        self.resources = {
            "Deployment": self.dynamic.resources.get(api_version="apps/v1", kind="Deployment"),
            "Service": self.dynamic.resources.get(api_version="v1", kind="Service"),
            "ConfigMap": self.dynamic.resources.get(api_version="v1", kind="ConfigMap"),
            "HorizontalPodAutoscaler": self.dynamic.resources.get(
                api_version="autoscaling/v2", kind="HorizontalPodAutoscaler"),
            "PodDisruptionBudget": self.dynamic.resources.get(api_version="policy/v1",
                                                              kind="PodDisruptionBudget"),
            "NetworkPolicy": self.dynamic.resources.get(api_version="networking.k8s.io/v1",
                                                        kind="NetworkPolicy"),
            "ValidatingWebhookConfiguration": self.dynamic.resources.get(
                api_version="admissionregistration.k8s.io/v1", kind="ValidatingWebhookConfiguration"),
            "Pod": self.dynamic.resources.get(api_version="v1", kind="Pod"),
            # The dynamic client, not CoreV1Api: its calls are validated by pydantic, which
            # was a tenth of the operator's CPU while 200 models converged (py-spy).
            "Event": self.dynamic.resources.get(api_version="v1", kind="Event"),
            labels.KIND: self.dynamic.resources.get(api_version=labels.API_VERSION, kind=labels.KIND),
        }

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply; returns the object as stored. Raises `Rejected` when the API
        server refuses the object itself (400/422), so the caller can report it."""
        try:
            applied: Obj = self.dynamic.server_side_apply(
                self.resources[obj["kind"]], body=obj, namespace=obj["metadata"]["namespace"],
                field_manager=self.field_manager, force_conflicts=True, serializer=_plain)
        except DynamicApiError as exc:
            if exc.status in (400, 422):
                raise Rejected(f"{obj['kind']} {obj['metadata']['name']}: {_message(exc)}") from exc
            raise
        return applied

    def hand_over_replicas(self, deployment: Obj) -> None:
        """Apply the Deployment's current replicas under another field manager, so that the
        operator's next apply (without replicas: an autoscaler owns them now) does not remove
        them. The autoscaler's own updates then take them over."""
        meta = deployment["metadata"]
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"replicas": (deployment.get("spec") or {}).get("replicas", 1)}}
        self.dynamic.server_side_apply(self.resources["Deployment"], body=body,
                                       namespace=meta["namespace"],
                                       field_manager=REPLICAS_HANDOFF, force_conflicts=True)

    def register_webhook(self, configuration: Obj) -> bool:
        """Point the installed ValidatingWebhookConfiguration at this operator, if it points
        elsewhere (re-applying manifests/webhook.yaml puts its placeholder back). A merge
        patch: its webhooks are replaced whole. The operator may read and patch only that
        one: never fatal. True if it was patched."""
        name = configuration["metadata"]["name"]
        resource = self.resources["ValidatingWebhookConfiguration"]
        try:
            live = resource.get(name=name, serializer=_plain)
            wanted = configuration["webhooks"]
            if [h.get("clientConfig") for h in live.get("webhooks") or []] == [
                    h["clientConfig"] for h in wanted]:
                return False
            resource.patch(name=name, body={"webhooks": wanted},
                           content_type="application/merge-patch+json")
        except DynamicApiError as exc:
            log.error("Could not register the admission webhook %s (is manifests/webhook.yaml "
                      "installed? the servers still check every version's API): %s",
                      name, _message(exc))
            return False
        log.info("Admission webhook %s -> %s", name,
                 configuration["webhooks"][0]["clientConfig"].get("url") or "its Service")
        return True

    def start_informers(self, namespaces: tuple[str, ...], stop: threading.Event,
                        on_change: Callable[[str, str, Obj], None]) -> None:
        """Follow every child kind and the servers' pods (see `Informer`) in daemon threads;
        ``on_change(kind, type, obj)`` for each change after the first listing."""
        for kind in (*CHILD_KINDS, "Pod"):
            for namespace in namespaces or (None,):
                informer = Informer(self.resources[kind], kind, namespace,
                                    functools.partial(on_change, kind))
                self.informers.setdefault(kind, []).append(informer)
                threading.Thread(target=informer.run, args=(stop,), daemon=True,
                                 name=f"watch-{kind.lower()}-{namespace or 'all'}").start()

    def _cached(self, kind: str, namespace: str, match: dict[str, str]) -> list[Obj] | None:
        """The kind's objects with labels ``match`` from the watch cache; None until it
        has listed."""
        informers = self.informers.get(kind)
        if not informers or not all(i.synced.is_set() for i in informers):
            return None
        return [o for i in informers if i.namespace in (None, namespace)
                for o in i.items(namespace, match)]

    def list_objects(self, kind: str, namespace: str, selector: str) -> list[Obj]:
        return list_all(self.resources[kind], namespace, selector)

    def children(self, namespace: str, model: str, owner_uid: str) -> dict[tuple[str, str], Obj]:
        """The children of a BatModel (CHILD_KINDS), keyed by (kind, name); only those this
        BatModel (by uid) controls."""
        selector = labels.selector(model)
        found: dict[tuple[str, str], Obj] = {}
        for kind in CHILD_KINDS:
            cached = self._cached(kind, namespace, labels.common(model))
            items = self.list_objects(kind, namespace, selector) if cached is None else cached
            for item in items:
                owners = item["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
                    found[(kind, item["metadata"]["name"])] = item
        return found

    def pods(self, namespace: str, model: str) -> list[Obj]:
        cached = self._cached("Pod", namespace, {labels.MODEL: model})
        if cached is not None:
            return cached
        return self.list_objects("Pod", namespace, f"{labels.MODEL}={model}")

    def delete(self, obj: Obj, orphan: bool = False) -> None:
        """Delete a child; its dependents (ReplicaSets, pods) go too unless ``orphan``."""
        meta = obj["metadata"]
        with contextlib.suppress(NotFoundError):
            self.resources[obj["kind"]].delete(
                name=meta["name"], namespace=meta["namespace"],
                body={"propagationPolicy": "Orphan" if orphan else "Background",
                      "preconditions": {"uid": meta["uid"]}})

    def pod_metrics(self, pod: Obj) -> str | None:
        """A server pod's /metrics; None if unreachable."""
        return self._from_pod(pod, "/metrics", 4 * 1024 * 1024)

    def may_ask(self, key: str) -> bool:
        """Whether to ask pods about ``key`` now: at most every 10 s, so a MAJOR whose pods
        do not answer (yet) costs a pod listing per 10 s, not one per reconcile."""
        if self._asked.cooling(key):
            return False
        self._asked.start(key)
        return True

    def pod_info(self, pod: Obj) -> Obj | None:
        """A server pod's /api/info; None if unreachable or not JSON. A pod that did not
        answer is not asked again for a minute (reconciles of a model come in bursts)."""
        uid = str(pod["metadata"].get("uid", ""))
        if self._silent.cooling(uid):
            return None
        text = self._from_pod(pod, "/api/info", 4 * 1024 * 1024)
        try:
            info = json.loads(text) if text is not None else None
        except ValueError:
            info = None
        if not isinstance(info, dict):
            self._silent.start(uid)
            return None
        return info

    def _from_pod(self, pod: Obj, path: str, limit: int) -> str | None:
        """GET ``path`` from a server pod (not the Kubernetes API: the pod itself, at its IP,
        or at the address the pod-address map gives it in a local cluster)."""
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return None
        host = map_address(ip, self.pod_address_map)
        try:
            with urllib.request.urlopen(f"http://{host}:{SERVER_PORT}{path}", timeout=3) as got:
                text: str = got.read(limit).decode(errors="replace")
                return text
        except (OSError, ValueError) as exc:
            log.info("Reading %s of pod %s failed: %s", path, pod["metadata"].get("name"), exc)
            return None

    def batmodel(self, namespace: str, name: str, cached: bool = False) -> Obj | None:
        """The BatModel; with ``cached``, as last seen when it has been seen (see `Newest`),
        else read from the API server (and remembered)."""
        if cached and (seen := self.models.get(namespace, name)) is not None:
            return seen
        try:
            found: Obj = self.resources[labels.KIND].get(name=name, namespace=namespace,
                                                         serializer=_plain)
        except NotFoundError:
            self.models.drop(namespace, name)
            return None
        self.models.put(found)
        return found

    def remember_model(self, obj: Obj) -> None:
        """A BatModel as the operator's watch reported it."""
        self.models.put(obj)

    def forget_model(self, obj: Obj) -> None:
        """A BatModel the watch reported deleted."""
        self.models.drop(obj["metadata"]["namespace"], obj["metadata"]["name"],
                         obj["metadata"].get("resourceVersion"))

    def patch_batmodel(self, namespace: str, name: str, patch: Obj) -> Obj:
        """A merge patch of the BatModel itself (the admin commands' spec changes)."""
        result: Obj = self.resources[labels.KIND].patch(
            name=name, namespace=namespace, body=patch,
            content_type="application/merge-patch+json", serializer=_plain)
        self.models.put(result)
        return result

    def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        try:
            result = self.resources[labels.KIND].status.patch(
                name=name, namespace=namespace, body={"status": status},
                content_type="application/merge-patch+json", serializer=_plain)
        except NotFoundError:
            log.info("BatModel %s/%s is gone; status not written", namespace, name)
            self.models.drop(namespace, name)
            return
        # The next reconcile starts from the status just written, even before the watch
        # reports it.
        self.models.put(result)


    def post_event(self, about: Obj, type_: str, reason: str, message: str) -> None:
        """An Event on the BatModel (core/v1, as kubectl describe shows them). Posting is
        best effort: a failure is logged, never raised into a reconcile."""
        meta = about["metadata"]
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": labels.API_VERSION, "kind": labels.KIND,
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta.get("uid", "")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": labels.MANAGER},
            "reportingComponent": labels.MANAGER,
            "reportingInstance": os.environ.get("HOSTNAME", labels.MANAGER)[:128],
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            self.resources["Event"].create(body=body, namespace=meta["namespace"],
                                           serializer=_plain)
        except Exception as exc:  # noqa: BLE001 - best effort
            log.warning("Posting the event %r on %s/%s failed: %s", reason, meta["namespace"],
                        meta["name"], str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)


class Informer:
    """One kind's label-selected objects (the operator's own: managed-by), listed once and
    then followed with a watch. Reconciles read children and pods from here instead of
    listing them each time: an unchanged model costs no request. ``on_change(type, obj)``
    runs after the store is updated, so a reconcile it starts sees the change.

    Each object is kept as compact JSON, trimmed to what the operator reads (`trim`); reads
    decode a copy. The listing is read in pages, and events are read as plain JSON (the dynamic
    client's object wrappers would copy each)."""

    PAGE: Final = 500

    def __init__(self, resource: Any, kind: str, namespace: str | None,
                 on_change: Callable[[str, Obj], None] | None = None) -> None:
        self.resource, self.kind = resource, kind
        self.namespace, self.on_change = namespace, on_change
        self.selector = f"{labels.MANAGED_BY}={labels.MANAGER}"
        self.objects: dict[tuple[str, str], dict[str, bytes]] = {}
        """By (namespace, model label): name -> the object as JSON, so a reconcile reads
        its model's objects without scanning everyone's."""
        self.bucket: dict[tuple[str, str], tuple[str, str]] = {}
        """(namespace, name) -> its key in ``objects``."""
        self.synced = threading.Event()
        self.lock = threading.Lock()

    def items(self, namespace: str, match: dict[str, str]) -> list[Obj]:
        """The namespace's objects whose labels include ``match`` (copies)."""
        with self.lock:
            found = list(self.objects.get((namespace, match.get(labels.MODEL, "")), {}).values())
        objects = [json.loads(o) for o in found]
        return [o for o in objects
                if match.items() <= (o["metadata"].get("labels") or {}).items()]

    def __len__(self) -> int:
        return len(self.bucket)

    def run(self, stop: threading.Event, timeout: int = 300) -> None:
        version: str | None = None
        backoff = 1.0
        while not stop.is_set():
            try:
                if version is None:
                    version = self._list()
                for event in watch.Watch().stream(
                        self.resource.get, namespace=self.namespace,
                        label_selector=self.selector, resource_version=version,
                        serialize=False, timeout_seconds=timeout, allow_watch_bookmarks=True):
                    if stop.is_set():
                        return
                    obj: Obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] != "BOOKMARK":
                        self._store(event["type"], obj)
                    backoff = 1.0
            except (ApiException, DynamicApiError) as exc:
                version = None
                if exc.status == 410:  # too old: list again
                    continue
                why = _message(exc) if isinstance(exc, DynamicApiError) else exc.reason
                backoff = self._failed(stop, backoff, f"{exc.status} {why}")
            except Exception as exc:  # noqa: BLE001 - connection errors: one line, retried
                version = None
                backoff = self._failed(stop, backoff, f"{type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")

    def _list(self) -> str:
        objects: dict[tuple[str, str], dict[str, bytes]] = {}
        bucket: dict[tuple[str, str], tuple[str, str]] = {}
        version = ""
        for page in pages(self.resource, self.namespace, self.selector, self.PAGE):
            for obj in page["items"]:
                self._put(obj, objects, bucket)
            version = str(page["metadata"]["resourceVersion"])
        with self.lock:
            self.objects, self.bucket = objects, bucket
        self.synced.set()
        return version

    def _store(self, type_: str, obj: Obj) -> None:
        with self.lock:
            self._drop(obj)
            if type_ != "DELETED":
                self._put(obj, self.objects, self.bucket)
        if self.on_change is not None:
            self.on_change(type_, obj)

    @staticmethod
    def _put(obj: Obj, objects: dict[tuple[str, str], dict[str, bytes]],
             bucket: dict[tuple[str, str], tuple[str, str]]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], (meta.get("labels") or {}).get(labels.MODEL, ""))
        objects.setdefault(key, {})[meta["name"]] = compact(trim(obj))
        bucket[(meta["namespace"], meta["name"])] = key

    def _drop(self, obj: Obj) -> None:
        meta = obj["metadata"]
        key = self.bucket.pop((meta["namespace"], meta["name"]), None)
        if key is not None:
            self.objects[key].pop(meta["name"], None)
            if not self.objects[key]:
                del self.objects[key]

    def _failed(self, stop: threading.Event, backoff: float, why: str) -> float:
        """Until it has listed again, the cache may miss changes: reads list instead."""
        self.synced.clear()
        log.warning("Watching %ss failed, again in %.0fs: %s", self.kind, backoff, why)
        stop.wait(backoff)
        return min(backoff * 2, 30)


def _plain(_client: Any, obj: Obj) -> Obj:
    """The dynamic client's serializer for answers wanted as they came: plain JSON, not
    its attribute-access wrappers (which copy every object into objects of their own)."""
    return obj


def pages(resource: Any, namespace: str | None, selector: str, limit: int) -> Iterator[Obj]:
    """A LIST in pages of ``limit`` objects (one page in memory at a time), each item with
    its kind and apiVersion (a list's items come without them)."""
    token: str | None = None
    while True:
        page: Obj = resource.get(namespace=namespace, label_selector=selector, limit=limit,
                                 _continue=token, serializer=_plain)
        for item in page["items"]:
            item.setdefault("kind", resource.kind)
            item.setdefault("apiVersion", resource.group_version)
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def list_all(resource: Any, namespace: str | None, selector: str) -> list[Obj]:
    return [obj for page in pages(resource, namespace, selector, Informer.PAGE)
            for obj in page["items"]]


def compact(obj: Obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def compare_versions(a: str | None, b: str | None) -> int | None:
    """-1, 0 or 1 as resourceVersion ``a`` is older than, the same as or newer than ``b``
    (two versions of objects of one resource); None when either is not a version that
    compares. Kubernetes 1.35 made them comparable (KEP-5504, client-go's
    CompareResourceVersion): positive integers without leading zeros."""
    if not (a and b and a.isdigit() and b.isdigit() and a[0] != "0" and b[0] != "0"):
        return None
    x, y = int(a), int(b)
    return (x > y) - (x < y)


class Newest:
    """The newest version seen of each object, by resourceVersion, from any source: a
    watch, whose events may reach it after the answer to a later write, or that answer.
    An object whose version does not compare is not kept (reads then go to the API
    server)."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], tuple[str, bytes]] = {}
        """(namespace, name) -> (resourceVersion, the object as compact JSON)."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, namespace: str, name: str) -> Obj | None:
        """A copy: reconciles may change what they read."""
        with self._lock:
            found = self._objects.get((namespace, name))
        if found is None:
            return None
        obj: Obj = json.loads(found[1])
        return obj

    def put(self, obj: Obj) -> None:
        meta = obj["metadata"]
        key, version = (meta["namespace"], meta["name"]), meta.get("resourceVersion")
        with self._lock:
            held = self._objects.get(key)
            order = compare_versions(version, held[0] if held is not None else version)
            if order is None:
                self._objects.pop(key, None)
            elif held is None or order > 0:
                self._objects[key] = (str(version), compact(trim(obj)))

    def drop(self, namespace: str, name: str, version: str | None = None) -> None:
        """Forget it, unless what is held is newer than ``version`` (a deletion)."""
        with self._lock:
            held = self._objects.get((namespace, name))
            if held is None:
                return
            if version is None or (compare_versions(held[0], version) or 0) <= 0:
                del self._objects[(namespace, name)]


def trim(obj: Obj) -> Obj:
    """What the operator reads of an object, for its caches. Not the managedFields (often
    half of an object), but which server-side applies own spec.replicas (what
    reconcile.owns_replicas reads). Of a pod, not its spec: pods are read for their
    labels, owners and status, and the spec is most of a pod."""
    meta = obj.get("metadata") or {}
    trimmed = obj.get("kind") == "Pod" and "spec" in obj
    if "managedFields" not in meta and not trimmed:
        return obj
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    owners = [{"manager": e.get("manager"), "operation": "Apply",
               "fieldsV1": {"f:spec": {"f:replicas": {}}}}
              for e in meta.get("managedFields") or [] if e.get("operation") == "Apply"
              and "f:replicas" in ((e.get("fieldsV1") or {}).get("f:spec") or {})]
    if owners:
        kept["managedFields"] = owners
    return {k: v for k, v in obj.items() if not (trimmed and k == "spec")} | {"metadata": kept}


def map_address(ip: str, mapping: tuple[tuple[str, str], ...]) -> str:
    """``ip`` moved from the first network of ``mapping`` that holds it onto its target
    network (10.200.0.5 with 10.0.0.0/8=127.0.0.0/8 -> 127.200.0.5); unchanged otherwise."""
    address = ipaddress.ip_address(ip)
    for source, target in mapping:
        src, dst = ipaddress.ip_network(source), ipaddress.ip_network(target)
        if address in src:
            return str(dst.network_address + (int(address) - int(src.network_address)))
    return ip


def default_namespace() -> str:
    """The namespace of the kubeconfig's current context (as kubectl uses), else default."""
    try:
        _, active = config.list_kube_config_contexts()
    except (config.ConfigException, OSError, TypeError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def _message(exc: DynamicApiError) -> str:
    try:
        return str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.summary())


__all__ = ["Kube", "Rejected", "api_client", "default_namespace"]


class Leadership:
    """One active operator among several replicas: a Lease, held by the one that reconciles
    and serves the webhook. The election is the official client's (a LeaseLock): a standby
    takes the Lease once the holder has not renewed it for ``lease_seconds``, or at once
    when the holder let it go on a clean shutdown. A holder that cannot renew in time stops
    (``keep``'s ``lost``) rather than risk two operators writing at once."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, me: str,
                 lease_seconds: int) -> None:
        self.namespace, self.name, self.me = namespace, name, me
        lock = LeaseLock(name, namespace, me)
        lock.api_instance = client.CoordinationV1Api(api)
        self.leases = lock.api_instance
        renew = lease_seconds * 2 / 3
        retry = max(1.0, lease_seconds / 6)
        self.election = leaderelection.LeaderElection(electionconfig.Config(
            lock, lease_duration=lease_seconds, renew_deadline=renew, retry_period=retry,
            onstarted_leading=lambda: None, onstopped_leading=lambda: None))

    def acquire(self) -> None:
        """Block until this replica holds the Lease."""
        log.info("Waiting to lead: Lease %s/%s, as %s", self.namespace, self.name, self.me)
        self.election.acquire()
        log.info("Leading: Lease %s/%s held by %s", self.namespace, self.name, self.me)

    def keep(self, lost: Callable[[], None]) -> threading.Thread:
        """Renew the Lease in a daemon thread; ``lost`` runs if a renewal fails."""
        def renew() -> None:
            self.election.renew_loop()
            log.error("Lost the Lease %s/%s: stopping", self.namespace, self.name)
            lost()

        thread = threading.Thread(target=renew, name="lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Let the Lease go (a standby takes it at its next try), if this replica holds it."""
        with contextlib.suppress(ApiException, ValueError):
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.me:
                lease.spec.holder_identity = None
                self.leases.replace_namespaced_lease(self.name, self.namespace, lease)
                log.info("Released the Lease %s/%s", self.namespace, self.name)
