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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from ..ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from . import reasons
from .conditions import Health, HealthState, health_of, parse_rfc3339
from .ownership import (  # noqa: F401 - the tag names are re-exported: older imports read them from here
    MANAGED_BY,
    OWNERSHIP_TAGS,
    TAG_CLUSTER,
    TAG_MANAGED_BY,
    TAG_UID,
    TAG_WORKER,
    Ownership,
    Verdict,
    may_reattach,
    ownership,
    worker_tag_value,
)
from .recovery import (
    Limits,
    Recovery,
    launch_failed,
    launch_gate,
    ready,
    replaced,
    replacement_wait,
    start_failed,
    start_gate,
    start_grace_left,
    start_pending,
    start_sent,
    started,
    starts_cleared,
)
from .spec import SpecError, WorkerSpec

GONE_STATES = ("shutting-down", "terminated")
#: ``"true"``: no EC2 calls for this worker until removed (deletion still releases it).
ANNOTATION_PAUSED = "cml.dev/paused"

#: How long after launch a NotFound is read as EC2's eventual consistency, not a loss.
LAUNCH_GRACE_SECONDS = 120.0


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class WorkerRef:
    uid: str
    namespace: str
    name: str
    generation: int = 1
    #: The cluster this operator serves (``--cluster-id``); goes to the ``cml.dev/cluster`` tag.
    cluster_id: str = ""
    #: The ``cml.dev/instance-id`` annotation: survives a backup and restore that loses status.
    recorded_instance_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def owner_of(self, tags: Mapping[str, str]) -> Ownership:
        return ownership(tags, self.uid, self.cluster_id)

    def may_reattach(self, instance: CMLWorkerInstanceDto) -> bool:
        return (instance.aws_instance_id == self.recorded_instance_id
                and may_reattach(instance.tags, worker_tag_value(self.namespace, self.name), self.cluster_id))


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
    recovery: Recovery = Recovery()

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
            recovery=Recovery.from_dict(raw.get("recovery")),
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
    recovery: Recovery = Recovery()
    #: Seconds before the worker is worth another pass (a backoff, or a stalled worker's recheck).
    recheck_after: float | None = None
    #: Events posted only once the action at that index succeeded (never on a failed try).
    after: tuple[tuple[int, Note], ...] = ()


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
    tags = {} if spec.instance_id else {"Name": worker_tag_value(ref.namespace, ref.name)}
    tags.update(spec.tags)
    tags.update(ownership_tags(ref))
    return tags


def ownership_tags(ref: WorkerRef) -> dict[str, str]:
    """The tags that say whose instance this is (the IAM policy keys on them)."""
    tags = {TAG_UID: ref.uid, TAG_WORKER: worker_tag_value(ref.namespace, ref.name), TAG_MANAGED_BY: MANAGED_BY}
    if ref.cluster_id:
        tags[TAG_CLUSTER] = ref.cluster_id
    return tags


def tag_changes(
    ref: WorkerRef, spec: WorkerSpec, observed: Mapping[str, str], previously_applied: tuple[str, ...]
) -> SyncTags | None:
    """Tags to add or overwrite, and user tags removed from the spec; foreign tags are left alone."""
    wanted = desired_tags(ref, spec)
    add = {key: value for key, value in wanted.items() if observed.get(key) != value}
    remove = tuple(sorted(k for k in previously_applied if k not in wanted and k in observed))
    return SyncTags(add, remove) if add or remove else None


def claim_tags(ref: WorkerRef, observed: Mapping[str, str]) -> SyncTags | None:
    """The ownership tags the instance lacks: they go before anything else (the IAM policy keys on them)."""
    add = {key: value for key, value in ownership_tags(ref).items() if observed.get(key) != value}
    return SyncTags(add) if add else None


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
    limits: Limits = Limits(),
) -> Plan:
    """The next step for a live worker. ``observation`` None: no instance id known and none found by tag."""
    plan = _decide(ref, spec, status, observation, now or datetime.now(timezone.utc), limits)
    if plan.health.state is HealthState.READY and plan.instance_id:
        return replace(plan, recovery=ready(plan.recovery, plan.instance_id))
    return plan


