"""Bounded launches, starts and replacements: how often a worker may pay for a new try. Pure.

Two kinds of loss, told apart by whether the lost instance was ever Ready:

* a failed launch (it died before Ready: a KMS key the role cannot use, capacity
  lost after launch) is retried with backoff (15 s, doubling); after
  ``max_failed_launches`` in a row the worker is Stalled ``LaunchFailed``, quoting
  EC2's StateReason;
* a lost instance (it had been Ready) is replaced at most ``max_replacements``
  times per ``replacement_window``, then Stalled ``ReplacementLimitReached``.

A StartInstances that EC2 accepted but whose instance falls back to ``stopped``
(``Server.InsufficientInstanceCapacity`` on a metal type) is a failed start: the
operator notes each Start it sends; a ``stopped`` instance seen ``start_grace``
after it, never ``running`` in between, counts one. Starts back off the same way
(15 s, doubling) and after ``max_failed_starts`` in a row the worker is Stalled
``StartFailed``. Seeing the instance ``running`` resets the count; ``desiredState:
Stopped`` clears it. A stop made by hand outside the operator counts nothing: no
Start of ours was pending.

A stalled worker gets one more try when its spec changes (a new generation) or
after the slow recheck. The record lives in ``status.recovery`` so a restart keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from .conditions import parse_rfc3339


@dataclass(frozen=True)
class Limits:
    max_failed_launches: int = 3
    backoff_base: float = 15.0
    backoff_cap: float = 900.0
    max_replacements: int = 3
    replacement_window: float = 3600.0
    recheck: float = 600.0  # a stalled worker tries once more after this long
    max_failed_starts: int = 3
    #: Seconds after our Start before a ``stopped`` instance counts as a failed start: a read taken
    #: right after the call may not show it yet (EC2's read-after-write lag, the observer's cache).
    start_grace: float = 5.0
    #: Starts per ``restart_window`` of an instance that stopped without the operator asking (``--max-starts``).
    max_starts: int = 3
    restart_window: float = 3600.0

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed launch or start in a row (15, 30, 60, ...)."""
        return min(self.backoff_cap, self.backoff_base * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class Recovery:
    """``status.recovery``: what the bounds count."""

    failed_launches: int = 0
    last_failure_time: str | None = None
    last_failure_reason: str | None = None
    #: The spec generation when the last launch failed: a newer one earns another try.
    failure_generation: int | None = None
    replacement_times: tuple[str, ...] = ()
    #: The last instance that reached Ready: losing it is a replacement, not a failed launch.
    ready_instance_id: str | None = None
    #: When the operator's last StartInstances went out, and to which instance; None: no Start pending.
    start_requested: str | None = None
    start_instance_id: str | None = None
    failed_starts: int = 0
    last_start_failure_time: str | None = None
    last_start_failure_reason: str | None = None
    #: The spec generation when the last start failed: a newer one earns another try.
    start_failure_generation: int | None = None
    #: Starts the operator sent after a stop it had not asked for, within the window (``--max-starts``).
    restart_times: tuple[str, ...] = ()
    #: The operator wanted the instance stopped (desiredState Stopped, idle stop, a resize's stop)
    #: since it last ran: a stop then is expected, not one to count.
    stop_expected: bool = False
    #: A type change EC2 refused, and the spec generation it was refused for: no stop for it again until
    #: the spec changes.
    resize_refused_type: str | None = None
    resize_refused_generation: int | None = None
    resize_refused_reason: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> Recovery:
        if not isinstance(raw, Mapping):
            return cls()
        return cls(
            failed_launches=_int(raw.get("failedLaunches")) or 0,
            last_failure_time=_str(raw.get("lastFailureTime")),
            last_failure_reason=_str(raw.get("lastFailureReason")),
            failure_generation=_int(raw.get("failureGeneration")),
            replacement_times=tuple(t for t in raw.get("replacementTimes") or () if isinstance(t, str)),
            ready_instance_id=_str(raw.get("readyInstanceId")),
            start_requested=_str(raw.get("startRequested")),
            start_instance_id=_str(raw.get("startInstanceId")),
            failed_starts=_int(raw.get("failedStarts")) or 0,
            last_start_failure_time=_str(raw.get("lastStartFailureTime")),
            last_start_failure_reason=_str(raw.get("lastStartFailureReason")),
            start_failure_generation=_int(raw.get("startFailureGeneration")),
            restart_times=tuple(t for t in raw.get("restartTimes") or () if isinstance(t, str)),
            stop_expected=raw.get("stopExpected") is True,
            resize_refused_type=_str(raw.get("resizeRefusedType")),
            resize_refused_generation=_int(raw.get("resizeRefusedGeneration")),
            resize_refused_reason=_str(raw.get("resizeRefusedReason")),
        )

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "failedLaunches": self.failed_launches,
            "lastFailureTime": self.last_failure_time,
            "lastFailureReason": self.last_failure_reason,
            "failureGeneration": self.failure_generation,
            "replacementTimes": list(self.replacement_times) or None,
            "readyInstanceId": self.ready_instance_id,
            "startRequested": self.start_requested,
            "startInstanceId": self.start_instance_id,
            "failedStarts": self.failed_starts or None,
            "lastStartFailureTime": self.last_start_failure_time,
            "lastStartFailureReason": self.last_start_failure_reason,
            "startFailureGeneration": self.start_failure_generation,
            "restartTimes": list(self.restart_times) or None,
            "stopExpected": self.stop_expected or None,
            "resizeRefusedType": self.resize_refused_type,
            "resizeRefusedGeneration": self.resize_refused_generation,
            "resizeRefusedReason": self.resize_refused_reason,
        }
        return {key: value for key, value in raw.items() if value is not None}

    @property
    def empty(self) -> bool:
        return self == Recovery()


