"""Power schedules (``spec.schedule``): when a worker runs and how many workers a pool keeps. Pure.

No clock reads: ``now`` is always an argument (an aware datetime). A window is a local
``{days, from, to}`` in the schedule's IANA time zone; each local date on which it
opens gives one *occurrence*, turned into UTC instants once:

* a ``from``/``to`` that falls in a spring-forward gap means the first minute after
  the gap (the window is shortened, never skipped);
* a time that happens twice in autumn means its first occurrence (fold 0), so a
  window opens once, never twice;
* ``to`` earlier than (or equal to) ``from`` ends on the next day; ``24:00`` ends at
  the next midnight;
* ``exceptions`` are local dates on which no window opens (a window that opened the
  evening before still ends as planned).

Each occurrence runs from ``from - prewarmMinutes`` to ``to``. Overlapping or touching
occurrences merge (a worker never stops between two windows that touch).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DEFAULT_PREWARM_MINUTES = 20
MAX_PREWARM_MINUTES = 720
MAX_WINDOWS = 20
MAX_EXCEPTIONS = 366
#: The annotation that starts a worker outside its windows (shared with the idle stop's wake).
WAKE_ANNOTATION = "cml.dev/wake"
#: How far ahead the next start or stop is looked for (a year and a week: yearly holidays included).
SEARCH_DAYS = 373
_DAY = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?$")
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
UTC = timezone.utc


class ScheduleError(ValueError):
    """A schedule the operator cannot use; ``field`` is its path, e.g. ``spec.schedule.timeZone``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight, 1..1440; <= start: the next day
    replicas: int | None = None  # pools only


@dataclass(frozen=True)
class Schedule:
    time_zone: str
    windows: tuple[Window, ...]
    exceptions: frozenset[date] = frozenset()
    prewarm_minutes: int = DEFAULT_PREWARM_MINUTES

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def prewarm(self) -> timedelta:
        return timedelta(minutes=self.prewarm_minutes)


def parse_days(text: str, field: str) -> frozenset[int]:
    """``Mon-Fri``, ``Sat,Sun``, ``Mon,Wed-Fri``; a range may wrap (``Fri-Mon``)."""
    days: set[int] = set()
    for part in str(text).split(","):
        match = _DAY.match(part.strip())
        if match is None:
            raise ScheduleError(field, f"{text!r} is not a list of days or ranges such as Mon-Fri or Sat,Sun")
        first = DAY_NAMES.index(match.group(1))
        last = DAY_NAMES.index(match.group(3)) if match.group(3) else first
        span = (last - first) % 7
        days.update((first + offset) % 7 for offset in range(span + 1))
    return frozenset(days)


def _clock(value: Any, field: str, *, end: bool) -> int:
    text = str(value)
    if end and text == "24:00":
        return 1440
    if not _CLOCK.match(text):
        allowed = "HH:MM (00:00 to 23:59, or 24:00)" if end else "HH:MM (00:00 to 23:59)"
        raise ScheduleError(field, f"{text!r} is not {allowed}")
    return int(text[:2]) * 60 + int(text[3:])