def may_touch(ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, instance: CMLWorkerInstanceDto) -> Ownership:
    """Ownership as the worker acts on it: an unclaimed instance is ours only if we were told it is.

    Named by ``spec.instanceId``, or already tracked in ``status.instanceId`` (its tags were
    removed outside): claimable. Anything else unclaimed is not ours to touch.
    """
    owner = ref.owner_of(instance.tags)
    if owner.verdict is Verdict.UNCLAIMED and instance.aws_instance_id in (spec.instance_id, status.instance_id):
        return Ownership(Verdict.OURS)
    if owner.verdict is Verdict.OTHER_WORKER and not spec.instance_id and ref.may_reattach(instance):
        return Ownership(Verdict.OURS)  # restored from a backup: this object replaced the one that launched it
    return owner


def _decide(
    ref: WorkerRef, spec: WorkerSpec | SpecError, status: WorkerStatus, observation: Observation | None,
    now: datetime, limits: Limits,
) -> Plan:
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
        return _without_instance(ref, spec, status, observation, now, limits)
    owner = may_touch(ref, spec, status, instance)
    if not owner.ours:
        return _owned_by_other(status, instance, owner)
    return _with_instance(ref, spec, status, observation, instance, now, limits)


def _owned_by_other(status: WorkerStatus, instance: CMLWorkerInstanceDto, owner: Ownership) -> Plan:
    instance_id = instance.aws_instance_id
    whose = owner.owner or "nobody this worker was told about (no cml.dev/worker-uid tag)"
    message = (f"Instance {instance_id} belongs to {whose}; the operator never changes, stops, starts, tags "
               "or terminates an instance of another worker or cluster")
    return Plan((), Health.stalled(reasons.INSTANCE_OWNED_BY_OTHER, message),
                notes=(Note("Warning", reasons.INSTANCE_OWNED_BY_OTHER, message),),
                instance_id=status.instance_id, adopted=status.adopted, creation_attempt=status.creation_attempt,
                recovery=status.recovery)


def _without_instance(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, observation: Observation | None,
    now: datetime, limits: Limits,
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
            recovery=status.recovery,
        )
    if known_id:
        return _lost(ref, spec, status, observation, known_id, now, limits)
    return _launch_if_allowed(ref, spec, status, status.recovery, status.creation_attempt, (), now, limits)


def _lost(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, observation: Observation | None, known_id: str,
    now: datetime, limits: Limits,
) -> Plan:
    """The tracked instance is gone: a failed launch (never Ready) or a lost instance (was Ready)."""
    instance = observation.instance if observation else None
    state = instance.instance_state if instance else None
    gone = f"is {state}" if state else "no longer exists"
    because = f" ({instance.state_reason})" if instance and instance.state_reason else ""
    record = status.recovery
    if record.ready_instance_id == known_id:
        wait = replacement_wait(record, limits, now)
        if wait is not None:
            message = (f"Instance {known_id} {gone} outside the operator{because}; {limits.max_replacements} "
                       f"replacements in the last {limits.replacement_window / 60:.0f} minutes already "
                       f"(--max-replacements): not launching another")
            return Plan((), Health.stalled(reasons.REPLACEMENT_LIMIT_REACHED, message),
                        notes=(Note("Warning", reasons.REPLACEMENT_LIMIT_REACHED, message),),
                        instance_id=known_id, creation_attempt=status.creation_attempt,
                        recovery=record, recheck_after=wait)
        note = Note("Warning", reasons.EVENT_LOST,
                    f"Instance {known_id} {gone} outside the operator{because}; launching a replacement")
        return _launch_if_allowed(ref, spec, status, replaced(record, limits, now), status.creation_attempt + 1,
                                  (note,), now, limits)
    reason = instance.state_reason if instance and instance.state_reason else f"instance {gone}"
    record = launch_failed(record, reason, ref.generation, now)
    note = Note("Warning", reasons.LAUNCH_FAILED,
                f"Instance {known_id} {gone} before it was ever Ready (failed launch "
                f"{record.failed_launches} of {limits.max_failed_launches}): {reason}")
    return _launch_if_allowed(ref, spec, status, record, status.creation_attempt + 1, (note,), now, limits)


