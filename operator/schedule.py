"""When each BatModel is reconciled next, without kopf's timers.

Every tracked model is reconciled `interval` seconds after its last success (drift
repair and status refresh even when no event arrives). After a failure (the API server
is down, a write was refused) it is retried sooner: `first_retry` seconds, doubling
up to `max_retry`. kopf's own timers would put a finalizer on every BatModel, so a
BatModel deleted while the operator is down would hang; children are owned and garbage
collected, so nothing needs one. Time is passed in, for tests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

Key = tuple[str, str]  # namespace, name


@dataclass
class Schedule:
    interval: float
    first_retry: float = 1.0
    max_retry: float = 30.0
    _due: dict[Key, float] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def track(self, key: Key, now: float) -> None:
        """Reconciled just now (or about to be): next in one interval, unless already sooner."""
        with self._lock:
            self._due.setdefault(key, now + self.interval)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._due.pop(key, None)
            self._failures.pop(key, None)

    def succeeded(self, key: Key, now: float) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._due[key] = now + self.interval

    def failed(self, key: Key, now: float) -> float:
        """Schedule a retry; returns its delay."""
        with self._lock:
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
            delay = min(self.first_retry * float(2 ** (count - 1)), self.max_retry)
            self._due[key] = now + delay
            return delay

    def soon(self, key: Key, at: float) -> None:
        """Reconcile no later than ``at`` (a canary step falls due)."""
        with self._lock:
            self._due[key] = min(self._due.get(key, at), at)

    def due(self, now: float) -> list[Key]:
        """Models whose time has come, soonest first."""
        with self._lock:
            return sorted((k for k, at in self._due.items() if at <= now), key=self._due.__getitem__)

    def next_at(self) -> float | None:
        with self._lock:
            return min(self._due.values(), default=None)

    def __len__(self) -> int:
        return len(self._due)
