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
from .conditions import Health, HealthState, parse_rfc3339
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
from .actions import (
    Action,
    Launch,
    ModifySecurityGroups,
    Note,
    RemoveOwnershipTags,
    SetMetadataOptions,
    SetMonitoring,
    SyncTags,
    Terminate,
)
from .adoption import refusal_message
from .power import power_step
from .recovery import Limits, Recovery, launch_failed, launch_gate, ready, replaced, replacement_wait
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
    #: May this worker's namespace adopt an instance the operator did not launch (``--adoption-namespaces``)?
    may_adopt: bool = False
    #: The ``cml.dev/region`` annotation: the region of the instance, should a status write be lost.
    recorded_region: str | None = None

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
    #: ``status.region``: where the worker's instance was launched (or adopted).
    region: str | None = None

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
            region=raw.get("region") if isinstance(raw.get("region"), str) and raw.get("region") else None,
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
    #: False: the status must not show the observed instance (one this worker may not adopt).
    shows_instance: bool = True


@dataclass(frozen=True)
class DeletionPlan:
    actions: tuple[Action, ...]
    release: bool  # remove the finalizer now
    message: str
    notes: tuple[Note, ...] = field(default_factory=tuple)
    #: A Stalled reason when nothing can be done until a person acts (the finalizer stays, rechecked slowly).
    blocked: str | None = None


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
    moved_from = region_changed(ref, spec, status)
    if moved_from is not None:
        return _region_changed(status, spec, moved_from)
    if spec.instance_id and status.instance_id and spec.instance_id != status.instance_id:
        return _stalled(
            status, reasons.INVALID_PARAMETER,
            f"Invalid spec.instanceId: {spec.instance_id} differs from {status.instance_id}, "
            "the instance this worker already manages",
        )

    instance = observation.instance if observation else None
    if adoption_refused(ref, spec, instance):
        return _adoption_refused(ref, spec, status)
    if instance is None or instance.instance_state in GONE_STATES:
        return _without_instance(ref, spec, status, observation, now, limits)
    owner = may_touch(ref, spec, status, instance)
    if not owner.ours:
        return _owned_by_other(status, instance, owner)
    missing = missing_policy_tags(ref, instance.tags)
    if missing:
        message = managed_tag_message(instance.aws_instance_id, missing)
        return Plan((), Health.stalled(reasons.MANAGED_TAG_MISSING, message),
                    notes=(Note("Warning", reasons.MANAGED_TAG_MISSING, message),),
                    instance_id=instance.aws_instance_id, adopted=status.adopted,
                    creation_attempt=status.creation_attempt, recovery=status.recovery, recheck_after=limits.recheck)
    return _with_instance(ref, spec, status, observation, instance, now, limits)


def missing_policy_tags(ref: WorkerRef, tags: Mapping[str, str]) -> dict[str, str]:
    """The tags deploy/iam-policy.json requires on an instance before any change, that this one of ours lacks.

    Only for an instance carrying this worker's uid: with the uid tag gone it is unclaimed, and claiming
    it is the adoption policy's business (which allows exactly that tagging). Once managed-by or cluster
    is gone the policy denies every change, the operator's own retag included: only a person can put it back.
    """
    if tags.get(TAG_UID) != ref.uid:
        return {}
    wanted = {TAG_MANAGED_BY: MANAGED_BY, **({TAG_CLUSTER: ref.cluster_id} if ref.cluster_id else {})}
    return {key: value for key, value in wanted.items() if tags.get(key) != value}


def managed_tag_message(instance_id: str, missing: Mapping[str, str]) -> str:
    names = " and ".join(f"{key}={value}" for key, value in missing.items())
    cli_tags = " ".join(f"Key={key},Value={value}" for key, value in missing.items())
    return (f"Instance {instance_id} lacks the tag {names}, which the operator's IAM policy requires before any "
            f"change (stop, start, terminate, retag); the operator cannot restore it itself. Restore it with: "
            f"aws ec2 create-tags --resources {instance_id} --tags {cli_tags}")


def recorded_region(ref: WorkerRef, status: WorkerStatus) -> str | None:
    """Where the worker's instance lives: ``status.region``, else the annotation (a lost status write)."""
    return status.region or ref.recorded_region


def region_changed(ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus) -> str | None:
    """The recorded region when ``spec.region`` no longer names it (else None)."""
    recorded = recorded_region(ref, status)
    return recorded if recorded and recorded != spec.region else None