def _launch_if_allowed(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, record: Recovery, attempt: int,
    notes: tuple[Note, ...], now: datetime, limits: Limits,
) -> Plan:
    gate = launch_gate(record, limits, ref.generation, now)
    if gate.allowed:
        launch = Launch(client_token(ref.uid, attempt), desired_tags(ref, spec))
        return Plan((launch,), Health.reconciling(reasons.PROVISIONING, "Launching an EC2 instance"),
                    poll_soon=True, notes=notes, instance_id=None, creation_attempt=attempt, recovery=record)
    last = record.last_failure_reason or "unknown"
    if gate.stalled:
        message = (f"{record.failed_launches} launches in a row failed before Ready; last: {last}. "
                   "Fix the cause (image, KMS key, capacity, quota) and change the spec, or wait for the "
                   "slow recheck")
        return Plan((), Health.stalled(reasons.LAUNCH_FAILED, message), notes=notes, instance_id=None,
                    creation_attempt=attempt, recovery=record, recheck_after=gate.wait)
    message = (f"Launch {record.failed_launches} of {limits.max_failed_launches} failed before Ready: {last}; "
               f"launching again in {gate.wait:.0f} s")
    return Plan((), Health.reconciling(reasons.LAUNCH_FAILED, message), notes=notes, instance_id=None,
                creation_attempt=attempt, recovery=record, recheck_after=gate.wait)


def _with_instance(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, observation: Observation,
    instance: CMLWorkerInstanceDto, now: datetime, limits: Limits,
) -> Plan:
    """Claim, then power state, then the rest: a worker that cannot be retagged can still be stopped."""
    instance_id = instance.aws_instance_id
    notes: list[Note] = []
    adopted = status.adopted or bool(spec.instance_id)
    attempt = status.creation_attempt
    if status.instance_id != instance_id:
        if spec.instance_id:
            how = "named by spec.instanceId"
        elif instance.tags.get(TAG_UID) != ref.uid and instance_id == ref.recorded_instance_id:
            how = "re-attached after a restore: named by the cml.dev/instance-id annotation"
        else:
            how = "found by its cml.dev/worker-uid tag"
        notes.append(Note("Normal", reasons.EVENT_ADOPTED, f"Tracking instance {instance_id} ({how})"))
        # Record the attempt of the token it was launched with, so a later launch never reuses a spent one.
        launched_with = attempt_of_token(ref.uid, instance.client_token)
        attempt = attempt if launched_with is None else launched_with

    actions: list[Action] = []
    after: list[tuple[int, Note]] = []
    claim = claim_tags(ref, instance.tags)
    if claim is not None:
        actions.append(claim)
    step = _lifecycle(ref, spec, status, observation, instance, now, limits)
    health, lifecycle, poll, lifecycle_notes = step.health, step.actions, step.poll, step.notes
    for action in lifecycle:
        actions.append(action)
    notes.extend(step.news)
    # The lifecycle's events (Stopping, Starting, Resized...) say what its first action did;
    # without an action (an impaired check) they are news in themselves.
    if lifecycle_notes and lifecycle:
        after.extend((len(actions) - len(lifecycle), note) for note in lifecycle_notes)
    else:
        notes.extend(lifecycle_notes)

    updates: list[Action] = []
    sync = tag_changes(ref, spec, {**instance.tags, **(claim.add if claim else {})}, status.managed_tag_keys)
    if sync is not None:
        updates.append(sync)
    state = instance.instance_state
    settled = state in ("running", "stopped")
    if settled and spec.security_group_ids and set(spec.security_group_ids) != set(instance.security_group_ids):
        updates.append(ModifySecurityGroups(tuple(spec.security_group_ids)))
    monitoring_on = instance.monitoring in ("enabled", "pending")
    monitoring = spec.wanted_monitoring
    if settled and monitoring is not None and instance.monitoring is not None and monitoring_on != monitoring:
        updates.append(SetMonitoring(monitoring))
    wanted_imds = (spec.metadata_options.http_tokens, spec.metadata_options.hop_limit)
    if settled and instance.metadata_http_tokens is not None and (
            instance.metadata_http_tokens, instance.metadata_hop_limit) != wanted_imds:
        updates.append(SetMetadataOptions(*wanted_imds))
    if updates:
        actions.extend(updates)
        after.append((len(actions) - 1, Note("Normal", reasons.EVENT_UPDATED, _describe_updates(updates))))

    return Plan(
        tuple(actions), health, poll_soon=poll, notes=tuple(notes),
        instance_id=instance_id, adopted=adopted, creation_attempt=attempt,
        recovery=step.recovery, after=tuple(after), recheck_after=step.recheck_after,
    )


@dataclass(frozen=True)
class _Step:
    """What the power state calls for: health, actions and their events, and the start bound's record."""

    health: Health
    actions: list[Action]
    poll: bool
    notes: list[Note]
    recovery: Recovery
    recheck_after: float | None = None
    #: Events that are news in themselves (a failed start), posted whatever the actions do.
    news: tuple[Note, ...] = ()


