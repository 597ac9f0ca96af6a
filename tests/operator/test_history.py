"""status.history: what served each target, when, and how it got there."""

from __future__ import annotations

from batcomputer.operator import history

SPEC = {"1.0.0": {"artifact": "http://r/1.0.0/"}, "1.1.0": {"artifact": "http://r/1.1.0/",
                                                           "digest": "sha256:" + "a" * 64},
        "2.0.0": {"artifact": "http://r/2.0.0/"}}


def test_entries_open_when_a_version_serves_and_close_when_another_takes_over() -> None:
    h = history.update([], {"v1": "", "stable": ""}, SPEC, "t0")
    assert h == []  # nothing serves yet
    h = history.update(h, {"v1": "1.0.0", "stable": "1.0.0"}, SPEC, "t1")
    assert [(e["target"], e["version"], e["how"]) for e in h] == [
        ("v1", "1.0.0", "first served"), ("stable", "1.0.0", "first served")]
    assert history.update(h, {"v1": "1.0.0", "stable": "1.0.0"}, SPEC, "t2") == h  # no change
    h = history.update(h, {"v1": "1.1.0", "stable": "1.1.0"}, SPEC, "t3")
    assert [(e["target"], e["version"], e.get("until"), e.get("left")) for e in h] == [
        ("v1", "1.0.0", "t3", "replaced by 1.1.0"), ("stable", "1.0.0", "t3", "replaced by 1.1.0"),
        ("v1", "1.1.0", None, None), ("stable", "1.1.0", None, None)]
    assert h[-1]["how"] == "rolled out within its MAJOR" and h[-2]["digest"] == "sha256:" + "a" * 64


def test_promotion_and_retirement() -> None:
    h = history.update([], {"v1": "1.1.0", "stable": "1.1.0"}, SPEC, "t1")
    h = history.update(h, {"v1": "1.1.0", "v2": "2.0.0", "stable": "2.0.0"}, SPEC, "t2")
    assert h[-1] == {"target": "stable", "version": "2.0.0", "since": "t2", "how": "promoted",
                     "artifact": "http://r/2.0.0/"}
    h = history.update(h, {"v2": "2.0.0", "stable": "2.0.0"}, SPEC, "t3")
    v1 = next(e for e in h if e["target"] == "v1")
    assert (v1["until"], v1["left"]) == ("t3", "retired")


def test_previous_names_the_version_to_roll_back_to() -> None:
    h = history.update([], {"v1": "1.0.0", "stable": "1.0.0"}, SPEC, "t1")
    assert history.previous(h, "v1") is None
    h = history.update(h, {"v1": "1.1.0", "stable": "1.1.0"}, SPEC, "t2")
    back = history.previous(h, "v1")
    assert back is not None and (back["version"], back["artifact"]) == ("1.0.0", "http://r/1.0.0/")


def test_the_list_is_bounded_by_dropping_the_oldest_closed_entries() -> None:
    h: list[dict[str, object]] = []
    versions = {f"1.{i}.0": {"artifact": f"http://r/1.{i}.0/"} for i in range(50)}
    for i in range(50):
        h = history.update(h, {"v1": f"1.{i}.0"}, versions, f"t{i}")  # type: ignore[arg-type]
    assert len(h) == history.MAX_ENTRIES and h[-1]["version"] == "1.49.0" and not h[-1].get("until")
