"""Power state: start, stop and resize towards the spec, never against a transition. Pure.

A Start is bounded like a launch (``recovery``): EC2 can accept StartInstances and then put
the instance back to stopped (no capacity for a metal type); re-sending it on every pass
would loop without a bound, so failed starts back off and, after three in a row, stall.

An instance that stops without the operator asking (a guest that powers itself off, a stop
by hand) is started again at most ``max_starts`` times an hour, then the worker is Stalled
``StartLimitReached``: a guest that shuts down on every boot must not cost a start forever.

A type change EC2 refused is remembered with the spec generation (``recovery``): the worker
keeps its old type and is not stopped for that type again until the spec changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from ..ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from . import reasons
from .actions import Action, ModifyType, Note, Start, Stop
from .conditions import Health, HealthState, health_of
from .recovery import (
    Limits,
    Recovery,
    resize_refusal_cleared,
    resize_still_refused,
    restart_wait,
    restarted,
    start_failed,
    start_gate,
    start_grace_left,
    start_pending,
    start_sent,
    started,
    starts_cleared,
    stop_sent,
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
    """Power state towards the spec, with the start bounds and a refused resize kept in ``status.recovery``."""
    record = resize_refusal_cleared(status.recovery, generation)
    refused_type = spec.wanted_type
    refused = (resize_still_refused(record, refused_type, generation)
               and instance.instance_type != refused_type)
    if refused:
        spec = replace(spec, instance_type=instance.instance_type)  # keeps its type: no stop for the refused one
    if not spec.wants_running:
        record = starts_cleared(record)  # desiredState Stopped: the start bounds start afresh
    elif instance.instance_state == "running":
        record = started(record)
    if instance.instance_state == "stopped" and spec.wants_running:
        step = _start_bounded(generation, spec, status, observation, instance, record, now, limits)
    else:
        health, actions, poll, notes = _transition(spec, status, observation, instance)
        step = PowerStep(health, actions, poll, notes, record)
    if any(isinstance(action, Stop) for action in step.actions):
        step = replace(step, recovery=stop_sent(step.recovery))  # the stop that follows is the operator's own
    if refused and step.health.state is HealthState.READY:
        assert refused_type is not None
        step = _resize_refused(step, instance, refused_type, limits)
    return step


def _resize_refused(step: PowerStep, instance: CMLWorkerInstanceDto, target: str, limits: Limits) -> PowerStep:
    why = step.recovery.resize_refused_reason or "refused"
    message = (f"EC2 refused to change instance {instance.aws_instance_id} to {target}: {why}. It keeps its type "
               f"{instance.instance_type}; the operator stops it for that type no more until the spec changes "
               "(choose another spec.instanceType, or apply the spec again once the cause is gone)")
    return replace(step, health=Health.stalled(reasons.RESIZE_REFUSED, message), recheck_after=limits.recheck)


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
        # A stop the operator did not ask for (not desiredState, not idle, not a resize), and not the
        # retry of a failed start (bounded above): each start after one counts toward --max-starts.
        if not record.stop_expected and record.failed_starts == 0:
            wait = restart_wait(record, limits, now)
            if wait is not None:
                return _start_limit_reached(instance, record, limits, wait, news)
            record = restarted(record, limits, now)
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


def _start_limit_reached(instance: CMLWorkerInstanceDto, record: Recovery, limits: Limits, wait: float,
                         news: tuple[Note, ...]) -> PowerStep:
    why = instance.state_reason or "no StateReason given"
    message = (f"Instance {instance.aws_instance_id} stopped without the operator asking ({why}); it was started "
               f"again {limits.max_starts} times in the last {limits.restart_window / 60:.0f} minutes already "
               "(--max-starts): not starting it again. Find out why it stops (a guest that powers itself off?); "
               f"set desiredState Stopped and back to Running to start it now, or wait {wait:.0f} s")
    return PowerStep(Health.stalled(reasons.START_LIMIT_REACHED, message), [], False, [], record, wait,
                     (*news, Note("Warning", reasons.START_LIMIT_REACHED, message)))


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
