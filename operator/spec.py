"""Parse and validate a BatModel spec into typed objects.

The CRD schema refuses most bad specs at the API server; this module checks
everything again (the operator must never act on a spec it does not understand,
whatever schema was installed) and collects every problem in one `SpecError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import semver

MAX_VERSION: Final = 128
DIGEST_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
DNS1035_RE: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SCHEMES: Final = ("http", "https", "pvc", "s3")
BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ENDPOINT_RE: Final = re.compile(r"^https?://[^/\s?#]+/?$")
REGION_RE: Final = re.compile(r"^[a-z0-9-]{1,64}$")
MAX_REPLICAS: Final = 50
MAX_NAME: Final = 63
CANARY_SUFFIX: Final = "-canary"


class SpecError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PvcArtifact:
    claim: str
    path: str


@dataclass(frozen=True)
class VersionSpec:
    version: semver.Version
    artifact: str
    digest: str | None = None
    allow_pickle: bool = False

    @property
    def major(self) -> int:
        return int(self.version.major)

    @property
    def in_s3(self) -> bool:
        return urlsplit(self.artifact).scheme == "s3"

    @property
    def pvc(self) -> PvcArtifact | None:
        parts = urlsplit(self.artifact)
        if parts.scheme != "pvc":
            return None
        return PvcArtifact(claim=parts.netloc, path=parts.path.lstrip("/"))


@dataclass(frozen=True)
class S3Access:
    """How servers reach s3:// artifacts. The Secret is only named: its keys become
    the pods' AWS_* variables by reference, so its values never pass through the
    operator, the BatModel or its status."""

    endpoint: str | None = None
    region: str | None = None
    credentials_secret: str | None = None
    service_account: str | None = None
    """For web-identity credentials the cluster injects (EKS IRSA, pod identity...)."""


@dataclass(frozen=True)
class Analysis:
    min_requests: int = 0
    max_error_rate: float | None = None
    max_latency_p99_ms: float | None = None
    max_prediction_shift: float | None = None


@dataclass(frozen=True)
class Rollout:
    strategy: str = "RollingUpdate"
    steps: tuple[int, ...] = (10, 50)
    interval: float = 60.0
    analysis: Analysis = Analysis()

    @property
    def canary(self) -> bool:
        return self.strategy == "Canary"


DURATION_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _rollout(raw: Any, problems: list[str]) -> Rollout:
    if raw is None:
        return Rollout()
    if not isinstance(raw, Mapping):
        problems.append("spec.rollout must be an object")
        return Rollout()
    strategy = raw.get("strategy", "RollingUpdate")
    if strategy not in ("RollingUpdate", "Canary"):
        problems.append(f"spec.rollout.strategy {strategy!r} must be RollingUpdate or Canary")
    steps = raw.get("steps", [10, 50])
    if (not isinstance(steps, list) or not steps
            or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 99 for x in steps)
            or any(b <= a for a, b in zip(steps, steps[1:], strict=False))):
        problems.append("spec.rollout.steps must be increasing percentages from 1 to 99")
        steps = [10, 50]
    interval_raw = raw.get("interval", "60s")
    match = DURATION_RE.match(str(interval_raw).strip())
    interval = float(match.group(1)) * UNITS[match.group(2)] if match else 0.0
    if not match or interval <= 0:
        problems.append(f"spec.rollout.interval {interval_raw!r} must be a duration such as 30s, "
                        "2m or a number of seconds")
        interval = 60.0
    gates = raw.get("analysis") or {}
    if not isinstance(gates, Mapping):
        problems.append("spec.rollout.analysis must be an object")
        gates = {}

    def number(key: str, highest: float | None = None) -> float | None:
        value = gates.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                highest is not None and value > highest):
            limit = f" from 0 to {highest:g}" if highest is not None else " of at least 0"
            problems.append(f"spec.rollout.analysis.{key} must be a number{limit}")
            return None
        return float(value)

    min_requests = number("minRequests")
    analysis = Analysis(min_requests=int(min_requests or 0), max_error_rate=number("maxErrorRate", 1),
                        max_latency_p99_ms=number("maxLatencyP99Ms"),
                        max_prediction_shift=number("maxPredictionShift", 1))
    return Rollout(strategy=str(strategy), steps=tuple(steps), interval=interval, analysis=analysis)


@dataclass(frozen=True)
class Autoscaling:
    """A HorizontalPodAutoscaler per version Deployment, which then owns its replicas."""

    min_replicas: int
    max_replicas: int
    target_cpu: int = 80
    """Average CPU utilisation of the pods' requests, in percent."""


