"""The admin commands' patches and the status view, from BatModel dicts."""

from __future__ import annotations

from typing import Any

import pytest

from batcomputer.operator.admin import AdminError, promote_patch, render_status, rollback_patch


def bm(versions: list[str], promoted: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "crime", "namespace": "ns", "generation": 3},
            "spec": {"versions": [{"version": v, "artifact": f"http://r/{v}/"} for v in versions],
                     "promoted": promoted},
            "status": {"observedGeneration": 3, "promoted": promoted, "serving": promoted,
                       "history": history,
                       "versions": [{"version": v, "major": int(v[0]), "phase": "Ready",
                                     "reason": "Available", "message": "2/2 replicas ready",
                                     "readyReplicas": 2, "replicas": 2, "serving": v,
                                     "endpoint": f"http://crime-v{v[0]}.ns.svc/api/predict"}
                                    for v in versions]}}


def served(target: str, version: str, since: str, until: str | None = None, **extra: Any) -> dict[str, Any]:
    entry = {"target": target, "version": version, "since": since, "how": "rolled out",
             "artifact": f"http://r/{version}/", **extra}
    if until:
        entry["until"] = until
    return entry


HISTORY = [served("v1", "1.0.0", "t1", "t2", digest="sha256:" + "b" * 64),
           served("stable", "1.0.0", "t1", "t2"), served("v1", "1.1.0", "t2"),
           served("stable", "1.1.0", "t2", "t3"), served("v2", "2.0.0", "t3"),
           served("stable", "2.0.0", "t3")]


def test_promote_sets_promoted_and_refuses_an_unlisted_version() -> None:
    model = bm(["1.1.0", "2.0.0"], "1.1.0", [])
    assert promote_patch(model, "2.0.0") == {"spec": {"promoted": "2.0.0"}}
    with pytest.raises(AdminError, match="3.0.0 is not listed"):
        promote_patch(model, "3.0.0")


def test_rollback_of_the_stable_endpoint_promotes_what_served_before() -> None:
    patch, what = rollback_patch(bm(["1.1.0", "2.0.0"], "2.0.0", HISTORY))
    assert patch == {"spec": {"promoted": "1.1.0"}}
    assert what == "the stable endpoint of crime back to 1.1.0"


def test_rollback_of_a_major_puts_back_its_previous_version_with_artifact_and_digest() -> None:
    patch, what = rollback_patch(bm(["1.1.0", "2.0.0"], "2.0.0", HISTORY), major=1)
    assert patch == {"spec": {"versions": [
        {"version": "1.0.0", "artifact": "http://r/1.0.0/", "digest": "sha256:" + "b" * 64},
        {"version": "2.0.0", "artifact": "http://r/2.0.0/"}]}}
    assert what == "MAJOR 1 of crime back to 1.0.0 (from http://r/1.0.0/)"
    # When that MAJOR is the promoted one, the stable endpoint follows it back.
    patch, _ = rollback_patch(bm(["1.1.0", "2.0.0"], "1.1.0", HISTORY), major=1)
    assert patch["spec"]["promoted"] == "1.0.0"


def test_rollback_without_history_says_so() -> None:
    with pytest.raises(AdminError, match="no earlier version served MAJOR 2"):
        rollback_patch(bm(["1.1.0", "2.0.0"], "2.0.0", HISTORY), major=2)


def test_status_shows_versions_conditions_and_recent_history() -> None:
    text = render_status(bm(["1.1.0", "2.0.0"], "2.0.0", HISTORY))
    assert text.splitlines()[0] == "BatModel ns/crime   promoted 2.0.0, stable endpoint serves 2.0.0"
    assert "1.1.0    1      Ready  2/2    1.1.0" in text
    assert "stable  1.1.0        t2 -> t3  (rolled out)" in text