def parse_schedule(raw: Mapping[str, Any] | None, path: str = "spec.schedule", *,
                   pool: bool = False) -> Schedule | None:
    """The schedule, None when absent; ``ScheduleError`` names the first bad field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ScheduleError(path, "must be an object")
    zone_name = str(raw.get("timeZone") or "UTC")
    try:
        ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{path}.timeZone", f"{zone_name!r} is not an IANA time zone (e.g. Europe/Berlin)")
    raw_windows = raw.get("windows") or []
    if not isinstance(raw_windows, list) or len(raw_windows) > MAX_WINDOWS:
        raise ScheduleError(f"{path}.windows", f"must be a list of at most {MAX_WINDOWS} windows")
    windows = []
    for index, item in enumerate(raw_windows):
        where = f"{path}.windows[{index}]"
        if not isinstance(item, Mapping):
            raise ScheduleError(where, "must be an object {days, from, to}")
        start = _clock(item.get("from"), f"{where}.from", end=False)
        end = _clock(item.get("to"), f"{where}.to", end=True)
        replicas = item.get("replicas")
        if pool:
            if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 500:
                raise ScheduleError(f"{where}.replicas", "must be an integer from 0 to 500")
        else:
            replicas = None
        windows.append(Window(parse_days(item.get("days", ""), f"{where}.days"), start, end, replicas))
    exceptions = set()
    raw_exceptions = raw.get("exceptions") or []
    if not isinstance(raw_exceptions, list) or len(raw_exceptions) > MAX_EXCEPTIONS:
        raise ScheduleError(f"{path}.exceptions", f"must be a list of at most {MAX_EXCEPTIONS} dates")
    for index, text in enumerate(raw_exceptions):
        try:
            if not _DATE.match(str(text)):
                raise ValueError(text)
            exceptions.add(date.fromisoformat(str(text)))
        except ValueError:
            raise ScheduleError(f"{path}.exceptions[{index}]", f"{text!r} is not a date YYYY-MM-DD") from None
    prewarm = raw.get("prewarmMinutes", DEFAULT_PREWARM_MINUTES)
    if not isinstance(prewarm, int) or isinstance(prewarm, bool) or not 0 <= prewarm <= MAX_PREWARM_MINUTES:
        raise ScheduleError(f"{path}.prewarmMinutes", f"must be an integer from 0 to {MAX_PREWARM_MINUTES}")
    return Schedule(zone_name, tuple(windows), frozenset(exceptions), prewarm)


# ---------------------------------------------------------------- local time -> UTC


def local_instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    """The UTC instant of local ``day`` + ``minutes``; a time in a spring gap moves to the gap's end."""
    if minutes >= 1440:
        day, minutes = day + timedelta(days=1), minutes - 1440
    naive = datetime.combine(day, time(minutes // 60, minutes % 60))
    for _ in range(24 * 60):  # gaps are at most a few hours: step to the first local minute that exists
        aware = naive.replace(tzinfo=zone, fold=0)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
            return aware.astimezone(UTC)
        naive += timedelta(minutes=1)
    raise AssertionError(f"no valid local time near {day} {minutes} in {zone}")  # pragma: no cover


# ---------------------------------------------------------------- occurrences


@dataclass(frozen=True)
class Occurrence:
    """One window on one local date: runs from ``start`` (``opens`` minus pre-warm) to ``end``, UTC."""

    start: datetime
    opens: datetime
    end: datetime
    replicas: int | None = None


def _occurrences_on(schedule: Schedule, day: date, zone: ZoneInfo) -> Iterator[Occurrence]:
    if day in schedule.exceptions:
        return
    for window in schedule.windows:
        if day.weekday() not in window.days:
            continue
        opens = local_instant(day, window.start, zone)
        end_day = day if window.end > window.start else day + timedelta(days=1)
        end = local_instant(end_day, window.end, zone)
        if end > opens:
            yield Occurrence(opens - schedule.prewarm, opens, end, window.replicas)


def occurrences(schedule: Schedule, first_day: date, days: int) -> list[Occurrence]:
    """Every occurrence of windows opening on local dates ``first_day`` .. ``first_day + days - 1``, by start."""
    zone = schedule.zone
    found = [occurrence for offset in range(days)
             for occurrence in _occurrences_on(schedule, first_day + timedelta(days=offset), zone)]
    return sorted(found, key=lambda o: (o.start, o.end))


def _local_date(schedule: Schedule, now: datetime) -> date:
    return now.astimezone(schedule.zone).date()


def _merged(items: Sequence[Occurrence]) -> list[tuple[datetime, datetime]]:
    spans: list[tuple[datetime, datetime]] = []
    for item in items:
        if spans and item.start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], item.end))
        else:
            spans.append((item.start, item.end))
    return spans


# ---------------------------------------------------------------- a worker


@dataclass(frozen=True)
class WorkerWindow:
    """Where ``now`` stands: inside a (pre-warmed) window or not, and when that changes."""

    running: bool
    next_start: datetime | None  # the next time a stopped worker starts (after the current span when running)
    next_stop: datetime | None  # the end of the current span, or of the next one when outside


