"""The models waiting for a reconcile that a watch asked for: each once, the urgent first.

What client-go's workqueue does for controllers written in Go: a model is in the queue at
most once however many changes arrive before a worker takes it; a model being reconciled
is not handed to a second worker, but marked, and queued again when the first is done (so
the change that arrived meanwhile is seen). Models whose spec changed are urgent: they go
before models whose children or pods changed, so that a new model's children are created
before status refreshes of the others (200 models created at once: the last one's
Deployments existed 19 s after the start, behind the refreshes, where Kubernetes alone
needs 15 s to make them all available).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

K = TypeVar("K")


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._urgent: deque[K] = deque()
        self._later: deque[K] = deque()
        self._queued: dict[K, bool] = {}
        """Queued keys -> urgent."""
        self._running: set[K] = set()
        self._again: dict[K, bool] = {}
        """Keys that changed while running -> urgent: queued again when done."""
        self._closed = False

    def __len__(self) -> int:
        with self._ready:
            return len(self._queued)

    def add(self, key: K, urgent: bool = False) -> None:
        with self._ready:
            if key in self._running:
                self._again[key] = self._again.get(key, False) or urgent
                return
            self._enqueue(key, urgent)

    def _enqueue(self, key: K, urgent: bool) -> None:
        was = self._queued.get(key)
        if was is None:
            self._queued[key] = urgent
            (self._urgent if urgent else self._later).append(key)
            self._ready.notify()
        elif urgent and not was:
            self._later.remove(key)
            self._urgent.append(key)
            self._queued[key] = True

    def get(self) -> K | None:
        """The next key, waiting for one; None once closed. Call `done` after it."""
        with self._ready:
            while not self._queued and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            key = (self._urgent or self._later).popleft()
            del self._queued[key]
            self._running.add(key)
            return key

    def done(self, key: K) -> None:
        with self._ready:
            self._running.discard(key)
            if key in self._again:
                self._enqueue(key, self._again.pop(key))

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
