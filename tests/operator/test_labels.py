from __future__ import annotations

import pytest

from batcomputer.operator import labels


@pytest.mark.parametrize(("version", "value"), [
    ("1.4.2", "1.4.2"),
    ("2.0.0-rc.1", "2.0.0-rc.1"),
    ("2.1.3+build.5", "2.1.3_build.5"),
    ("1.0.0-alpha+beta", "1.0.0-alpha_beta"),
])
def test_label_values_never_carry_a_plus(version: str, value: str) -> None:
    assert labels.label_value(version) == value


@pytest.mark.parametrize("version", [
    "1.0.0-x-",
    "1.0.0+build-",
    "99999999999999999999999.999999999999999999.99999999999999999-rc.1+build.12345",
])
def test_versions_that_cannot_be_label_values_keep_distinct_valid_labels(version: str) -> None:
    value = labels.label_value(version)
    assert labels.LABEL_VALUE_RE.match(value) and len(value) <= 63
    assert value != labels.label_value(version + "0")


def test_the_exact_version_is_read_from_the_annotation_then_the_label() -> None:
    assert labels.version_of({"metadata": {"annotations": {labels.MODEL_VERSION: "1.0.0+b.1"},
                                           "labels": {labels.MODEL_VERSION: "1.0.0_b.1"}}}) == "1.0.0+b.1"
    assert labels.version_of({"metadata": {"labels": {labels.MODEL_VERSION: "1.0.0"}}}) == "1.0.0"
    assert labels.version_of({"metadata": {}}) == ""
