"""Pure decisions: (spec, status, what EC2 shows) -> the next actions and the worker's health.

No I/O here. ``decide`` handles a live worker, ``decide_deletion`` a deleted one.
Both return a plan whose actions the handlers carry out in order; the plan's
health is what the worker is once those actions succeed (a failed action's
health comes from ``policy`` instead). Rules of thumb, taken from EC2:

* never fight a transition: while an instance is pending or stopping, wait;
* a type change is stop -> modify -> start;
* an instance is "lost" only when EC2 stops knowing it after it was seen, or
  after a grace period (EC2's reads are eventually consistent right after launch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from . import reasons
from .conditions import Health, health_of
from .spec import SpecError, WorkerSpec

MANAGED_BY = "cml-operator"
TAG_UID = "cml.dev/worker-uid"
TAG_WORKER = "cml.dev/worker"
TAG_MANAGED_BY = "cml.dev/managed-by"
OWNERSHIP_TAGS = (TAG_UID, TAG_WORKER, TAG_MANAGED_BY)
GONE_STATES = ("shutting-down", "terminated")

#: How long after launch a NotFound is read as EC2's eventual consistency, not a loss.
LAUNCH_GRACE_SECONDS = 120.0


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class WorkerRef:
    uid: str
    namespace: str
    name: str
    generation: int = 1

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class WorkerStatus:
    """The parts of ``status`` the decisions read."""

    instance_id: str | None = None
    ami_id: str | None = None
    creation_attempt: int = 0
    adopted: bool = False
    phase: str | None = None
    instance_state: str | None = None
    launch_time: str | None = None
    managed_tag_keys: tuple[str, ...] = ()
    conditions: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> WorkerStatus:
        raw = raw or {}
        attempt = raw.get("creationAttempt")
        return cls(
            instance_id=raw.get("instanceId") or None,
            ami_id=raw.get("amiId") or None,
            creation_attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0,
            adopted=bool(raw.get("adopted")),
            phase=raw.get("phase"),
            instance_state=raw.get("instanceState"),
            launch_time=raw.get("launchTime"),
            managed_tag_keys=tuple(k for k in raw.get("managedTagKeys") or () if isinstance(k, str)),
            conditions=tuple(c for c in raw.get("conditions") or () if isinstance(c, Mapping)),
        )


@dataclass(frozen=True)
class Observation:
    """What EC2 showed about the worker's instance. ``instance`` None: EC2 does not know the id."""

    instance_id: str | None
    instance: CMLWorkerInstanceDto | None
    checks: InstanceStatusChecks | None = None

    @property
    def state(self) -> str | None:
        return self.instance.instance_state if self.instance else None


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Launch:
    """Resolve the image and RunInstances with this idempotency token."""

    client_token: str
    tags: dict[str, str]


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Stop:
    #: Set when stopping to change the type: the new type is checked against the AZ and the
    #: instance's architecture first, so a type that cannot run there never stops the instance.
    resize_to: str | None = None


@dataclass(frozen=True)
class ModifyType:
    instance_type: str


@dataclass(frozen=True)
class ModifySecurityGroups:
    group_ids: tuple[str, ...]


@dataclass(frozen=True)
class SetMonitoring:
    enabled: bool


@dataclass(frozen=True)
class SetMetadataOptions:
    http_tokens: str
    hop_limit: int


@dataclass(frozen=True)
class SyncTags:
    add: dict[str, str]
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Terminate:
    pass


@dataclass(frozen=True)
class RemoveOwnershipTags:
    pass


Action = (Launch | Start | Stop | ModifyType | ModifySecurityGroups | SetMonitoring | SetMetadataOptions | SyncTags
          | Terminate | RemoveOwnershipTags)


