"""PURE: the kubelet's probe bookkeeping for one running container.

The podlet runs the probe actions (HTTP, TCP, exec) against the real container; this
module only decides, from their results and the probe settings, when each probe is
due, whether the container has started, whether it is Ready, and when it must be
killed and restarted, with the kubelet's rules:

- no probe runs before ``initialDelaySeconds``; then one every ``periodSeconds``;
- liveness and readiness wait until the startup probe has succeeded once;
- the startup probe failing ``failureThreshold`` times in a row, or the liveness probe
  doing so after start, restarts the container;
- Ready turns True after ``successThreshold`` successes in a row and False after
  ``failureThreshold`` failures in a row; with no readiness probe a started container
  is Ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["startup", "liveness", "readiness"]


@dataclass
class Probe:
    kind: Kind
    spec: dict[str, Any]
    next_at: float
    successes: int = 0
    failures: int = 0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold", 1))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        self.next_at = now + self.period


@dataclass
class ContainerProbes:
    """Probe state of one run of a container; a restart gets a fresh one."""

    probes: dict[Kind, Probe] = field(default_factory=dict)
    started: bool = False
    ready: bool = False
    failed: str | None = None
    """Why the container must be restarted, once a startup or liveness probe gave up."""

    @classmethod
    def for_container(cls, container: dict[str, Any], started_at: float) -> ContainerProbes:
        probes: dict[Kind, Probe] = {}
        kinds: tuple[Kind, ...] = ("startup", "liveness", "readiness")
        for kind in kinds:
            spec = container.get(f"{kind}Probe")
            if spec:
                probes[kind] = Probe(kind, spec, started_at + float(spec.get("initialDelaySeconds", 0)))
        state = cls(probes=probes)
        state.started = "startup" not in probes
        state.ready = state.started and "readiness" not in probes
        return state

    def due(self, now: float) -> list[Probe]:
        """The probes to run now, in order."""
        if self.failed:
            return []
        if not self.started:
            return [p for p in (self.probes.get("startup"),) if p and now >= p.next_at]
        after_start: tuple[Kind, ...] = ("liveness", "readiness")
        return [p for kind in after_start
                if (p := self.probes.get(kind)) is not None and now >= p.next_at]

    def record(self, probe: Probe, ok: bool, now: float, detail: str = "") -> None:
        probe.record(ok, now)
        if probe.kind == "startup":
            if ok:
                self.started = True
                self.ready = "readiness" not in self.probes
                # Liveness and readiness start counting from here.
                for other in self.probes.values():
                    if other is not probe:
                        other.next_at = max(other.next_at, now)
            elif probe.failures >= probe.failure_threshold:
                self.failed = f"Startup probe failed: {detail}".rstrip(": ")
        elif probe.kind == "liveness":
            if not ok and probe.failures >= probe.failure_threshold:
                self.failed = f"Liveness probe failed: {detail}".rstrip(": ")
                self.ready = False
        elif ok and probe.successes >= probe.success_threshold:
            self.ready = True
        elif not ok and probe.failures >= probe.failure_threshold:
            self.ready = False