@dataclass(frozen=True)
class Peer:
    """Who may call the model's Services (a NetworkPolicy peer: label selectors)."""

    namespace_labels: Mapping[str, str] | None = None
    """Namespaces with these labels ({} = every namespace; None = the model's own)."""
    pod_labels: Mapping[str, str] | None = None
    """Pods with these labels (None = every pod of those namespaces)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    versions: tuple[VersionSpec, ...]
    """Sorted by MAJOR."""
    promoted: VersionSpec
    replicas: int
    resources: dict[str, Any] | None = None
    rollout: Rollout = Rollout()
    annotations: Mapping[str, str] | None = None
    autoscaling: Autoscaling | None = None
    max_unavailable: int | str | None = 1
    """The PodDisruptionBudget of each version (None: none)."""
    network_peers: tuple[Peer, ...] | None = None
    """Who may call the model (None: no NetworkPolicy, everyone)."""
    s3: S3Access = S3Access()

    @property
    def most_replicas(self) -> int:
        """The most pods a version may run (outside a canary)."""
        return self.autoscaling.max_replicas if self.autoscaling else self.replicas

    def by_major(self, major: int) -> VersionSpec | None:
        return next((v for v in self.versions if v.major == major), None)


def parse(body: Mapping[str, Any], default_replicas: int = 1) -> ModelSpec:
    meta = body.get("metadata", {})
    spec = body.get("spec") or {}
    name = str(meta.get("name", ""))
    problems: list[str] = []
    if not DNS1035_RE.match(name) or len(name) > MAX_NAME - 3:
        problems.append(f"metadata.name {name!r} must be a DNS-1035 label of at most "
                        f"{MAX_NAME - 3} characters (a-z, 0-9, '-', starting with a letter): "
                        "it names the Services <name> and <name>-v<major>")

    versions: list[VersionSpec] = []
    raw_versions = spec.get("versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        problems.append("spec.versions must list at least one version")
        raw_versions = []
    majors: dict[int, str] = {}
    raw_rollout = spec.get("rollout")
    canary = isinstance(raw_rollout, Mapping) and raw_rollout.get("strategy") == "Canary"
    for i, entry in enumerate(raw_versions):
        where = f"spec.versions[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where} must be an object")
            continue
        text = str(entry.get("version", ""))
        if len(text) > MAX_VERSION or not semver.Version.is_valid(text):
            problems.append(f"{where}.version {text[:MAX_VERSION]!r} is not a semantic version "
                            f"MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] of at most {MAX_VERSION} "
                            "characters")
            continue
        version = semver.Version.parse(text)
        if version.major in majors:
            problems.append(f"{where}.version {text}: MAJOR {version.major} is already listed "
                            f"({majors[version.major]}); list at most one version per MAJOR")
            continue
        majors[version.major] = text
        if len(name) + 2 + len(str(version.major)) > MAX_NAME:
            problems.append(f"{where}.version {text}: the Service {name}-v{version.major} would be "
                            f"longer than {MAX_NAME} characters; shorten metadata.name")
        elif canary and len(name) + len(CANARY_SUFFIX) + 2 + len(str(version.major)) > MAX_NAME:
            problems.append(f"{where}.version {text}: the canary Deployment "
                            f"{name}-v{version.major}{CANARY_SUFFIX} would be longer than "
                            f"{MAX_NAME} characters; shorten metadata.name")
        artifact = str(entry.get("artifact", ""))
        problems += _check_artifact(where, artifact)
        digest = entry.get("digest")
        if digest is not None and not DIGEST_RE.match(str(digest)):
            problems.append(f"{where}.digest must be sha256:<64 hex digits>")
        allow_pickle = entry.get("allowPickle", False)
        if not isinstance(allow_pickle, bool):
            problems.append(f"{where}.allowPickle must be true or false")
        versions.append(VersionSpec(version=version, artifact=artifact,
                                    digest=str(digest) if digest else None,
                                    allow_pickle=allow_pickle is True))
    versions.sort(key=lambda v: v.major)

    promoted: VersionSpec | None = None
    promoted_text = spec.get("promoted")
    if promoted_text is None:
        promoted = max(versions, key=lambda v: v.version) if versions else None
    else:
        promoted = next((v for v in versions if str(v.version) == str(promoted_text)), None)
        if promoted is None and versions:
            problems.append(f"spec.promoted {promoted_text!r} is not one of the listed versions "
                            f"({', '.join(str(v.version) for v in versions)})")

    replicas = spec.get("replicas", default_replicas)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        problems.append(f"spec.replicas must be an integer from 0 to {MAX_REPLICAS}")
        replicas = default_replicas
    resources = spec.get("resources")
    if resources is not None and not isinstance(resources, Mapping):
        problems.append("spec.resources must be an object with requests and/or limits")
        resources = None

    rollout = _rollout(spec.get("rollout"), problems)
    autoscaling = _autoscaling(spec.get("autoscaling"), problems)
    if autoscaling is not None:
        replicas = autoscaling.min_replicas  # what a canary's steps are counted against
    max_unavailable = _disruption_budget(spec.get("disruptionBudget"), problems)
    peers = _network_policy(spec.get("networkPolicy"), problems)
    s3 = _s3(spec.get("s3"), problems)

    if problems or promoted is None:
        raise SpecError(problems or ["spec.versions must list at least one version"])
    return ModelSpec(name=name, namespace=str(meta.get("namespace", "")),
                     uid=str(meta.get("uid", "")), generation=int(meta.get("generation", 0)),
                     versions=tuple(versions), promoted=promoted, replicas=int(replicas),
                     resources=dict(resources) if resources else None, rollout=rollout,
                     annotations=dict(meta.get("annotations") or {}), autoscaling=autoscaling,
                     max_unavailable=max_unavailable, network_peers=peers, s3=s3)


def _s3(raw: Any, problems: list[str]) -> S3Access:
    if raw is None:
        return S3Access()
    if not isinstance(raw, Mapping):
        problems.append("spec.s3 must be an object (endpoint, region, credentialsSecret, "
                        "serviceAccountName)")
        return S3Access()
    values: dict[str, str | None] = {}
    rules = {"endpoint": (ENDPOINT_RE, "an http(s)://HOST[:PORT] URL"),
             "region": (REGION_RE, "a region name such as eu-west-2"),
             "credentialsSecret": (DNS1123_RE, "the name of a Secret in this namespace"),
             "serviceAccountName": (DNS1123_RE, "the name of a ServiceAccount in this namespace")}
    for key, (pattern, meaning) in rules.items():
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not pattern.match(value)
                                  or len(value) > 253):
            problems.append(f"spec.s3.{key} must be {meaning}")
            value = None
        values[key] = value.rstrip("/") if isinstance(value, str) else None
    return S3Access(endpoint=values["endpoint"], region=values["region"],
                    credentials_secret=values["credentialsSecret"],
                    service_account=values["serviceAccountName"])


def _autoscaling(raw: Any, problems: list[str]) -> Autoscaling | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append("spec.autoscaling must be an object with minReplicas, maxReplicas and "
                        "targetCPUUtilization")
        return None

    def integer(key: str, default: int | None, low: int, high: int) -> int | None:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"spec.autoscaling.{key} must be an integer from {low} to {high}")
            return None
        return value

    low = integer("minReplicas", 1, 1, MAX_REPLICAS)
    high = integer("maxReplicas", None, 1, MAX_REPLICAS)
    target = integer("targetCPUUtilization", 80, 1, 100)
    if low is None or high is None or target is None:
        return None
    if low > high:
        problems.append(f"spec.autoscaling.minReplicas ({low}) is above maxReplicas ({high})")
        return None
    return Autoscaling(min_replicas=low, max_replicas=high, target_cpu=target)


PERCENT_RE: Final = re.compile(r"^(100|[1-9]?[0-9])%$")


def _disruption_budget(raw: Any, problems: list[str]) -> int | str | None:
    if raw is None:
        return 1
    if not isinstance(raw, Mapping):
        problems.append("spec.disruptionBudget must be an object (maxUnavailable, enabled)")
        return 1
    if raw.get("enabled", True) is False:
        return None
    value = raw.get("maxUnavailable", 1)
    if isinstance(value, bool) or not ((isinstance(value, int) and value >= 1)
                                       or (isinstance(value, str) and PERCENT_RE.match(value)
                                           and value != "0%")):
        problems.append("spec.disruptionBudget.maxUnavailable must be an integer of at least 1 "
                        "or a percentage like 25% (use enabled: false for no budget)")
        return 1
    return value


def _network_policy(raw: Any, problems: list[str]) -> tuple[Peer, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("from", []), list):
        problems.append("spec.networkPolicy must be an object with a list 'from'")
        return None
    peers = []
    for i, entry in enumerate(raw.get("from", [])):
        where = f"spec.networkPolicy.from[{i}]"
        if not isinstance(entry, Mapping) or not ({"namespaceSelector", "podSelector"} & set(entry)):
            problems.append(f"{where} must have a namespaceSelector, a podSelector or both")
            continue
        selectors = {}
        for key in ("namespaceSelector", "podSelector"):
            if key not in entry:
                continue
            chosen = entry[key]
            match = chosen.get("matchLabels", {}) if isinstance(chosen, Mapping) else None
            if (not isinstance(match, Mapping) or set(chosen) - {"matchLabels"}
                    or not all(isinstance(k, str) and isinstance(v, str) for k, v in match.items())):
                problems.append(f"{where}.{key} must be {{matchLabels: {{label: value}}}}")
                continue
            selectors[key] = dict(match)
        peers.append(Peer(namespace_labels=selectors.get("namespaceSelector"),
                          pod_labels=selectors.get("podSelector")))
    return tuple(peers)


def _check_artifact(where: str, artifact: str) -> list[str]:
    parts = urlsplit(artifact)
    if parts.scheme not in SCHEMES:
        return [f"{where}.artifact {artifact!r} must start with one of "
                f"{', '.join(s + '://' for s in SCHEMES)}"]
    if not parts.netloc:
        return [f"{where}.artifact {artifact!r} has no host (or, for pvc://, no claim name)"]
    if parts.scheme == "s3":
        if not BUCKET_RE.match(parts.netloc):
            return [f"{where}.artifact: {parts.netloc!r} is not a valid bucket name (3-63 "
                    "characters: a-z, 0-9, '.', '-')"]
        if parts.query or parts.fragment or ".." in parts.path.split("/"):
            return [f"{where}.artifact: an s3:// artifact is s3://BUCKET/PREFIX/, without "
                    "'..', query or fragment"]
    if parts.scheme == "pvc":
        if not DNS1123_RE.match(parts.netloc):
            return [f"{where}.artifact: {parts.netloc!r} is not a valid PersistentVolumeClaim name"]
        if ".." in parts.path.split("/"):
            return [f"{where}.artifact: the path inside the claim may not contain '..'"]
    return []
