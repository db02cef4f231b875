"""The deletion pass: terminate (Delete) or untag (Retain) the worker's instances; release when done."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..ec2.exceptions import EC2InstanceNotFoundException, IntegrationException
from ..fleet.observer import RegionObserver
from ..reconcile import reasons
from ..reconcile.conditions import Health
from ..reconcile.policy import Decision, Kind, classify
from ..reconcile.spec import SpecError, effective_deletion_policy, parse_spec
from ..reconcile.actions import Action, Note, RemoveOwnershipTags, Terminate
from ..reconcile.worker import (
    GONE_STATES,
    DeletionPlan,
    Observation,
    WorkerRef,
    WorkerStatus,
    decide_deletion,
    recorded_region,
)
from ..runtime import Runtime
from ..reconcile.account import Subject, recorded_account
from .account import bind_account
from .cml import release_before_terminate
from .common import PassResult, apply_action, capped
from .worker import trust_memory


async def deletion_pass(
    runtime: Runtime, ref: WorkerRef, raw_spec: Mapping[str, Any] | None, raw_status: Mapping[str, Any] | None,
    *, retry: int = 0,
) -> PassResult:
    """Terminate (Delete) or untag (Retain) every live instance of the worker; release when done."""
    status = trust_memory(WorkerStatus.from_dict(raw_status), runtime.memory(ref.uid))
    raw_spec = raw_spec or {}
    policy = effective_deletion_policy(raw_spec.get("deletionPolicy"), raw_spec.get("instanceId"))
    # The instance lives where it was launched: a changed spec.region must not leak it.
    region = recorded_region(ref, status) or _region(raw_spec)
    tracked = status.instance_id or raw_spec.get("instanceId")
    if region is None:
        if tracked is None:
            message = "The worker never had an instance"
            return PassResult(raw_status and dict(raw_status) or {}, Health.reconciling(reasons.DELETING, message),
                              (Note("Normal", reasons.EVENT_RELEASED, message),), release=True)
        error = IntegrationException(f"cannot delete instance {tracked}: spec.region is not a valid region; "
                                     "terminate it by hand, then remove the finalizer", code="InvalidRegion")
        return _deletion_failure(runtime, ref, raw_status, error, retry)

    try:
        spec_ref = raw_spec.get("accountRef") if isinstance(raw_spec.get("accountRef"), Mapping) else {}
        runtime, _ = await bind_account(runtime, Subject(
            "CMLWorker", ref.namespace, {}, spec_ref.get("name") or None, region,
            recorded_account(raw_status, launched=tracked is not None), deleting=True))
    except IntegrationException as error:
        if tracked is None and not (raw_status or {}).get("account"):
            message = f"The worker never had an instance (its account is not usable: {error})"
            return PassResult(raw_status and dict(raw_status) or {}, Health.reconciling(reasons.DELETING, message),
                              (Note("Normal", reasons.EVENT_RELEASED, message),), release=True)
        return _deletion_failure(runtime, ref, raw_status, error, retry)
    observer = runtime.observers(region)
    try:
        observations = await _deletion_targets(observer, ref, tracked, adopted=bool(raw_spec.get("instanceId")))
        notes: list[Note] = []
        release = True
        blocked: list[DeletionPlan] = []
        for observation in observations:
            plan = decide_deletion(policy, status, observation, ref, adopted_instance_id=raw_spec.get("instanceId"))
            notes.extend(plan.notes)
            if plan.blocked:
                blocked.append(plan)
                release = False
                continue
            if any(isinstance(action, Terminate) for action in plan.actions):
                notes.extend(await _release_licence(runtime, ref, raw_spec, raw_status, observation))
            if not plan.release or plan.actions:
                release = await _delete_one(runtime, observer, region, observation, plan.actions) and release
    except IntegrationException as error:
        return _deletion_failure(runtime, ref, raw_status, error, retry)
    if blocked:
        return _deletion_blocked(runtime, raw_status, blocked[0], tuple(notes))
    if release:
        for observation in observations:
            if observation.instance_id:
                observer.forget(observation.instance_id)
        runtime.forget(ref.uid)
    message = "; ".join(n.message for n in notes) or "Deleting"
    health = Health.reconciling(reasons.DELETING, message)
    status_now = dict(raw_status or {})
    status_now.update({"phase": "Terminating"})
    return PassResult(status_now, health, tuple(notes), poll_soon=not release, release=release)


async def _release_licence(runtime: Runtime, ref: WorkerRef, raw_spec: Mapping[str, Any],
                           raw_status: Mapping[str, Any] | None, observation: Observation) -> list[Note]:
    """spec.cml.license with deregisterOnStop: free the seat before terminating (bounded retries)."""
    try:
        spec = parse_spec(raw_spec)
    except SpecError:
        return []
    return await release_before_terminate(runtime, ref, spec, raw_status, observation)


async def _deletion_targets(observer: RegionObserver, ref: WorkerRef, tracked: str | None,
                            adopted: bool) -> list[Observation]:
    """The tracked instance and every live instance tagged with the worker's uid (no leaks after crashes)."""
    observations: dict[str, Observation] = {}
    if tracked:
        observations[tracked] = await observer.observe(tracked, max_age=0)
    if not adopted:
        for dto in await observer.find_by_uid(ref.uid):
            if dto.aws_instance_id not in observations:
                observations[dto.aws_instance_id] = Observation(dto.aws_instance_id, dto, None)
    return list(observations.values()) or [Observation(None, None, None)]


