"""The reconcile pass of a live worker: observe EC2, decide (pure), act, render the status.

It serves create, update, resume and the timer alike (level-based: it always
starts from what EC2 shows) and returns a ``PassResult``; the Kopf handlers
patch the status, post the notes as events and turn an error decision into
``kopf.TemporaryError``/``PermanentError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from ..ec2.client import MetadataOptions, RootVolume
from ..ec2.exceptions import EC2InstanceNotFoundException, IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..fleet.observer import RegionObserver
from ..reconcile import reasons
from ..reconcile.conditions import Health, HealthState, build_conditions, health_of, not_ready_for
from ..reconcile.policy import IDEMPOTENCY_CODES, Decision, Kind, classify
from ..reconcile.spec import DEFAULT_INSTANCE_TYPE, SpecError, WorkerSpec, effective_deletion_policy, parse_spec
from ..reconcile.status import PassOutcome, render_status
from ..reconcile.recovery import Limits, resize_refused, start_not_sent, start_sent
from ..reconcile.actions import Launch, ModifyType, Note, SetMetadataOptions, Start, Stop, Terminate
from ..reconcile.worker import (
    ANNOTATION_PAUSED,
    GONE_STATES,
    LAUNCH_GRACE_SECONDS,
    Observation,
    Plan,
    WorkerRef,
    WorkerStatus,
    decide,
    may_touch,
    region_changed,
)
from ..runtime import Runtime, WorkerMemory
from .cml import CMLStep
from ..reconcile.account import Subject, recorded_account
from .account import account_status, bind_account
from .common import Failed, PassResult, apply_action, as_integration, capped, expected_after, with_account
from .resize import check_new_type, restart_after_failed_modify, restore_after_failed_start
from .schedule import ScheduleGate, usage_status, utcnow
from .userdata import user_data_from_secret

#: Failures that are not EC2 refusing a type: a resize they interrupt is tried again.
_NOT_REFUSALS = (reasons.THROTTLED, reasons.INTEGRATION_ERROR, reasons.PROVISIONING)

#: Actions after which the instance is read again at once (batched): its state, or its IMDS
#: options, which a stale cache would otherwise ask to change a second time.
_STATE_CHANGING = (Start, Stop, ModifyType, Terminate, SetMetadataOptions)


async def reconcile_pass(
    runtime: Runtime, ref: WorkerRef, raw_spec: Mapping[str, Any] | None, raw_status: Mapping[str, Any] | None,
    *, max_age: float, retry: int = 0, annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> PassResult:
    """Bring one worker a step closer to its spec; ``max_age``: how stale an observation may be.

    With ``spec.cml`` a ``CMLStep`` (passes/cml.py) may hold an idle-stopped worker stopped,
    releases the licence before a stop, and decides readiness from the CML controller.
    """
    memory = runtime.memory(ref.uid)
    status = trust_memory(WorkerStatus.from_dict(raw_status), memory)
    shown = _Shown.of(raw_spec)
    if is_paused(annotations):
        return _paused(runtime, ref, raw_status, status, memory)
    schedule: ScheduleGate | None = None
    started = utcnow()
    try:
        spec: WorkerSpec | SpecError = parse_spec(raw_spec)
        schedule = ScheduleGate.begin(raw_spec, spec, raw_status, annotations, started)
    except SpecError as error:
        spec = error
    if isinstance(spec, SpecError):
        plan = decide(ref, spec, status, None)
        memory.block(ref.generation, None, runtime.clock())
        return _result(runtime, ref, raw_status, status, plan, None, None, spec_keys=status.managed_tag_keys,
                       notes=_resumed(raw_status), shown=shown)
    if region_changed(ref, spec, status) is not None:
        # The instance lives in the recorded region: no read (and never a launch) in the new one.
        plan = decide(ref, spec, status, None)
        memory.block(ref.generation, None, runtime.clock())
        return _result(runtime, ref, raw_status, status, plan, None, None, spec_keys=status.managed_tag_keys,
                       notes=(*_resumed(raw_status), *plan.notes), shown=shown)

    try:
        runtime, account = await bind_account(runtime, Subject(
            "CMLWorker", ref.namespace, {}, spec.account_ref, spec.region,
            recorded_account(raw_status, launched=status.instance_id is not None)))
    except IntegrationException as error:  # refused, or the role cannot be assumed: no EC2 call at all
        return _failure(runtime, ref, raw_status, status, spec, error, None, list(_resumed(raw_status)), retry,
                        memory, shown=shown)
    result = await _reconcile_in_account(runtime, ref, spec, raw_status, status, memory, max_age, retry, annotations,
                                         shown, schedule, labels, started)
    return with_account(result, account_status(account, runtime))


async def _reconcile_in_account(
    runtime: Runtime, ref: WorkerRef, spec: WorkerSpec, raw_status: Mapping[str, Any] | None, status: WorkerStatus,
    memory: WorkerMemory, max_age: float, retry: int, annotations: Mapping[str, str] | None, shown: _Shown,
    schedule: ScheduleGate | None = None, labels: Mapping[str, str] | None = None, started: datetime | None = None,
) -> PassResult:
    started = started or utcnow()
    if runtime.prices is not None:
        await runtime.prices.refresh_if_due(runtime.kube)
    full_spec, spec = spec, schedule.ec2_spec(spec) if schedule else spec  # held stopped outside its windows
    cml = CMLStep.begin(runtime, ref, spec, raw_status, annotations)
    spec = cml.ec2_spec if cml else spec  # an idle-stopped worker is held stopped
    observer = runtime.observers(spec.region)
    limits = limits_of(runtime)
    observation: Observation | None = None
    plan: Plan | None = None
    notes: list[Note] = (list(_resumed(raw_status)) + (list(schedule.notes) if schedule else [])
                         + (list(cml.notes) if cml else []))
    if cml:
        cml.notes.clear()
    try:
        observation = await _observe(observer, ref, spec, status, memory, max_age)
        plan = decide(ref, spec, status, observation, limits=limits)
        notes.extend(plan.notes)
        if cml:
            try:
                await cml.before_actions(plan, observation)
            except IntegrationException as error:
                raise Failed(error, observation) from error
        try:
            observation, image_id, created = await _act(runtime, observer, ref, spec, status, memory, plan,
                                                        observation, fresh=max_age == 0, notes=notes)
        except OwnershipChanged as changed:
            # Another worker or cluster tagged it between our read and our call: hands off.
            observation, image_id, created = changed.observation, None, None
            plan = decide(ref, spec, status, observation, limits=limits)
            notes.extend(plan.notes)
        if any(isinstance(a, Start) for a in plan.actions) and plan.recovery.start_instance_id:
            # The grace before judging a Start runs from when it went out, not from the decision
            # (the mutating token bucket may have held it back).
            plan = replace(plan, recovery=start_sent(plan.recovery, plan.recovery.start_instance_id,
                                                     datetime.now(timezone.utc)))
        if created is not None:
            notes.append(Note("Normal", reasons.EVENT_CREATED,
                              f"Launched instance {created.aws_instance_id} ({created.instance_type}, "
                              f"{created.ami_id}) in {created.availability_zone or spec.region}"))
        plan = _follow_up(ref, spec, status, plan, observation, limits)
    except Failed as failed:
        result = _failure(runtime, ref, raw_status, status, spec, failed.error, failed.observation or observation,
                          notes + (cml.notes if cml else []), retry, memory, plan,
                          launch_attempt=failed.launch_attempt, completed=failed.completed,
                          restarted=failed.restarted, token_gone=failed.token_gone, shown=shown,
                          refused_resize=failed.refused_resize)
        result = _with_schedule(runtime, ref, raw_status, result, schedule, labels, spec.region, started)
        return _with_cml(result, cml.status_dict() if cml else None)

    notes.extend(_duplicates_news(runtime, ref, plan, memory))
    memory.hot = plan.poll_soon
    memory.clear()
    if plan.instance_id is None and created is None:
        memory.launched_instance_id = None  # a lost instance was forgotten: never trust it again
    if plan.health.state is HealthState.STALLED:  # EC2 stalls only: a CML stall must not stop the timer
        memory.block(ref.generation, plan.recheck_after, runtime.clock())
    elif plan.recheck_after is not None:
        memory.defer(plan.recheck_after, runtime.clock())
    if cml:
        plan = await cml.finish(plan, observation, status.conditions)
        notes.extend(cml.notes)
        memory.hot = memory.hot or plan.poll_soon
    if schedule:
        plan = replace(plan, health=schedule.health(plan.health, full_spec.wants_running))
    previous = health_of(status.conditions)
    if plan.health.state is HealthState.READY and (previous is None or previous.state is not HealthState.READY):
        notes.append(Note("Normal", reasons.EVENT_READY, plan.health.message))
        latency = not_ready_for(status.conditions, datetime.now(timezone.utc))
        if latency is not None:
            runtime.metrics.ready_latency.observe(latency)
    result = _result(runtime, ref, raw_status, status, plan, observation, image_id,
                     spec_keys=tuple(sorted(full_spec.tags)), notes=tuple(notes), shown=shown)
    result = _with_schedule(runtime, ref, raw_status, result, schedule, labels, spec.region, started)
    return _with_cml(result, cml.status_dict() if cml else None)


def _duplicates_news(runtime: Runtime, ref: WorkerRef, plan: Plan, memory: WorkerMemory) -> tuple[Note, ...]:
    """A Warning the first time the orphan scan reports other live instances carrying this worker's uid."""
    found = runtime.duplicates_of(ref.uid)
    if found == memory.reported_duplicates:
        return ()
    memory.reported_duplicates = found
    if not found:
        return ()
    settings = runtime.settings
    verb = {"stop": "stopped", "terminate": "terminated"}.get(settings.orphan_policy)
    then = f"{verb} after {settings.orphan_grace:.0f} s" if verb else "reported only"
    message = (f"Instance(s) {', '.join(found)} carry this worker's cml.dev/worker-uid but it tracks "
               f"{plan.instance_id}: one instance per worker; handled like orphans (--orphan-policy "
               f"{settings.orphan_policy}: {then})")
    return (Note("Warning", reasons.EVENT_DUPLICATE, message),)


