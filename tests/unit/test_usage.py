"""Running hours, their cost, a pool's month and its budget: pure accounting in virtual time, and one pool pass."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import yaml

from cml_operator.passes.pool import pool_pass
from cml_operator.reconcile import reasons
from cml_operator.reconcile.usage import (
    ChildUsage,
    PoolUsage,
    Usage,
    account,
    account_pool,
    budget_reached,
    parse_price_table,
)

from .asyncrun import async_test
from .test_pool_pass import POOL, FakeKube, worker

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_stop_start_cycle_counts_exactly_the_running_time():
    usage = account(None, True, at("2026-12-07T08:00"), None)
    assert usage.running_since == "2026-12-07T08:00:00Z" and usage.hours == 0.0
    usage = account(usage, True, at("2026-12-07T09:00"), None)
    usage = account(usage, False, at("2026-12-07T10:30"), None)  # stopped: 2.5 h
    assert (usage.running_seconds, usage.running_since, usage.hours) == (9000, None, 2.5)
    usage = account(usage, False, at("2026-12-07T12:00"), None)
    assert usage.running_seconds == 9000
    usage = account(usage, True, at("2026-12-07T13:00"), None)
    usage = account(usage, False, at("2026-12-07T13:15"), 4.0)
    assert (usage.running_seconds, usage.hours, usage.cost) == (9900, 2.75, 11.0)


def test_while_running_the_displayed_hours_move_in_tenths_so_status_writes_stay_rare():
    usage = account(None, True, at("2026-12-07T08:00"), None)
    seen = set()
    now = at("2026-12-07T08:00")
    for _ in range(60):  # an hour of passes every minute
        now += timedelta(minutes=1)
        usage = account(usage, True, now, None)
        seen.add(usage.to_dict()["runningHoursThisMonth"])
    assert len(seen) <= 11 and usage.hours == 1.0
    assert usage.seconds_at(now) == 3600  # the exact figure never lags


def test_a_new_month_starts_at_zero_and_a_running_instance_counts_from_its_first_second():
    usage = account(None, True, at("2026-11-30T23:00"), None)
    usage = account(usage, True, at("2026-12-01T01:00"), None)
    assert (usage.month, usage.running_seconds, usage.running_since) == ("2026-12", 0, "2026-12-01T00:00:00Z")
    usage = account(usage, False, at("2026-12-01T02:00"), None)
    assert usage.running_seconds == 7200


def test_a_restart_reading_the_status_loses_nothing():
    usage = account(None, True, at("2026-12-07T08:00"), None)
    restored = Usage.from_dict(usage.to_dict())
    assert restored is not None
    later = account(restored, False, at("2026-12-07T09:00"), None)
    assert later.running_seconds == 3600


def test_a_pool_keeps_the_hours_of_children_that_are_gone():
    now = at("2026-12-07T12:00")
    a = ChildUsage("2026-12", 3600, None, "m5zn.metal")
    b = ChildUsage("2026-12", 0, "2026-12-07T11:00:00Z", "m5zn.metal")
    prices = {"m5zn.metal": 4.0}
    usage = account_pool(None, {"a": a, "b": b}, now, prices)
    assert (usage.hours, usage.cost) == (2.0, 8.0)
    gone = account_pool(usage, {"b": b}, now + timedelta(hours=1), prices)  # a was deleted
    assert gone.retired_seconds == 3600 and gone.hours == 3.0 and gone.cost == 12.0
    restored = PoolUsage.from_dict(gone.to_dict())
    assert restored is not None and restored.retired_seconds == 3600 and set(restored.children) == {"b"}
    assert budget_reached(gone, 3.0, now + timedelta(hours=1)) and not budget_reached(gone, 3.5, now)


def test_the_price_table_ignores_what_is_not_a_price():
    prices, bad = parse_price_table({"m5zn.metal": "3.9641", "c5n.metal": " 3.888 ", "x": "cheap", "y": "-1"})
    assert prices == {"m5zn.metal": 3.9641, "c5n.metal": 3.888} and sorted(bad) == ["x", "y"]


def running_worker(name: str, seconds: int, since: str | None) -> dict:
    body = worker(name)
    usage = {"month": "2026-12", "runningSeconds": seconds, "runningHoursThisMonth": 0}
    if since:
        usage["runningSince"] = since
    body["status"].update({"instanceState": "running", "instanceType": "m5.large", "usage": usage})
    return body


@async_test
async def test_a_pool_over_budget_adds_no_worker_and_deletes_none():
    pool = copy.deepcopy(POOL)
    pool["spec"]["replicas"] = 3
    pool["spec"]["limits"] = {"maxRunningHoursPerMonth": 1.0}
    kube = FakeKube([running_worker("lab-aaaaa", 3540, "2026-12-07T11:59:00Z")])
    result = await pool_pass(kube, pool, {"m5.large": 0.1}, now=at("2026-12-07T12:00"))
    assert [call[0] for call in kube.calls] == ["list"]  # no create, no delete
    assert result.health.reason == reasons.BUDGET_REACHED and result.status["replicas"] == 1
    budget = {c["type"]: c for c in result.status["conditions"]}["BudgetReached"]
    assert budget["status"] == "True" and "maxRunningHoursPerMonth" in budget["message"]
    assert [n.reason for n in result.notes] == [reasons.BUDGET_REACHED]
    assert result.status["usage"]["estimatedCostUSD"] == 0.1

    # Next pass: the condition holds, the Warning is not repeated.
    pool["status"] = result.status
    again = await pool_pass(kube, pool, {"m5.large": 0.1}, now=at("2026-12-07T12:01"))
    assert [n.reason for n in again.notes] == []


@async_test
async def test_under_budget_the_pool_grows_and_says_so():
    pool = copy.deepcopy(POOL)
    pool["spec"]["limits"] = {"maxRunningHoursPerMonth": 10.0}
    kube = FakeKube([running_worker("lab-aaaaa", 3000, None)])
    result = await pool_pass(kube, pool, now=at("2026-12-07T12:00"))
    assert ("create", "ns", "lab-") in kube.calls
    budget = {c["type"]: c for c in result.status["conditions"]}["BudgetReached"]
    assert budget["status"] == "False"


@async_test
async def test_a_pool_follows_its_calendar_and_a_bad_time_zone_stalls_it():
    pool = copy.deepcopy(POOL)
    pool["spec"]["replicas"] = 0
    pool["spec"]["schedule"] = {"timeZone": "Europe/Berlin", "prewarmMinutes": 20,
                                "windows": [{"days": "Mon-Fri", "from": "09:00", "to": "17:00", "replicas": 2}]}
    kube = FakeKube([])
    early = await pool_pass(kube, pool, now=at("2026-12-07T07:39"))  # Monday 08:39 in Berlin
    assert [call[0] for call in kube.calls] == ["list"]
    assert early.status["schedule"]["nextChange"] == "2026-12-07T07:40:00Z"
    warm = await pool_pass(kube, pool, now=at("2026-12-07T07:40"))
    assert [call[0] for call in kube.calls].count("create") == 2
    assert warm.status["schedule"]["replicas"] == 2 and warm.status["schedule"]["source"] == "Window"

    pool["spec"]["schedule"]["timeZone"] = "Mars/Olympus"
    bad = await pool_pass(FakeKube([]), pool, now=at("2026-12-07T07:40"))
    assert bad.health.reason == reasons.INVALID_PARAMETER and "spec.schedule.timeZone" in bad.health.message


def test_the_pool_schedule_schema_is_the_worker_schedule_plus_replicas():
    root = __import__("pathlib").Path(__file__).resolve().parents[2]

    def spec_properties(path: str) -> dict:
        crd = yaml.safe_load((root / "crds" / path).read_text())
        return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]

    worker = spec_properties("cmlworker.yaml")["schedule"]
    pool = copy.deepcopy(spec_properties("cmlworkerpool.yaml")["schedule"])
    items = pool["properties"]["windows"]["items"]
    assert items["properties"].pop("replicas")["maximum"] == 500 and items["required"] == [
        "days", "from", "to", "replicas"]
    for schema in (worker, pool):
        schema.pop("description")
        schema["properties"]["windows"].pop("description")
        schema["properties"]["windows"]["items"].pop("required")
        schema["properties"]["prewarmMinutes"].pop("description")
    assert pool == worker
