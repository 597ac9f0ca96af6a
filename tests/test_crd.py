"""The CRD as `kubectl explain` shows it: every field says what it is (the e2e test
tests/e2e/test_docs.py asks the real API server for some of them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def fields(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named field of a schema (array items and map values are explained by their
    field)."""
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from fields(child, f"{path}.{name}")
    for inner in (node.get("items"), node.get("additionalProperties")):
        if isinstance(inner, dict):
            yield from fields(inner, path)


def test_every_field_has_a_description() -> None:
    crd = yaml.safe_load((REPO / "crds" / "batmodels.batcomputer.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [path for path, node in fields(schema) if not node.get("description")]
    assert missing == []


def test_the_chart_installs_the_same_crd() -> None:
    assert (REPO / "charts" / "batcomputer" / "crds" / "batmodels.batcomputer.io.yaml").read_text() \
        == (REPO / "crds" / "batmodels.batcomputer.io.yaml").read_text()