@dataclass(frozen=True)
class Note:
    """An event to post on the object."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    health: Health
    #: True while in transition: look again soon instead of at the next resync.
    poll_soon: bool = False
    notes: tuple[Note, ...] = ()
    #: The instance the worker now tracks (None: none yet, or a lost one was forgotten).
    instance_id: str | None = None
    adopted: bool = False
    creation_attempt: int = 0


@dataclass(frozen=True)
class DeletionPlan:
    actions: tuple[Action, ...]
    release: bool  # remove the finalizer now
    message: str
    notes: tuple[Note, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- tags


def desired_tags(ref: WorkerRef, spec: WorkerSpec) -> dict[str, str]:
    """The user's tags plus the operator's own.

    ``Name`` defaults to namespace/name on instances the operator launches; an
    adopted instance keeps its own name unless ``spec.tags`` sets one.
    """
    tags = {} if spec.instance_id else {"Name": ref.key}
    tags.update(spec.tags)
    tags.update({TAG_UID: ref.uid, TAG_WORKER: ref.key, TAG_MANAGED_BY: MANAGED_BY})
    return tags


def tag_changes(
    ref: WorkerRef, spec: WorkerSpec, observed: Mapping[str, str], previously_applied: tuple[str, ...]
) -> SyncTags | None:
    """Tags to add or overwrite, and user tags removed from the spec; foreign tags are left alone."""
    wanted = desired_tags(ref, spec)
    add = {key: value for key, value in wanted.items() if observed.get(key) != value}
    remove = tuple(sorted(k for k in previously_applied if k not in wanted and k in observed))
    return SyncTags(add, remove) if add or remove else None


def client_token(uid: str, attempt: int) -> str:
    """RunInstances idempotency token: same worker and attempt -> same instance (<= 64 chars)."""
    return f"{uid}-{attempt}"[:64]


def attempt_of_token(uid: str, token: str | None) -> int | None:
    """The creationAttempt ``client_token(uid, n)`` was built from; None for a token not of this worker."""
    prefix = f"{uid}-"
    if not token or not token.startswith(prefix) or not token[len(prefix):].isdigit():
        return None
    return int(token[len(prefix):])


# ---------------------------------------------------------------- live workers


def decide(
    ref: WorkerRef,
    spec: WorkerSpec | SpecError,
    status: WorkerStatus,
    observation: Observation | None,
    now: datetime | None = None,
) -> Plan:
    """The next step for a live worker. ``observation`` None: no instance id known and none found by tag."""
    if isinstance(spec, SpecError):
        return _stalled(status, reasons.INVALID_PARAMETER, f"Invalid {spec}")
    if spec.instance_id and status.instance_id and spec.instance_id != status.instance_id:
        return _stalled(
            status, reasons.INVALID_PARAMETER,
            f"Invalid spec.instanceId: {spec.instance_id} differs from {status.instance_id}, "
            "the instance this worker already manages",
        )

    instance = observation.instance if observation else None
    if instance is None or instance.instance_state in GONE_STATES:
        return _without_instance(ref, spec, status, observation, now)
    return _with_instance(ref, spec, status, observation, instance)


def _without_instance(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, observation: Observation | None,
    now: datetime | None,
) -> Plan:
    known_id = (observation.instance_id if observation else None) or status.instance_id or spec.instance_id
    if spec.instance_id:
        state = observation.state if observation else None
        what = f"is {state}" if state else "does not exist"
        return _stalled(
            status, reasons.INSTANCE_NOT_FOUND,
            f"Instance {spec.instance_id} named by spec.instanceId {what}; "
            "name an existing instance or remove the CMLWorker",
            instance_id=spec.instance_id,
        )
    if known_id and observation and observation.instance is None and _within_launch_grace(status, now):
        return Plan(
            (), Health.reconciling(reasons.PROVISIONING, f"Waiting for EC2 to report instance {known_id}"),
            poll_soon=True, instance_id=known_id, creation_attempt=status.creation_attempt,
        )

    attempt = status.creation_attempt
    notes: tuple[Note, ...] = ()
    if known_id:
        attempt += 1
        state = observation.state if observation else None
        gone = f"is {state}" if state else "no longer exists"
        notes = (Note("Warning", reasons.EVENT_LOST,
                      f"Instance {known_id} {gone} outside the operator; launching a replacement"),)
    launch = Launch(client_token(ref.uid, attempt), desired_tags(ref, spec))
    return Plan(
        (launch,), Health.reconciling(reasons.PROVISIONING, "Launching an EC2 instance"),
        poll_soon=True, notes=notes, instance_id=None, creation_attempt=attempt,
    )


def _with_instance(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, observation: Observation,
    instance: CMLWorkerInstanceDto,
) -> Plan:
    instance_id = instance.aws_instance_id
    notes: list[Note] = []
    adopted = status.adopted or bool(spec.instance_id)
    attempt = status.creation_attempt
    if status.instance_id != instance_id:
        how = "named by spec.instanceId" if spec.instance_id else "found by its cml.dev/worker-uid tag"
        notes.append(Note("Normal", reasons.EVENT_ADOPTED, f"Tracking instance {instance_id} ({how})"))
        # Record the attempt of the token it was launched with, so a later launch never reuses a spent one.
        launched_with = attempt_of_token(ref.uid, instance.client_token)
        attempt = attempt if launched_with is None else launched_with

    actions: list[Action] = []
    sync = tag_changes(ref, spec, instance.tags, status.managed_tag_keys)
    if sync is not None:
        actions.append(sync)
    state = instance.instance_state
    settled = state in ("running", "stopped")
    if settled and spec.security_group_ids and set(spec.security_group_ids) != set(instance.security_group_ids):
        actions.append(ModifySecurityGroups(tuple(spec.security_group_ids)))
    monitoring_on = instance.monitoring in ("enabled", "pending")
    if settled and instance.monitoring is not None and monitoring_on != spec.detailed_monitoring:
        actions.append(SetMonitoring(spec.detailed_monitoring))
    wanted_imds = (spec.metadata_options.http_tokens, spec.metadata_options.hop_limit)
    if settled and instance.metadata_http_tokens is not None and (
            instance.metadata_http_tokens, instance.metadata_hop_limit) != wanted_imds:
        actions.append(SetMetadataOptions(*wanted_imds))
    if actions:
        notes.append(Note("Normal", reasons.EVENT_UPDATED, _describe_updates(actions)))

    health, more, poll, more_notes = _lifecycle(spec, status, observation, instance)
    return Plan(
        tuple(actions + more), health, poll_soon=poll, notes=tuple(notes + more_notes),
        instance_id=instance_id, adopted=adopted, creation_attempt=attempt,
    )


def _lifecycle(
    spec: WorkerSpec, status: WorkerStatus, observation: Observation, instance: CMLWorkerInstanceDto
) -> tuple[Health, list[Action], bool, list[Note]]:
    """Start, stop and resize towards the spec; never against a transition."""
    instance_id = instance.aws_instance_id
    state = instance.instance_state
    resize = instance.instance_type != spec.instance_type
    if state == "pending":
        reason = reasons.PROVISIONING if status.phase in (None, "Pending", "Provisioning") else reasons.STARTING
        return Health.reconciling(reason, f"Instance {instance_id} is pending"), [], True, []
    if state == "stopping":
        reason = reasons.STOPPING if not spec.wants_running else reasons.WAITING_FOR_TRANSITION
        return Health.reconciling(reason, f"Instance {instance_id} is stopping"), [], True, []
    if state == "running":
        if resize:
            message = f"Stopping instance {instance_id} to change its type {instance.instance_type} -> {spec.instance_type}"
            return (Health.reconciling(reasons.RESIZING, message), [Stop(resize_to=spec.instance_type)], True,
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
        message = f"Changing the type of instance {instance_id} {instance.instance_type} -> {spec.instance_type}"
        actions: list[Action] = [ModifyType(spec.instance_type)]
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


def _describe_updates(actions: list[Action]) -> str:
    parts = []
    for action in actions:
        if isinstance(action, SyncTags):
            parts.append(f"tags: set {sorted(action.add)}" + (f", removed {list(action.remove)}" if action.remove else ""))
        elif isinstance(action, ModifySecurityGroups):
            parts.append(f"security groups -> {list(action.group_ids)}")
        elif isinstance(action, SetMonitoring):
            parts.append(f"detailed monitoring {'on' if action.enabled else 'off'}")
        elif isinstance(action, SetMetadataOptions):
            parts.append(f"metadata options: httpTokens {action.http_tokens}, hop limit {action.hop_limit}")
    return "Updating " + "; ".join(parts)


def _within_launch_grace(status: WorkerStatus, now: datetime | None) -> bool:
    if status.instance_state is not None and status.instance_state != "pending":
        return False  # EC2 has shown it settled before: NotFound now is a real loss
    if not status.launch_time:
        return False
    try:
        launched = datetime.fromisoformat(status.launch_time.replace("Z", "+00:00"))
    except ValueError:
        return False
    if launched.tzinfo is None:
        launched = launched.replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - launched).total_seconds() < LAUNCH_GRACE_SECONDS


def _stalled(status: WorkerStatus, reason: str, message: str, instance_id: str | None = None) -> Plan:
    return Plan(
        (), Health.stalled(reason, message),
        instance_id=instance_id or status.instance_id, adopted=status.adopted,
        creation_attempt=status.creation_attempt,
    )


# ---------------------------------------------------------------- deleted workers


def decide_deletion(
    deletion_policy: str, status: WorkerStatus, observation: Observation | None
) -> DeletionPlan:
    """What deleting the worker takes; ``release`` says the finalizer may go."""
    instance = observation.instance if observation else None
    if instance is None:
        known = status.instance_id or (observation.instance_id if observation else None)
        message = f"Instance {known} no longer exists" if known else "The worker never had an instance"
        return DeletionPlan((), True, message, (Note("Normal", reasons.EVENT_RELEASED, message),))
    instance_id = instance.aws_instance_id
    if deletion_policy == "Retain":
        message = f"Instance {instance_id} retained; the operator's ownership tags were removed"
        return DeletionPlan((RemoveOwnershipTags(),), True, message, (Note("Normal", reasons.EVENT_RETAINED, message),))
    if instance.instance_state in GONE_STATES:
        message = f"Instance {instance_id} is {instance.instance_state}"
        return DeletionPlan((), True, message, (Note("Normal", reasons.EVENT_RELEASED, message),))
    message = f"Terminating instance {instance_id}"
    return DeletionPlan((Terminate(),), False, message, (Note("Normal", reasons.EVENT_TERMINATING, message),))
