"""Power state: start, stop and resize towards the spec, never against a transition. Pure.

A Start is bounded like a launch (``recovery``): EC2 can accept StartInstances and then put
the instance back to stopped (no capacity for a metal type); re-sending it on every pass
would loop without a bound, so failed starts back off and, after three in a row, stall.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from . import reasons
from .actions import Action, ModifyType, Note, Start, Stop
from .conditions import Health, health_of
from .recovery import (
    Limits,
    Recovery,
    start_failed,
    start_gate,
    start_grace_left,
    start_pending,
    start_sent,
    started,
    starts_cleared,
)
from .spec import WorkerSpec

if TYPE_CHECKING:  # worker.py imports this module: its input types are for annotations only
    from .worker import Observation, WorkerStatus


@dataclass(frozen=True)
class PowerStep:
    """What the power state calls for: health, actions and their events, and the start bound's record."""

    health: Health
    actions: list[Action]
    poll: bool
    notes: list[Note]
    recovery: Recovery
    recheck_after: float | None = None
    #: Events that are news in themselves (a failed start), posted whatever the actions do.
    news: tuple[Note, ...] = ()


def power_step(
    generation: int, spec: WorkerSpec, status: WorkerStatus, observation: Observation,
    instance: CMLWorkerInstanceDto, now: datetime, limits: Limits,
) -> PowerStep:
    """Power state towards the spec, with the start bound kept in ``status.recovery``."""
    record = status.recovery
    if not spec.wants_running:
        record = starts_cleared(record)  # desiredState Stopped: the start bound starts afresh
    elif instance.instance_state == "running":
        record = started(record)
    if instance.instance_state == "stopped" and spec.wants_running:
        return _start_bounded(generation, spec, status, observation, instance, record, now, limits)
    health, actions, poll, notes = _transition(spec, status, observation, instance)
    return PowerStep(health, actions, poll, notes, record)


def _start_bounded(
    generation: int, spec: WorkerSpec, status: WorkerStatus, observation: Observation,
    instance: CMLWorkerInstanceDto, record: Recovery, now: datetime, limits: Limits,
) -> PowerStep:
    """A stopped instance that should run: judge our last Start, then start again unless backing off.

    A Start that EC2 accepted but whose instance is stopped again (never seen running since)
    failed: it costs nothing, but re-sending it on every pass would loop without a bound.
    """
    instance_id = instance.aws_instance_id
    news: tuple[Note, ...] = ()
    if start_pending(record, instance_id):
        grace = start_grace_left(record, limits, now)
        if grace > 0:
            message = f"Waiting for instance {instance_id} to leave stopped after StartInstances"
            return PowerStep(Health.reconciling(reasons.STARTING, message), [], True, [], record)
        reason = instance.state_reason or "stopped again without a StateReason"
        record = start_failed(record, reason, generation, now)
        news = (Note("Warning", reasons.START_FAILED,
                     f"Instance {instance_id} fell back to stopped after StartInstances (failed start "
                     f"{record.failed_starts} of {limits.max_failed_starts}): {reason}"),)
    gate = start_gate(record, limits, generation, now)
    if gate.allowed:
        health, actions, poll, notes = _transition(spec, status, observation, instance)
        return PowerStep(health, actions, poll, notes, start_sent(record, instance_id, now), news=news)
    last = record.last_start_failure_reason or "unknown"
    if gate.stalled:
        message = (f"{record.failed_starts} starts of instance {instance_id} in a row fell back to stopped; "
                   f"last: {last}. Wait for capacity or change the instance type, then change the spec, "
                   "or wait for the slow recheck")
        return PowerStep(Health.stalled(reasons.START_FAILED, message), [], False, [], record, gate.wait, news)
    message = (f"Start {record.failed_starts} of {limits.max_failed_starts} of instance {instance_id} fell back "
               f"to stopped: {last}; starting again in {gate.wait:.0f} s")
    return PowerStep(Health.reconciling(reasons.START_FAILED, message), [], False, [], record, gate.wait, news)