def _with_cml(result: PassResult, cml_status: dict[str, Any] | None) -> PassResult:
    """``status.cml`` for a worker with spec.cml; without it the key is dropped (and nulled by the patch)."""
    if cml_status is not None:
        result.status["cml"] = cml_status
    return result


def _with_schedule(runtime: Runtime, ref: WorkerRef, raw_status: Mapping[str, Any] | None, result: PassResult,
                   schedule: ScheduleGate | None, labels: Mapping[str, str] | None, region: str,
                   now: datetime) -> PassResult:
    """``status.schedule`` (with spec.schedule) and ``status.usage`` (once an instance was seen)."""
    if schedule is not None:
        result.status["schedule"] = schedule.status_dict()
    usage = usage_status(runtime, ref.namespace, ref.uid, labels, raw_status, result.status, region, now)
    if usage is not None:
        result.status["usage"] = usage
    return result


def is_paused(annotations: Mapping[str, str] | None) -> bool:
    return str((annotations or {}).get(ANNOTATION_PAUSED, "")).lower() == "true"


def _paused(runtime: Runtime, ref: WorkerRef, raw_status: Mapping[str, Any] | None, status: WorkerStatus,
            memory: WorkerMemory) -> PassResult:
    """No EC2 call at all: the status keeps what it said, plus ``paused: true``."""
    rendered = dict(raw_status or {})
    was_paused = rendered.get("paused") is True
    rendered["paused"] = True
    health = health_of(status.conditions) or Health.reconciling(reasons.PAUSED, "Paused before the first pass")
    if "conditions" not in rendered:
        rendered["conditions"] = build_conditions(None, health, ref.generation)
    memory.hot = False
    memory.clear()
    message = f"{ANNOTATION_PAUSED} is \"true\": no EC2 calls until it is removed (deletion still works)"
    notes = () if was_paused else (Note("Normal", reasons.EVENT_PAUSED, message),)
    return PassResult(rendered, health, notes)


