"""One CMLWorkerPool pass: list the children afresh, decide (``reconcile.pool``), create/patch/delete. No Kopf.

The children are read with a LIST from the API server, never from a cache, so a
pass can never count a child twice or miss one it created a moment ago; the
handler runs at most one pass per pool at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from ..kubeapi import CMLWORKERS, KubeApi, KubeApiError
from ..reconcile import reasons
from ..reconcile.conditions import Health, build_conditions
from ..reconcile.pool import (
    DEFAULT_SCALE_DOWN_ORDER,
    POOL_LABEL,
    Child,
    PoolPlan,
    Template,
    child_manifest,
    owned_by,
    plan_pool,
)
from ..reconcile.actions import Note
from ..reconcile.schedule import ScheduleError
from .pool_schedule import budget, budget_condition, budget_newly_reached, calendar

logger = logging.getLogger(__name__)
#: Names listed in one event at most; the rest are counted.
_NAMES_IN_EVENT = 10


@dataclass(frozen=True)
class PoolResult:
    status: dict[str, Any]  # replicas, readyReplicas, ..., conditions, observedGeneration
    health: Health
    notes: tuple[Note, ...] = ()
    error: KubeApiError | None = None  # set when the API server refused something


async def pool_pass(kube: KubeApi, pool: Mapping[str, Any], prices: Mapping[str, float] | None = None,
                    now: datetime | None = None) -> PoolResult:
    """Bring the pool's children one pass closer to its spec (its calendar and budget included)."""
    now = now or datetime.now(timezone.utc)
    meta = pool["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = int(meta.get("generation") or 1)
    spec = pool.get("spec") or {}
    template = Template.from_pool_spec(spec)
    order = tuple((spec.get("scaleDown") or {}).get("order") or DEFAULT_SCALE_DOWN_ORDER)
    try:
        bodies = await kube.list(CMLWORKERS, namespace, label_selector=f"{POOL_LABEL}={name}")
    except KubeApiError as error:  # nothing known about the children: only the conditions change
        health = _failed(error)
        conditions = build_conditions((pool.get("status") or {}).get("conditions"), health, generation)
        return PoolResult({"conditions": conditions}, health, (Note("Warning", health.reason, health.message),),
                          error)
    owned = [body for body in bodies if owned_by(body, uid)]
    children = [Child.from_body(body) for body in owned]
    rolling = (spec.get("updateStrategy") or {}).get("type") == "RollingUpdate"
    previous_status = pool.get("status") or {}
    try:
        wanted = calendar(spec, previous_status, now)
    except ScheduleError as error:
        health = Health.stalled(reasons.INVALID_PARAMETER, f"Invalid {error}")
        conditions = build_conditions(previous_status.get("conditions"), health, generation)
        return PoolResult({"conditions": conditions, "observedGeneration": generation}, health)
    spent = budget(spec, previous_status, owned, prices or {}, now)
    # Over budget no worker is added, and a rolling update (delete one, add one) waits.
    plan = plan_pool(name, wanted.replicas, template, children, order, rolling_update=rolling and not spent.reached)
    if spent.reached and plan.create:
        health = Health.stalled(reasons.BUDGET_REACHED, f"{plan.status.replicas - plan.create} of "
                                f"{wanted.replicas} workers: {spent.message}")
        plan = replace(plan, create=0, status=replace(plan.status, replicas=plan.status.replicas - plan.create,
                                                      updated_replicas=plan.status.updated_replicas - plan.create,
                                                      health=health))

    notes: list[Note] = list(wanted.notes)
    error: KubeApiError | None = None
    try:
        await _roll(kube, namespace, plan, notes)
        await _remove(kube, namespace, plan, notes)
        await _create(kube, pool, template, plan, notes)
    except KubeApiError as failure:
        error = failure
    health = plan.status.health
    if error is not None:
        health = _failed(error)
        notes.append(Note("Warning", health.reason, health.message))
    status: dict[str, Any] = {**plan.status.as_dict(), "observedGeneration": generation}
    status["conditions"] = build_conditions(previous_status.get("conditions"), health, generation)
    if wanted.status is not None:
        status["schedule"] = wanted.status
    status["usage"] = spent.usage.to_dict()
    limit = budget_condition(previous_status.get("conditions"), spent, generation, now)
    if limit is not None:
        status["conditions"].append(limit)
        if budget_newly_reached(previous_status.get("conditions"), limit):
            notes.append(Note("Warning", reasons.BUDGET_REACHED, limit["message"]))
    return PoolResult(status, health, tuple(notes), error)


async def _roll(kube: KubeApi, namespace: str, plan: PoolPlan, notes: list[Note]) -> None:
    rolled = []
    for child, patch in plan.patches:
        try:
            await kube.patch(CMLWORKERS, namespace, child.name, patch)
        except KubeApiError as error:
            if error.status != 404:  # deleted meanwhile: the next pass sees it gone
                raise
        rolled.append(child.name)
    if rolled:
        notes.append(Note("Normal", reasons.EVENT_POOL_ROLLED, f"Applied the template to {_names(rolled)}"))


async def _remove(kube: KubeApi, namespace: str, plan: PoolPlan, notes: list[Note]) -> None:
    removed = []
    for child in plan.delete:
        if await kube.delete(CMLWORKERS, namespace, child.name, uid=child.uid):
            removed.append(child.name)
    if removed:
        notes.append(Note("Normal", reasons.EVENT_POOL_SCALED_DOWN, f"Deleted {_names(removed)}"))


async def _create(kube: KubeApi, pool: Mapping[str, Any], template: Template, plan: PoolPlan,
                  notes: list[Note]) -> None:
    created = []
    try:
        for _ in range(plan.create):
            body = await kube.create(CMLWORKERS, pool["metadata"]["namespace"], child_manifest(pool, template))
            created.append(body["metadata"]["name"])
    finally:  # report what was made even when a later create failed
        if created:
            notes.append(Note("Normal", reasons.EVENT_POOL_SCALED_UP, f"Created {_names(created)}"))


def _failed(error: KubeApiError) -> Health:
    message = f"The API server refused a request about the pool's workers: {error}"
    if error.permanent:
        return Health.stalled(reasons.POOL_CREATE_FAILED, message)
    return Health.reconciling(reasons.POOL_CREATE_FAILED, message)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_IN_EVENT])
    more = len(names) - _NAMES_IN_EVENT
    return f"{len(names)} worker(s): {shown}" + (f" and {more} more" if more > 0 else "")


async def delete_children(kube: KubeApi, pool: Mapping[str, Any]) -> list[str]:
    """Delete every child of a pool being deleted (unless the pool is deleted with --cascade=orphan)."""
    meta = pool["metadata"]
    if "orphan" in (meta.get("finalizers") or ()):
        return []  # the user asked to keep the children; the garbage collector un-owns them
    bodies = await kube.list(CMLWORKERS, meta["namespace"], label_selector=f"{POOL_LABEL}={meta['name']}")
    deleted = []
    for body in bodies:
        child = body["metadata"]
        if owned_by(body, meta["uid"]) and not child.get("deletionTimestamp"):
            if await kube.delete(CMLWORKERS, meta["namespace"], child["name"], uid=child["uid"]):
                deleted.append(child["name"])
    return deleted
