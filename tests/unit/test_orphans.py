"""Orphan scans against a fake EC2: the second read, the metric, the grace, and the bound on actions."""

from __future__ import annotations

from dataclasses import replace

from cml_operator.ec2.models import CMLWorkerInstanceDto
from cml_operator.fleet.observer import Observers
from cml_operator.metrics import Metrics
from cml_operator.passes.orphans import handle_orphans, judge_orphans, managed_instances
from cml_operator.reconcile import reasons
from cml_operator.runtime import Runtime
from cml_operator.settings import OperatorSettings

from .asyncrun import async_test

REGION = "us-east-1"


def managed(iid: str, uid: str, state: str = "running") -> CMLWorkerInstanceDto:
    return CMLWorkerInstanceDto(
        aws_instance_id=iid, aws_region=REGION, instance_name=None, ami_id="ami-12345678", ami_name=None,
        instance_type="m5.large", security_group_ids=[], subnet_id=None, instance_state=state, public_ip=None,
        private_ip=None, key_pair_name=None,
        tags={"cml.dev/worker-uid": uid, "cml.dev/worker": "lab/w", "cml.dev/managed-by": "cml-operator",
              "cml.dev/cluster": "c1"})


class FakeEC2:
    def __init__(self, listed: list[CMLWorkerInstanceDto], now: dict[str, CMLWorkerInstanceDto]) -> None:
        self.listed, self.now = listed, now
        self.calls: list[tuple] = []

    async def find_by_tag_values(self, region, key, values):
        self.calls.append(("find", key, tuple(values)))
        return {"c1": self.listed}

    async def describe_instances(self, region, ids):
        self.calls.append(("describe", tuple(ids)))
        return {i: self.now[i] for i in ids if i in self.now}

    async def stop_instance(self, region, instance_id):
        self.calls.append(("stop", instance_id))
        return True

    async def terminate_instance(self, region, instance_id):
        self.calls.append(("terminate", instance_id))
        return True


def runtime(ec2: FakeEC2, **settings) -> Runtime:
    return Runtime(settings=OperatorSettings(**settings), ec2=ec2, observers=Observers(ec2), metrics=Metrics())


def metric(rt: Runtime) -> float | None:
    return rt.metrics.registry.get_sample_value("cml_orphan_instances", {"region": REGION, "account": "self"})


@async_test
async def test_a_worker_deleted_between_the_two_reads_is_not_an_orphan():
    gone = managed("i-1", "deleted-meanwhile")
    orphan = managed("i-2", "long-gone")
    ec2 = FakeEC2([gone, orphan], {"i-1": replace(gone, instance_state="shutting-down"), "i-2": orphan})
    rt = runtime(ec2)
    listed = await managed_instances(rt, REGION, "c1")
    found = await judge_orphans(rt, REGION, listed, [{"metadata": {"uid": "alive"}}], "c1")
    assert [dto.aws_instance_id for dto in found] == ["i-2"]
    assert ("describe", ("i-1", "i-2")) in ec2.calls


@async_test
async def test_without_a_cluster_id_nothing_is_read_or_judged():
    ec2 = FakeEC2([managed("i-1", "x")], {})
    rt = runtime(ec2)
    assert await managed_instances(rt, REGION, None) == [] and ec2.calls == []


@async_test
async def test_report_sets_the_metric_and_warns_without_acting():
    ec2 = FakeEC2([], {})
    rt = runtime(ec2)  # --orphan-policy report
    notes = await handle_orphans(rt, REGION, [managed("i-1", "x"), managed("i-2", "y")])
    assert metric(rt) == 2.0
    assert [n.reason for n in notes] == [reasons.EVENT_ORPHAN] and "i-1, i-2" in notes[0].message
    assert ec2.calls == []
    assert await handle_orphans(rt, REGION, []) == [] and metric(rt) == 0.0


@async_test
async def test_terminate_waits_out_the_grace_then_acts_once_per_orphan():
    ec2 = FakeEC2([], {})
    rt = runtime(ec2, orphan_policy="terminate", orphan_grace=3600.0)
    await handle_orphans(rt, REGION, [managed("i-1", "x")])
    assert ec2.calls == []  # first seen now: within the grace
    rt.orphan_clock(REGION).first_seen["i-1"] -= 3600.0  # an hour later
    notes = await handle_orphans(rt, REGION, [managed("i-1", "x")])
    assert ec2.calls == [("terminate", "i-1")]
    assert [n.reason for n in notes] == [reasons.EVENT_ORPHAN, reasons.EVENT_ORPHAN_TERMINATED]


@async_test
async def test_stop_policy_stops_a_running_orphan_and_leaves_a_stopped_one():
    ec2 = FakeEC2([], {})
    rt = runtime(ec2, orphan_policy="stop", orphan_grace=0.0)
    await handle_orphans(rt, REGION, [managed("i-1", "x"), managed("i-2", "y", state="stopped")])
    assert ec2.calls == [("stop", "i-1")]
