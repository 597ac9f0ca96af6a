"""The work queue: each key once, in order, never one key on two workers."""

from __future__ import annotations

import threading

from batcomputer.operator.workqueue import WorkQueue


def test_a_key_is_queued_once_however_often_it_is_added() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    assert [queue.get() for _ in range(3)] == ["a", "b", "c"]


def test_a_key_that_changes_while_it_runs_is_queued_again_when_done_not_twice() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert queue.get() == "a"
    queue.add("a")  # changes while "a" is reconciled
    queue.add("a")
    assert len(queue) == 0  # not for a second worker meanwhile
    queue.add("b")
    queue.done("a")
    assert len(queue) == 2
    assert queue.get() == "b"  # in order: "a" came back after "b" was queued
    assert queue.get() == "a"
    queue.done("a")
    queue.done("b")
    assert len(queue) == 0


def test_close_wakes_the_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    workers = [threading.Thread(target=lambda: got.append(queue.get())) for _ in range(3)]
    for w in workers:
        w.start()
    queue.close()
    for w in workers:
        w.join(5)
    assert got == [None, None, None]