def _lifecycle(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, observation: Observation,
    instance: CMLWorkerInstanceDto, now: datetime, limits: Limits,
) -> _Step:
    """Power state towards the spec, with the start bound kept in ``status.recovery``."""
    record = status.recovery
    if not spec.wants_running:
        record = starts_cleared(record)  # desiredState Stopped: the start bound starts afresh
    elif instance.instance_state == "running":
        record = started(record)
    if instance.instance_state == "stopped" and spec.wants_running:
        return _start_bounded(ref, spec, status, observation, instance, record, now, limits)
    health, actions, poll, notes = _transition(spec, status, observation, instance)
    return _Step(health, actions, poll, notes, record)


def _start_bounded(
    ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, observation: Observation,
    instance: CMLWorkerInstanceDto, record: Recovery, now: datetime, limits: Limits,
) -> _Step:
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
            return _Step(Health.reconciling(reasons.STARTING, message), [], True, [], record)
        reason = instance.state_reason or "stopped again without a StateReason"
        record = start_failed(record, reason, ref.generation, now)
        news = (Note("Warning", reasons.START_FAILED,
                     f"Instance {instance_id} fell back to stopped after StartInstances (failed start "
                     f"{record.failed_starts} of {limits.max_failed_starts}): {reason}"),)
    gate = start_gate(record, limits, ref.generation, now)
    if gate.allowed:
        health, actions, poll, notes = _transition(spec, status, observation, instance)
        return _Step(health, actions, poll, notes, start_sent(record, instance_id, now), news=news)
    last = record.last_start_failure_reason or "unknown"
    if gate.stalled:
        message = (f"{record.failed_starts} starts of instance {instance_id} in a row fell back to stopped; "
                   f"last: {last}. Wait for capacity or change the instance type, then change the spec, "
                   "or wait for the slow recheck")
        return _Step(Health.stalled(reasons.START_FAILED, message), [], False, [], record, gate.wait, news)
    message = (f"Start {record.failed_starts} of {limits.max_failed_starts} of instance {instance_id} fell back "
               f"to stopped: {last}; starting again in {gate.wait:.0f} s")
    return _Step(Health.reconciling(reasons.START_FAILED, message), [], False, [], record, gate.wait, news)


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
    launched = parse_rfc3339(status.launch_time)
    if launched is None:
        return False
    return ((now or datetime.now(timezone.utc)) - launched).total_seconds() < LAUNCH_GRACE_SECONDS


def _stalled(status: WorkerStatus, reason: str, message: str, instance_id: str | None = None) -> Plan:
    return Plan(
        (), Health.stalled(reason, message),
        instance_id=instance_id or status.instance_id, adopted=status.adopted,
        creation_attempt=status.creation_attempt, recovery=status.recovery,
    )


# ---------------------------------------------------------------- deleted workers


def decide_deletion(
    deletion_policy: str, status: WorkerStatus, observation: Observation | None, ref: WorkerRef | None = None,
) -> DeletionPlan:
    """What deleting the worker takes; ``release`` says the finalizer may go.

    An instance of another worker or cluster is left exactly as it is: not terminated,
    not untagged (``ref`` None skips the check: callers that pass no ref have none).
    """
    instance = observation.instance if observation else None
    if instance is None:
        known = status.instance_id or (observation.instance_id if observation else None)
        message = f"Instance {known} no longer exists" if known else "The worker never had an instance"
        return DeletionPlan((), True, message, (Note("Normal", reasons.EVENT_RELEASED, message),))
    instance_id = instance.aws_instance_id
    owner = ref.owner_of(instance.tags) if ref is not None else None
    if owner is not None and owner.foreign:
        message = f"Instance {instance_id} belongs to {owner.owner}; left untouched"
        return DeletionPlan((), True, message, (Note("Normal", reasons.EVENT_RELEASED, message),))
    if deletion_policy == "Retain":
        message = f"Instance {instance_id} retained; the operator's ownership tags were removed"
        return DeletionPlan((RemoveOwnershipTags(),), True, message, (Note("Normal", reasons.EVENT_RETAINED, message),))
    if instance.instance_state in GONE_STATES:
        message = f"Instance {instance_id} is {instance.instance_state}"
        return DeletionPlan((), True, message, (Note("Normal", reasons.EVENT_RELEASED, message),))
    message = f"Terminating instance {instance_id}"
    return DeletionPlan((Terminate(),), False, message, (Note("Normal", reasons.EVENT_TERMINATING, message),))