def _resumed(raw_status: Mapping[str, Any] | None) -> tuple[Note, ...]:
    if (raw_status or {}).get("paused") is True:
        return (Note("Normal", reasons.EVENT_RESUMED, f"{ANNOTATION_PAUSED} removed: reconciling again"),)
    return ()


def limits_of(runtime: Runtime) -> Limits:
    settings = runtime.settings
    cap = settings.max_retry_delay if settings.max_retry_delay is not None else Limits.backoff_cap
    # A stopped instance counts against our Start only on a read taken after it: a hot instance's
    # cached view is at most 2.5 fast intervals old.
    start_grace = max(Limits.start_grace, 3 * settings.observer.fast_interval)
    return Limits(backoff_base=min(Limits.backoff_base, cap), backoff_cap=cap,
                  max_replacements=settings.max_replacements, recheck=settings.slow_recheck,
                  start_grace=start_grace, max_starts=settings.max_starts)


def trust_memory(status: WorkerStatus, memory: WorkerMemory) -> WorkerStatus:
    """A body may lag behind this process's own last patch: what it launched is the truth."""
    launched = memory.launched_instance_id
    if launched is None or status.instance_id == launched:
        return status
    return replace(status, instance_id=launched, creation_attempt=max(status.creation_attempt, memory.launched_attempt))


