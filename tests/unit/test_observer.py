"""RegionObserver and Observers against a fake EC2Api that records every call.

The fake stands in for ``EC2Gateway``, so it receives exactly what the observer
passes: whole id lists. Splitting them into EC2's page sizes (500 ids per
DescribeInstances, 100 per DescribeInstanceStatus, 200 tag values per filter)
is ``EC2Client``'s job, tested in test_ec2_client.py. What is asserted here is
how many calls the observer makes and with which ids.

Every test runs on virtual time (``virtual_time_test``): the loop's sleeps pass
without real waiting. Where the background loop is involved, the observer's clock
is either a hand-driven fake (it decides "hot" and "time for a resync") or the
event loop's own virtual clock, so the schedule of passes is asserted exactly.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
import math

import pytest

from cml_operator.ec2.exceptions import EC2QuotaExceededException
from cml_operator.ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from cml_operator.fleet.batcher import BatchSettings
from cml_operator.fleet.observer import Observers, ObserverSettings, RegionObserver
from cml_operator.reconcile.worker import MANAGED_BY, TAG_MANAGED_BY, TAG_UID, Observation

from .asyncrun import virtual_time_test

# A hang guard, not a bound: these tests run on virtual time, but a loaded machine can take seconds for one.
pytestmark = pytest.mark.timeout(60)

REGION = "us-east-1"




async def eventually(condition, timeout: float = 1.0) -> None:
    """Wait (polling every 5 ms) until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.005)


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def instance(instance_id: str, state: str = "running", *, region: str = REGION,
             uid: str | None = None) -> CMLWorkerInstanceDto:
    tags = {"Name": instance_id} | ({TAG_UID: uid} if uid else {})
    return CMLWorkerInstanceDto(
        aws_instance_id=instance_id, aws_region=region, instance_name=instance_id, ami_id="ami-1",
        ami_name=None, instance_type="m5zn.metal", security_group_ids=["sg-1"], subnet_id="subnet-1",
        instance_state=state, public_ip=None, private_ip="10.0.0.1", key_pair_name=None, tags=tags,
    )


class FakeEC2:
    """The three reads the observer makes, answered from ``instances``; every call is recorded.

    ``instances`` may change between calls (the test plays EC2). Each call answers
    from the table as it was when the call began; ``gate`` (if set) holds answers back.
    """

    def __init__(self, *instances: CMLWorkerInstanceDto) -> None:
        self.instances: dict[str, CMLWorkerInstanceDto] = {i.aws_instance_id: i for i in instances}
        self.calls: list[tuple[str, str, tuple]] = []  # (method, region, args)
        self.gate: asyncio.Event | None = None
        self.failures: list[BaseException] = []  # raised by the next describe_instances calls, in order
        self.timeline: list[tuple[float, str, list]] = []  # (loop time, method, ids or tag values)

    def _record(self, method: str, region: str, args: tuple) -> None:
        self.calls.append((method, region, args))
        self.timeline.append((round(asyncio.get_running_loop().time(), 6), method, list(args[-1])))

    def ids(self, method: str) -> list[list[str]]:
        """The id (or tag value) lists passed to ``method``, one per call."""
        return [list(args[-1]) for name, _, args in self.calls if name == method]

    async def _answer(self):
        if self.gate is not None:
            await self.gate.wait()

    async def describe_instances(self, region, ids):
        self._record("describe_instances", region, (list(ids),))
        snapshot = dict(self.instances)
        if self.failures:
            raise self.failures.pop(0)
        await self._answer()
        return {i: snapshot[i] for i in ids if i in snapshot}

    async def status_checks(self, region, ids):
        self._record("status_checks", region, (list(ids),))
        snapshot = dict(self.instances)
        await self._answer()
        return {i: InstanceStatusChecks(i, system="ok", instance="ok") for i in ids
                if i in snapshot and snapshot[i].instance_state == "running"}

    async def find_by_tag_values(self, region, key, values):
        self._record("find_by_tag_values", region, (key, list(values)))
        snapshot = dict(self.instances)
        await self._answer()
        found: dict[str, list[CMLWorkerInstanceDto]] = {}
        for dto in snapshot.values():
            if dto.tags.get(key) in values:
                found.setdefault(dto.tags[key], []).append(dto)
        return found


