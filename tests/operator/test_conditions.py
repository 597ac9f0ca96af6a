from __future__ import annotations

from batcomputer.operator.conditions import get, set_condition


def test_transition_time_changes_only_with_status() -> None:
    conds = set_condition([], type="Ready", status=False, reason="Starting", message="m",
                          generation=1, now="t1")
    assert conds == [{"type": "Ready", "status": "False", "observedGeneration": 1,
                      "lastTransitionTime": "t1", "reason": "Starting", "message": "m"}]
    same = set_condition(conds, type="Ready", status=False, reason="StillStarting", message="m2",
                         generation=2, now="t2")
    assert get(same, "Ready") == {"type": "Ready", "status": "False", "observedGeneration": 2,
                                  "lastTransitionTime": "t1", "reason": "StillStarting",
                                  "message": "m2"}
    flipped = set_condition(same, type="Ready", status=True, reason="Up", message="", generation=2,
                            now="t3")
    assert get(flipped, "Ready")["lastTransitionTime"] == "t3"  # type: ignore[index]


def test_other_conditions_are_kept_and_reason_is_never_empty() -> None:
    conds = set_condition([{"type": "Degraded", "status": "True", "reason": "X",
                            "lastTransitionTime": "t0"}],
                          type="Ready", status=True, reason="", message="", generation=1, now="t1")
    assert [c["type"] for c in conds] == ["Degraded", "Ready"]
    assert get(conds, "Ready")["reason"] == "Unknown"  # type: ignore[index]
    assert get(conds, "Missing") is None