async def _observe(
    observer: RegionObserver, ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, memory: WorkerMemory,
    max_age: float,
) -> Observation | None:
    """The tracked instance; or, when there is none alive, one carrying this worker's uid tag."""
    instance_id = status.instance_id or spec.instance_id  # status already holds what this process launched
    try:
        observation = await observer.observe(instance_id, max_age=max_age, hot=memory.hot) if instance_id else None
        alive = observation is not None and observation.instance is not None and observation.state not in GONE_STATES
        if alive or spec.instance_id:
            return observation
        # Before anything is launched, look for an instance an earlier (crashed) pass launched.
        found = await observer.find_by_uid(ref.uid)
    except IntegrationException as error:
        raise Failed(error, None) from error
    found = [dto for dto in found if ref.owner_of(dto.tags).ours]  # same uid, other cluster: not ours
    if not found and ref.recorded_instance_id and not status.instance_id:
        return await _restored(observer, ref, observation)
    if not found:
        return observation
    chosen = min(found, key=lambda dto: (dto.launch_time or "", dto.aws_instance_id))
    return await _read_now(observer, chosen.aws_instance_id, observation)


async def _restored(observer: RegionObserver, ref: WorkerRef, fallback: Observation | None) -> Observation | None:
    """A re-created object (backup, re-applied YAML): its annotation may name the instance to take back."""
    assert ref.recorded_instance_id is not None
    recorded = await _read_now(observer, ref.recorded_instance_id, fallback)
    instance = recorded.instance
    if instance is None or instance.instance_state in GONE_STATES or not ref.may_reattach(instance):
        return fallback  # gone, or not this worker's (a manifest copied under another name): launch anew
    return recorded


async def _read_now(observer: RegionObserver, instance_id: str, fallback: Observation | None) -> Observation:
    try:
        return await observer.observe(instance_id, max_age=0, hot=True)
    except IntegrationException as error:
        raise Failed(error, fallback) from error


class OwnershipChanged(Exception):
    """A fresh read right before a mutating call showed the instance is not ours (any more)."""

    def __init__(self, observation: Observation) -> None:
        super().__init__(observation.instance_id)
        self.observation = observation


async def _act(
    runtime: Runtime, observer: RegionObserver, ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus,
    memory: WorkerMemory, plan: Plan, observation: Observation | None, *, fresh: bool, notes: list[Note],
) -> tuple[Observation | None, str | None, CMLWorkerInstanceDto | None]:
    """Carry out the plan's actions in order; return the freshest observation, the image id, a new instance.

    Ownership is read again right before the first call that changes an existing instance
    (the pass may have decided on a cached read), and checked before every call. The
    events of an action go to ``notes`` only once it succeeded.
    """
    image_id = status.ami_id
    created: CMLWorkerInstanceDto | None = None
    instance_id = plan.instance_id
    after = dict(plan.after)
    # The type before this pass changed it: what a refused type change goes back to.
    type_before = observation.instance.instance_type if observation and observation.instance else None
    for index, action in enumerate(plan.actions):
        try:
            if isinstance(action, Launch):
                try:
                    created, image_id = await _launch(runtime, ref, spec, status, action)
                except IntegrationException as error:
                    gone = error.code == "IdempotentParameterMismatch" and await _token_spent(
                        runtime, memory, spec.region, action.client_token)
                    raise Failed(error, observation, launch_attempt=plan.creation_attempt, token_gone=gone) from error
                memory.launched_instance_id = instance_id = created.aws_instance_id
                memory.launched_attempt = plan.creation_attempt
                observation = Observation(instance_id, created, None)
                observer.seed(created)
                fresh = True
                continue
            assert instance_id is not None, f"{action} needs an instance"
            if not fresh:
                observation = await _read_now(observer, instance_id, observation)
                fresh = True
            _check_ownership(ref, spec, status, observation)
            if isinstance(action, Stop) and action.resize_to and observation and observation.instance:
                await check_new_type(runtime, spec.region, observation.instance, action.resize_to)
            try:
                await apply_action(runtime, spec.region, instance_id, action)
            except IntegrationException as error:
                refused = _refused_type(plan, index)
                if refused is None:
                    raise
                if not spec.wants_running:
                    raise Failed(error, observation, completed=index, refused_resize=refused) from error
                # Never leave a worker stopped that should run: start it again with its old type.
                old_type = type_before
                if isinstance(action, ModifyType):
                    reported = await restart_after_failed_modify(runtime, spec.region, instance_id, old_type, error)
                else:  # the Start right after a type change that EC2 accepted
                    reported = await restore_after_failed_start(runtime, spec.region, instance_id, old_type,
                                                                refused, error)
                restarted = reported is not error
                # The status the failure renders shows the restart (pending), not the stop it undid.
                try:
                    observation = await _read_now(observer, instance_id, observation)
                except Failed as failed:
                    raise Failed(reported, failed.observation, completed=index, restarted=restarted,
                                 refused_resize=refused) from error
                raise Failed(reported, observation, completed=index, restarted=restarted,
                             refused_resize=refused) from error
        except IntegrationException as error:
            if isinstance(error, EC2InstanceNotFoundException) and instance_id and not spec.instance_id:
                observer.forget(instance_id)  # next pass sees it gone and replaces it
            raise Failed(error, observation, completed=index) from error
        if index in after:
            notes.append(after[index])
        if isinstance(action, _STATE_CHANGING):
            try:
                observation = await _read_now(observer, instance_id, observation)
            except Failed as failed:
                failed.completed = index + 1  # the call itself went out: its Start is pending
                raise
        elif observation is not None and observation.instance is not None:
            # No re-sent writes: the cache shows what this call changed, so the next pass
            # (which may read the cache) does not send it again.
            observation = replace(observation, instance=expected_after(observation.instance, action))
            observer.amend(observation)
    return observation, image_id, created


