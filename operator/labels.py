"""Label keys and the labels every child carries."""

from __future__ import annotations

from typing import Final

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


def for_version(model: str, major: int, version: str) -> dict[str, str]:
    return {**common(model), NAME: model, INSTANCE: f"{model}-v{major}", APP_VERSION: version,
            COMPONENT: "predictor", MAJOR: str(major), MODEL_VERSION: version}


def pod_selector(model: str, major: int) -> dict[str, str]:
    """Selector of one MAJOR's pods. Deployment selectors are immutable: never add to it."""
    return {MODEL: model, MAJOR: str(major)}
