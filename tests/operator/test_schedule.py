"""The resync schedule: an interval after success, a doubling retry after failure."""

from __future__ import annotations

from batcomputer.operator.schedule import Schedule

KEY = ("ns", "crime")


def test_a_tracked_model_is_due_one_interval_later() -> None:
    schedule = Schedule(interval=30)
    schedule.track(KEY, now=0)
    assert schedule.due(29.9) == [] and schedule.due(30) == [KEY]
    schedule.succeeded(KEY, now=30)
    assert schedule.next_at() == 60


def test_failures_retry_from_a_second_doubling_to_the_cap() -> None:
    schedule = Schedule(interval=30, first_retry=1, max_retry=8)
    delays = [schedule.failed(KEY, now=0) for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    schedule.succeeded(KEY, now=100)
    assert schedule.failed(KEY, now=100) == 1


def test_tracking_does_not_postpone_a_sooner_retry_and_forget_drops_it() -> None:
    schedule = Schedule(interval=30)
    schedule.failed(KEY, now=0)
    schedule.track(KEY, now=0)
    assert schedule.due(1) == [KEY]
    schedule.forget(KEY)
    assert schedule.due(100) == [] and len(schedule) == 0