def ready(record: Recovery, instance_id: str) -> Recovery:
    """The instance reached Ready: failed launches start counting from zero again."""
    if record.ready_instance_id == instance_id and record.failed_launches == 0:
        return record
    return replace(record, failed_launches=0, ready_instance_id=instance_id)


def launch_failed(record: Recovery, reason: str, generation: int, now: datetime) -> Recovery:
    return replace(record, failed_launches=record.failed_launches + 1, last_failure_time=_rfc3339(now),
                   last_failure_reason=reason, failure_generation=generation)


def recent_replacements(record: Recovery, limits: Limits, now: datetime) -> tuple[str, ...]:
    since = now - timedelta(seconds=limits.replacement_window)
    return tuple(t for t in record.replacement_times if (parse_rfc3339(t) or now) > since)


def replaced(record: Recovery, limits: Limits, now: datetime) -> Recovery:
    return replace(record, replacement_times=(*recent_replacements(record, limits, now), _rfc3339(now)))


def replacement_wait(record: Recovery, limits: Limits, now: datetime) -> float | None:
    """None when a replacement is allowed now, else seconds until the oldest one leaves the window."""
    recent = recent_replacements(record, limits, now)
    if len(recent) < limits.max_replacements:
        return None
    oldest = min((parse_rfc3339(t) or now) for t in recent)
    return max(1.0, (oldest + timedelta(seconds=limits.replacement_window) - now).total_seconds())


@dataclass(frozen=True)
class Gate:
    """May the worker launch (or start) now? ``stalled``: the bound is reached; ``wait``: seconds to back off."""

    allowed: bool
    stalled: bool = False
    wait: float = 0.0


def launch_gate(record: Recovery, limits: Limits, generation: int, now: datetime) -> Gate:
    return _gate(record.failed_launches, record.last_failure_time, record.failure_generation,
                 limits.max_failed_launches, limits, generation, now)


# ---------------------------------------------------------------- starts that fall back to stopped


def start_sent(record: Recovery, instance_id: str, now: datetime) -> Recovery:
    """The operator sends StartInstances: the next ``stopped`` seen after the grace is a failed start."""
    return replace(record, start_requested=_rfc3339(now), start_instance_id=instance_id)


def start_not_sent(record: Recovery) -> Recovery:
    """The pass failed before (or at) its StartInstances: no Start of ours is pending."""
    return replace(record, start_requested=None, start_instance_id=None)


def started(record: Recovery) -> Recovery:
    """The instance was seen running: failed starts count from zero again (the last failure stays readable),
    and the next stop is unasked unless the operator asks for it."""
    if (record.start_requested is None and record.start_instance_id is None and record.failed_starts == 0
            and not record.stop_expected):
        return record
    return replace(record, start_requested=None, start_instance_id=None, failed_starts=0, stop_expected=False)