def _region_changed(status: WorkerStatus, spec: WorkerSpec, recorded: str) -> Plan:
    message = (f"spec.region changed from {recorded} to {spec.region} after the instance was launched in "
               f"{recorded}; an instance cannot move, and launching another in {spec.region} would leak the "
               f"first: nothing is launched. Set spec.region back to {recorded}, or delete the CMLWorker (its "
               f"instance in {recorded} is handled per deletionPolicy) and create a new one")
    return Plan((), Health.stalled(reasons.REGION_CHANGED, message),
                notes=(Note("Warning", reasons.REGION_CHANGED, message),),
                instance_id=status.instance_id, adopted=status.adopted, creation_attempt=status.creation_attempt,
                recovery=status.recovery)


def adoption_refused(ref: WorkerRef, spec: WorkerSpec, instance: CMLWorkerInstanceDto | None) -> bool:
    """``spec.instanceId`` in a namespace not allowed to adopt, naming an instance not already this worker's.

    An instance that carries this worker's uid tag was claimed while adoption was allowed (or
    before the flag existed): it stays managed; the flag gates the claim.
    """
    if not spec.instance_id or ref.may_adopt:
        return False
    return instance is None or ref.owner_of(instance.tags).verdict is not Verdict.OURS


def _adoption_refused(ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus) -> Plan:
    message = refusal_message(f"instance {spec.instance_id} (spec.instanceId)", ref.namespace)
    return Plan((), Health.stalled(reasons.ADOPTION_NOT_ALLOWED, message),
                notes=(Note("Warning", reasons.ADOPTION_NOT_ALLOWED, message),),
                instance_id=None, adopted=False, creation_attempt=status.creation_attempt,
                recovery=status.recovery, shows_instance=False)


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
    step = power_step(ref.generation, spec, status, observation, instance, now, limits)
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
    imds = _metadata_change(spec, instance)
    if settled and imds is not None:
        updates.append(imds)
    if updates:
        actions.extend(updates)
        after.append((len(actions) - 1, Note("Normal", reasons.EVENT_UPDATED, _describe_updates(updates))))

    return Plan(
        tuple(actions), health, poll_soon=poll, notes=tuple(notes),
        instance_id=instance_id, adopted=adopted, creation_attempt=attempt,
        recovery=step.recovery, after=tuple(after), recheck_after=step.recheck_after,
    )


def _metadata_change(spec: WorkerSpec, instance: CMLWorkerInstanceDto) -> SetMetadataOptions | None:
    """IMDS options towards the spec; an adopted instance keeps what the spec does not state."""
    observed = (instance.metadata_http_tokens, instance.metadata_hop_limit)
    if observed[0] is None or observed[1] is None:
        return None  # EC2 did not say: nothing to compare with
    tokens, hops = spec.metadata_options.wanted(adopted=bool(spec.instance_id))
    wanted = (tokens or observed[0], hops or observed[1])
    return SetMetadataOptions(*wanted) if wanted != observed else None


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
    adopted_instance_id: str | None = None,
) -> DeletionPlan:
    """What deleting the worker takes; ``release`` says the finalizer may go.

    An instance of another worker or cluster is left exactly as it is: not terminated,
    not untagged (``ref`` None skips the check: callers that pass no ref have none). So is
    an instance named by ``spec.instanceId`` (``adopted_instance_id``) that carries no
    worker's uid: this worker never claimed it (adoption refused, or deleted before the claim).
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
    if owner is not None and owner.verdict is Verdict.UNCLAIMED and instance_id == adopted_instance_id:
        message = f"Instance {instance_id} was never claimed by this worker (no cml.dev/worker-uid tag); left untouched"
        return DeletionPlan((), True, message, (Note("Normal", reasons.EVENT_RELEASED, message),))
    missing = missing_policy_tags(ref, instance.tags) if ref is not None else {}
    if missing and instance.instance_state not in GONE_STATES:
        message = managed_tag_message(instance_id, missing) + "; the finalizer stays until then"
        return DeletionPlan((), False, message, (Note("Warning", reasons.MANAGED_TAG_MISSING, message),),
                            blocked=reasons.MANAGED_TAG_MISSING)
    if deletion_policy == "Retain":
        message = f"Instance {instance_id} retained; the operator's ownership tags were removed"
        return DeletionPlan((RemoveOwnershipTags(),), True, message, (Note("Normal", reasons.EVENT_RETAINED, message),))
    if instance.instance_state in GONE_STATES:
        message = f"Instance {instance_id} is {instance.instance_state}"
        return DeletionPlan((), True, message, (Note("Normal", reasons.EVENT_RELEASED, message),))
    message = f"Terminating instance {instance_id}"
    return DeletionPlan((Terminate(),), False, message, (Note("Normal", reasons.EVENT_TERMINATING, message),))