async def _delete_one(runtime: Runtime, observer: RegionObserver, region: str, observation: Observation,
                      actions: tuple[Action, ...]) -> bool:
    """Run the deletion actions for one instance; True when it no longer holds the finalizer."""
    instance_id = observation.instance_id
    assert instance_id is not None
    for action in actions:
        try:
            await apply_action(runtime, region, instance_id, action)
        except EC2InstanceNotFoundException:
            return True  # already gone: deletion succeeded
        if isinstance(action, RemoveOwnershipTags):
            return True
    after = await observer.observe(instance_id, max_age=0)
    return after.instance is None or after.state in GONE_STATES


def _deletion_blocked(runtime: Runtime, raw_status: Mapping[str, Any] | None, plan: DeletionPlan,
                      notes: tuple[Note, ...]) -> PassResult:
    """Nothing the operator may do deletes it (say its managed-by tag was removed): Stalled, saying what
    a person must do, the finalizer kept and the instance looked at again on the slow interval."""
    assert plan.blocked is not None
    decision = capped(runtime, Decision(Kind.TEMPORARY, plan.blocked, runtime.settings.slow_recheck))
    status_now = {**dict(raw_status or {}), "phase": "Terminating"}
    return PassResult(status_now, Health.stalled(plan.blocked, plan.message), notes, decision=decision,
                      poll_soon=True)


def _deletion_failure(runtime: Runtime, ref: WorkerRef, raw_status: Mapping[str, Any] | None,
                      error: IntegrationException, retry: int) -> PassResult:
    decision = classify(error, retry=retry, slow_recheck_seconds=runtime.settings.slow_recheck)
    # Deletion never gives up: a permanent error keeps the finalizer and retries on the slow interval.
    delay = decision.delay if decision.delay is not None else runtime.settings.slow_recheck
    decision = capped(runtime, Decision(Kind.TEMPORARY, decision.reason, delay))
    runtime.metrics.exceptions.labels(type(error).__name__, "temporary").inc()
    runtime.metrics.retries.labels(decision.reason).inc()
    message = reasons.with_hint(decision.reason, f"Deletion blocked: {error}")
    if decision.reason == reasons.OPERATION_NOT_PERMITTED:
        message += "; the finalizer stays until the instance can be terminated"
    health = Health.reconciling(decision.reason, message)
    warning = Note("Warning", decision.reason, message)
    return PassResult(dict(raw_status or {}), health, (warning,), decision=decision, error=error, poll_soon=True)


def _region(raw_spec: Mapping[str, Any]) -> str | None:
    try:
        return parse_spec(raw_spec).region
    except SpecError:
        region = raw_spec.get("region")
        return region if isinstance(region, str) and region and "/" not in region else None
