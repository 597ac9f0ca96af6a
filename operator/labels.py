"""Label keys and the labels every child carries."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

GROUP: Final = "batcomputer.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "BatModel"
PLURAL: Final = "batmodels"

NAME: Final = "app.kubernetes.io/name"
INSTANCE: Final = "app.kubernetes.io/instance"
APP_VERSION: Final = "app.kubernetes.io/version"
COMPONENT: Final = "app.kubernetes.io/component"
PART_OF: Final = "app.kubernetes.io/part-of"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"

MODEL: Final = f"{GROUP}/model"
MAJOR: Final = f"{GROUP}/major"
MODEL_VERSION: Final = f"{GROUP}/version"
"""As a label: the version in a label-safe form (`label_value`). As an annotation (same
key): the exact version. Read it with `version_of`."""

TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
"""Annotation on the pod template (and so on its pods): which revision a pod runs."""

DESIRED_HASH: Final = f"{GROUP}/desired-hash"
"""Annotation on every child: digest of the object as the operator last wanted it."""

MANAGER: Final = "batcomputer-operator"


def common(model: str) -> dict[str, str]:
    """Labels of every object made for a BatModel; also the selector to find them."""
    return {MANAGED_BY: MANAGER, MODEL: model, PART_OF: "batcomputer"}


def selector(model: str) -> str:
    return ",".join(f"{k}={v}" for k, v in common(model).items())


LABEL_VALUE_RE: Final = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
MAX_LABEL_VALUE: Final = 63


def label_value(version: str) -> str:
    """``version`` as a label value: semver's ``+`` (build metadata) becomes ``_``, which
    semver never uses. A version that still is not a valid label value (longer than 63
    characters, or ending in ``-``) keeps a readable head and ends in a digest of the
    whole version, so distinct versions keep distinct labels."""
    value = version.replace("+", "_")
    if len(value) <= MAX_LABEL_VALUE and LABEL_VALUE_RE.match(value):
        return value
    digest = hashlib.sha256(version.encode()).hexdigest()[:10]
    return value[:MAX_LABEL_VALUE - len(digest) - 1].rstrip("-_.") + "_" + digest


def version_annotation(version: str) -> dict[str, str]:
    return {MODEL_VERSION: version}


def version_of(obj: Mapping[str, Any]) -> str:
    """The exact version an object (Deployment, Service, pod) was made for: its annotation,
    or, on objects made before the annotation existed, its label."""
    meta = obj.get("metadata") or {}
    return str((meta.get("annotations") or {}).get(MODEL_VERSION)
               or (meta.get("labels") or {}).get(MODEL_VERSION) or "")


def for_version(model: str, major: int, version: str) -> dict[str, str]:
    value = label_value(version)
    return {**common(model), NAME: model, INSTANCE: f"{model}-v{major}", APP_VERSION: value,
            COMPONENT: "predictor", MAJOR: str(major), MODEL_VERSION: value}


def pod_selector(model: str, major: int) -> dict[str, str]:
    """Selector of one MAJOR's pods. Deployment selectors are immutable: never add to it."""
    return {MODEL: model, MAJOR: str(major)}
