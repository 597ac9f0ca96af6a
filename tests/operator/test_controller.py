"""The controller: one line per failure and a retry after a second; events through the gate."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from batcomputer.operator.controller import Controller, describe
from batcomputer.operator.reconcile import Event
from batcomputer.operator.settings import Settings

from .test_reconcile import FakeApi, body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Flaky(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.model: dict[str, Any] | None = body("1.0.0")

    def batmodel(self, namespace: str, name: str, cached: bool = False) -> dict[str, Any] | None:
        if self.down:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        if self.model is not None and self.status is not None:
            self.model["status"] = self.status
        return self.model


def make() -> tuple[Controller, Flaky, Clock, list[Event]]:
    api, clock, posted = Flaky(), Clock(), []
    controller = Controller(api, Settings(resync_seconds=30), lambda _b, e: posted.append(e), clock)
    return controller, api, clock, posted


def test_a_failure_is_one_line_and_is_retried_after_a_second(caplog: pytest.LogCaptureFixture) -> None:
    controller, api, clock, _ = make()
    controller.reconcile("ns", "crime")
    assert controller.schedule.next_at() == 30
    api.down = True
    with caplog.at_level(logging.INFO):
        controller.reconcile("ns", "crime")
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == ("Reconciling ns/crime failed, retrying in 1s: "
                                   "ConnectionRefusedError: [Errno 111] Connection refused")
    assert record.exc_info is None  # the traceback only at debug level
    assert controller.schedule.due(1) == [("ns", "crime")]
    api.down = False
    controller.reconcile("ns", "crime")
    assert controller.schedule.next_at() == 30


def test_events_are_posted_once_and_a_deleted_model_is_forgotten() -> None:
    controller, api, clock, posted = make()
    controller.reconcile("ns", "crime")
    created = [e for e in posted if e.reason == "Created"]
    assert len(created) == 1 and created[0].message.count(";") == 2
    api.status = None
    api.model = body("1.0.0")  # the same transitions again: already said
    controller.reconcile("ns", "crime")
    assert len([e for e in posted if e.reason == "Progressing"]) == 1
    api.model = None
    controller.reconcile("ns", "crime")
    assert len(controller.schedule) == 0


def test_a_model_being_deleted_is_shown_terminating() -> None:
    controller, api, _, _ = make()
    controller.reconcile("ns", "crime")
    assert api.model is not None
    api.model["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    controller.reconcile("ns", "crime")
    assert api.status is not None
    ready = next(c for c in api.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Terminating")


def test_describe_keeps_the_api_servers_message() -> None:
    from kubernetes.client.exceptions import ApiException

    assert describe(ApiException(status=422, reason="Unprocessable Entity")) == \
        "ApiException 422: Unprocessable Entity"


def test_a_model_is_reconciled_for_its_spec_annotations_or_deletion_not_its_status() -> None:
    controller, _, _, _ = make()
    seen = body("1.0.0")
    assert controller.changed(seen)  # first sight (the listing at start, or a new model)
    assert not controller.changed(seen)
    seen["status"] = {"phase": "Ready"}  # the operator's own status write, echoed back
    assert not controller.changed(seen)
    seen["metadata"]["generation"] = 2
    assert controller.changed(seen)
    seen["metadata"]["annotations"] = {"batcomputer.io/canary-action": "promote"}
    assert controller.changed(seen)
    seen["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert controller.changed(seen)
    controller.forget("ns", "crime")
    assert controller.changed(seen)


def test_changes_before_a_requested_reconcile_starts_are_one_reconcile() -> None:
    controller, api, _, _ = make()
    reads: list[bool] = []
    batmodel = api.batmodel
    api.batmodel = lambda ns, name, cached=False: reads.append(cached) or batmodel(ns, name)  # type: ignore[method-assign]
    for _ in range(3):
        controller.request("ns", "crime")
    controller.request("ns", "other")
    controller.request("ns", "new", spec=True)  # a BatModel change: a queue of its own
    assert len(controller.queues[False]) == 2  # one name each, not one change each
    assert controller.queue_depth() == 3
    stop = threading.Event()
    workers = [threading.Thread(target=controller.work, args=(stop, spec)) for spec in (True, False)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 5
    while (len(reads) < 3 or controller.queue_depth()) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for queue in controller.queues.values():
        queue.close()
    for worker in workers:
        worker.join(5)
    assert reads == [True, True, True]  # from the model as last seen
