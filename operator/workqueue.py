"""The models waiting for a reconcile that a watch asked for: each once, in order.

What client-go's workqueue does for controllers written in Go: a model is in the queue at
most once however many changes arrive before a worker takes it, and what waits is its
name, not the changes. A model being reconciled is not handed to a second worker, but
marked, and queued again when the first is done (so the change that arrived meanwhile is
seen). First in, first out. (One queue with spec changes first was tried: 200 models were
not Ready sooner, and status refreshes waited longer; the controller keeps BatModel changes
and child changes in two queues instead.)
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

K = TypeVar("K")


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._again: set[K] = set()
        """Keys that changed while running: queued again when done."""
        self._closed = False

    def __len__(self) -> int:
        with self._ready:
            return len(self._queued)

    def add(self, key: K) -> None:
        with self._ready:
            if key in self._running:
                self._again.add(key)
            else:
                self._enqueue(key)

    def _enqueue(self, key: K) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._ready.notify()

    def get(self) -> K | None:
        """The next key, waiting for one; None once closed. Call `done` after it."""
        with self._ready:
            while not self._queued and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            key = self._queue.popleft()
            self._queued.discard(key)
            self._running.add(key)
            return key

    def done(self, key: K) -> None:
        with self._ready:
            self._running.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._enqueue(key)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