def _refused_type(plan: Plan, index: int) -> str | None:
    """The type a failed action refused: a ModifyType's own, or the one a Start right after it was to run as."""
    action = plan.actions[index]
    if isinstance(action, ModifyType):
        return action.instance_type
    previous = plan.actions[index - 1] if index > 0 else None
    if isinstance(action, Start) and isinstance(previous, ModifyType):
        return previous.instance_type
    return None


def _check_ownership(ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus,
                     observation: Observation | None) -> None:
    instance = observation.instance if observation else None
    if observation is None or instance is None or instance.instance_state in GONE_STATES:
        return  # EC2 will answer NotFound / IncorrectInstanceState itself
    if not may_touch(ref, spec, status, instance).ours:
        raise OwnershipChanged(observation)


async def _launch(runtime: Runtime, ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus,
                  action: Launch) -> tuple[CMLWorkerInstanceDto, str]:
    ec2, lookups, region = runtime.ec2, runtime.lookups, spec.region
    assert lookups is not None
    # The image is checked first: EC2 would refuse an unknown AMI anyway, and the
    # root device name is needed for rootVolume. A replacement keeps the image it had.
    # Only images of spec.amiOwners: a public image with a matching name is never launched.
    owners = spec.ami_owners
    if status.ami_id:
        image = await lookups.image(region, status.ami_id, owners)
    elif spec.ami_id:
        image = await lookups.image(region, spec.ami_id, owners)
    else:
        assert spec.ami_name is not None
        image = await lookups.image_by_name(region, spec.ami_name, owners)
    if spec.key_name:
        await lookups.key_pair(region, spec.key_name)
    assert spec.subnet_id is not None, "parse_spec requires subnetId unless spec.instanceId (never launched)"
    root = spec.root_volume
    created = await ec2.create_instance(
        region,
        ami_id=image.image_id,
        ami_name=image.name,
        instance_type=spec.wanted_type or DEFAULT_INSTANCE_TYPE,
        subnet_id=spec.subnet_id,
        security_group_ids=list(spec.security_group_ids),
        client_token=action.client_token,
        tags=action.tags,
        key_name=spec.key_name,
        iam_instance_profile=spec.iam_instance_profile,
        user_data=(await user_data_from_secret(runtime, ref.namespace, spec.user_data_secret)
                   if spec.user_data_secret else spec.user_data),
        # Encrypted unless the spec says otherwise; without spec.rootVolume the AMI's size and type stay.
        root_volume=(RootVolume(root.size_gib, root.volume_type, root.encrypted, root.kms_key_id) if root
                     else RootVolume(image.root_volume_size, None, encrypted=True)),
        metadata_options=MetadataOptions(*spec.metadata_options.wanted(adopted=False)),
        root_device_name=image.root_device_name,
        detailed_monitoring=spec.wanted_monitoring is not False,
    )
    return created, image.image_id



