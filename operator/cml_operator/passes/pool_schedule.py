"""A pool's calendar and budget inside a pool pass (``spec.schedule``, ``spec.limits``); decisions in reconcile/.

``calendar`` says how many replicas are in force (a window's, an override's or
``spec.replicas``); ``budget`` keeps ``status.usage`` from the children's own counts
and says whether ``spec.limits.maxRunningHoursPerMonth`` forbids new workers. The
budget never stops or deletes a worker: only growth stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..reconcile import reasons
from ..reconcile.actions import Note
from ..reconcile.conditions import now_rfc3339
from ..reconcile.schedule import PoolScheduleStatus, decide_pool, parse_schedule
from ..reconcile.usage import BUDGET_CONDITION, PoolUsage, account_pool, child_usage, pool_hours_at


@dataclass(frozen=True)
class Calendar:
    replicas: int
    status: dict[str, Any] | None  # status.schedule (None: no spec.schedule)
    notes: tuple[Note, ...] = ()


def calendar(spec: Mapping[str, Any], raw_status: Mapping[str, Any] | None, now: datetime) -> Calendar:
    """Replicas in force at ``now``; raises ``ScheduleError`` naming a bad field."""
    spec_replicas = int(spec.get("replicas", 1))
    schedule = parse_schedule(spec.get("schedule"), pool=True)
    if schedule is None:
        return Calendar(spec_replicas, None)
    previous = PoolScheduleStatus.from_dict((raw_status or {}).get("schedule"))
    decided = decide_pool(schedule, previous, spec_replicas, now)
    notes: tuple[Note, ...] = ()
    if previous is not None and (previous.replicas, previous.source) != (decided.replicas, decided.source):
        until = f" until {decided.next_change}" if decided.next_change else ""
        why = {"Window": "a spec.schedule window", "Spec": "spec.replicas outside every window",
               "Override": "kubectl scale during a window (an override until the next change)"}[decided.source]
        notes = (Note("Normal", reasons.EVENT_SCHEDULE_SCALED,
                      f"{decided.replicas} replicas from {why}{until}"),)
    return Calendar(decided.replicas, decided.to_dict(), notes)


@dataclass(frozen=True)
class Budget:
    usage: PoolUsage
    limit: float | None
    reached: bool
    hours: float = 0.0  # exact, now (the displayed figure may lag)

    @property
    def message(self) -> str:
        return (f"{self.hours:.3f} of {self.limit:g} running hours this month "
                "(spec.limits.maxRunningHoursPerMonth): no new workers until next month or a higher limit")


def budget(spec: Mapping[str, Any], raw_status: Mapping[str, Any] | None, bodies: Iterable[Mapping[str, Any]],
           prices: Mapping[str, float], now: datetime) -> Budget:
    """The pool's month from its children (``bodies``: every child it owns, going ones included)."""
    children = {}
    for body in bodies:
        usage = child_usage(body)
        if usage is not None:
            children[str((body.get("metadata") or {}).get("name"))] = usage
    usage = account_pool(PoolUsage.from_dict((raw_status or {}).get("usage")), children, now, prices)
    raw_limit = (spec.get("limits") or {}).get("maxRunningHoursPerMonth")
    limit = float(raw_limit) if isinstance(raw_limit, int | float) and not isinstance(raw_limit, bool) else None
    hours = pool_hours_at(usage, now)
    return Budget(usage, limit, limit is not None and hours >= limit, hours)


def budget_condition(previous: Iterable[Mapping[str, Any]] | None, result: Budget, generation: int,
                     now: datetime) -> dict[str, Any] | None:
    """The ``BudgetReached`` condition (None without a limit); its time moves only when it flips."""
    if result.limit is None:
        return None
    old = next((c for c in previous or () if isinstance(c, Mapping) and c.get("type") == BUDGET_CONDITION), {})
    status = "True" if result.reached else "False"
    message = result.message if result.reached else (
        f"{result.hours:.1f} of {result.limit:g} running hours used this month")
    changed = old.get("status") != status or not old.get("lastTransitionTime")
    return {"type": BUDGET_CONDITION, "status": status,
            "reason": reasons.BUDGET_REACHED if result.reached else "WithinBudget", "message": message,
            "lastTransitionTime": now_rfc3339(now) if changed else old["lastTransitionTime"],
            "observedGeneration": generation}


def budget_newly_reached(previous: Iterable[Mapping[str, Any]] | None, condition: Mapping[str, Any] | None) -> bool:
    if condition is None or condition.get("status") != "True":
        return False
    old = next((c for c in previous or () if isinstance(c, Mapping) and c.get("type") == BUDGET_CONDITION), {})
    return old.get("status") != "True"
