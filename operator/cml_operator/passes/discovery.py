"""One CMLWorkerDiscovery scan: read EC2 and the API server, import unmanaged instances, report orphans. No Kopf.

Order matters for orphans: instances are read first, the CMLWorkers second, and
the suspects are read from EC2 once more, so a worker deleted (and its instance
terminated) between the two reads is never taken for an orphan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..kubeapi import CMLWORKERS, KubeApi, KubeApiError
from ..reconcile import reasons
from ..reconcile.conditions import Health, build_conditions, now_rfc3339
from ..reconcile.discovery import (
    DISCOVERY_LABEL,
    LIVE_STATES,
    TAG_CLUSTER,
    DiscoverySpec,
    find_orphans,
    orphan_action,
    select_imports,
    tracked_instance_ids,
    worker_for_instance,
)
from ..reconcile.policy import classify
from ..reconcile.worker import TAG_UID, Note
from ..runtime import OrphanClock, Runtime

logger = logging.getLogger(__name__)
#: Instance ids named in one orphan event at most; the rest are counted.
_IDS_IN_EVENT = 10


@dataclass(frozen=True)
class ScanResult:
    status: dict[str, Any]
    health: Health
    notes: tuple[Note, ...] = ()
    delay: float | None = None  # retry after this long (a temporary error)


async def discovery_pass(runtime: Runtime, body: Mapping[str, Any], *, cluster_id: str | None,
                         clock: OrphanClock) -> ScanResult:
    """Scan once: import what no worker manages, report (and per --orphan-policy handle) orphans."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    spec = DiscoverySpec.from_dict(body.get("spec") or {})
    kube = runtime.kube
    assert kube is not None
    notes: list[Note] = []
    status: dict[str, Any] = {"observedGeneration": generation}
    try:
        images = await runtime.ec2.find_images(spec.region, spec.ami_owners, spec.ami_name_pattern)
        image_ids = [image.image_id for image in images]
        instances = (await runtime.ec2.find_instances(spec.region, image_ids=image_ids, states=LIVE_STATES,
                                                      tags=spec.tag_selector)) if image_ids else []
        managed = await _managed_instances(runtime, spec.region, cluster_id)
        workers = await _all_workers(kube, runtime.settings.namespaces)
        selection = select_imports(spec, image_ids, instances, tracked_instance_ids(workers))
        imported = await _import(kube, spec, selection.to_import, meta, notes)
        orphans = await _orphans(runtime, spec.region, managed, workers, cluster_id)
        await _handle_orphans(runtime, spec.region, orphans, clock, notes)
    except (IntegrationException, KubeApiError) as error:
        health, delay = _failure(runtime, error)
        notes.append(Note("Warning", health.reason, health.message))
        status["conditions"] = build_conditions(previous.get("conditions"), health, generation)
        return ScanResult(status, health, tuple(notes), delay)

    left = len(selection.candidates) - len(selection.to_import)
    message = (f"Matched {len(selection.matched)} instance(s) from {len(image_ids)} image(s); "
               f"imported {len(imported)}" + (f", {left} more next scan" if left > 0 else ""))
    if orphans:
        message += f"; {len(orphans)} orphan(s)"
    health = Health.ready(reasons.DISCOVERY_SCANNED, message)
    status.update({
        "lastScanTime": now_rfc3339(), "matched": len(selection.matched),
        "imported": imported_before(workers, meta) + len(imported), "orphans": len(orphans),
        "conditions": build_conditions(previous.get("conditions"), health, generation),
    })
    return ScanResult(status, health, tuple(notes))


def imported_before(workers: list[dict[str, Any]], meta: Mapping[str, Any]) -> int:
    """Workers this discovery imported that still exist (counted, not accumulated: a stale body cannot skew it)."""
    return sum(1 for body in workers
               if (body.get("metadata") or {}).get("namespace") == meta["namespace"]
               and ((body.get("metadata") or {}).get("labels") or {}).get(DISCOVERY_LABEL) == meta["name"])


async def _managed_instances(runtime: Runtime, region: str, cluster_id: str | None) -> list[CMLWorkerInstanceDto]:
    """Instances carrying this cluster's tag (read before the workers are listed)."""
    if not cluster_id:
        return []  # without a cluster id no instance can be known to be ours: no orphans
    grouped = await runtime.ec2.find_by_tag_values(region, TAG_CLUSTER, [cluster_id])
    return grouped.get(cluster_id, [])


