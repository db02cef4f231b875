"""One instance per worker: a second live instance carrying a worker's uid is a duplicate. Pure.

How one appears: a launch whose status write was lost and whose token was then spent, or a
copy made by hand (an AMI launched with the original's tags). The worker tracks one instance
(``status.instanceId``); every other live instance of this cluster tagged with its uid is
reported (Warning ``DuplicateInstance`` on the worker, metric ``cml_duplicate_instances``) and
handled like an orphan under ``--orphan-policy``/``--orphan-grace``.

Only when the tracked instance itself is among the live ones: a worker between losing its
instance and recording the replacement (or between a launch and its status write) has no
second instance, only a status that lags behind, and is never judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..ec2.models import CMLWorkerInstanceDto
from .discovery import LIVE_STATES
from .ownership import MANAGED_BY, TAG_CLUSTER, TAG_MANAGED_BY, TAG_UID


@dataclass(frozen=True)
class Duplicate:
    instance: CMLWorkerInstanceDto
    #: The worker whose uid it carries, and the instance that worker tracks.
    worker: Mapping[str, Any]
    tracked_instance_id: str


def tracked_by_uid(workers: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Mapping[str, Any], str]]:
    """uid -> (worker body, status.instanceId) for every worker that tracks an instance."""
    tracked: dict[str, tuple[Mapping[str, Any], str]] = {}
    for body in workers:
        uid = (body.get("metadata") or {}).get("uid")
        instance_id = (body.get("status") or {}).get("instanceId")
        if isinstance(uid, str) and uid and isinstance(instance_id, str) and instance_id:
            tracked[uid] = (body, instance_id)
    return tracked


def find_duplicates(instances: Iterable[CMLWorkerInstanceDto], workers: Iterable[Mapping[str, Any]],
                    cluster_id: str) -> list[Duplicate]:
    """Live instances of this cluster tagged with a worker's uid that are not the one the worker tracks."""
    if not cluster_id:
        return []
    live = [dto for dto in instances
            if dto.instance_state in LIVE_STATES and dto.tags.get(TAG_CLUSTER) == cluster_id
            and dto.tags.get(TAG_MANAGED_BY) == MANAGED_BY and dto.tags.get(TAG_UID)]
    live_ids = {dto.aws_instance_id for dto in live}
    tracked = tracked_by_uid(workers)
    duplicates = []
    for dto in live:
        owner = tracked.get(dto.tags[TAG_UID])
        if owner is None:
            continue  # no worker, or one that tracks nothing yet: orphans and launches are judged elsewhere
        body, tracked_id = owner
        if dto.aws_instance_id != tracked_id and tracked_id in live_ids:
            duplicates.append(Duplicate(dto, body, tracked_id))
    return sorted(duplicates, key=lambda d: d.instance.aws_instance_id)
