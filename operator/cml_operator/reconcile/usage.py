"""Running hours and their estimated cost (``status.usage``), for workers and pools. Pure: ``now`` is an argument.

A worker's month (UTC calendar month) is ``runningSeconds`` (periods that ended) plus
the open period since ``runningSince``: both change only when the instance starts or
stops, so the figure is exact however seldom it is written. ``runningHoursThisMonth``
is for people: exact to 0.01 h when the instance stops, refreshed every 0.1 h while it
runs (so a running fleet costs one status write per worker per 6 minutes, not one per
pass). A pass that sees the instance stopped counts the period up to that pass (at
most one poll interval late).

A pool remembers each child's ``{runningSeconds, runningSince}`` as last seen (they also
change only on starts and stops); a child that goes keeps counting what it had, so
deleting and recreating workers never resets a pool's month (``maxRunningHoursPerMonth``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from .schedule import parse_instant, rfc3339

#: A running worker's displayed hours are refreshed when they are this far behind.
DISPLAY_STEP_HOURS = 0.1
#: A pool is one object (not one per worker): its figure is refreshed every 0.01 h (36 s).
POOL_DISPLAY_STEP_HOURS = 0.01
BUDGET_CONDITION = "BudgetReached"


def month_of(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m")


def month_start(now: datetime) -> datetime:
    utc = now.astimezone(timezone.utc)
    return datetime(utc.year, utc.month, 1, tzinfo=timezone.utc)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


# ---------------------------------------------------------------- a worker


@dataclass(frozen=True)
class Usage:
    """``status.usage`` of a worker."""

    month: str
    running_seconds: int = 0  # periods that ended this month
    running_since: str | None = None  # the open period (None: not running)
    hours: float = 0.0  # runningHoursThisMonth as displayed
    cost: float | None = None  # estimatedCostUSD as displayed (None: no price for the type)

    @classmethod
    def from_dict(cls, raw: Any) -> Usage | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("month"), str):
            return None
        cost = raw.get("estimatedCostUSD")
        return cls(month=raw["month"], running_seconds=int(_number(raw.get("runningSeconds"))),
                   running_since=raw.get("runningSince"), hours=_number(raw.get("runningHoursThisMonth")),
                   cost=_number(cost) if cost is not None else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"month": self.month, "runningSeconds": self.running_seconds,
                               "runningHoursThisMonth": self.hours}
        if self.running_since:
            out["runningSince"] = self.running_since
        if self.cost is not None:
            out["estimatedCostUSD"] = self.cost
        return out

    def seconds_at(self, now: datetime) -> float:
        """Seconds this month up to ``now`` (the open period included, from the month's start at most)."""
        since = parse_instant(self.running_since)
        base = self.running_seconds if self.month == month_of(now) else 0
        if since is None:
            return float(base)
        return base + max(0.0, (now - max(since, month_start(now))).total_seconds())


def account(previous: Usage | None, running: bool, now: datetime, price: float | None) -> Usage:
    """The worker's usage after a pass that saw the instance ``running`` (or not) at ``now``."""
    month = month_of(now)
    usage = previous or Usage(month)
    if usage.month != month:  # a new month: the open period counts from its first second
        since = parse_instant(usage.running_since)
        usage = Usage(month, 0, rfc3339(month_start(now)) if since is not None else None)
    was_running = usage.running_since is not None
    if running and not was_running:
        usage = replace(usage, running_since=rfc3339(now))
    elif not running and was_running:
        usage = replace(usage, running_seconds=int(round(usage.seconds_at(now))), running_since=None)
    hours = usage.seconds_at(now) / 3600.0
    changed = running != was_running or previous is None or previous.month != month
    if changed or not running or hours - usage.hours >= DISPLAY_STEP_HOURS - 1e-9 or usage.hours > hours:
        shown = round(hours, 2) if not running or changed else round(hours, 1)
        usage = replace(usage, hours=shown)
    cost = round(usage.hours * price, 2) if price is not None else None
    return replace(usage, cost=cost)


# ---------------------------------------------------------------- a pool


@dataclass(frozen=True)
class ChildUsage:
    month: str
    running_seconds: int
    running_since: str | None
    instance_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"month": self.month, "runningSeconds": self.running_seconds}
        if self.running_since:
            out["runningSince"] = self.running_since
        if self.instance_type:
            out["instanceType"] = self.instance_type
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> ChildUsage | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("month"), str):
            return None
        return cls(raw["month"], int(_number(raw.get("runningSeconds"))), raw.get("runningSince"),
                   str(raw.get("instanceType") or ""))

    def seconds_at(self, now: datetime) -> float:
        return Usage(self.month, self.running_seconds, self.running_since).seconds_at(now)


