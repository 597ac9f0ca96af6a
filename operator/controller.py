"""Runs reconciles for kopf's handlers, the pod watch and the resync loop, one model at a time.

- One reconcile at a time per model (a lock each, shared with the resync); what watches
  report queues the model's name once (`WorkQueue`) for `work`ers: BatModel changes and
  child changes in queues of their own.
- A failure (API server down, a write refused) is one log line with its cause (the
  traceback only at debug level) and a retry after 1 s, doubling to 30 s (`Schedule`).
- Events pass through an `EventGate`: the same line once, no floods.
- A BatModel being deleted (foreground deletion) is shown as Terminating.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from batcomputer.operator import metrics, status
from batcomputer.operator import reconcile as reconciling
from batcomputer.operator.events import EventGate
from batcomputer.operator.reconcile import Event
from batcomputer.operator.schedule import Key, Schedule
from batcomputer.operator.settings import Settings
from batcomputer.operator.workqueue import WorkQueue

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class Api(reconciling.Api, Protocol):
    """reconcile's `Api`, and reading the BatModel itself (batcomputer.operator.k8s.Kube):
    with ``cached``, as last seen (by the watch or in the answer to a write)."""

    def batmodel(self, namespace: str, name: str, cached: bool = False) -> Obj | None: ...


def describe(exc: BaseException) -> str:
    """One line for a failure: the API's own message where there is one."""
    for attr in ("summary", "reason"):
        value = getattr(exc, attr, None)
        if callable(value):
            value = value()
        if value:
            status_code = getattr(exc, "status", None)
            return f"{type(exc).__name__} {status_code or ''}: {value}".replace(" :", ":")
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


class Controller:
    def __init__(self, api: Api, settings: Settings, post: Callable[[Obj, Event], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.settings = settings
        self.post = post
        self.clock = clock
        self.schedule = Schedule(settings.resync_seconds)
        self.gate = EventGate()
        self._locks: defaultdict[Key, threading.Lock] = defaultdict(threading.Lock)
        self.queues: dict[bool, WorkQueue[Key]] = {True: WorkQueue(), False: WorkQueue()}
        """Models whose BatModel changed (True), whose children or pods did (False)."""
        self._guard = threading.Lock()
        self._seen: dict[Key, tuple[Any, ...]] = {}

    def request(self, namespace: str, name: str, spec: bool = False) -> None:
        """Reconcile a model soon (by `work`), from the BatModel as last seen: for changes a
        watch reports. What waits is its name, once (see `WorkQueue`). Changes of the
        BatModel (``spec``) and of its children wait in queues of their own, so that a
        status refresh does not wait behind a burst of new models, nor they behind it."""
        self.queues[spec].add((namespace, name))

    def work(self, stop: threading.Event, spec: bool) -> None:
        """A worker for one of `request`'s queues, until ``stop``."""
        queue = self.queues[spec]
        while not stop.is_set():
            key = queue.get()
            if key is None:
                return
            try:
                self.reconcile(*key, cached=True)
            finally:
                queue.done(key)

    def reconcile(self, namespace: str, name: str, cached: bool = False) -> None:
        """Reconcile one model now; never raises (failures are retried by the schedule).
        ``cached``: start from the BatModel as last seen, for reconciles that a watch
        started (it has just seen the model); the resync and retries read it afresh, so
        that a watch that missed a change cannot keep a model from converging."""
        key = (namespace, name)
        with self._locks[key]:
            started = time.perf_counter()
            try:
                exists, requeue = self._reconcile(key, cached)
            except Exception as exc:  # noqa: BLE001 - one line; retried with back-off
                metrics.RECONCILES.labels("failed").inc()
                delay = self.schedule.failed(key, self.clock())
                log.warning("Reconciling %s/%s failed, retrying in %.0fs: %s", namespace, name,
                            delay, describe(exc))
                log.debug("Reconciling %s/%s failed", namespace, name, exc_info=True)
            else:
                metrics.RECONCILES.labels("ok").inc()
                if exists:
                    self.schedule.succeeded(key, self.clock())
                if exists and requeue is not None:
                    self.schedule.soon(key, self.clock() + requeue)
            finally:
                metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def _reconcile(self, key: Key, cached: bool) -> tuple[bool, float | None]:
        """(False when the BatModel is gone, how soon to look again)."""
        namespace, name = key
        body = self.api.batmodel(namespace, name, cached)
        if body is None:
            self.forget(namespace, name)
            return False, None
        if body["metadata"].get("deletionTimestamp"):
            previous = body.get("status") or {}
            terminating = status.terminating_status(previous, reconciling.now())
            if terminating != previous:
                self.api.patch_status(namespace, name, terminating)
            return True, None
        outcome = reconciling.reconcile(body, self.api, self.settings)
        now = self.clock()
        for event in outcome.events:
            if self.gate.allow(namespace, name, event.reason, event.message, now):
                self.post(body, event)
                log.info("%s/%s: %s", namespace, name, event.message)
        return True, outcome.requeue_after

    def changed(self, body: Obj) -> bool:
        """Whether the watch's ``body`` differs from the last one seen of its model in what a
        reconcile acts on: first sight, the spec (its generation), the annotations (the
        admin commands' canary decisions) or a deletion. Its status, which the operator
        writes itself, is not a reason: a model is not reconciled for its own writes."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        signature = (meta.get("uid"), meta.get("generation"), meta.get("deletionTimestamp"),
                     sorted((meta.get("annotations") or {}).items()))
        with self._guard:
            before = self._seen.get(key)
            self._seen[key] = signature
        return before != signature

    def queue_depth(self) -> int:
        """Models whose reconcile is due and not yet run: queued by watches for a worker,
        or due for their resync."""
        return sum(map(len, self.queues.values())) + len(self.schedule.due(self.clock()))

    def tracked(self) -> int:
        return len(self.schedule)

    def forget(self, namespace: str, name: str) -> None:
        self.schedule.forget((namespace, name))
        self.gate.forget(namespace, name)
        with self._guard:
            self._seen.pop((namespace, name), None)

    def resync_forever(self, stop: threading.Event) -> None:
        """Reconcile each tracked model when the schedule says so, until ``stop``."""
        while not stop.is_set():
            for namespace, name in self.schedule.due(self.clock()):
                if stop.is_set():
                    return
                self.reconcile(namespace, name)
            next_at = self.schedule.next_at()
            wait = 1.0 if next_at is None else max(0.05, min(next_at - self.clock(), 1.0))
            stop.wait(wait)
