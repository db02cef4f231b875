"""Render ``CMLWorker.status`` from a pass's outcome: pure, and stable between passes.

Nothing here changes unless the world did: no per-pass timestamps, so a resync
that finds nothing new produces the same status and the handler writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from . import reasons
from .conditions import Health, HealthState, build_conditions, now_rfc3339
from .recovery import Recovery

_PHASE_BY_STATE = {
    "running": "Running",
    "stopping": "Stopping",
    "stopped": "Stopped",
    "shutting-down": "Terminating",
    "terminated": "Terminated",
}
_INSTANCE_FIELDS = ("instanceState", "instanceType", "privateIp", "publicIp", "availabilityZone", "launchTime",
                    "securityGroupIds", "detailedMonitoring")


@dataclass(frozen=True)
class PassOutcome:
    """Everything a reconcile pass learned, for rendering."""

    health: Health
    instance_id: str | None
    instance: CMLWorkerInstanceDto | None  # the freshest view (after actions), if any
    checks: InstanceStatusChecks | None
    ami_id: str | None
    creation_attempt: int
    adopted: bool
    managed_tag_keys: tuple[str, ...]
    recovery: Recovery = Recovery()
    #: Where the instance was launched or adopted (kept for the worker's life once known).
    region: str | None = None
    #: What deleting the worker will do: the stated spec.deletionPolicy, or the default for how it got its instance.
    deletion_policy: str | None = None


def phase_of(health: Health, instance: CMLWorkerInstanceDto | None) -> str:
    if health.state is HealthState.STALLED:
        return "Failed"
    if instance is None:
        return "Provisioning" if health.reason == reasons.PROVISIONING else "Pending"
    state = instance.instance_state
    if state == "pending":
        return "Provisioning" if health.reason == reasons.PROVISIONING else "Starting"
    return _PHASE_BY_STATE.get(state, "Pending")


def render_status(
    previous: Mapping[str, Any] | None,
    outcome: PassOutcome,
    generation: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    previous = previous or {}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase_of(outcome.health, outcome.instance),
        "creationAttempt": outcome.creation_attempt,
        "adopted": outcome.adopted,
        "managedTagKeys": list(outcome.managed_tag_keys),
    }
    if outcome.instance_id:
        status["instanceId"] = outcome.instance_id
    if outcome.ami_id:
        status["amiId"] = outcome.ami_id
    if outcome.region:
        status["region"] = outcome.region
    if outcome.deletion_policy:
        status["deletionPolicy"] = outcome.deletion_policy
    if not outcome.recovery.empty:
        status["recovery"] = outcome.recovery.to_dict()

    instance = outcome.instance
    if instance is not None:
        status.update(_instance_fields(instance))
    elif outcome.instance_id and outcome.instance_id == previous.get("instanceId"):
        # Nothing new was observed (e.g. a stalled pass): keep what we knew.
        status.update({k: previous[k] for k in _INSTANCE_FIELDS if k in previous})
    checks = _checks(previous.get("statusChecks"), outcome.checks, instance, now)
    if checks is not None:
        status["statusChecks"] = checks
    status["conditions"] = build_conditions(previous.get("conditions"), outcome.health, generation, now)
    return status


def _instance_fields(instance: CMLWorkerInstanceDto) -> dict[str, Any]:
    fields = {
        "instanceState": instance.instance_state,
        "instanceType": instance.instance_type,
        "privateIp": instance.private_ip,
        "publicIp": instance.public_ip,
        "availabilityZone": instance.availability_zone,
        "launchTime": instance.launch_time,
        "securityGroupIds": sorted(instance.security_group_ids),
    }
    kept: dict[str, Any] = {key: value for key, value in fields.items() if value}
    # What the instance has, whether or not the spec states it (adoption takes unstated fields as they are).
    if instance.monitoring is not None:
        kept["detailedMonitoring"] = instance.monitoring in ("enabled", "pending")
    return kept


def _checks(
    previous: Any, checks: InstanceStatusChecks | None, instance: CMLWorkerInstanceDto | None,
    now: datetime | None,
) -> dict[str, str] | None:
    if checks is None:
        if instance is not None and instance.instance_state != "running":
            system = instance_check = "not-applicable"
        elif isinstance(previous, Mapping) and instance is None:
            return dict(previous)
        else:
            return None
    else:
        system, instance_check = checks.system, checks.instance
    if isinstance(previous, Mapping) and (previous.get("system"), previous.get("instance")) == (system, instance_check):
        return dict(previous)  # unchanged: keep the time they were first seen like this
    return {"system": system, "instance": instance_check, "checkedAt": now_rfc3339(now)}


#: Keys a pass may drop (a stopped instance has no public IP); a merge patch must null them.
REMOVABLE_KEYS = (*_INSTANCE_FIELDS, "instanceId", "amiId", "statusChecks", "cml", "recovery", "paused", "schedule")
#: Objects whose own keys a merge patch must null when they go away (status.cml, status.recovery).
_NESTED = ("cml", "recovery", "schedule", "usage")


def status_patch(current: Mapping[str, Any] | None, rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch from ``current`` to ``rendered``; empty when nothing changed.

    Kopf's own ``status.kopf`` is not ours and never touched.
    """
    current = current or {}
    changes = {key: value for key, value in rendered.items() if current.get(key) != value}
    changes.update({key: None for key in REMOVABLE_KEYS if key in current and key not in rendered})
    for key in _NESTED:
        old, new = current.get(key), changes.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes[key] = {**{k: None for k in old if k not in new}, **new}
    return changes
