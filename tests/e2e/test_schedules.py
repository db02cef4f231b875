"""Power schedules, running hours and the pool budget against the real API server, moto_server and the operator.

Windows are minute-granular and the operator reads the real clock (no test clock), so
each calendar test waits for one window edge, 25 to 85 s ahead: the worker or pool is put
in place first, under a window far from now, then the window is moved so that its pre-warm
or its end comes at the next whole minute. One edge per test, so the test workers wait in
parallel.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.processes import wait_for

from .conftest import REGION, Kube, instances_of, state_of, worker_manifest
from .test_cml import CML_ARGS, LICENCE_TOKEN, cml_worker, secret, sim, unique  # noqa: F401 - sim is a fixture
from .test_observability import series
from .test_pools import children, pool, pool_manifest

pytestmark = pytest.mark.e2e

ZONE = "Asia/Kolkata"  # UTC+05:30: a half-hour offset, so a wrong conversion cannot land on the right minute
OFFSET = timedelta(hours=5, minutes=30)
#: How far ahead a window edge is at least: the worker or pool is already in place, so only the
#: operator's reading of the changed spec has to fit in it.
LEAD_S = 25


def next_minute(after_seconds: float) -> datetime:
    """The first whole UTC minute at least ``after_seconds`` from now."""
    soon = datetime.now(timezone.utc) + timedelta(seconds=after_seconds)
    return soon.replace(second=0, microsecond=0) + timedelta(minutes=1)


def local(instant: datetime) -> str:
    return (instant + OFFSET).strftime("%H:%M")


def day(instant: datetime) -> str:
    return ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[(instant + OFFSET).weekday()]


def iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def uid_of(kube: Kube, name: str) -> str:
    return kube.get(name)["metadata"]["uid"]


def wait_state(aws: Any, instance_id: str, wanted: str, timeout: float) -> float:
    """Wait until moto shows ``wanted``; returns the wall time it was first seen."""
    wait_for(lambda: state_of(aws, instance_id) == wanted, timeout, interval=0.5,
             what=f"instance {instance_id} {wanted}")
    return time.time()


@pytest.mark.slow
def far_window(replicas: int | None = None) -> dict:
    """A window that is not now: tomorrow at this time, for an hour."""
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    window = {"days": day(tomorrow), "from": local(tomorrow), "to": local(tomorrow + timedelta(hours=1))}
    if window["to"] <= window["from"]:
        window["to"] = "24:00"
    return window | ({"replicas": replicas} if replicas is not None else {})


def edge_window(opens: datetime, closes: datetime, **extra: Any) -> dict:
    """A window from ``opens`` to ``closes`` (local), named by the day it opens (a window may end the next day)."""
    return {"days": day(opens), "from": local(opens), "to": local(closes), **extra}


def first_change(observe: Callable[[], Any], initial: Any, timeout: float) -> tuple[float, Any]:
    """Poll until ``observe()`` is no longer ``initial``: (the time it was first seen changed, the new value).

    One reading per poll, so a stall between two readings cannot make an on-time change look early.
    """
    def changed() -> tuple[float, Any] | None:
        value = observe()
        return (time.time(), value) if value != initial else None

    return wait_for(changed, timeout, interval=0.5, what=f"a change from {initial!r}")


def test_a_worker_stops_outside_its_window_and_starts_prewarm_minutes_before_the_next(kube, network, aws,
                                                                                     operator):
    schedule = {"timeZone": ZONE, "prewarmMinutes": 1, "windows": [far_window()]}
    kube.apply(worker_manifest("sched", network, schedule=schedule))

    # Outside the window: launched, then stopped, and Ready with reason OutsideSchedule.
    kube.wait_condition("sched", "Ready", reason="OutsideSchedule", timeout=60)
    [instance] = instances_of(aws, uid_of(kube, "sched"))
    instance_id = instance["InstanceId"]
    wait_state(aws, instance_id, "stopped", 30)
    assert "ScheduleStop" not in kube.event_reasons("sched")  # stopped from the start: no transition

    # The window moves to a minute ahead: pre-warm at the next whole minute at least LEAD_S away.
    prewarm_at = next_minute(LEAD_S)
    opens, closes = prewarm_at + timedelta(minutes=1), prewarm_at + timedelta(minutes=2)
    kube.patch_spec("sched", {"schedule": schedule | {"windows": [edge_window(opens, closes)]}})
    wait_for(lambda: kube.get("sched")["status"].get("schedule", {}).get("nextStart") == iso(prewarm_at), 30,
             what="the new window in status.schedule")
    ready = kube.condition("sched", "Ready")
    assert ready["reason"] == "OutsideSchedule" and iso(prewarm_at) in ready["message"], ready
    assert kube.get("sched")["status"]["schedule"] == {"inWindow": False, "nextStart": iso(prewarm_at),
                                                       "nextStop": iso(closes)}
    assert time.time() < prewarm_at.timestamp() - 1, "the machine was too slow to see the new window in time"

    # prewarmMinutes before the window: started, and never earlier.
    started, state = first_change(lambda: state_of(aws, instance_id), "stopped", LEAD_S + 120)
    assert state in ("pending", "running") and started >= prewarm_at.timestamp() - 1, (state, started)
    started = wait_state(aws, instance_id, "running", 60)
    assert started < opens.timestamp()
    kube.wait_condition("sched", "Ready", reason="InstanceReady", timeout=60)
    status = kube.get("sched")["status"]["schedule"]
    assert status["inWindow"] is True and status["nextStop"] == iso(closes)
    kube.wait_event("sched", "ScheduleStart", type_=None)  # Kopf posts events after the status patch


def test_a_worker_stops_at_its_window_s_end_and_counts_its_running_hours(kube, network, aws, operator):
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    schedule = {"timeZone": ZONE, "prewarmMinutes": 0,
                "windows": [edge_window(now - timedelta(minutes=5), now + timedelta(hours=2))]}
    kube.apply(worker_manifest("sched-end", network, schedule=schedule))
    kube.wait_condition("sched-end", "Ready", reason="InstanceReady", timeout=60)
    [instance] = instances_of(aws, uid_of(kube, "sched-end"))
    instance_id = instance["InstanceId"]
    started = time.time()  # Ready: running since at most now (the usage check below allows for the launch)

    # The window's end moves to the next whole minute at least LEAD_S away.
    closes = next_minute(LEAD_S)
    opened = closes - timedelta(minutes=10)
    kube.patch_spec("sched-end", {"schedule": schedule | {"windows": [edge_window(opened, closes)]}})
    wait_for(lambda: kube.get("sched-end")["status"].get("schedule", {}).get("nextStop") == iso(closes), 30,
             what="the new window end in status.schedule")
    assert kube.get("sched-end")["status"]["schedule"]["inWindow"] is True
    assert time.time() < closes.timestamp() - 1, "the machine was too slow to see the new window in time"

    # The window's end: stopped, and never earlier; Ready OutsideSchedule.
    changed, state = first_change(lambda: state_of(aws, instance_id), "running", LEAD_S + 120)
    assert state in ("stopping", "stopped") and changed >= closes.timestamp() - 1, (state, changed)
    stopped = wait_state(aws, instance_id, "stopped", 60)
    kube.wait_condition("sched-end", "Ready", reason="OutsideSchedule", timeout=60)
    kube.wait_event("sched-end", "ScheduleStop", type_=None)

    # Running hours: launch to stop; metric and status agree.
    usage = kube.get("sched-end")["status"]["usage"]
    run = stopped - started
    assert "runningSince" not in usage and usage["month"] == datetime.now(timezone.utc).strftime("%Y-%m")
    assert run - 5 <= usage["runningSeconds"] <= run + 60, (usage, run)
    assert usage["runningHoursThisMonth"] == round(usage["runningSeconds"] / 3600, 2)
    counted = series(operator.metrics(), "cml_instance_running_seconds_total", namespace=kube.namespace, pool="",
                     instance_type="m5.large", region=REGION)
    assert counted and abs(counted[0] - usage["runningSeconds"]) <= 2, (counted, usage)


def test_a_wake_starts_a_worker_outside_its_windows_until_the_next_window_ends(kube, network, aws, operator):
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    # A window tomorrow at this time (never "now"): the worker is outside it for the whole test.
    window = {"days": day(tomorrow), "from": local(tomorrow - timedelta(minutes=5)),
              "to": local(tomorrow + timedelta(minutes=55))}
    if window["to"] <= window["from"]:
        window["to"] = "24:00"
    kube.apply(worker_manifest("woken", network, schedule={"timeZone": ZONE, "prewarmMinutes": 0,
                                                           "windows": [window]}))
    kube.wait_condition("woken", "Ready", reason="OutsideSchedule", timeout=60)
    [instance] = instances_of(aws, uid_of(kube, "woken"))
    wait_state(aws, instance["InstanceId"], "stopped", 30)
    next_stop = kube.get("woken")["status"]["schedule"]["nextStop"]

    kube.run("annotate", "--overwrite", "cmlworker", "woken", "cml.dev/wake=now")
    kube.wait_condition("woken", "Ready", reason="InstanceReady", timeout=60)
    assert state_of(aws, instance["InstanceId"]) == "running"
    schedule = kube.get("woken")["status"]["schedule"]
    assert schedule["wake"] == "now" and schedule["wokenUntil"] == next_stop == schedule["nextStop"]
    kube.wait_event("woken", "Woken", type_=None)

    # desiredState: Stopped always wins over a wake.
    kube.patch_spec("woken", {"desiredState": "Stopped"})
    kube.wait_condition("woken", "Ready", reason="InstanceStopped", timeout=60)
    wait_state(aws, instance["InstanceId"], "stopped", 30)


def test_leaving_the_windows_releases_the_licence_before_the_stop(kube, network, aws, sim, operator_factory):
    prefix = unique("sched-lic", kube)
    operator_factory(*CML_ARGS)
    secret(kube, "sched-lic-token", token=LICENCE_TOKEN)
    always = {"timeZone": ZONE, "prewarmMinutes": 0, "windows": [{"days": "Mon-Sun", "from": "00:00", "to": "24:00"}]}
    manifest = cml_worker(kube, "sched-lic", network, sim, prefix,
                          license={"tokenSecretRef": {"name": "sched-lic-token", "key": "token"}})
    manifest["spec"]["schedule"] = always
    kube.apply(manifest)
    kube.wait_condition("sched-lic", "Ready", reason="CMLReady", timeout=90)
    assert kube.get("sched-lic")["status"]["schedule"]["inWindow"] is True

    # The window moves to tomorrow: outside now, so the licence goes first, then the instance stops.
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    kube.patch_spec("sched-lic", {"schedule": {"windows": [
        {"days": day(tomorrow), "from": "00:00", "to": "00:30"}]}})
    kube.wait_condition("sched-lic", "Ready", reason="OutsideSchedule", timeout=60)
    assert sim.worker(prefix)["calls"]["DELETE licensing/deregistration"] == 1
    assert sim.worker(prefix)["license"]["registration"] == "NOT_REGISTERED"
    # Kopf posts a pass's events from its own queue, so they may land after the condition: wait for them.
    kube.wait_event("sched-lic", "LicenseReleased", type_=None)
    kube.wait_event("sched-lic", "ScheduleStop", type_=None)
    [instance] = instances_of(aws, uid_of(kube, "sched-lic"))
    wait_state(aws, instance["InstanceId"], "stopped", 30)


@pytest.mark.slow
def test_a_pool_scales_up_prewarm_minutes_before_its_window(kube, network, operator):
    manifest = pool_manifest("cal", network, 0)
    manifest["spec"]["schedule"] = {"timeZone": ZONE, "prewarmMinutes": 1, "windows": [far_window(replicas=2)]}
    kube.apply(manifest)
    wait_for(lambda: (pool_schedule(kube, "cal") or {}).get("source") == "Spec", 30, what="the pool's status.schedule")
    assert children(kube, "cal") == []

    prewarm_at = next_minute(LEAD_S)
    opens, closes = prewarm_at + timedelta(minutes=1), prewarm_at + timedelta(minutes=2)
    manifest["spec"]["schedule"]["windows"] = [edge_window(opens, closes, replicas=2)]
    kube.apply(manifest)
    first = wait_for(lambda: (found := pool_schedule(kube, "cal")) and found.get("nextChange") == iso(prewarm_at)
                     and found, 30, what="the new window in the pool's status.schedule")
    assert first == {"replicas": 0, "source": "Spec", "nextChange": iso(prewarm_at), "nextReplicas": 2,
                     "period": first["period"], "specReplicasAtStart": 0}
    assert children(kube, "cal") == []
    assert time.time() < prewarm_at.timestamp() - 1, "the machine was too slow to see the new window in time"

    grown, _ = first_change(lambda: len(children(kube, "cal")) > 0, False, LEAD_S + 150)
    assert grown >= prewarm_at.timestamp() - 1
    wait_for(lambda: len(children(kube, "cal")) == 2, 30, interval=0.5, what="two workers after the pre-warm time")
    made = children(kube, "cal")
    assert min(datetime.fromisoformat(c["metadata"]["creationTimestamp"].replace("Z", "+00:00")) for c in made) \
        >= prewarm_at - timedelta(seconds=1)
    # The children are created before the pool's status is written: wait for the status of that pass.
    status = wait_for(lambda: (found := pool_schedule(kube, "cal")) and found["source"] == "Window" and found, 30,
                      what="the pool's status.schedule from the window")
    assert (status["replicas"], status["nextChange"], status["nextReplicas"]) == (2, iso(closes), 0)
    kube.wait_event("cal", "ScheduleScaled", type_=None)


def test_a_pool_scales_down_at_its_window_s_end(kube, network, operator):
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    manifest = pool_manifest("cal-end", network, 0)
    manifest["spec"]["schedule"] = {"timeZone": ZONE, "prewarmMinutes": 0, "windows": [
        edge_window(now - timedelta(minutes=5), now + timedelta(hours=2), replicas=2)]}
    kube.apply(manifest)
    wait_for(lambda: len(children(kube, "cal-end")) == 2, 60, interval=0.5, what="two workers in the window")

    closes = next_minute(LEAD_S)
    manifest["spec"]["schedule"]["windows"] = [edge_window(closes - timedelta(minutes=10), closes, replicas=2)]
    kube.apply(manifest)
    status = wait_for(lambda: (found := pool_schedule(kube, "cal-end")) and found.get("nextChange") == iso(closes)
                      and found, 30, what="the new window end in the pool's status.schedule")
    assert (status["replicas"], status["source"], status["nextReplicas"]) == (2, "Window", 0)
    assert time.time() < closes.timestamp() - 1, "the machine was too slow to see the new window in time"

    shrunk, _ = first_change(lambda: len(children(kube, "cal-end")) < 2, False, LEAD_S + 120)
    assert shrunk >= closes.timestamp() - 1
    wait_for(lambda: not children(kube, "cal-end"), 60, interval=0.5, what="the pool empty after the window")
    wait_for(lambda: pool_schedule(kube, "cal-end")["replicas"] == 0, 30, what="the pool's status after the window")


def pool_schedule(kube: Kube, name: str) -> dict | None:
    return (pool(kube, name).get("status") or {}).get("schedule")


@pytest.mark.slow
def test_the_budget_stops_growth_and_never_stops_a_worker(kube, network, aws, operator_factory):
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prices"},
                "data": {"m5.large": "0.5", "m5zn.metal": "3.9641"}})
    operator = operator_factory("--price-table", f"{kube.namespace}/prices")
    manifest = pool_manifest("budget", network, 1)
    manifest["spec"]["limits"] = {"maxRunningHoursPerMonth": 0.005}  # 18 seconds
    kube.apply(manifest)

    def budget_condition() -> dict | None:
        conditions = (pool(kube, "budget").get("status") or {}).get("conditions") or []
        found = {c["type"]: c for c in conditions}.get("BudgetReached")
        return found if found and found["status"] == "True" else None

    reached = wait_for(budget_condition, 90, interval=0.5, what="BudgetReached True")
    assert "spec.limits.maxRunningHoursPerMonth" in reached["message"]
    wait_for(lambda: "BudgetReached" in kube.event_reasons("budget", "Warning"), 15, what="the Warning event")
    [child] = children(kube, "budget")
    [instance] = instances_of(aws, child["metadata"]["uid"])

    kube.run("scale", "cmlworkerpool/budget", "--replicas=3")

    def refused() -> dict | None:
        body = pool(kube, "budget")
        ready = {c["type"]: c for c in body["status"]["conditions"]}.get("Stalled", {})
        settled = body["status"].get("observedGeneration") == body["metadata"]["generation"]
        return body if settled and ready.get("reason") == "BudgetReached" else None

    body = wait_for(refused, 30, interval=0.5, what="the pool stalled on its budget")
    assert [c["metadata"]["name"] for c in children(kube, "budget")] == [child["metadata"]["name"]]
    assert body["status"]["replicas"] == 1
    wait_for(lambda: pool(kube, "budget")["status"]["usage"]["runningHoursThisMonth"] >= 0.01, 60, interval=0.5,
             what="the pool's running hours shown")
    assert state_of(aws, instance["InstanceId"]) == "running"  # the budget stops growth, never a worker
    # The price table: the pool's estimate, its COST column and the cost metric (labelled with the pool).
    usage = pool(kube, "budget")["status"]["usage"]
    assert abs(usage["estimatedCostUSD"] - usage["runningHoursThisMonth"] * 0.5) <= 0.01
    header, row = kube.run("get", "cmlwp", "budget").stdout.splitlines()[:2]
    column = header.split().index("COST")
    assert float(row.split()[column]) >= usage["estimatedCostUSD"]
    labels = dict(namespace=kube.namespace, pool="budget", instance_type="m5.large", region=REGION)
    seconds = series(operator.metrics(), "cml_instance_running_seconds_total", **labels)
    cost = series(operator.metrics(), "cml_estimated_cost_usd_total", **labels)
    assert seconds and seconds[0] >= 18 and cost and cost[0] > 0


def test_bad_schedules_are_refused_at_apply_time_naming_the_field(kube, network):
    cases = [({"timeZone": "Europe Berlin"}, "spec.schedule.timeZone"),
             ({"windows": [{"days": "Monday", "from": "09:00", "to": "17:00"}]}, "spec.schedule.windows[].days"),
             ({"windows": [{"days": "Mon", "from": "9:00", "to": "17:00"}]}, "spec.schedule.windows[].from"),
             ({"windows": [{"days": "Mon", "from": "09:00", "to": "24:30"}]}, "spec.schedule.windows[].to"),
             ({"exceptions": ["2026-13-01"]}, "spec.schedule.exceptions"),
             ({"prewarmMinutes": 721}, "spec.schedule.prewarmMinutes")]
    for schedule, field in cases:
        refused = kube.apply(worker_manifest("bad-sched", network, schedule=schedule), check=False)
        assert refused.returncode != 0 and field in refused.stderr, (schedule, refused.stderr)
    in_pool = pool_manifest("bad-sched", network, 1)
    in_pool["spec"]["schedule"] = {"windows": [{"days": "Mon", "from": "09:00", "to": "17:00"}]}
    refused = kube.apply(in_pool, check=False)
    assert refused.returncode != 0 and "replicas" in refused.stderr
    in_template = pool_manifest("bad-sched", network, 1, schedule={"timeZone": "Europe Berlin"})
    refused = kube.apply(in_template, check=False)
    assert refused.returncode != 0 and "spec.template.spec.schedule.timeZone" in refused.stderr
    assert json.loads(kube.run("get", "cmlw", "-o", "json").stdout)["items"] == []
