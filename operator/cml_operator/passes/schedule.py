"""The schedule and usage side of a worker pass (``spec.schedule``, ``status.usage``); decisions in reconcile/.

``ScheduleGate.begin`` runs before EC2 and CML decide: outside every window (and not
woken) the spec they see says ``desiredState: Stopped``, so the stop is an ordinary
operator stop (the licence is released first, the idle stop's hold ends) and
``desiredState: Stopped`` in the real spec still wins over any window or wake.
``finish`` turns "stopped as the calendar wants" into Ready/``OutsideSchedule``.
``usage_status`` keeps ``status.usage`` and the running-hours metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from ..reconcile import reasons
from ..reconcile.actions import Note
from ..reconcile.conditions import Health, HealthState
from ..reconcile.schedule import (
    WAKE_ANNOTATION,
    Schedule,
    ScheduleError,
    ScheduleStatus,
    WorkerVerdict,
    decide_worker,
    outside_message,
    parse_instant,
    parse_schedule,
)
from ..reconcile.spec import SpecError, WorkerSpec
from ..reconcile.usage import Usage, account
from ..runtime import Runtime

logger = logging.getLogger(__name__)
POOL_LABEL = "cml.dev/pool"


@dataclass
class ScheduleGate:
    schedule: Schedule
    verdict: WorkerVerdict
    notes: list[Note] = field(default_factory=list)

    @classmethod
    def begin(cls, raw_spec: Mapping[str, Any] | None, spec: WorkerSpec, raw_status: Mapping[str, Any] | None,
              annotations: Mapping[str, str] | None, now: datetime) -> ScheduleGate | None:
        """None without ``spec.schedule``; a bad schedule raises ``SpecError`` naming the field."""
        try:
            schedule = parse_schedule((raw_spec or {}).get("schedule"))
        except ScheduleError as error:
            raise SpecError(error.field, str(error).split(": ", 1)[-1]) from error
        if schedule is None:
            return None
        raw_status = raw_status or {}
        idle_stopped_at = (raw_status.get("cml") or {}).get("idleStoppedAt") if isinstance(
            raw_status.get("cml"), Mapping) else None
        verdict = decide_worker(schedule, ScheduleStatus.from_dict(raw_status.get("schedule")),
                                wake=(annotations or {}).get(WAKE_ANNOTATION), wants_running=spec.wants_running,
                                idle_stopped_at=idle_stopped_at, now=now)
        gate = cls(schedule, verdict)
        status = verdict.status
        if verdict.woken:
            gate.notes.append(Note("Normal", reasons.EVENT_WOKEN,
                                   f"Woken outside spec.schedule: running until {status.woken_until or 'stopped'} "
                                   "or its idle stop, whichever comes first"))
        elif verdict.entered_window and spec.wants_running:
            gate.notes.append(Note("Normal", reasons.EVENT_SCHEDULE_START,
                                   f"A spec.schedule window begins (pre-warm {schedule.prewarm_minutes} min): "
                                   f"starting; it stops at {status.next_stop}"))
        elif verdict.left_window and spec.wants_running:
            gate.notes.append(Note("Normal", reasons.EVENT_SCHEDULE_STOP,
                                   f"Outside every spec.schedule window: stopping until {status.next_start}"))
        return gate

    def ec2_spec(self, spec: WorkerSpec) -> WorkerSpec:
        """The spec EC2 and CML decisions see: held stopped outside the windows."""
        return replace(spec, desired_state="Stopped") if self.verdict.hold else spec

    def health(self, health: Health, wants_running: bool) -> Health:
        """Stopped (or stopping) because of the calendar: Ready, reason OutsideSchedule."""
        if not self.verdict.hold or not wants_running:
            return health
        settled = health.state is HealthState.READY or health.reason == reasons.STOPPING
        if not settled:
            return health
        return Health.ready(reasons.OUTSIDE_SCHEDULE, outside_message(self.schedule, self.verdict.status))

    def status_dict(self) -> dict[str, Any]:
        return self.verdict.status.to_dict()


def held_by_schedule(raw_spec: Mapping[str, Any] | None, spec: WorkerSpec, raw_status: Mapping[str, Any] | None,
                     annotations: Mapping[str, str] | None, now: datetime) -> bool:
    """Is the worker held stopped by its calendar now (a bad schedule counts as held: it is stalled)?"""
    try:
        gate = ScheduleGate.begin(raw_spec, spec, raw_status, annotations, now)
    except SpecError:
        return True
    return gate is not None and gate.verdict.hold


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def usage_status(runtime: Runtime, namespace: str, uid: str, labels: Mapping[str, str] | None,
                 raw_status: Mapping[str, Any] | None, rendered: Mapping[str, Any], region: str,
                 now: datetime) -> dict[str, Any] | None:
    """``status.usage`` after this pass (from the status it rendered), and the running-hours metrics.

    None: no instance was ever seen, nothing to count.
    """
    previous = Usage.from_dict((raw_status or {}).get("usage"))
    if not rendered.get("instanceId") and previous is None:
        return None
    running = rendered.get("instanceState") == "running"
    instance_type = str(rendered.get("instanceType") or "")
    price = runtime.prices.current().get(instance_type) if runtime.prices is not None else None
    usage = account(previous, running, now, price)
    was_since = previous.running_since if previous is not None and previous.month == usage.month else None
    since = parse_instant(usage.running_since or was_since)
    pool = str((labels or {}).get(POOL_LABEL, ""))
    runtime.metrics.count_running(uid, (namespace, pool, instance_type, region), running,
                                  since.timestamp() if since is not None else None, now.timestamp(), price)
    return usage.to_dict()