def _follow_up(ref: WorkerRef, spec: WorkerSpec, status: WorkerStatus, plan: Plan,
               observation: Observation | None, limits: Limits) -> Plan:
    """Re-decide on the fresh observation; if nothing is left to do, that is the worker's health now."""
    if not plan.actions or observation is None or observation.instance is None:
        return plan
    applied = replace(status, instance_id=observation.instance_id, managed_tag_keys=tuple(sorted(spec.tags)),
                      creation_attempt=plan.creation_attempt, recovery=plan.recovery)
    after = decide(ref, spec, applied, observation, limits=limits)
    if after.actions or after.instance_id != plan.instance_id and plan.instance_id is not None:
        return plan
    if after.recovery.failed_starts > plan.recovery.failed_starts:
        return plan  # a Start of this very pass is judged on a later read, never on the one right after it
    return replace(plan, health=after.health, poll_soon=after.poll_soon, instance_id=observation.instance_id,
                   recovery=after.recovery)


@dataclass(frozen=True)
class _Shown:
    """What the status says about the spec whatever the pass did: the region and the effective deletionPolicy."""

    region: str | None = None
    deletion_policy: str | None = None

    @classmethod
    def of(cls, raw_spec: Mapping[str, Any] | None) -> _Shown:
        raw = raw_spec or {}
        region = raw.get("region")
        return cls(region if isinstance(region, str) and region else None,
                   effective_deletion_policy(raw.get("deletionPolicy"), raw.get("instanceId")))


def _result(
    runtime: Runtime, ref: WorkerRef, raw_status: Mapping[str, Any] | None, status: WorkerStatus, plan: Plan,
    observation: Observation | None, image_id: str | None, *, spec_keys: tuple[str, ...],
    notes: tuple[Note, ...] = (), shown: _Shown = _Shown(),
) -> PassResult:
    if not plan.shows_instance:
        observation = None  # an instance this worker may not adopt: its details are not the tenant's to read
    instance = observation.instance if observation else None
    if plan.instance_id is None and instance is not None and instance.instance_state in GONE_STATES:
        instance = None  # the plan forgot a lost instance: the status must not name it again
    instance_id = plan.instance_id or (observation.instance_id if observation and instance else None)
    # Recorded once an instance is seen in spec.region (launched there, adopted there), then kept.
    region = status.region or (shown.region if instance is not None else None)
    outcome = PassOutcome(
        health=plan.health, instance_id=instance_id, instance=instance,
        checks=observation.checks if observation and instance else None,
        ami_id=image_id or status.ami_id or (instance.ami_id if instance else None),
        creation_attempt=plan.creation_attempt, adopted=plan.adopted, managed_tag_keys=spec_keys,
        recovery=plan.recovery, region=region, deletion_policy=shown.deletion_policy,
    )
    rendered = render_status(raw_status, outcome, ref.generation)
    runtime.metrics.set_phase(ref.uid, (ref.namespace, rendered["phase"], plan.health.reason))
    return PassResult(rendered, plan.health, notes or plan.notes, poll_soon=plan.poll_soon)


#: How long an IdempotentParameterMismatch with nothing listed for its token is taken for EC2's listing lag
#: (the instance launched before a crash, the spec edited since) before the token counts as spent: by then
#: the instance would be listed, or it was terminated so long ago that EC2 no longer lists it.
TOKEN_LISTING_GRACE = LAUNCH_GRACE_SECONDS


async def _token_spent(runtime: Runtime, memory: WorkerMemory, region: str, token: str) -> bool:
    """After IdempotentParameterMismatch: may the next launch use a new token?

    Yes when the instance launched with ``token`` is listed as terminated, or nothing has been listed for
    it for TOKEN_LISTING_GRACE. While EC2 may only be slow to list it, no: a new token could make a second
    instance, and the uid-tag lookup of the next pass (or this one's, by token) will find it.
    """
    try:  # by the token itself: EC2's client-token filter finds the instance even without its tags
        mine = await runtime.ec2.find_by_client_token(region, token)
    except IntegrationException:
        mine = []
    if mine:
        memory.token_unlisted_since = None
        return all(dto.instance_state in GONE_STATES for dto in mine)
    now = runtime.clock()
    if memory.token_unlisted_since is None or memory.token_unlisted_since[0] != token:
        memory.token_unlisted_since = (token, now)
    return now - memory.token_unlisted_since[1] >= TOKEN_LISTING_GRACE


