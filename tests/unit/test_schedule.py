"""Power schedules in virtual time: windows, time zones, DST, exceptions, pre-warm, wake, restarts, pools."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cml_operator.reconcile.schedule import (
    PoolScheduleStatus,
    ScheduleError,
    ScheduleStatus,
    decide_pool,
    decide_worker,
    parse_days,
    parse_schedule,
    pool_window,
    worker_window,
)

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(*windows: dict, zone: str = "UTC", prewarm: int = 0, exceptions: tuple[str, ...] = (),
             pool: bool = False):
    raw = {"timeZone": zone, "windows": list(windows), "prewarmMinutes": prewarm, "exceptions": list(exceptions)}
    parsed = parse_schedule(raw, pool=pool)
    assert parsed is not None
    return parsed


def transitions(sched, start: datetime, end: datetime, step: timedelta = timedelta(minutes=1)) -> list:
    """Simulate a pass every ``step``: the (instant, running) each time the wanted state flips."""
    flips, running, now = [], None, start
    while now < end:
        state = worker_window(sched, now).running
        if state != running:
            flips.append((now, state))
            running = state
        now += step
    return flips


# ---------------------------------------------------------------- parsing


def test_days_accept_ranges_lists_and_wrapping_ranges():
    assert parse_days("Mon-Fri", "d") == frozenset(range(5))
    assert parse_days("Sat,Sun", "d") == frozenset({5, 6})
    assert parse_days("Mon-Sun", "d") == frozenset(range(7))
    assert parse_days("Fri-Mon", "d") == frozenset({4, 5, 6, 0})
    assert parse_days("Mon,Wed-Thu", "d") == frozenset({0, 2, 3})


@pytest.mark.parametrize("raw, field", [
    ({"timeZone": "Mars/Olympus"}, "spec.schedule.timeZone"),
    ({"windows": [{"days": "Monday", "from": "09:00", "to": "17:00"}]}, "spec.schedule.windows[0].days"),
    ({"windows": [{"days": "Mon", "from": "9:00", "to": "17:00"}]}, "spec.schedule.windows[0].from"),
    ({"windows": [{"days": "Mon", "from": "24:00", "to": "17:00"}]}, "spec.schedule.windows[0].from"),
    ({"windows": [{"days": "Mon", "from": "09:00", "to": "25:00"}]}, "spec.schedule.windows[0].to"),
    ({"exceptions": ["2026-02-30"]}, "spec.schedule.exceptions[0]"),
    ({"prewarmMinutes": -1}, "spec.schedule.prewarmMinutes"),
])
def test_a_bad_schedule_names_its_field(raw, field):
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(raw)
    assert caught.value.field == field


def test_a_pool_window_needs_replicas():
    with pytest.raises(ScheduleError, match=r"spec.schedule.windows\[0\].replicas"):
        parse_schedule({"windows": [{"days": "Mon", "from": "09:00", "to": "17:00"}]}, pool=True)


def test_defaults_are_utc_and_twenty_minutes_of_prewarm():
    parsed = parse_schedule({"windows": [{"days": "Mon", "from": "09:00", "to": "17:00"}]})
    assert parsed is not None and parsed.time_zone == "UTC" and parsed.prewarm_minutes == 20


# ---------------------------------------------------------------- a week


def test_a_course_week_in_berlin_starts_prewarmed_and_stops_at_the_end_of_each_day():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, zone="Europe/Berlin", prewarm=20)
    # Monday 2026-12-07 .. Sunday 2026-12-13; Berlin is UTC+1 in winter.
    flips = transitions(course, at("2026-12-07T00:00"), at("2026-12-14T00:00"), timedelta(minutes=5))
    expected = []
    for day in range(7, 12):
        expected += [(at(f"2026-12-{day:02d}T07:40"), True), (at(f"2026-12-{day:02d}T16:00"), False)]
    assert flips[1:] == expected and flips[0] == (at("2026-12-07T00:00"), False)


def test_next_start_and_stop_on_friday_evening_point_to_monday():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, zone="Europe/Berlin", prewarm=20)
    window = worker_window(course, at("2026-12-11T18:00"))  # Friday 19:00 in Berlin
    assert (window.running, window.next_start, window.next_stop) == (
        False, at("2026-12-14T07:40"), at("2026-12-14T16:00"))
    inside = worker_window(course, at("2026-12-11T10:00"))
    assert (inside.running, inside.next_start, inside.next_stop) == (
        True, at("2026-12-14T07:40"), at("2026-12-11T16:00"))


def test_time_zones_on_both_sides_of_utc():
    tokyo = schedule({"days": "Mon", "from": "08:00", "to": "10:00"}, zone="Asia/Tokyo")  # UTC+9
    # Monday 08:00 in Tokyo is Sunday 23:00 UTC.
    assert worker_window(tokyo, at("2026-12-06T23:30")).running
    assert not worker_window(tokyo, at("2026-12-07T01:00")).running
    la = schedule({"days": "Fri", "from": "20:00", "to": "23:00"}, zone="America/Los_Angeles")  # UTC-8
    # Friday 20:00 in Los Angeles is Saturday 04:00 UTC.
    assert worker_window(la, at("2026-12-12T04:30")).running
    assert not worker_window(la, at("2026-12-11T20:30")).running


def test_a_window_past_midnight_runs_into_the_next_day():
    night = schedule({"days": "Fri", "from": "22:00", "to": "02:00"})
    assert worker_window(night, at("2026-12-12T01:30")).running  # Saturday 01:30
    assert not worker_window(night, at("2026-12-12T02:00")).running
    assert worker_window(night, at("2026-12-11T23:00")).next_stop == at("2026-12-12T02:00")


def test_a_lab_that_never_stops_on_weekdays_runs_from_monday_to_saturday_midnight_without_a_stop():
    weekdays = schedule({"days": "Mon-Fri", "from": "00:00", "to": "24:00"}, zone="Europe/Berlin", prewarm=20)
    flips = transitions(weekdays, at("2026-12-06T00:00"), at("2026-12-13T00:00"), timedelta(minutes=5))
    assert flips == [(at("2026-12-06T00:00"), False), (at("2026-12-06T22:40"), True),
                     (at("2026-12-11T23:00"), False)]
    window = worker_window(weekdays, at("2026-12-08T12:00"))
    assert window.next_stop == at("2026-12-11T23:00") and window.next_start == at("2026-12-13T22:40")


def test_follow_the_sun_windows_in_one_zone_hand_over_without_a_stop():
    sun = schedule({"days": "Mon-Fri", "from": "00:00", "to": "08:00"},
                   {"days": "Mon-Fri", "from": "08:00", "to": "16:00"},
                   {"days": "Mon-Fri", "from": "16:00", "to": "24:00"})
    window = worker_window(sun, at("2026-12-07T07:59"))
    assert window.running and window.next_stop == at("2026-12-12T00:00")


# ---------------------------------------------------------------- exceptions and pre-warm


def test_no_window_opens_on_an_exception_date():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, exceptions=("2026-12-24", "2026-12-25"))
    assert not worker_window(course, at("2026-12-24T10:00")).running
    window = worker_window(course, at("2026-12-23T18:00"))
    assert window.next_start == at("2026-12-28T09:00")  # Thursday and Friday are holidays


def test_an_exception_does_not_cut_a_window_that_opened_the_evening_before():
    night = schedule({"days": "Mon-Sun", "from": "22:00", "to": "02:00"}, exceptions=("2026-12-25",))
    assert worker_window(night, at("2026-12-25T01:00")).running  # opened on the 24th
    assert not worker_window(night, at("2026-12-25T23:00")).running


def test_prewarm_starts_the_worker_that_many_minutes_early():
    course = schedule({"days": "Mon", "from": "09:00", "to": "10:00"}, prewarm=20)
    assert not worker_window(course, at("2026-12-07T08:39")).running
    assert worker_window(course, at("2026-12-07T08:40")).running


def test_no_window_at_all_means_always_stopped_with_nothing_next():
    empty = schedule()
    assert worker_window(empty, at("2026-12-07T08:39")) == worker_window(empty, at("2027-06-01T00:00"))
    assert worker_window(empty, at("2026-12-07T08:39")).next_start is None


# ---------------------------------------------------------------- daylight saving


@pytest.mark.parametrize("zone, day", [("America/New_York", "2026-03-08"), ("Europe/Berlin", "2026-03-29")])
def test_spring_forward_never_skips_a_window_that_opens_in_the_gap(zone, day):
    gap = schedule({"days": "Mon-Sun", "from": "02:15", "to": "03:30"}, zone=zone)
    start = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=UTC) - timedelta(hours=12)
    flips = transitions(gap, start, start + timedelta(hours=36), timedelta(minutes=5))
    opened = [instant for instant, running in flips if running]
    assert len(opened) == 1  # one start on the transition day, shortened to 03:00-03:30 local
    local = opened[0].astimezone(gap.zone)
    assert (local.hour, local.minute) == (3, 0)


@pytest.mark.parametrize("zone, day, hour", [("America/New_York", "2026-11-01", 1),
                                             ("Europe/Berlin", "2026-10-25", 2)])
def test_fall_back_never_double_starts_a_window_in_the_repeated_hour(zone, day, hour):
    repeated = schedule({"days": "Mon-Sun", "from": f"{hour:02d}:10", "to": f"{hour:02d}:50"}, zone=zone)
    start = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=UTC) - timedelta(hours=6)
    flips = transitions(repeated, start, start + timedelta(hours=24))
    opened = [instant for instant, running in flips if running]
    assert len(opened) == 1
    closed = [instant for instant, running in flips if running is False and instant > opened[0]]
    assert closed[0] - opened[0] == timedelta(minutes=40)  # the first occurrence only


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin"])
def test_a_course_across_both_transitions_keeps_its_local_hours(zone):
    course = schedule({"days": "Mon-Sun", "from": "09:00", "to": "17:00"}, zone=zone, prewarm=20)
    for first in ("2026-03-01", "2026-10-20"):
        start = datetime.fromisoformat(f"{first}T00:00").replace(tzinfo=UTC)
        flips = transitions(course, start, start + timedelta(days=14), timedelta(minutes=10))
        starts = [instant.astimezone(course.zone) for instant, running in flips if running]
        stops = [instant.astimezone(course.zone) for instant, running in flips[1:] if not running]
        assert len(starts) == 14 and len(stops) == 14
        assert {(s.hour, s.minute) for s in starts} == {(8, 40)}
        assert {(s.hour, s.minute) for s in stops} == {(17, 0)}


# ---------------------------------------------------------------- the worker's verdict: wake, restart


def test_outside_the_window_the_worker_is_held_and_the_status_says_when_it_starts():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, prewarm=20)
    verdict = decide_worker(course, ScheduleStatus(), wake=None, wants_running=True, idle_stopped_at=None,
                            now=at("2026-12-07T06:00"))
    assert verdict.hold and not verdict.status.in_window
    assert (verdict.status.next_start, verdict.status.next_stop) == ("2026-12-07T08:40:00Z", "2026-12-07T17:00:00Z")


def test_a_restart_in_the_middle_of_a_window_keeps_the_worker_running():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, prewarm=20)
    running = decide_worker(course, ScheduleStatus(), wake=None, wants_running=True, idle_stopped_at=None,
                            now=at("2026-12-07T10:00"))
    # A new process reads the status the old one wrote, an hour later: same verdict, no event.
    again = decide_worker(course, ScheduleStatus.from_dict(running.status.to_dict()), wake=None,
                          wants_running=True, idle_stopped_at=None, now=at("2026-12-07T11:00"))
    assert not running.hold and not again.hold and not again.entered_window and not again.left_window
    assert again.status == running.status


def test_the_window_opening_and_closing_are_seen_once_each():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, prewarm=20)
    status = decide_worker(course, ScheduleStatus(), wake=None, wants_running=True, idle_stopped_at=None,
                           now=at("2026-12-07T06:00")).status
    opened = decide_worker(course, status, wake=None, wants_running=True, idle_stopped_at=None,
                           now=at("2026-12-07T08:41"))
    assert opened.entered_window and not opened.hold
    closed = decide_worker(course, opened.status, wake=None, wants_running=True, idle_stopped_at=None,
                           now=at("2026-12-07T17:00"))
    assert closed.left_window and closed.hold


def test_a_wake_runs_the_worker_until_the_end_of_the_next_window():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, prewarm=20)
    held = decide_worker(course, ScheduleStatus(), wake=None, wants_running=True, idle_stopped_at=None,
                         now=at("2026-12-07T19:00")).status
    woken = decide_worker(course, held, wake="t1", wants_running=True, idle_stopped_at=None,
                          now=at("2026-12-07T20:00"))
    assert woken.woken and not woken.hold
    assert woken.status.woken_until == "2026-12-08T17:00:00Z" == woken.status.next_stop
    overnight = decide_worker(course, woken.status, wake="t1", wants_running=True, idle_stopped_at=None,
                              now=at("2026-12-08T03:00"))
    assert not overnight.hold and not overnight.woken  # the same value is not a new wake
    ended = decide_worker(course, overnight.status, wake="t1", wants_running=True, idle_stopped_at=None,
                          now=at("2026-12-08T17:00"))
    assert ended.hold and ended.status.woken_at is None


def test_an_idle_stop_ends_a_wake_so_the_next_window_starts_the_worker_again():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"}, prewarm=20)
    woken = decide_worker(course, ScheduleStatus(next_start="x"), wake="t1", wants_running=True,
                          idle_stopped_at=None, now=at("2026-12-07T20:00")).status
    idle = decide_worker(course, woken, wake="t1", wants_running=True, idle_stopped_at="2026-12-07T21:00:00Z",
                         now=at("2026-12-07T21:01"))
    assert idle.hold and idle.status.woken_at is None
    # An idle stop before the wake does not end it.
    earlier = decide_worker(course, woken, wake="t1", wants_running=True, idle_stopped_at="2026-12-07T19:00:00Z",
                            now=at("2026-12-07T21:01"))
    assert not earlier.hold


def test_a_wake_while_desired_stopped_is_recorded_but_does_not_start_anything():
    course = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00"})
    verdict = decide_worker(course, ScheduleStatus(), wake="t1", wants_running=False, idle_stopped_at=None,
                            now=at("2026-12-07T20:00"))
    assert verdict.hold and verdict.status.wake == "t1" and verdict.status.woken_at is None and not verdict.woken


# ---------------------------------------------------------------- pools


def test_a_pool_prewarms_its_class_size_and_falls_back_to_spec_replicas():
    cls = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00", "replicas": 20}, zone="Europe/Berlin",
                   prewarm=20, pool=True)
    before = pool_window(cls, at("2026-12-07T07:39"))
    assert before.replicas is None and (before.next_change, before.next_replicas) == (at("2026-12-07T07:40"), 20)
    during = pool_window(cls, at("2026-12-07T07:40"))
    assert during.replicas == 20 and (during.next_change, during.next_replicas) == (at("2026-12-07T16:00"), None)
    status = decide_pool(cls, None, 2, at("2026-12-07T12:00"))
    assert (status.replicas, status.source, status.next_change, status.next_replicas) == (
        20, "Window", "2026-12-07T16:00:00Z", 2)
    assert decide_pool(cls, status, 2, at("2026-12-07T16:00")).replicas == 2


def test_overlapping_pool_windows_take_the_largest_replicas():
    both = schedule({"days": "Mon", "from": "09:00", "to": "12:00", "replicas": 5},
                    {"days": "Mon", "from": "10:00", "to": "11:00", "replicas": 8}, pool=True)
    assert [pool_window(both, at(f"2026-12-07T{h}")).replicas for h in ("09:30", "10:30", "11:30", "12:30")] == [
        5, 8, 5, None]
    assert pool_window(both, at("2026-12-07T10:30")).next_change == at("2026-12-07T11:00")


def test_kubectl_scale_during_a_window_overrides_it_until_the_next_change():
    cls = schedule({"days": "Mon-Fri", "from": "09:00", "to": "17:00", "replicas": 20}, pool=True)
    first = decide_pool(cls, None, 2, at("2026-12-07T10:00"))
    scaled = decide_pool(cls, first, 25, at("2026-12-07T11:00"))
    assert (scaled.replicas, scaled.source) == (25, "Override")
    # Restarted mid-window: the status carries the override.
    again = decide_pool(cls, PoolScheduleStatus.from_dict(scaled.to_dict()), 25, at("2026-12-07T12:00"))
    assert (again.replicas, again.source) == (25, "Override")
    after = decide_pool(cls, again, 25, at("2026-12-07T17:00"))
    assert (after.replicas, after.source) == (25, "Spec")
    next_day = decide_pool(cls, after, 25, at("2026-12-08T09:00"))
    assert (next_day.replicas, next_day.source) == (20, "Window")  # the calendar rules again


def test_pool_windows_across_dst_change_once_each_way():
    cls = schedule({"days": "Mon-Sun", "from": "01:10", "to": "01:50", "replicas": 3}, zone="America/New_York",
                   pool=True)
    changes, now, value = [], at("2026-10-31T18:00"), -1
    while now < at("2026-11-01T18:00"):
        replicas = pool_window(cls, now).replicas
        if replicas != value:
            changes.append((now, replicas))
            value = replicas
        now += timedelta(minutes=1)
    assert [r for _, r in changes] == [None, 3, None] and changes[1][0] == at("2026-11-01T05:10")