def observer(ec2: FakeEC2, clock: FakeClock | None = None, **settings) -> RegionObserver:
    settings.setdefault("batch", BatchSettings(idle=0.01, max_wait=0.1, max_items=500))
    return RegionObserver(REGION, ec2, ObserverSettings(**settings), clock=clock or FakeClock())


# ---------------------------------------------------------------- observe()


@virtual_time_test
async def test_a_cached_observation_within_max_age_makes_no_call():
    ec2 = FakeEC2(instance("i-1"))
    clock = FakeClock()
    obs = observer(ec2, clock)

    first = await obs.observe("i-1", max_age=0)
    clock.advance(5)
    again = await obs.observe("i-1", max_age=10)

    assert again == first
    assert ec2.ids("describe_instances") == [["i-1"]]
    assert ec2.ids("status_checks") == [["i-1"]]


@virtual_time_test
async def test_an_observation_older_than_max_age_is_read_again():
    ec2 = FakeEC2(instance("i-1"))
    clock = FakeClock()
    obs = observer(ec2, clock)

    await obs.observe("i-1", max_age=0)
    clock.advance(11)
    ec2.instances["i-1"] = instance("i-1", "stopping")
    seen = await obs.observe("i-1", max_age=10)

    assert seen.instance.instance_state == "stopping"
    assert ec2.ids("describe_instances") == [["i-1"], ["i-1"]]


@virtual_time_test
async def test_max_age_zero_always_reads():
    ec2 = FakeEC2(instance("i-1", "stopped"))
    obs = observer(ec2)

    for _ in range(3):
        await obs.observe("i-1", max_age=0)

    assert ec2.ids("describe_instances") == [["i-1"]] * 3
    assert ec2.ids("status_checks") == []  # stopped: no status checks


@virtual_time_test
async def test_concurrent_observations_in_the_same_tick_share_one_describe_call():
    ids = [f"i-{n:04d}" for n in range(300)]
    running = ids[::2]
    ec2 = FakeEC2(*(instance(i, "running" if i in running else "stopped") for i in ids))
    obs = observer(ec2)

    seen = await asyncio.gather(*(obs.observe(i, max_age=0) for i in ids))

    assert ec2.ids("describe_instances") == [ids]  # one call, arrival order
    assert ec2.ids("status_checks") == [running]  # one call, only the running ones
    for i, observation in zip(ids, seen):
        assert observation.instance_id == i
        assert observation.instance == ec2.instances[i]
        if i in running:
            assert observation.checks == InstanceStatusChecks(i, system="ok", instance="ok")
        else:
            assert observation.checks is None


@virtual_time_test
async def test_describe_batches_never_carry_more_than_500_ids():
    ids = [f"i-{n:04d}" for n in range(1200)]
    ec2 = FakeEC2(*(instance(i) for i in ids))
    obs = observer(ec2)

    await asyncio.gather(*(obs.observe(i, max_age=0) for i in ids))

    describe = ec2.ids("describe_instances")
    assert [len(call) for call in describe] == [500, 500, 200]
    assert len(describe) == math.ceil(1200 / 500)
    assert [i for call in describe for i in call] == ids
    assert [len(call) for call in ec2.ids("status_checks")] == [500, 500, 200]


@virtual_time_test
async def test_an_unknown_id_is_observed_as_no_instance():
    ec2 = FakeEC2(instance("i-known"))
    obs = observer(ec2)

    unknown, known = await asyncio.gather(obs.observe("i-gone", max_age=0), obs.observe("i-known", max_age=0))

    assert unknown == Observation("i-gone", None, None)
    assert known.instance == ec2.instances["i-known"]
    assert ec2.ids("describe_instances") == [["i-gone", "i-known"]]
    assert ec2.ids("status_checks") == [["i-known"]]
    assert obs.cached("i-gone") == Observation("i-gone", None, None)


@virtual_time_test
async def test_a_failed_read_reaches_the_worker_that_asked():
    ec2 = FakeEC2(instance("i-1"))
    ec2.failures.append(EC2QuotaExceededException("Rate exceeded", code="RequestLimitExceeded"))
    obs = observer(ec2)

    with pytest.raises(EC2QuotaExceededException):
        await obs.observe("i-1", max_age=0)
    assert obs.cached("i-1") is None
    assert (await obs.observe("i-1", max_age=0)).instance is not None