def _failure(
    runtime: Runtime, ref: WorkerRef, raw_status: Mapping[str, Any] | None, status: WorkerStatus,
    spec: WorkerSpec, error: Exception, observation: Observation | None, notes: list[Note], retry: int,
    memory: WorkerMemory, decided: Plan | None = None, *, launch_attempt: int | None = None,
    completed: int = 0, restarted: bool = False, token_gone: bool = False, shown: _Shown = _Shown(),
    refused_resize: str | None = None,
) -> PassResult:
    integration = as_integration(error)
    # What the decision already counted (a failed launch, a replacement, a new attempt) stays counted.
    launching = decided is not None and any(isinstance(a, Launch) for a in decided.actions)
    decision = capped(runtime, classify(integration, retry=retry, slow_recheck_seconds=runtime.settings.slow_recheck))
    if isinstance(integration, EC2InstanceNotFoundException) and not spec.instance_id:
        # Our own instance vanished mid-pass: the next pass launches a replacement.
        decision = Decision(Kind.TEMPORARY, reasons.PROVISIONING, 1.0)
    message = reasons.with_hint(decision.reason, str(integration))
    attempt = decided.creation_attempt if decided is not None else status.creation_attempt
    if launch_attempt is not None and (integration.code == "IdempotentInstanceTerminated" or token_gone):
        # The token's instance is terminated: the token is spent, the next launch uses a new one.
        attempt = launch_attempt + 1
        message += f"; the instance launched with this token is gone: the next launch uses creationAttempt {attempt}"
    elif launch_attempt is not None and integration.code in IDEMPOTENCY_CODES:
        # EC2 launched an instance with this token (before a crash, with the spec as it was then) that no
        # lookup lists yet: a new token now could make a second one. Look again; launch nothing else.
        message += ("; an instance was launched with this token but EC2 does not list it yet: waiting for it "
                    "(found by its cml.dev/worker-uid tag) rather than launching another")
    recovery = decided.recovery if decided else status.recovery
    if refused_resize is not None and decision.reason not in _NOT_REFUSALS:
        # EC2 said no to this type: remembered for this spec generation, so no pass stops the worker for it again.
        recovery = resize_refused(recovery, refused_resize, ref.generation, f"{integration.code}: {integration}")
        decision = Decision(Kind.PERMANENT, reasons.RESIZE_REFUSED, runtime.settings.slow_recheck)
        message = (f"EC2 refused the type change to {refused_resize}: {message}; no further stop for it until the "
                   "spec changes")
    health = (Health.reconciling(decision.reason, message) if decision.temporary
              else Health.stalled(decision.reason, message))
    runtime.metrics.exceptions.labels(type(integration).__name__, decision.kind.value).inc()
    if decision.temporary:
        runtime.metrics.retries.labels(decision.reason).inc()
        memory.defer(decision.delay or 0.0, runtime.clock())
    else:
        memory.block(ref.generation, decision.delay, runtime.clock())
    memory.hot = True
    if launching:
        memory.launched_instance_id = None  # the lost instance stays forgotten
    if decided is not None and any(isinstance(action, Start) for action in decided.actions[completed:]):
        recovery = start_not_sent(recovery)  # EC2 never accepted it: nothing to judge on the next pass
        # ... nor a restart to count against --max-starts
        recovery = replace(recovery, restart_times=status.recovery.restart_times)
    if restarted and status.instance_id:
        # The undo of a failed type change started the instance: judged like any Start of ours.
        recovery = start_sent(recovery, status.instance_id, datetime.now(timezone.utc))
    plan = Plan((), health,
                instance_id=None if launching else status.instance_id or (spec.instance_id if ref.may_adopt else None),
                adopted=status.adopted or bool(spec.instance_id and ref.may_adopt),
                creation_attempt=attempt,
                recovery=recovery)
    warning = Note("Warning", decision.reason, message)
    result = _result(runtime, ref, raw_status, status, plan, observation, None,
                     spec_keys=status.managed_tag_keys, notes=(*notes, warning), shown=shown)
    return replace(result, decision=decision, error=integration)

