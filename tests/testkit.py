"""Helpers shared by tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from batcomputer.testenv.harness import Kubectl, OperatorProcess, service_urls

__all__ = ["Kubectl", "OperatorProcess", "service_urls", "wait_for"]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float = 30, what: str = "condition",
             interval: float = 0.2) -> T:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_error!r})" if last_error else ""))
