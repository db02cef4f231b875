"""Bounded launches and replacements: how often a worker may pay for a new instance. Pure.

Two kinds of loss, told apart by whether the lost instance was ever Ready:

* a failed launch (it died before Ready: a KMS key the role cannot use, capacity
  lost after launch) is retried with backoff (15 s, doubling); after
  ``max_failed_launches`` in a row the worker is Stalled ``LaunchFailed``, quoting
  EC2's StateReason;
* a lost instance (it had been Ready) is replaced at most ``max_replacements``
  times per ``replacement_window``, then Stalled ``ReplacementLimitReached``.

A stalled worker gets one more launch when its spec changes (a new generation) or
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

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed launch in a row (15, 30, 60, ...)."""
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

    @classmethod
    def from_dict(cls, raw: Any) -> Recovery:
        if not isinstance(raw, Mapping):
            return cls()
        failed = raw.get("failedLaunches")
        generation = raw.get("failureGeneration")
        return cls(
            failed_launches=failed if isinstance(failed, int) and not isinstance(failed, bool) else 0,
            last_failure_time=_str(raw.get("lastFailureTime")),
            last_failure_reason=_str(raw.get("lastFailureReason")),
            failure_generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else None,
            replacement_times=tuple(t for t in raw.get("replacementTimes") or () if isinstance(t, str)),
            ready_instance_id=_str(raw.get("readyInstanceId")),
        )

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "failedLaunches": self.failed_launches,
            "lastFailureTime": self.last_failure_time,
            "lastFailureReason": self.last_failure_reason,
            "failureGeneration": self.failure_generation,
            "replacementTimes": list(self.replacement_times) or None,
            "readyInstanceId": self.ready_instance_id,
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
class LaunchGate:
    """May the worker launch now? ``stalled``: the bound is reached; ``wait``: seconds to back off."""

    allowed: bool
    stalled: bool = False
    wait: float = 0.0


def launch_gate(record: Recovery, limits: Limits, generation: int, now: datetime) -> LaunchGate:
    failures = record.failed_launches
    if failures == 0:
        return LaunchGate(True)
    since = (now - (parse_rfc3339(record.last_failure_time) or now)).total_seconds()
    if failures >= limits.max_failed_launches:
        if record.failure_generation is not None and generation != record.failure_generation:
            return LaunchGate(True)  # the spec changed: one more try
        if since >= limits.recheck:
            return LaunchGate(True)  # the slow recheck: one more try
        return LaunchGate(False, stalled=True, wait=limits.recheck - since)
    backoff = limits.backoff(failures)
    if since >= backoff:
        return LaunchGate(True)
    return LaunchGate(False, wait=backoff - since)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