async def _all_workers(kube: KubeApi, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    if not namespaces:
        return await kube.list(CMLWORKERS, None)
    workers: list[dict[str, Any]] = []
    for namespace in namespaces:
        workers.extend(await kube.list(CMLWORKERS, namespace))
    return workers


async def _import(kube: KubeApi, spec: DiscoverySpec, instances: Sequence[CMLWorkerInstanceDto],
                  meta: Mapping[str, Any], notes: list[Note]) -> list[str]:
    imported = []
    namespace = meta["namespace"]
    for dto in instances:
        manifest = worker_for_instance(dto, spec, meta["name"], namespace)
        try:
            await kube.create(CMLWORKERS, namespace, manifest)
        except KubeApiError as error:
            if error.status == 409:
                continue  # imported already (another scan, another replica): left alone
            raise
        imported.append(dto.aws_instance_id)
        notes.append(Note("Normal", reasons.EVENT_IMPORTED,
                          f"Imported instance {dto.aws_instance_id} ({dto.instance_type}, {dto.instance_state}, "
                          f"{dto.ami_id}) as CMLWorker {namespace}/{dto.aws_instance_id}"))
    return imported


async def _orphans(runtime: Runtime, region: str, managed: list[CMLWorkerInstanceDto],
                   workers: list[dict[str, Any]], cluster_id: str | None) -> list[CMLWorkerInstanceDto]:
    if not cluster_id:
        return []
    uids = {(body.get("metadata") or {}).get("uid", "") for body in workers}
    namespaces = runtime.settings.namespaces
    suspects = find_orphans(managed, uids, cluster_id, namespaces)
    if not suspects:
        return []
    # Read them again: a worker deleted between the two reads has terminated or untagged its instance.
    fresh = await runtime.ec2.describe_instances(region, [dto.aws_instance_id for dto in suspects])
    return find_orphans(fresh.values(), uids, cluster_id, namespaces)


async def _handle_orphans(runtime: Runtime, region: str, orphans: list[CMLWorkerInstanceDto], clock: OrphanClock,
                          notes: list[Note]) -> None:
    runtime.metrics.orphan_instances.labels(region).set(len(orphans))
    first_seen = clock.observe([dto.aws_instance_id for dto in orphans], time.monotonic())
    if not orphans:
        return
    for dto in orphans:
        logger.warning("Orphan instance %s in %s (%s): tagged for worker uid %s (%s), which no CMLWorker has",
                       dto.aws_instance_id, region, dto.instance_state, dto.tags.get(TAG_UID),
                       dto.tags.get("cml.dev/worker", "?"))
    ids = [dto.aws_instance_id for dto in orphans]
    shown = ", ".join(ids[:_IDS_IN_EVENT]) + (f" and {len(ids) - _IDS_IN_EVENT} more" if len(ids) > _IDS_IN_EVENT
                                              else "")
    settings = runtime.settings
    notes.append(Note("Warning", reasons.EVENT_ORPHAN,
                      f"{len(ids)} instance(s) in {region} managed by this cluster have no CMLWorker: {shown} "
                      f"(--orphan-policy {settings.orphan_policy})"))
    for dto in orphans:
        action = orphan_action(settings.orphan_policy, dto, first_seen[dto.aws_instance_id], time.monotonic(),
                               settings.orphan_grace)
        if action is None:
            continue
        try:
            if action == "stop":
                await runtime.ec2.stop_instance(region, dto.aws_instance_id)
                notes.append(Note("Normal", reasons.EVENT_ORPHAN_STOPPED,
                                  f"Stopped orphan instance {dto.aws_instance_id} (--orphan-policy stop)"))
            else:
                await runtime.ec2.terminate_instance(region, dto.aws_instance_id)
                notes.append(Note("Normal", reasons.EVENT_ORPHAN_TERMINATED,
                                  f"Terminated orphan instance {dto.aws_instance_id} (--orphan-policy terminate)"))
        except IntegrationException as error:  # one failure does not stop the scan; next scan tries again
            notes.append(Note("Warning", reasons.EVENT_ORPHAN, f"Could not {action} orphan {dto.aws_instance_id}: "
                                                               f"{error}"))


def _failure(runtime: Runtime, error: IntegrationException | KubeApiError) -> tuple[Health, float | None]:
    if isinstance(error, KubeApiError):
        message = f"The API server refused the scan: {error}"
        if error.permanent:
            return Health.stalled(reasons.INTEGRATION_ERROR, message), runtime.settings.slow_recheck
        return Health.reconciling(reasons.INTEGRATION_ERROR, message), 10.0
    decision = classify(error, slow_recheck_seconds=runtime.settings.slow_recheck)
    runtime.metrics.exceptions.labels(type(error).__name__, decision.kind.value).inc()
    if decision.temporary:
        return Health.reconciling(decision.reason, str(error)), decision.delay
    return Health.stalled(decision.reason, str(error)), decision.delay or runtime.settings.slow_recheck