@dataclass(frozen=True)
class PoolUsage:
    """``status.usage`` of a pool: the month's hours of every child it ever had (live ones and gone ones)."""

    month: str
    children: Mapping[str, ChildUsage] = field(default_factory=dict)  # by child name, as last seen
    retired_seconds: int = 0  # children that are gone
    retired_cost: float = 0.0
    hours: float = 0.0
    cost: float | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> PoolUsage | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("month"), str):
            return None
        children = {}
        for item in raw.get("children") or ():
            parsed = ChildUsage.from_dict(item)
            if parsed is not None and isinstance(item.get("name"), str):
                children[item["name"]] = parsed
        cost = raw.get("estimatedCostUSD")
        return cls(raw["month"], children, int(_number(raw.get("retiredSeconds"))),
                   _number(raw.get("retiredCostUSD")), _number(raw.get("runningHoursThisMonth")),
                   _number(cost) if cost is not None else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"month": self.month, "runningHoursThisMonth": self.hours,
                               "children": [{"name": name, **child.to_dict()} for name, child in sorted(self.children.items())]}
        if self.retired_seconds:
            out["retiredSeconds"] = self.retired_seconds
        if self.retired_cost:
            out["retiredCostUSD"] = self.retired_cost
        if self.cost is not None:
            out["estimatedCostUSD"] = self.cost
        return out


def child_usage(body: Mapping[str, Any]) -> ChildUsage | None:
    """What a child's status says about its month (None: not counted yet)."""
    status = body.get("status") or {}
    usage = Usage.from_dict(status.get("usage"))
    if usage is None:
        return None
    instance_type = str(status.get("instanceType") or (body.get("spec") or {}).get("instanceType") or "")
    return ChildUsage(usage.month, usage.running_seconds, usage.running_since, instance_type)


def account_pool(previous: PoolUsage | None, children: Mapping[str, ChildUsage], now: datetime,
                 prices: Mapping[str, float]) -> PoolUsage:
    """The pool's month after a pass that listed ``children`` (name -> usage) at ``now``."""
    month = month_of(now)
    usage = previous if previous is not None and previous.month == month else PoolUsage(month)
    if previous is not None and previous.month != month:
        # Children still running at the turn of the month keep counting from its first second.
        usage = replace(usage, children={name: ChildUsage(month, 0, rfc3339(month_start(now)) if c.running_since
                                                          else None, c.instance_type)
                                         for name, c in previous.children.items()})
    retired_seconds, retired_cost = usage.retired_seconds, usage.retired_cost
    for name, gone in usage.children.items():
        if name not in children:
            seconds = gone.seconds_at(now)
            retired_seconds += int(round(seconds))
            retired_cost += seconds / 3600.0 * prices.get(gone.instance_type, 0.0)
    total = retired_seconds + sum(child.seconds_at(now) for child in children.values())
    priced = retired_cost > 0 or any(child.instance_type in prices for child in children.values())
    cost = retired_cost + sum(child.seconds_at(now) / 3600.0 * prices.get(child.instance_type, 0.0)
                              for child in children.values())
    hours = total / 3600.0
    if 0 <= hours - usage.hours < POOL_DISPLAY_STEP_HOURS - 1e-9 and dict(children) == dict(usage.children):
        shown, shown_cost = usage.hours, usage.cost  # nothing started or stopped: refresh every 0.01 h only
    else:
        shown, shown_cost = round(hours, 2), round(cost, 2) if priced else None
    if priced and shown_cost is None:
        shown_cost = round(cost, 2)
    return PoolUsage(month, dict(children), retired_seconds, round(retired_cost, 4), shown, shown_cost)


def pool_hours_at(usage: PoolUsage, now: datetime) -> float:
    """The exact hours this month (the displayed figure may lag by up to 0.01 h)."""
    return (usage.retired_seconds + sum(child.seconds_at(now) for child in usage.children.values())) / 3600.0


def budget_reached(usage: PoolUsage, limit_hours: float | None, now: datetime) -> bool:
    return limit_hours is not None and pool_hours_at(usage, now) >= limit_hours


def parse_price_table(data: Mapping[str, Any] | None) -> tuple[dict[str, float], list[str]]:
    """A ConfigMap's data: instance type -> USD per hour; returns the prices and the keys that are not numbers."""
    prices: dict[str, float] = {}
    bad: list[str] = []
    for key, value in (data or {}).items():
        try:
            price = float(str(value).strip())
        except ValueError:
            bad.append(str(key))
            continue
        if price < 0 or price != price:  # negative or NaN
            bad.append(str(key))
            continue
        prices[str(key).strip()] = price
    return prices, bad
