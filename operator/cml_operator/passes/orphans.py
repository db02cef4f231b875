"""Orphans: instances this cluster's operator manages whose CMLWorker is gone. Find, report, and per policy act.

Order matters: the instances are read first, the CMLWorkers second, and the suspects
are read from EC2 once more, so a worker deleted (and its instance terminated or
untagged) between the two reads is never taken for an orphan. Discovery scans judge
their own region (the Warning event goes on the discovery object); ``orphan_watch``
judges every other region where this process has seen workers (the same policy; reported by
metric and log only, as there is no object to put an event on). The watch reads no EC2 of
its own while the region's observer resyncs: it judges the observer's last tag-filtered read
(``RegionObserver.cluster_instances``), so a region costs one DescribeInstances per resync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..kubeapi import CMLWORKERS, KubeApi, KubeApiError
from ..reconcile import reasons
from ..reconcile.discovery import TAG_CLUSTER, find_orphans, orphan_action
from ..reconcile.actions import Note
from ..reconcile.worker import TAG_UID, TAG_WORKER
from ..runtime import Runtime
from .duplicates import handle_duplicates, judge_duplicates

logger = logging.getLogger(__name__)
#: Instance ids named in one orphan event at most; the rest are counted.
_IDS_IN_EVENT = 10


async def managed_instances(runtime: Runtime, region: str, cluster_id: str | None) -> list[CMLWorkerInstanceDto]:
    """Instances carrying this cluster's tag (read before the workers are listed)."""
    if not cluster_id:
        return []  # without a cluster id no instance can be known to be ours: no orphans
    grouped = await runtime.ec2.find_by_tag_values(region, TAG_CLUSTER, [cluster_id])
    return grouped.get(cluster_id, [])


async def all_workers(kube: KubeApi, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """Every CMLWorker this operator watches, read from the API server."""
    if not namespaces:
        return await kube.list(CMLWORKERS, None)
    workers: list[dict[str, Any]] = []
    for namespace in namespaces:
        workers.extend(await kube.list(CMLWORKERS, namespace))
    return workers


async def judge_orphans(runtime: Runtime, region: str, managed: list[CMLWorkerInstanceDto],
                        workers: list[dict[str, Any]], cluster_id: str | None) -> list[CMLWorkerInstanceDto]:
    """The orphans among ``managed``, confirmed by a fresh read."""
    if not cluster_id:
        return []
    uids = {(body.get("metadata") or {}).get("uid", "") for body in workers}
    namespaces = runtime.settings.namespaces
    suspects = find_orphans(managed, uids, cluster_id, namespaces)
    if not suspects:
        return []
    fresh = await runtime.ec2.describe_instances(region, [dto.aws_instance_id for dto in suspects])
    return find_orphans(fresh.values(), uids, cluster_id, namespaces)


async def handle_orphans(runtime: Runtime, region: str, orphans: list[CMLWorkerInstanceDto]) -> list[Note]:
    """Report the region's orphans (metric, log lines, a Warning note) and stop/terminate those past the grace."""
    runtime.metrics.orphan_instances.labels(region, runtime.account_label).set(len(orphans))
    now = time.monotonic()
    first_seen = runtime.orphan_clock(region).observe([dto.aws_instance_id for dto in orphans], now)
    if not orphans:
        return []
    for dto in orphans:
        logger.warning("Orphan instance %s in %s, account %s (%s): tagged for worker uid %s (%s), which no "
                       "CMLWorker has", dto.aws_instance_id, region, runtime.account_label, dto.instance_state,
                       dto.tags.get(TAG_UID),
                       dto.tags.get(TAG_WORKER, "?"))
    ids = [dto.aws_instance_id for dto in orphans]
    shown = ", ".join(ids[:_IDS_IN_EVENT]) + (f" and {len(ids) - _IDS_IN_EVENT} more" if len(ids) > _IDS_IN_EVENT
                                              else "")
    settings = runtime.settings
    notes = [Note("Warning", reasons.EVENT_ORPHAN,
                  f"{len(ids)} instance(s) in {region} (account {runtime.account_label}) managed by this cluster "
                  f"have no CMLWorker: {shown} "
                  f"(--orphan-policy {settings.orphan_policy})")]
    for dto in orphans:
        action = orphan_action(settings.orphan_policy, dto, first_seen[dto.aws_instance_id], now,
                               settings.orphan_grace)
        if action is not None:
            notes.append(await _act(runtime, region, dto.aws_instance_id, action))
    return notes


async def _act(runtime: Runtime, region: str, instance_id: str, action: str) -> Note:
    try:
        if action == "stop":
            await runtime.ec2.stop_instance(region, instance_id)
            note = Note("Normal", reasons.EVENT_ORPHAN_STOPPED, f"Stopped orphan instance {instance_id} "
                                                                "(--orphan-policy stop)")
        else:
            await runtime.ec2.terminate_instance(region, instance_id)
            note = Note("Normal", reasons.EVENT_ORPHAN_TERMINATED, f"Terminated orphan instance {instance_id} "
                                                                   "(--orphan-policy terminate)")
    except IntegrationException as error:  # one failure does not end the scan; the next scan tries again
        return Note("Warning", reasons.EVENT_ORPHAN, f"Could not {action} orphan {instance_id}: {error}")
    logger.warning(note.message)
    return note


#: How old (in resync intervals) the observer's read of this cluster's instances may be for the orphan watch:
#: the observer's passes come every interval or a fast tick later, so the watch never needs a read of its own.
CLUSTER_READ_MAX_AGE = 2


async def orphan_watch(runtime: Runtime, cluster_id: Callable[[], str | None], interval: float) -> None:
    """Forever: every ``interval`` s judge, per account, the regions with workers that no discovery scans."""
    while True:
        await asyncio.sleep(interval)
        ours = cluster_id()
        if not ours or runtime.kube is None:
            continue
        fleets = runtime.accounts.all() if runtime.accounts is not None else [None]
        for fleet in fleets:
            scoped = runtime.for_fleet(fleet) if fleet is not None else runtime
            for region in sorted(set(scoped.observers.regions()) - scoped.discovery_regions()):
                try:
                    # Read before the workers are listed (see the module's docstring): shared with the resync.
                    managed = await scoped.observers(region).cluster_instances(
                        max_age=CLUSTER_READ_MAX_AGE * interval)
                    workers = await all_workers(runtime.kube, runtime.settings.namespaces)
                    orphans = await judge_orphans(scoped, region, managed, workers, ours)
                    await handle_orphans(scoped, region, orphans)
                    duplicates = await judge_duplicates(scoped, region, managed, workers, ours)
                    await handle_duplicates(scoped, region, duplicates)
                except (IntegrationException, KubeApiError) as error:
                    logger.warning("Orphan scan of %s (account %s) failed (next in %.0f s): %s", region,
                                   scoped.account_label, interval, error)
