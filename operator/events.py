"""Which Events to post: the same message is said once, and no reason floods an object.

Conditions already hold the current state; Events tell its history. A version that
flaps between Ready and CrashLoopBackOff, or a reconcile that runs on every pod update,
must not post the same line again and again: an identical (object, reason, message) is
posted at most once per `repeat_after` seconds, and each (object, reason) has a token
bucket of `burst` Events refilled at one per `refill_seconds`. State lives in memory, so
a restarted operator may say a thing once more. Time is passed in, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, str, str]  # namespace, name, reason


@dataclass
class EventGate:
    burst: int = 5
    refill_seconds: float = 30.0
    repeat_after: float = 600.0
    _tokens: dict[Key, tuple[float, float]] = field(default_factory=dict)  # (tokens, at)
    _said: dict[tuple[Key, str], float] = field(default_factory=dict)

    def allow(self, namespace: str, name: str, reason: str, message: str, now: float) -> bool:
        key = (namespace, name, reason)
        last = self._said.get((key, message))
        if last is not None and now - last < self.repeat_after:
            return False
        tokens, at = self._tokens.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.refill_seconds)
        if tokens < 1:
            self._tokens[key] = (tokens, now)
            return False
        self._tokens[key] = (tokens - 1, now)
        self._said[(key, message)] = now
        if len(self._said) > 10_000:  # forget the oldest half rather than grow without bound
            for old, _ in sorted(self._said.items(), key=lambda item: item[1])[:5_000]:
                del self._said[old]
        return True

    def forget(self, namespace: str, name: str) -> None:
        """A deleted object: a new one of the same name starts afresh."""
        self._tokens = {k: v for k, v in self._tokens.items() if k[:2] != (namespace, name)}
        self._said = {k: v for k, v in self._said.items() if k[0][:2] != (namespace, name)}