@virtual_time_test
async def test_a_newer_read_is_not_overwritten_by_an_older_pass():
    ec2 = FakeEC2(instance("i-1", "running"))
    clock = FakeClock()
    obs = observer(ec2, clock)

    gate = ec2.gate = asyncio.Event()
    old_pass = asyncio.create_task(obs.refresh(["i-1"]))  # its call sees "running", then is held back
    await asyncio.sleep(0)
    assert ec2.ids("describe_instances") == [["i-1"]]
    ec2.gate = None
    ec2.instances["i-1"] = instance("i-1", "stopped")
    clock.advance(1)
    assert (await obs.observe("i-1", max_age=0)).state == "stopped"

    gate.set()  # the old pass lands now, with an answer older than the cached one
    await old_pass

    assert obs.cached("i-1").state == "stopped"


# ---------------------------------------------------------------- refresh()


@virtual_time_test
async def test_refresh_describes_every_id_in_one_call_and_checks_only_running_ones():
    ids = [f"i-{n:04d}" for n in range(1000)]
    running = [i for n, i in enumerate(ids) if n % 3 == 0]
    known = ids[:-10]  # EC2 does not know the last ten any more
    ec2 = FakeEC2(*(instance(i, "running" if i in running else "stopped") for i in known))
    obs = observer(ec2)

    await obs.refresh(ids)

    # One call with all 1000 ids: EC2Client.describe_instances splits it into ceil(1000/500) = 2
    # requests (and status checks into 100-id pages); the observer does not.
    assert ec2.ids("describe_instances") == [ids]
    assert ec2.ids("status_checks") == [[i for i in running if i in known]]
    assert obs.cached(ids[0]).checks is not None
    assert obs.cached(ids[1]).instance.instance_state == "stopped"
    assert obs.cached(ids[1]).checks is None
    assert obs.cached(ids[-1]) == Observation(ids[-1], None, None)
    assert all(obs.cached(i) is not None for i in ids)


@virtual_time_test
async def test_refresh_fills_the_cache_observe_reads_from():
    ec2 = FakeEC2(instance("i-1"), instance("i-2", "stopped"))
    obs = observer(ec2)

    await obs.refresh(["i-1", "i-2"])
    ec2.calls.clear()
    seen = await asyncio.gather(obs.observe("i-1", max_age=30), obs.observe("i-2", max_age=30))

    assert [o.state for o in seen] == ["running", "stopped"]
    assert ec2.calls == []


@virtual_time_test
async def test_refresh_makes_no_status_call_when_nothing_runs():
    ec2 = FakeEC2(instance("i-1", "stopped"), instance("i-2", "pending"))
    obs = observer(ec2)

    await obs.refresh(["i-1", "i-2"])

    assert ec2.ids("describe_instances") == [["i-1", "i-2"]]
    assert ec2.ids("status_checks") == []


@virtual_time_test
async def test_refresh_of_nothing_makes_no_call():
    ec2 = FakeEC2()
    await observer(ec2).refresh([])
    assert ec2.calls == []


# ---------------------------------------------------------------- find_by_uid()


@virtual_time_test
async def test_find_by_uid_asks_one_tag_query_for_all_uids_and_drops_gone_instances():
    ec2 = FakeEC2(
        instance("i-a1", "running", uid="uid-a"),
        instance("i-a2", "terminated", uid="uid-a"),
        instance("i-a3", "shutting-down", uid="uid-a"),
        instance("i-b1", "stopped", uid="uid-b"),
        instance("i-c1", "terminated", uid="uid-c"),
    )
    obs = observer(ec2)

    a, b, c, d = await asyncio.gather(*(obs.find_by_uid(u) for u in ("uid-a", "uid-b", "uid-c", "uid-d")))

    assert [dto.aws_instance_id for dto in a] == ["i-a1"]
    assert [dto.aws_instance_id for dto in b] == ["i-b1"]
    assert c == [] and d == []
    assert ec2.calls == [
        ("find_by_tag_values", REGION, (TAG_UID, ["uid-a", "uid-b", "uid-c", "uid-d"]))]


@virtual_time_test
async def test_uid_batches_carry_at_most_200_values():
    ec2 = FakeEC2()
    obs = observer(ec2)

    await asyncio.gather(*(obs.find_by_uid(f"uid-{n}") for n in range(450)))

    assert [len(call) for call in ec2.ids("find_by_tag_values")] == [200, 200, 50]


# ---------------------------------------------------------------- batching=False


