"""Events: said once, never a flood."""

from __future__ import annotations

from batcomputer.operator.events import EventGate


def test_the_same_message_is_said_once_until_it_is_old() -> None:
    gate = EventGate(repeat_after=600)
    assert gate.allow("ns", "crime", "Ready", "1.1.0 is Ready", now=0)
    assert not gate.allow("ns", "crime", "Ready", "1.1.0 is Ready", now=10)
    assert gate.allow("ns", "other", "Ready", "1.1.0 is Ready", now=10)
    assert gate.allow("ns", "crime", "Ready", "1.1.0 is Ready", now=601)


def test_a_flapping_version_posts_a_handful_of_events_not_hundreds() -> None:
    gate = EventGate(burst=5, refill_seconds=30, repeat_after=600)
    posted = 0
    for second in range(240):  # 4 minutes of flapping, a new message each second
        posted += gate.allow("ns", "crime", "CrashLoopBackOff", f"attempt {second}", now=second)
    assert posted == 12  # the burst of 5, then one per 30 s


def test_forgetting_an_object_starts_afresh() -> None:
    gate = EventGate(burst=1)
    assert gate.allow("ns", "crime", "Created", "m", now=0)
    assert not gate.allow("ns", "crime", "Created", "n", now=0)
    gate.forget("ns", "crime")
    assert gate.allow("ns", "crime", "Created", "m", now=0)
