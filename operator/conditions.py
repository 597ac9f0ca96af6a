"""Kubernetes-shaped conditions (type, status, observedGeneration, lastTransitionTime,
reason, message). Pure: the caller passes the time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def set_condition(conditions: Sequence[dict[str, Any]], *, type: str, status: bool, reason: str,
                  message: str, generation: int, now: str) -> list[dict[str, Any]]:
    """Return the conditions with ``type`` set. ``lastTransitionTime`` changes only
    when the status changes, as apimachinery's SetStatusCondition does."""
    text = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type), None)
    since = (previous.get("lastTransitionTime") if previous and previous.get("status") == text
             else None) or now
    updated = {"type": type, "status": text, "observedGeneration": generation,
               "lastTransitionTime": since, "reason": reason or "Unknown", "message": message}
    kept = [dict(c) for c in conditions if c.get("type") != type]
    return [*kept, updated]


def get(conditions: Sequence[dict[str, Any]], type: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type), None)