def worker_window(schedule: Schedule, now: datetime) -> WorkerWindow:
    """Running spans are merged occurrences; look back 2 days (a window running past midnight, pre-warm)."""
    today = _local_date(schedule, now)
    for days in (9, SEARCH_DAYS):
        spans = _merged(occurrences(schedule, today - timedelta(days=2), days + 2))
        final = days == SEARCH_DAYS
        horizon = _horizon(schedule, today, days)
        current = next(((s, e) for s, e in spans if s <= now < e), None)
        later = [(s, e) for s, e in spans if s > now]
        if current is not None:
            if current[1] < horizon or final:
                return WorkerWindow(True, later[0][0] if later else None, current[1])
            continue
        if later and (later[0][1] < horizon or final):
            return WorkerWindow(False, later[0][0], later[0][1])
    return WorkerWindow(False, None, None)


def _horizon(schedule: Schedule, today: date, days: int) -> datetime:
    """Before this instant nothing from a date past the search can start (windows opening on
    later dates begin at their local midnight minus the pre-warm at the earliest)."""
    return local_instant(today + timedelta(days=days), 0, schedule.zone) - schedule.prewarm - timedelta(hours=1)


# ---------------------------------------------------------------- a pool


@dataclass(frozen=True)
class PoolWindow:
    """The replicas the calendar wants at ``now`` (None: no window, spec.replicas) and the next change."""

    replicas: int | None
    next_change: datetime | None
    next_replicas: int | None  # after the next change (None: spec.replicas)


def _replicas_at(items: Sequence[Occurrence], instant: datetime) -> int | None:
    covering = [item.replicas or 0 for item in items if item.start <= instant < item.end]
    return max(covering) if covering else None


def pool_window(schedule: Schedule, now: datetime) -> PoolWindow:
    """Overlapping windows: the largest ``replicas`` among those in force wins."""
    today = _local_date(schedule, now)
    current: int | None = None
    for days in (9, SEARCH_DAYS):
        items = occurrences(schedule, today - timedelta(days=2), days + 2)
        final = days == SEARCH_DAYS
        horizon = _horizon(schedule, today, days)
        current = _replicas_at(items, now)
        for instant in sorted({t for item in items for t in (item.start, item.end) if t > now}):
            if instant >= horizon and not final:
                break
            value = _replicas_at(items, instant)
            if value != current:
                return PoolWindow(current, instant, value)
        else:
            if final:
                return PoolWindow(current, None, None)
    return PoolWindow(current, None, None)


# ---------------------------------------------------------------- status.schedule and the worker's verdict


def rfc3339(instant: datetime | None) -> str | None:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if instant else None


def parse_instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ScheduleStatus:
    """``status.schedule`` of a worker: what users read and what a restart must not forget."""

    in_window: bool = False
    next_start: str | None = None
    next_stop: str | None = None
    wake: str | None = None  # the cml.dev/wake value last honoured
    woken_at: str | None = None
    woken_until: str | None = None  # running outside the windows until then (or an idle stop)

    @classmethod
    def from_dict(cls, raw: Any) -> ScheduleStatus:
        raw = raw if isinstance(raw, Mapping) else {}
        return cls(in_window=raw.get("inWindow") is True, next_start=raw.get("nextStart"),
                   next_stop=raw.get("nextStop"), wake=raw.get("wake"), woken_at=raw.get("wokenAt"),
                   woken_until=raw.get("wokenUntil"))

    def to_dict(self) -> dict[str, Any]:
        out = {"inWindow": self.in_window, "nextStart": self.next_start, "nextStop": self.next_stop,
               "wake": self.wake, "wokenAt": self.woken_at, "wokenUntil": self.woken_until}
        return {key: value for key, value in out.items() if value is not None}


@dataclass(frozen=True)
class WorkerVerdict:
    """Hold the worker stopped (outside every window, not woken)? And the status to write."""

    hold: bool
    status: ScheduleStatus
    woken: bool = False  # a new wake was honoured on this pass (event)
    entered_window: bool = False  # a window (or its pre-warm) began since the last pass (event)
    left_window: bool = False  # the worker is now held stopped where it was not (event)


