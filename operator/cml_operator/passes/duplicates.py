"""Duplicates: a second live instance carrying a worker's uid. Found with the orphans, handled like them.

The orphan watch and discovery scans read this cluster's instances and the CMLWorkers anyway;
``judge_duplicates`` finds the instances tagged with a worker's uid that are not the one the
worker tracks and confirms them with a fresh read. ``handle_duplicates`` sets the metric,
records them for the worker's own pass (which posts the Warning ``DuplicateInstance`` on the
worker: events go out from a worker's handler) and, past ``--orphan-grace``, stops or
terminates them per ``--orphan-policy``, exactly as it would an orphan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto
from ..reconcile.discovery import orphan_action
from ..reconcile.duplicates import Duplicate, find_duplicates
from ..runtime import Runtime

logger = logging.getLogger(__name__)


async def judge_duplicates(runtime: Runtime, region: str, managed: list[CMLWorkerInstanceDto],
                           workers: list[dict[str, Any]], cluster_id: str | None) -> list[Duplicate]:
    """The duplicates among ``managed``, confirmed by a fresh read of them and of the instances they duplicate."""
    if not cluster_id:
        return []
    suspects = find_duplicates(managed, workers, cluster_id)
    if not suspects:
        return []
    ids = list(dict.fromkeys([d.instance.aws_instance_id for d in suspects] + [d.tracked_instance_id for d in suspects]))
    fresh = await runtime.ec2.describe_instances(region, ids)
    return find_duplicates(fresh.values(), workers, cluster_id)


async def handle_duplicates(runtime: Runtime, region: str, duplicates: list[Duplicate]) -> None:
    """Report the region's duplicates and stop/terminate those past the grace (per --orphan-policy)."""
    runtime.metrics.duplicate_instances.labels(region, runtime.account_label).set(len(duplicates))
    now = time.monotonic()
    ids = [d.instance.aws_instance_id for d in duplicates]
    first_seen = runtime.orphan_clock(f"{region}/duplicates").observe(ids, now)
    runtime.record_duplicates(region, {_uid(d.worker): _ids_of(duplicates, d.worker) for d in duplicates})
    settings = runtime.settings
    for duplicate in duplicates:
        instance_id = duplicate.instance.aws_instance_id
        logger.warning("Duplicate instance %s in %s (%s): tagged for worker %s, which tracks %s",
                       instance_id, region, duplicate.instance.instance_state, _key(duplicate.worker),
                       duplicate.tracked_instance_id)
        action = orphan_action(settings.orphan_policy, duplicate.instance, first_seen[instance_id], now,
                               settings.orphan_grace)
        if action is None:
            continue
        try:
            if action == "stop":
                await runtime.ec2.stop_instance(region, instance_id)
            else:
                await runtime.ec2.terminate_instance(region, instance_id)
        except IntegrationException as error:  # the next scan tries again
            logger.warning("Could not %s duplicate instance %s: %s", action, instance_id, error)
            continue
        logger.warning("%s duplicate instance %s of worker %s (--orphan-policy %s)",
                       "Stopped" if action == "stop" else "Terminated", instance_id, _key(duplicate.worker),
                       settings.orphan_policy)


def _uid(worker: Mapping[str, Any]) -> str:
    return str((worker.get("metadata") or {}).get("uid", ""))


def _key(worker: Mapping[str, Any]) -> str:
    meta = worker.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _ids_of(duplicates: list[Duplicate], worker: Mapping[str, Any]) -> tuple[str, ...]:
    uid = _uid(worker)
    return tuple(d.instance.aws_instance_id for d in duplicates if _uid(d.worker) == uid)