def starts_cleared(record: Recovery) -> Recovery:
    """``desiredState: Stopped`` (an idle stop included): nothing of the start bounds is left, and the
    instance being stopped is what the operator wants."""
    return replace(record, start_requested=None, start_instance_id=None, failed_starts=0,
                   last_start_failure_time=None, last_start_failure_reason=None, start_failure_generation=None,
                   restart_times=(), stop_expected=True)


def stop_sent(record: Recovery) -> Recovery:
    """The operator stops the instance (a resize): the stop that follows is expected."""
    return record if record.stop_expected else replace(record, stop_expected=True)


# ---------------------------------------------------------------- restarts after stops nobody asked for


def recent_restarts(record: Recovery, limits: Limits, now: datetime) -> tuple[str, ...]:
    since = now - timedelta(seconds=limits.restart_window)
    return tuple(t for t in record.restart_times if (parse_rfc3339(t) or now) > since)


def restart_wait(record: Recovery, limits: Limits, now: datetime) -> float | None:
    """None when another start after an unasked stop is allowed now, else seconds until one is."""
    recent = recent_restarts(record, limits, now)
    if len(recent) < limits.max_starts:
        return None
    oldest = min((parse_rfc3339(t) or now) for t in recent)
    return max(1.0, (oldest + timedelta(seconds=limits.restart_window) - now).total_seconds())


def restarted(record: Recovery, limits: Limits, now: datetime) -> Recovery:
    return replace(record, restart_times=(*recent_restarts(record, limits, now), _rfc3339(now)))


# ---------------------------------------------------------------- type changes EC2 refused


def resize_refused(record: Recovery, instance_type: str, generation: int, reason: str) -> Recovery:
    return replace(record, resize_refused_type=instance_type, resize_refused_generation=generation,
                   resize_refused_reason=reason)


def resize_still_refused(record: Recovery, instance_type: str | None, generation: int) -> bool:
    """Was a change to ``instance_type`` refused for this very spec generation?"""
    return (instance_type is not None and record.resize_refused_type == instance_type
            and record.resize_refused_generation == generation)


def resize_refusal_cleared(record: Recovery, generation: int) -> Recovery:
    """A new spec generation earns the resize another try."""
    if record.resize_refused_type is None or record.resize_refused_generation == generation:
        return record
    return replace(record, resize_refused_type=None, resize_refused_generation=None, resize_refused_reason=None)


def start_failed(record: Recovery, reason: str, generation: int, now: datetime) -> Recovery:
    return replace(record, start_requested=None, start_instance_id=None, failed_starts=record.failed_starts + 1,
                   last_start_failure_time=_rfc3339(now), last_start_failure_reason=reason,
                   start_failure_generation=generation)


def start_pending(record: Recovery, instance_id: str) -> bool:
    return record.start_requested is not None and record.start_instance_id == instance_id


def start_grace_left(record: Recovery, limits: Limits, now: datetime) -> float:
    """Seconds before a ``stopped`` instance counts against the pending Start (0: it counts now)."""
    return max(0.0, limits.start_grace - _elapsed(record.start_requested, now))


def start_gate(record: Recovery, limits: Limits, generation: int, now: datetime) -> Gate:
    return _gate(record.failed_starts, record.last_start_failure_time, record.start_failure_generation,
                 limits.max_failed_starts, limits, generation, now)


def _gate(failures: int, last_failure_time: str | None, failure_generation: int | None, max_failures: int,
          limits: Limits, generation: int, now: datetime) -> Gate:
    if failures == 0:
        return Gate(True)
    since = _elapsed(last_failure_time, now)
    if failures >= max_failures:
        if failure_generation is not None and generation != failure_generation:
            return Gate(True)  # the spec changed: one more try
        if since >= limits.recheck:
            return Gate(True)  # the slow recheck: one more try
        return Gate(False, stalled=True, wait=limits.recheck - since)
    backoff = limits.backoff(failures)
    if since >= backoff:
        return Gate(True)
    return Gate(False, wait=backoff - since)


def _elapsed(recorded: str | None, now: datetime) -> float:
    """Seconds since a recorded time. Records keep whole seconds (truncated), so count from the end
    of that second: no backoff or grace is ever shorter than stated."""
    when = parse_rfc3339(recorded)
    return 0.0 if when is None else max(0.0, (now - when).total_seconds() - 1.0)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