def decide_worker(schedule: Schedule, status: ScheduleStatus, *, wake: str | None, wants_running: bool,
                  idle_stopped_at: str | None, now: datetime) -> WorkerVerdict:
    """The schedule's word on one worker at ``now``; ``desiredState: Stopped`` always wins (the caller's spec).

    A wake (a new ``cml.dev/wake`` value) outside the windows runs the worker until the end of
    the next window, or until the idle stop, whichever comes first.
    """
    window = worker_window(schedule, now)
    known = status.next_start is not None or status.next_stop is not None  # not the first pass
    was_held = not status.in_window and not _woken(status, idle_stopped_at, now)
    new_wake = wake is not None and wake != status.wake
    woken_now = False
    if new_wake:
        status = replace(status, wake=wake)
        if wants_running and not window.running:
            status = replace(status, woken_at=rfc3339(now), woken_until=rfc3339(window.next_stop))
            woken_now = True
    if status.woken_at and not _woken(status, idle_stopped_at, now):
        status = replace(status, woken_at=None, woken_until=None)  # the wake is over: the calendar rules again
    woken = _woken(status, idle_stopped_at, now)
    hold = not window.running and not woken
    next_stop = window.next_stop
    if woken and not window.running:
        next_stop = parse_instant(status.woken_until)
    status = replace(status, in_window=window.running, next_start=rfc3339(window.next_start),
                     next_stop=rfc3339(next_stop))
    return WorkerVerdict(hold, status, woken=woken_now,
                         entered_window=known and window.running and was_held and not woken_now,
                         left_window=known and hold and not was_held)


def _woken(status: ScheduleStatus, idle_stopped_at: str | None, now: datetime) -> bool:
    woken_at = parse_instant(status.woken_at)
    if woken_at is None:
        return False
    until = parse_instant(status.woken_until)
    if until is not None and now >= until:
        return False
    idle_stop = parse_instant(idle_stopped_at)
    return idle_stop is None or idle_stop < woken_at


def outside_message(schedule: Schedule, status: ScheduleStatus) -> str:
    """Stable words for Ready/OutsideSchedule (no relative times: the status must not churn)."""
    if status.next_start is None:
        return f"Outside every spec.schedule window ({schedule.time_zone}) and none opens within a year"
    return (f"Outside every spec.schedule window ({schedule.time_zone}); starts at {status.next_start} "
            f"({schedule.prewarm_minutes} min before its window), or set the annotation {WAKE_ANNOTATION}")


# ---------------------------------------------------------------- a pool's status.schedule


@dataclass(frozen=True)
class PoolScheduleStatus:
    """``status.schedule`` of a pool: replicas in force, why, and the next change.

    ``period`` names the stretch between two changes (its end); ``specReplicasAtStart`` is
    ``spec.replicas`` when it began, so a ``kubectl scale`` during a window is seen as one.
    """

    replicas: int
    source: str  # Window | Spec | Override
    next_change: str | None = None
    next_replicas: int | None = None
    period: str = ""
    spec_replicas_at_start: int | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> PoolScheduleStatus | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("replicas"), int):
            return None
        return cls(replicas=raw["replicas"], source=str(raw.get("source") or "Spec"),
                   next_change=raw.get("nextChange"), next_replicas=raw.get("nextReplicas"),
                   period=str(raw.get("period") or ""), spec_replicas_at_start=raw.get("specReplicasAtStart"))

    def to_dict(self) -> dict[str, Any]:
        out = {"replicas": self.replicas, "source": self.source, "nextChange": self.next_change,
               "nextReplicas": self.next_replicas, "period": self.period,
               "specReplicasAtStart": self.spec_replicas_at_start}
        return {key: value for key, value in out.items() if value is not None and value != ""}


def decide_pool(schedule: Schedule, previous: PoolScheduleStatus | None, spec_replicas: int,
                now: datetime) -> PoolScheduleStatus:
    """Replicas in force: a window's, or ``spec.replicas`` outside them.

    ``kubectl scale`` during a window (``spec.replicas`` changed since the window began)
    overrides the window until the next change; then the calendar rules again.
    """
    window = pool_window(schedule, now)
    period = rfc3339(window.next_change) or "never"
    next_replicas = window.next_replicas if window.next_replicas is not None else spec_replicas
    if previous is None or previous.period != period:
        at_start = spec_replicas
    else:
        at_start = previous.spec_replicas_at_start if previous.spec_replicas_at_start is not None else spec_replicas
    if window.replicas is None:
        replicas, source = spec_replicas, "Spec"
    elif spec_replicas != at_start:
        replicas, source = spec_replicas, "Override"
    else:
        replicas, source = window.replicas, "Window"
    return PoolScheduleStatus(replicas, source, rfc3339(window.next_change),
                              next_replicas if window.next_change else None, period, at_start)