def _transition(
    spec: WorkerSpec, status: WorkerStatus, observation: Observation, instance: CMLWorkerInstanceDto
) -> tuple[Health, list[Action], bool, list[Note]]:
    """Start, stop and resize towards the spec; never against a transition."""
    instance_id = instance.aws_instance_id
    state = instance.instance_state
    wanted_type = spec.wanted_type  # None: adopted and unstated, the instance keeps its type
    resize = wanted_type is not None and instance.instance_type != wanted_type
    if state == "pending":
        reason = reasons.PROVISIONING if status.phase in (None, "Pending", "Provisioning") else reasons.STARTING
        return Health.reconciling(reason, f"Instance {instance_id} is pending"), [], True, []
    if state == "stopping":
        reason = reasons.STOPPING if not spec.wants_running else reasons.WAITING_FOR_TRANSITION
        return Health.reconciling(reason, f"Instance {instance_id} is stopping"), [], True, []
    if state == "running":
        if resize:
            message = f"Stopping instance {instance_id} to change its type {instance.instance_type} -> {wanted_type}"
            return (Health.reconciling(reasons.RESIZING, message), [Stop(resize_to=wanted_type)], True,
                    [Note("Normal", reasons.EVENT_RESIZING, message)])
        if not spec.wants_running:
            message = f"Stopping instance {instance_id} (desiredState Stopped)"
            return (Health.reconciling(reasons.STOPPING, message), [Stop()], True,
                    [Note("Normal", reasons.EVENT_STOPPING, message)])
        checks = observation.checks
        if checks is not None and checks.all_ok:
            return Health.ready(reasons.INSTANCE_READY, f"Instance {instance_id} is running and healthy"), [], False, []
        if checks is not None and checks.impaired:
            return _impaired(status, instance_id, checks)
        detail = f"system {checks.system}, instance {checks.instance}" if checks else "not reported yet"
        return (Health.reconciling(reasons.STATUS_CHECKS_PENDING,
                                   f"Instance {instance_id} is running; status checks {detail}"), [], True, [])
    # stopped
    if resize:
        message = f"Changing the type of instance {instance_id} {instance.instance_type} -> {wanted_type}"
        assert wanted_type is not None
        actions: list[Action] = [ModifyType(wanted_type)]
        notes = [Note("Normal", reasons.EVENT_RESIZED, message)]
        if spec.wants_running:
            actions.append(Start())
            return Health.reconciling(reasons.RESIZING, message), actions, True, notes
        return Health.ready(reasons.INSTANCE_STOPPED, f"Instance {instance_id} is stopped"), actions, False, notes
    if spec.wants_running:
        message = f"Starting instance {instance_id}"
        return (Health.reconciling(reasons.STARTING, message), [Start()], True,
                [Note("Normal", reasons.EVENT_STARTING, message)])
    return Health.ready(reasons.INSTANCE_STOPPED, f"Instance {instance_id} is stopped"), [], False, []


def _impaired(status: WorkerStatus, instance_id: str,
              checks: InstanceStatusChecks) -> tuple[Health, list[Action], bool, list[Note]]:
    """A failing status check: EC2 (system) or the guest (instance) needs attention; warn once per transition."""
    message = (f"Instance {instance_id} is running but a status check is impaired "
               f"(system {checks.system}, instance {checks.instance}); a system failure clears when AWS "
               "repairs the host (or stop and start the worker), an instance failure needs the guest looked at")
    previous = health_of(status.conditions)
    notes = [] if previous is not None and previous.reason == reasons.STATUS_CHECK_IMPAIRED else [
        Note("Warning", reasons.STATUS_CHECK_IMPAIRED, message)]
    return Health.reconciling(reasons.STATUS_CHECK_IMPAIRED, message), [], False, notes  # not a transition: resync pace