@virtual_time_test
async def test_without_batching_every_read_is_its_own_call():
    ec2 = FakeEC2(instance("i-1"), instance("i-2"), instance("i-3", "stopped"),
                  instance("i-4", uid="uid-4"))
    obs = observer(ec2, batching=False)

    await asyncio.gather(*(obs.observe(i, max_age=0) for i in ("i-1", "i-2", "i-3")))
    assert sorted(ec2.ids("describe_instances")) == [["i-1"], ["i-2"], ["i-3"]]
    assert sorted(ec2.ids("status_checks")) == [["i-1"], ["i-2"]]

    ec2.calls.clear()
    await asyncio.gather(obs.find_by_uid("uid-4"), obs.find_by_uid("uid-5"))
    assert sorted(ec2.ids("find_by_tag_values")) == [["uid-4"], ["uid-5"]]

    ec2.calls.clear()
    await obs.refresh(["i-1", "i-3"])
    assert sorted(ec2.ids("describe_instances")) == [["i-1"], ["i-3"]]
    assert ec2.ids("status_checks") == [["i-1"]]


# ---------------------------------------------------------------- the background loop


async def primed(ec2: FakeEC2, clock: FakeClock, *, hot: list[str], cold: list[str], **settings) -> RegionObserver:
    """An observer that knows ``hot`` and ``cold`` ids from the cache (no call left on record)."""
    settings.setdefault("fast_interval", 0.02)
    settings.setdefault("resync_interval", 60.0)
    obs = observer(ec2, clock, **settings)
    await obs.refresh(hot + cold)
    for i in hot:
        await obs.observe(i, max_age=60, hot=True)
    for i in cold:
        await obs.observe(i, max_age=60)
    ec2.calls.clear()
    return obs


@virtual_time_test
async def test_the_fast_tick_refreshes_only_hot_ids():
    ec2 = FakeEC2(instance("i-hot", "pending"), instance("i-cold"))
    clock = FakeClock()  # frozen: never time for a resync, and i-hot stays hot
    obs = await primed(ec2, clock, hot=["i-hot"], cold=["i-cold"])

    obs.start()
    await eventually(lambda: len(ec2.ids("describe_instances")) >= 3)  # three fast ticks
    await obs.stop()

    describe = ec2.ids("describe_instances")
    assert all(call == ["i-hot"] for call in describe)
    assert ec2.ids("status_checks") == []  # i-hot is pending


