"""Pure decisions for a CMLWorkerDiscovery: which instances to import, the worker made for each, orphans.

No I/O. ``passes.discovery`` reads EC2 and the API server, then asks these
functions. An instance is imported at most once: the worker is named after the
instance id, so a second scan (or a second operator) gets "already exists".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..ec2.models import CMLWorkerInstanceDto
from .conditions import parse_rfc3339
from .ownership import TAG_CLUSTER  # this cluster's mark on every instance it manages (issue 10)
from .worker import MANAGED_BY, TAG_MANAGED_BY, TAG_UID, TAG_WORKER

#: Instance states discovery imports (never one shutting down or terminated).
LIVE_STATES = ("pending", "running", "stopping", "stopped")
DISCOVERY_LABEL = "cml.dev/discovery"
#: At most this many workers are created per scan: a bounded loop even if a pattern matches thousands.
MAX_IMPORTS_PER_SCAN = 50
#: A CMLWorker may name at most this many security groups.
MAX_SECURITY_GROUPS = 5
ORPHAN_POLICIES = ("report", "stop", "terminate")


@dataclass(frozen=True)
class DiscoverySpec:
    region: str
    ami_name_pattern: str
    ami_owners: tuple[str, ...] = ("self",)
    tag_selector: Mapping[str, str] = field(default_factory=dict)
    interval_seconds: int = 300
    labels: Mapping[str, str] = field(default_factory=dict)
    worker_spec: Mapping[str, Any] = field(default_factory=dict)  # deletionPolicy, cml

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DiscoverySpec:
        template = raw.get("workerTemplate") or {}
        return cls(
            region=str(raw["region"]), ami_name_pattern=str(raw["amiNamePattern"]),
            ami_owners=tuple(raw.get("amiOwners") or ("self",)), tag_selector=dict(raw.get("tagSelector") or {}),
            interval_seconds=int(raw.get("intervalSeconds") or 300),
            labels=dict((template.get("metadata") or {}).get("labels") or {}),
            worker_spec=dict(template.get("spec") or {}),
        )


@dataclass(frozen=True)
class Selection:
    matched: tuple[CMLWorkerInstanceDto, ...]  # live, from a matching image, with the selector's tags
    candidates: tuple[CMLWorkerInstanceDto, ...]  # of those, managed by no worker
    to_import: tuple[CMLWorkerInstanceDto, ...]  # the candidates this scan imports (bounded)


def scan_due(last_scan: str | None, interval_seconds: float, now: datetime) -> bool:
    """True when no scan ever finished or the last one is ``interval_seconds`` old."""
    finished = parse_rfc3339(last_scan)
    if finished is None:
        return True
    return now - finished >= timedelta(seconds=interval_seconds)


def select_imports(spec: DiscoverySpec, image_ids: Iterable[str], instances: Iterable[CMLWorkerInstanceDto],
                   tracked_ids: Iterable[str], limit: int = MAX_IMPORTS_PER_SCAN) -> Selection:
    """Instances to import: live, from one of ``image_ids``, carrying the selector's tags, managed by nobody.

    Managed means tagged with any worker's uid (this cluster's or another's) or
    named by a CMLWorker already (``tracked_ids``: spec.instanceId or status.instanceId).
    """
    images = set(image_ids)
    tracked = set(tracked_ids)
    matched = tuple(sorted(
        (dto for dto in instances
         if dto.instance_state in LIVE_STATES and dto.ami_id in images
         and all(dto.tags.get(key) == value for key, value in spec.tag_selector.items())),
        key=lambda dto: dto.aws_instance_id))
    candidates = tuple(dto for dto in matched if TAG_UID not in dto.tags and dto.aws_instance_id not in tracked)
    return Selection(matched, candidates, candidates[:limit])


def worker_for_instance(instance: CMLWorkerInstanceDto, spec: DiscoverySpec, discovery_name: str,
                        namespace: str) -> dict[str, Any]:
    """The CMLWorker that adopts ``instance`` as it is: every field it states is the instance's own.

    Stating type, groups, monitoring and state from the instance means the adoption
    itself never stops, starts, resizes or re-monitors it.
    """
    worker_spec: dict[str, Any] = {
        "region": spec.region,
        "instanceId": instance.aws_instance_id,
        "amiId": instance.ami_id,
        "instanceType": instance.instance_type,
        "desiredState": "Running" if instance.instance_state in ("pending", "running") else "Stopped",
        "detailedMonitoring": instance.monitoring in ("enabled", "pending"),
        "deletionPolicy": spec.worker_spec.get("deletionPolicy", "Retain"),
    }
    if instance.subnet_id:
        worker_spec["subnetId"] = instance.subnet_id
    if instance.security_group_ids and len(instance.security_group_ids) <= MAX_SECURITY_GROUPS:
        worker_spec["securityGroupIds"] = sorted(instance.security_group_ids)
    for key, value in spec.worker_spec.items():
        if key != "deletionPolicy":
            worker_spec[key] = value  # cml
    return {
        "apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker",
        "metadata": {"name": instance.aws_instance_id, "namespace": namespace,
                     "labels": {**spec.labels, DISCOVERY_LABEL: discovery_name}},
        "spec": worker_spec,
    }


def tracked_instance_ids(workers: Iterable[Mapping[str, Any]]) -> set[str]:
    """Instance ids CMLWorkers name, in spec or status."""
    ids: set[str] = set()
    for body in workers:
        for part in ("spec", "status"):
            instance_id = (body.get(part) or {}).get("instanceId")
            if instance_id:
                ids.add(instance_id)
    return ids


# ---------------------------------------------------------------- orphans


def find_orphans(instances: Iterable[CMLWorkerInstanceDto], worker_uids: Iterable[str], cluster_id: str,
                 namespaces: Sequence[str] = ()) -> list[CMLWorkerInstanceDto]:
    """Live instances this cluster's operator manages whose worker uid matches no CMLWorker.

    Only instances tagged ``cml.dev/cluster=<cluster_id>`` and managed by cml-operator
    count; when the operator watches some namespaces only, an instance whose worker
    lived elsewhere is not ours to judge.
    """
    known = set(worker_uids)
    orphans = []
    for dto in instances:
        tags = dto.tags
        if dto.instance_state not in LIVE_STATES or not cluster_id or tags.get(TAG_CLUSTER) != cluster_id:
            continue
        if tags.get(TAG_MANAGED_BY) != MANAGED_BY or not tags.get(TAG_UID) or tags[TAG_UID] in known:
            continue
        if namespaces and tags.get(TAG_WORKER, "").split("/", 1)[0] not in namespaces:
            continue
        orphans.append(dto)
    return sorted(orphans, key=lambda dto: dto.aws_instance_id)


def orphan_action(policy: str, instance: CMLWorkerInstanceDto, first_seen: float, now: float,
                  grace_seconds: float) -> str | None:
    """``"stop"``, ``"terminate"`` or None: what to do with an orphan now, given how long it has been one."""
    if policy == "report" or now - first_seen < grace_seconds:
        return None
    if policy == "stop":
        return "stop" if instance.instance_state in ("pending", "running") else None
    if policy == "terminate":
        return "terminate"
    return None
