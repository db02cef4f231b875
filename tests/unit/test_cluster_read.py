"""One EC2 read per resync per region: the observer's tag-filtered read serves the resync and the orphan watch.

The observer's full pass asks for every instance tagged ``cml.dev/cluster`` = this cluster
(one DescribeInstances, paged by the client); the orphan watch judges that same read
instead of asking again. Counted against the recording fake EC2 of test_observer.py, on
virtual time, with both loops running as they do in the operator.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cml_operator.fleet.batcher import BatchSettings
from cml_operator.fleet.observer import Observers, ObserverSettings, RegionObserver
from cml_operator.metrics import Metrics
from cml_operator.passes.orphans import orphan_watch
from cml_operator.reconcile.ownership import TAG_CLUSTER
from cml_operator.reconcile.worker import MANAGED_BY, TAG_MANAGED_BY, TAG_UID, TAG_WORKER
from cml_operator.runtime import Runtime
from cml_operator.settings import OperatorSettings

from .asyncrun import virtual_time_test
from .test_observer import REGION, FakeEC2, instance

pytestmark = pytest.mark.timeout(60)  # a hang guard (virtual time), not a bound

CLUSTER = "cluster-1"
RESYNC = 10.0
FAST = 1.0


def ours(instance_id: str, uid: str, state: str = "running", cluster: str = CLUSTER):
    dto = instance(instance_id, state, uid=uid)
    return replace(dto, tags={**dto.tags, TAG_MANAGED_BY: MANAGED_BY, TAG_CLUSTER: cluster, TAG_WORKER: "lab/w"})


def reads(ec2: FakeEC2, key: str) -> list[list[str]]:
    """The tag values of each find_by_tag_values call on ``key``."""
    return [list(args[1]) for name, _, args in ec2.calls if name == "find_by_tag_values" and args[0] == key]


class FakeKube:
    """The CMLWorkers the orphan watch lists."""

    def __init__(self, uids: list[str]) -> None:
        self.uids = uids

    async def list(self, kind, namespace, label_selector=None):
        return [{"metadata": {"uid": uid, "name": uid, "namespace": "lab"}} for uid in self.uids]

    async def close(self) -> None:
        pass


def operator(ec2: FakeEC2, uids: list[str]) -> Runtime:
    """A runtime as build_runtime wires it: observers on the loop's clock, knowing this cluster's id."""
    loop = asyncio.get_running_loop()
    settings = OperatorSettings(observer=ObserverSettings(resync_interval=RESYNC, fast_interval=FAST,
                                                          batch=BatchSettings(idle=0.01, max_wait=0.1)))
    runtime = Runtime(settings=settings, ec2=ec2, metrics=Metrics(), cluster_id=CLUSTER,
                      observers=Observers(ec2, settings.observer, clock=loop.time,
                                          cluster_id=lambda: runtime.own_cluster_id()))
    runtime.kube = FakeKube(uids)  # type: ignore[assignment]
    return runtime


@virtual_time_test
async def test_the_resync_and_the_orphan_watch_share_one_tag_filtered_read_per_resync():
    ec2 = FakeEC2(ours("i-1", "u1"), ours("i-2", "u2", "stopped"), ours("i-orphan", "gone"))
    runtime = operator(ec2, ["u1", "u2"])
    east = runtime.observers(REGION)  # starts its loop, as the first worker's observe() does
    await asyncio.gather(east.observe("i-1", max_age=0), east.observe("i-2", max_age=0))
    ec2.calls.clear()
    watch = asyncio.create_task(orphan_watch(runtime, runtime.own_cluster_id, RESYNC))

    await asyncio.sleep(5 * RESYNC + FAST / 2)  # five resync intervals, both loops on their own timers
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    await runtime.observers.stop()

    assert reads(ec2, TAG_CLUSTER) == [[CLUSTER]] * 5  # one read per resync, for both
    assert reads(ec2, TAG_MANAGED_BY) == []  # no second pass-wide read by the managed-by tag
    # The watch judged that read: the orphan was found, and confirmed by id as before.
    assert runtime.metrics.registry.get_sample_value("cml_orphan_instances",
                                                     {"region": REGION, "account": "self"}) == 1
    assert ["i-orphan"] in ec2.ids("describe_instances")


@virtual_time_test
async def test_without_a_recent_pass_the_orphan_watch_reads_for_itself_once_per_interval():
    # No worker left in the region: the observer has nothing to resync, the orphans must still be seen.
    ec2 = FakeEC2(ours("i-orphan", "gone"))
    runtime = operator(ec2, [])
    runtime.observers(REGION)
    watch = asyncio.create_task(orphan_watch(runtime, runtime.own_cluster_id, RESYNC))

    await asyncio.sleep(3 * RESYNC + FAST / 2)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    await runtime.observers.stop()

    assert reads(ec2, TAG_CLUSTER) == [[CLUSTER]] * 3
    assert runtime.metrics.registry.get_sample_value("cml_orphan_instances",
                                                     {"region": REGION, "account": "self"}) == 1


@virtual_time_test
async def test_a_full_pass_reads_by_the_cluster_tag_and_confirms_the_rest_by_id():
    loop = asyncio.get_running_loop()
    legacy = ours("i-legacy", "u3")  # launched by a release before the cluster tag: confirmed by id
    legacy = replace(legacy, tags={k: v for k, v in legacy.tags.items() if k != TAG_CLUSTER})
    ec2 = FakeEC2(ours("i-1", "u1"), ours("i-other", "ux", cluster="cluster-2"), legacy)
    obs = RegionObserver(REGION, ec2, ObserverSettings(), clock=loop.time, cluster_id=lambda: CLUSTER)

    await obs.refresh(["i-1", "i-legacy"], full=True)

    assert reads(ec2, TAG_CLUSTER) == [[CLUSTER]] and reads(ec2, TAG_MANAGED_BY) == []
    assert ec2.ids("describe_instances") == [["i-legacy"]]
    assert obs.cached("i-legacy").instance is not None and obs.cached("i-1").state == "running"
    assert [dto.aws_instance_id for dto in await obs.cluster_instances(max_age=RESYNC)] == ["i-1"]
    assert len(reads(ec2, TAG_CLUSTER)) == 1  # answered from the pass's read


@virtual_time_test
async def test_overlapping_callers_share_one_read_and_an_old_read_is_not_reused():
    loop = asyncio.get_running_loop()
    ec2 = FakeEC2(ours("i-1", "u1"))
    ec2.gate = asyncio.Event()
    obs = RegionObserver(REGION, ec2, ObserverSettings(), clock=loop.time, cluster_id=lambda: CLUSTER)

    both = asyncio.gather(obs.cluster_instances(max_age=0), obs.refresh(["i-1"], full=True))
    await asyncio.sleep(0.1)
    ec2.gate.set()
    first, _ = await both
    assert [dto.aws_instance_id for dto in first] == ["i-1"] and len(reads(ec2, TAG_CLUSTER)) == 1

    await asyncio.sleep(RESYNC + 1)
    await obs.cluster_instances(max_age=RESYNC)
    assert len(reads(ec2, TAG_CLUSTER)) == 2  # older than max_age: read again
    await obs.stop()


@virtual_time_test
async def test_without_a_cluster_id_the_pass_reads_by_the_managed_by_tag_and_no_orphan_is_judged():
    loop = asyncio.get_running_loop()
    ec2 = FakeEC2(ours("i-1", "u1"))
    obs = RegionObserver(REGION, ec2, ObserverSettings(), clock=loop.time)

    await obs.refresh(["i-1"], full=True)

    assert reads(ec2, TAG_MANAGED_BY) == [[MANAGED_BY]] and reads(ec2, TAG_CLUSTER) == []
    assert await obs.cluster_instances(max_age=0) == [] and len(ec2.calls) == 2  # + its DescribeInstanceStatus
    assert obs.cached("i-1").instance.tags[TAG_UID] == "u1"
