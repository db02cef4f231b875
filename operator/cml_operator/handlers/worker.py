"""CMLWorker handlers (thin): run one pass, patch the status once, post events, raise Kopf's errors.

Create, resume and spec updates read EC2 afresh (batched); the per-worker timer
reads the region observer's cache, so a quiet fleet costs no EC2 call per worker.
Temporary errors become ``kopf.TemporaryError(delay=...)``, permanent ones
``kopf.PermanentError`` (the timer leaves a stalled worker alone until its spec
changes, or until the slow recheck for quota and credentials). Deletion never
raises a permanent error: the finalizer stays until the instance is gone.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import kopf

from ..passes import PassResult, deletion_pass, reconcile_pass
from ..passes.cml import look_ahead
from ..passes.worker import is_paused
from ..metrics import Metrics
from ..reconcile.conditions import Health, build_conditions
from ..reconcile.status import REMOVABLE_KEYS, status_patch
from ..reconcile.adoption import adoption_allowed
from ..reconcile.ownership import ANNOTATION_INSTANCE_ID, ANNOTATION_REGION
from ..reconcile.worker import WorkerRef
from ..runtime import Runtime, WorkerMemory
from ..settings import OperatorSettings

GROUP, VERSION, PLURAL = "cml.dev", "v1alpha1", "cmlworkers"
FINALIZER = "cml.dev/finalizer"
#: How long a body may lag behind our own status write before we write again (a lost patch heals).
STALE_BODY_GRACE = 30.0
#: How long a timer waits for the create/resume pass it should follow (a safety net: Kopf runs one
#: for every worker a process sees, normally within milliseconds of the first timer tick).
CHANGE_PASS_GRACE = 30.0
#: Kubernetes caps event messages; keep ours readable and under it.
EVENT_MESSAGE_LIMIT = 1000


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register the CMLWorker handlers on ``registry`` with the intervals from ``config``."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.resume(*resource, id="reconcile", registry=registry)
    @kopf.on.create(*resource, id="reconcile", registry=registry)
    @kopf.on.update(*resource, field="spec", id="reconcile", registry=registry)
    async def reconcile(body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, reason: Any,
                        **_: Any) -> None:
        await _reconcile(memo.runtime, body, patch, retry, trigger=str(reason), timer=False)

    def first_poll(**_: Any) -> float:
        # Spread the timers so a thousand workers do not all wake in the same tick.
        return config.poll_interval * (0.5 + random.random())

    @kopf.timer(*resource, interval=config.poll_interval, initial_delay=first_poll, id="poll", registry=registry)
    async def poll(body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any) -> None:
        await _reconcile(memo.runtime, body, patch, retry, trigger="timer", timer=True)

    @kopf.on.delete(*resource, id="delete", registry=registry)
    async def delete(body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        ref = _ref(body, runtime)
        memory = runtime.memory(ref.uid)
        async with memory.lock:
            with runtime.metrics.reconcile_duration.labels("delete").time():
                result = await deletion_pass(runtime, ref, body.get("spec"), body.get("status"), retry=retry)
        _post(body, result)
        if result.release:
            return
        rendered = dict(result.status)
        rendered["conditions"] = build_conditions(
            (body.get("status") or {}).get("conditions"), result.health, ref.generation)
        _patch_status(body, patch, rendered, memory, runtime.metrics, result.health)
        delay = result.decision.delay if result.decision and result.decision.delay else 5.0
        raise kopf.TemporaryError(result.health.message, delay=delay)


async def _reconcile(runtime: Runtime, body: kopf.Body, patch: kopf.Patch, retry: int, *, trigger: str,
                     timer: bool) -> None:
    ref = _ref(body, runtime)
    memory = runtime.memory(ref.uid)
    if timer and memory.change_pass_ran and memory.due(ref.generation, runtime.clock()) \
            and not is_paused(_annotations(body)):
        # CML is looked at before the lock is taken: a controller that hangs until its timeout
        # (or waits behind others for the shared limit) never holds up this worker's spec
        # changes or its deletion, which need the lock.
        await look_ahead(runtime, ref, body.get("spec"), _freshest_status(body, memory), _annotations(body))
    # The lock comes before the due-check: a timer and a change handler waking together
    # must not both find the worker due and both call EC2 (the second sees the first's outcome).
    async with memory.lock:
        if timer and not memory.timer_may_act(runtime.clock(), CHANGE_PASS_GRACE, ref.generation):
            return  # the create/resume pass comes first; it reads EC2 itself
        if timer and not memory.due(ref.generation, runtime.clock()):
            return  # waiting out a retry delay, or stalled until the spec changes
        if not timer:
            memory.change_pass_ran = True
        if timer:
            # The region observer refreshes on its own schedule (hot ids every fast interval, all
            # every resync); a busy event loop makes it late. A worker reads EC2 itself only when
            # the cache is clearly stale, else a thousand late timers would each send a read.
            observer_settings = runtime.settings.observer
            max_age = (observer_settings.fast_interval if memory.hot else observer_settings.resync_interval) * 2.5
        else:
            max_age = 0.0  # a change or a restart: look at EC2 now (batched with the others)
        with runtime.metrics.reconcile_duration.labels(trigger).time():
            result = await reconcile_pass(runtime, ref, body.get("spec"), _freshest_status(body, memory),
                                          max_age=max_age, retry=retry, annotations=_annotations(body),
                                          labels=(body.get("metadata") or {}).get("labels") or {})
        _patch_status(body, patch, result.status, memory, runtime.metrics, result.health)
        _record_instance_id(body, patch, result.status, memory)
        if not timer:
            retrying = result.decision is not None and result.decision.temporary
            memory.change_retry_at = runtime.clock() + (result.decision.delay or 1.0) if retrying else None
            memory.change_retry_generation = ref.generation
    _post(body, result)
    decision = result.decision
    if decision is None:
        return
    if decision.temporary:
        raise kopf.TemporaryError(result.health.message, delay=decision.delay or 1.0)
    if not timer:
        raise kopf.PermanentError(result.health.message)


def _annotations(body: kopf.Body) -> Mapping[str, str]:
    return dict((body.get("metadata") or {}).get("annotations") or {})


def _ref(body: kopf.Body, runtime: Runtime) -> WorkerRef:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    recorded, region = annotations.get(ANNOTATION_INSTANCE_ID), annotations.get(ANNOTATION_REGION)
    namespace = meta.get("namespace", "")
    return WorkerRef(uid=meta["uid"], namespace=namespace, name=meta["name"],
                     generation=int(meta.get("generation") or 1), cluster_id=runtime.cluster_id,
                     recorded_instance_id=recorded if isinstance(recorded, str) and recorded else None,
                     may_adopt=adoption_allowed(namespace, runtime.settings.adoption_namespaces),
                     recorded_region=region if isinstance(region, str) and region else None)


def _record_instance_id(body: kopf.Body, patch: kopf.Patch, status: Mapping[str, Any],
                        memory: WorkerMemory) -> None:
    """Write the instance id (and its region) into annotations: unlike status, they survive a backup and restore."""
    instance_id, region = status.get("instanceId"), status.get("region")
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    region_missing = isinstance(region, str) and region and annotations.get(ANNOTATION_REGION) != region
    if not isinstance(instance_id, str) or not instance_id or (
            annotations.get(ANNOTATION_INSTANCE_ID) == instance_id and not region_missing):
        return
    now = Runtime.clock()
    if memory.annotated_instance_id == instance_id and now - memory.annotated_at < STALE_BODY_GRACE:
        return  # we wrote it moments ago; this body predates that write (a lost write heals after the grace)
    written = patch.setdefault("metadata", {}).setdefault("annotations", {})
    written[ANNOTATION_INSTANCE_ID] = instance_id
    if region_missing:
        written[ANNOTATION_REGION] = region
    memory.annotated_instance_id, memory.annotated_at = instance_id, now


def _freshest_status(body: kopf.Body, memory: WorkerMemory) -> Mapping[str, Any] | None:
    """The body's status, overlaid with what this process wrote moments ago and the body may not show yet.

    Only the operator writes these fields, so its own recent write is at least as fresh;
    rendering against it keeps timestamps such as statusChecks.checkedAt stable.
    """
    current = body.get("status")
    if memory.last_status is None or Runtime.clock() - memory.last_status_at >= STALE_BODY_GRACE:
        return current
    # A key our write dropped (instanceId of a forgotten instance) is gone, even if the lagging body has it.
    kept = {key: value for key, value in (current or {}).items() if key not in REMOVABLE_KEYS}
    return {**kept, **memory.last_status}


def _patch_status(body: kopf.Body, patch: kopf.Patch, rendered: Mapping[str, Any], memory: WorkerMemory,
                  metrics: Metrics, health: Health) -> None:
    """Put the status changes into Kopf's patch, counted by the health they carry."""
    changes = status_patch(body.get("status"), rendered)
    if not changes:
        return
    now = Runtime.clock()
    if memory.last_status == rendered and now - memory.last_status_at < STALE_BODY_GRACE:
        return  # we just wrote exactly this; the body in hand predates that write
    patch.setdefault("status", {}).update(changes)
    memory.last_status, memory.last_status_at = dict(rendered), now
    metrics.status_patches.labels(health.state.value, health.reason).inc()


def _post(body: kopf.Body, result: PassResult) -> None:
    for note in result.notes:
        message = note.message if len(note.message) <= EVENT_MESSAGE_LIMIT else note.message[:EVENT_MESSAGE_LIMIT - 1] + "…"
        kopf.event(body, type=note.type, reason=note.reason, message=message)