@virtual_time_test
async def test_a_fast_pass_updates_the_cache():
    ec2 = FakeEC2(instance("i-hot", "pending"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=["i-hot"], cold=[])

    ec2.instances["i-hot"] = instance("i-hot", "running")
    clock.advance(0.001)  # the pass is newer than the primed entry
    obs.start()
    await eventually(lambda: obs.cached("i-hot").state == "running")
    await obs.stop()

    assert obs.cached("i-hot").checks == InstanceStatusChecks("i-hot", system="ok", instance="ok")


@virtual_time_test
async def test_hot_ids_cool_down_after_three_fast_intervals():
    ec2 = FakeEC2(instance("i-hot", "pending"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=["i-hot"], cold=[], fast_interval=0.02)

    clock.advance(3 * 0.02 + 0.001)
    obs.start()
    await asyncio.sleep(0.07)
    await obs.stop()

    assert ec2.calls == []


@virtual_time_test
async def test_observing_without_hot_cools_an_id_down():
    ec2 = FakeEC2(instance("i-1", "pending"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=["i-1"], cold=[])

    await obs.observe("i-1", max_age=60)  # hot=False
    obs.start()
    await asyncio.sleep(0.07)
    await obs.stop()

    assert ec2.calls == []


@virtual_time_test
async def test_the_resync_tick_refreshes_every_known_id():
    ec2 = FakeEC2(instance("i-hot", "pending"), instance("i-cold"), instance("i-other", "stopped"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=["i-hot"], cold=["i-cold", "i-other"], resync_interval=10.0)

    obs.start()
    await eventually(lambda: len(ec2.ids("describe_instances")) >= 2)
    assert all(call == ["i-hot"] for call in ec2.ids("describe_instances"))

    ec2.calls.clear()
    clock.advance(10.0)  # time for a resync (i-hot has cooled down by now)
    await eventually(lambda: ec2.ids("describe_instances"))
    await asyncio.sleep(0.05)  # a few more fast ticks: nothing hot, no resync due
    await obs.stop()

    assert ec2.ids("describe_instances") == [["i-hot", "i-cold", "i-other"]]  # once: next resync is 10 s away
    assert ec2.ids("status_checks") == [["i-cold"]]


@virtual_time_test
async def test_on_one_clock_the_loop_runs_fast_passes_between_full_passes():
    # The observer's clock is the (virtual) event loop's: fast passes every 1/8 s, a full pass every 1/2 s.
    loop = asyncio.get_running_loop()
    ec2 = FakeEC2(instance("i-hot", "pending"), instance("i-cold", "stopped"))
    obs = RegionObserver(REGION, ec2, ObserverSettings(fast_interval=0.125, resync_interval=0.5,
                                                        batch=BatchSettings(idle=0.0078125, max_wait=0.0625)),
                         clock=loop.time)
    await obs.observe("i-cold", max_age=0)
    await obs.observe("i-hot", max_age=0, hot=True)
    ec2.timeline.clear()
    began = loop.time()

    async def keep_hot() -> None:
        while True:  # a worker waiting for i-hot: a cache hit, no call, keeps it hot
            await obs.observe("i-hot", max_age=60, hot=True)
            await asyncio.sleep(0.0625)

    worker = asyncio.create_task(keep_hot())
    obs.start()
    await asyncio.sleep(1.0625)
    worker.cancel()
    await obs.stop()

    def at(seconds: float) -> float:
        return round(began + seconds, 6)

    fast = [(at(t), "describe_instances", ["i-hot"]) for t in (0.125, 0.25, 0.375, 0.625, 0.75, 0.875)]
    full = [entry for t in (0.5, 1.0) for entry in (
        (at(t), "find_by_tag_values", [MANAGED_BY]),  # the managed-by query finds neither (not tagged) ...
        (at(t), "describe_instances", ["i-cold", "i-hot"]))]  # ... so both are confirmed by id
    assert ec2.timeline == sorted(fast + full, key=lambda entry: entry[0])  # cold ids ride full passes only


@virtual_time_test
async def test_forget_removes_an_id_from_every_pass():
    ec2 = FakeEC2(instance("i-keep"), instance("i-drop", "pending"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=["i-drop"], cold=["i-keep"], resync_interval=10.0)

    obs.forget("i-drop")
    assert obs.cached("i-drop") is None
    obs.start()
    await asyncio.sleep(0.05)  # fast ticks: i-drop is no longer hot
    assert ec2.calls == []
    clock.advance(10.0)
    await eventually(lambda: ec2.calls)
    await obs.stop()

    assert ec2.ids("describe_instances") == [["i-keep"]]


@virtual_time_test
async def test_ids_nobody_asked_about_for_forget_after_are_dropped_at_resync():
    ec2 = FakeEC2(instance("i-old"), instance("i-recent"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=[], cold=["i-old"], resync_interval=10.0, forget_after=100.0)
    clock.advance(95)
    await obs.observe("i-recent", max_age=0)
    ec2.calls.clear()

    obs.start()  # the loop counts resync_interval from here
    await asyncio.sleep(0.03)
    clock.advance(10)  # time for a resync; i-old last asked 105 s ago, i-recent 10 s ago
    await eventually(lambda: ec2.calls)
    await obs.stop()

    assert ec2.ids("describe_instances") == [["i-recent"]]
    assert obs.cached("i-old") is None


@virtual_time_test
async def test_a_failed_pass_does_not_stop_the_loop():
    ec2 = FakeEC2(instance("i-hot", "pending"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=["i-hot"], cold=[])
    ec2.failures += [EC2QuotaExceededException("Rate exceeded", code="RequestLimitExceeded"),
                     RuntimeError("unexpected")]
    ec2.instances["i-hot"] = instance("i-hot", "running")
    clock.advance(0.001)

    obs.start()
    await eventually(lambda: obs.cached("i-hot").state == "running")
    await obs.stop()

    assert len(ec2.ids("describe_instances")) == 3  # two failed passes, then a good one
    assert ec2.failures == []


@virtual_time_test
async def test_stop_ends_the_background_task():
    ec2 = FakeEC2(instance("i-hot", "pending"))
    clock = FakeClock()
    obs = await primed(ec2, clock, hot=["i-hot"], cold=[])

    obs.start()
    obs.start()  # idempotent: still one loop
    assert [t.get_name() for t in asyncio.all_tasks()].count(f"observer-{REGION}") == 1
    await asyncio.sleep(0.03)
    await obs.stop()
    calls = len(ec2.calls)

    assert f"observer-{REGION}" not in [t.get_name() for t in asyncio.all_tasks()]
    await asyncio.sleep(0.06)
    assert len(ec2.calls) == calls


# ---------------------------------------------------------------- Observers and the batch hook


@virtual_time_test
async def test_observers_keep_one_started_observer_per_region():
    ec2 = FakeEC2()
    observers = Observers(ec2, ObserverSettings(fast_interval=0.02))

    east = observers("us-east-1")
    assert observers("us-east-1") is east
    west = observers("eu-west-1")
    assert west is not east and west.region == "eu-west-1"
    assert list(observers.regions()) == ["us-east-1", "eu-west-1"]
    names = [t.get_name() for t in asyncio.all_tasks()]
    assert "observer-us-east-1" in names and "observer-eu-west-1" in names

    await observers.stop()
    names = [t.get_name() for t in asyncio.all_tasks()]
    assert "observer-us-east-1" not in names and "observer-eu-west-1" not in names


@virtual_time_test
async def test_each_region_observer_reads_its_own_region():
    ec2 = FakeEC2(instance("i-1"))
    observers = Observers(ec2, ObserverSettings(batch=BatchSettings(idle=0.005)))

    await asyncio.gather(observers("us-east-1").observe("i-1", max_age=0),
                         observers("eu-west-1").observe("i-1", max_age=0))
    await observers.stop()

    assert sorted(region for name, region, _ in ec2.calls if name == "describe_instances") == \
        ["eu-west-1", "us-east-1"]


@virtual_time_test
async def test_batch_sizes_are_reported_by_region_and_kind():
    ec2 = FakeEC2(instance("i-1"), instance("i-2"), instance("i-3", "stopped"), instance("i-4", uid="u"))
    heard: list[tuple[str, str, int]] = []
    observers = Observers(ec2, ObserverSettings(batch=BatchSettings(idle=0.005)),
                          on_batch=lambda region, kind, size: heard.append((region, kind, size)))
    east = observers("us-east-1")

    await asyncio.gather(*(east.observe(i, max_age=0) for i in ("i-1", "i-2", "i-3")))
    await east.find_by_uid("u")
    await observers.stop()

    assert heard == [("us-east-1", "describe", 3), ("us-east-1", "status", 2), ("us-east-1", "uid", 1)]


@virtual_time_test
async def test_the_observer_passes_report_their_batched_reads_too():
    # A launched worker can reach Ready on the fast passes alone; the metric must still see those reads.
    ec2 = FakeEC2(managed("i-1"), managed("i-2", "stopped"), instance("i-retagged"))
    heard: list[tuple[str, int]] = []
    obs = RegionObserver("us-east-1", ec2, ObserverSettings(), on_batch=lambda kind, size: heard.append((kind, size)))

    await obs.refresh(["i-1", "i-2"])
    await obs.refresh(["i-1", "i-2", "i-retagged"], full=True)

    assert heard == [("describe", 2), ("status", 1), ("managed", 2), ("describe", 1), ("status", 2)]


def managed(instance_id: str, state: str = "running") -> CMLWorkerInstanceDto:
    dto = instance(instance_id, state)
    return replace(dto, tags={**dto.tags, TAG_MANAGED_BY: MANAGED_BY})


@virtual_time_test
async def test_a_full_pass_reads_managed_instances_by_tag_not_by_id():
    ids = [f"i-{n:04d}" for n in range(1000)]
    ec2 = FakeEC2(*(managed(i) for i in ids), managed("i-someone-elses"))
    obs = observer(ec2)

    await obs.refresh(ids, full=True)

    assert ec2.ids("find_by_tag_values") == [[MANAGED_BY]]
    assert ec2.ids("describe_instances") == []  # every tracked id answered by the tag query
    assert obs.cached("i-0999").instance.instance_state == "running"
    assert obs.cached("i-someone-elses") is None  # not tracked here: not cached


@virtual_time_test
async def test_a_full_pass_confirms_by_id_what_the_tag_query_missed():
    retagged = instance("i-retagged")  # someone removed the managed-by tag
    ec2 = FakeEC2(managed("i-1"), retagged)
    obs = observer(ec2)

    await obs.refresh(["i-1", "i-retagged", "i-gone"], full=True)

    assert ec2.ids("describe_instances") == [["i-retagged", "i-gone"]]
    assert obs.cached("i-retagged").instance is not None  # found by id: not presumed gone
    assert obs.cached("i-gone").instance is None
