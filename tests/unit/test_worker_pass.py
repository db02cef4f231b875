"""The worker and deletion passes (passes/worker.py, passes/deletion.py) against moto in process.

The real runtime (EC2 client, gateway, observers) is wired by ``build_runtime``;
moto's ``mock_aws`` stands in for EC2, so each pass's effect is read back from
moto itself. Passes are run in sequence, as Kopf's handlers would, each fed the
status the previous one rendered.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from cml_operator.passes import deletion_pass, reconcile_pass
from cml_operator.reconcile.conditions import HealthState
from cml_operator.reconcile.worker import WorkerRef
from cml_operator.runtime import Runtime, build_runtime
from cml_operator.settings import OperatorSettings

REGION = "us-east-1"
UID = "5f0c2a1e-0000-4000-8000-0000000000aa"

pytestmark = pytest.mark.timeout(60)


def spec(network: dict[str, str], **overrides: Any) -> dict[str, Any]:
    body = {"region": REGION, "amiId": network["ami"], "subnetId": network["subnet"],
            "securityGroupIds": [network["sg"]], "instanceType": "m5.large", "desiredState": "Running",
            "deletionPolicy": "Delete", "detailedMonitoring": False, "tags": {"team": "netops"}}
    body.update(overrides)
    return body


REF = WorkerRef(uid=UID, namespace="lab", name="w1", may_adopt=True)


def live(moto_ec2, uid: str = UID) -> list[dict]:
    found = moto_ec2.describe_instances(Filters=[{"Name": "tag:cml.dev/worker-uid", "Values": [uid]}])
    return [i for r in found["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] not in ("shutting-down", "terminated")]


def run(coroutine_factory):
    """Run ``coroutine_factory(runtime)`` in a fresh loop with a fresh runtime; close it afterwards."""

    async def main():
        runtime = build_runtime(OperatorSettings())
        try:
            return await coroutine_factory(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


def test_a_new_worker_is_launched_once_and_becomes_ready_on_a_later_pass(moto_ec2, network):
    async def passes(runtime: Runtime):
        first = await reconcile_pass(runtime, REF, spec(network), None, max_age=0)
        second = await reconcile_pass(runtime, REF, spec(network), first.status, max_age=0)
        return first, second

    first, second = run(passes)

    [instance] = live(moto_ec2)
    assert first.status["instanceId"] == instance["InstanceId"]
    assert first.error is None and first.health.state is not HealthState.STALLED
    assert "InstanceCreated" in [note.reason for note in first.notes]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["cml.dev/worker-uid"] == UID and tags["cml.dev/worker"] == "lab/w1" and tags["team"] == "netops"
    # moto reports the instance running with checks ok at once: the next pass finds it Ready, launches nothing.
    assert second.health.state is HealthState.READY and second.health.reason == "InstanceReady"
    assert second.status["instanceId"] == instance["InstanceId"] and len(live(moto_ec2)) == 1
    assert second.status["phase"] == "Running"


def test_an_instance_an_earlier_crashed_pass_launched_is_found_by_uid_not_launched_again(moto_ec2, network):
    async def crashed_then_resumed(runtime: Runtime):
        launched = await reconcile_pass(runtime, REF, spec(network), None, max_age=0)
        # A new process (fresh runtime memory) with a status that never recorded the instance.
        fresh = build_runtime(OperatorSettings())
        try:
            resumed = await reconcile_pass(fresh, REF, spec(network), None, max_age=0)
        finally:
            await fresh.close()
        return launched, resumed

    launched, resumed = run(crashed_then_resumed)

    assert resumed.status["instanceId"] == launched.status["instanceId"]
    assert len(live(moto_ec2)) == 1


def test_an_invalid_spec_stalls_without_calling_ec2(moto_ec2, network):
    result = run(lambda runtime: reconcile_pass(runtime, REF, spec(network, region=None), None, max_age=0))

    assert result.health.state is HealthState.STALLED and result.health.reason == "InvalidParameter"
    assert "spec.region" in result.health.message
    assert moto_ec2.describe_instances()["Reservations"] == []


def test_a_subnet_that_does_not_exist_stalls_invalid_parameter_and_launches_nothing(moto_ec2, network):
    missing = spec(network, subnetId="subnet-0123456789abcdef0")
    result = run(lambda runtime: reconcile_pass(runtime, REF, missing, None, max_age=0))

    assert result.health.state is HealthState.STALLED and result.health.reason == "InvalidParameter"
    assert result.decision is not None and not result.decision.temporary
    assert "subnet-0123456789abcdef0" in result.health.message
    assert live(moto_ec2) == []


def test_deletion_terminates_the_tracked_instance_and_any_other_with_the_uid(moto_ec2, network):
    async def launch_then_delete(runtime: Runtime):
        launched = await reconcile_pass(runtime, REF, spec(network), None, max_age=0)
        tracked = launched.status["instanceId"]
        tags = [{"Key": k, "Value": v} for k, v in
                {t["Key"]: t["Value"] for t in live(moto_ec2)[0]["Tags"]}.items() if k.startswith("cml.dev/")]
        moto_ec2.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1, SubnetId=network["subnet"],
                               TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        first = await deletion_pass(runtime, REF, spec(network), launched.status)
        second = await deletion_pass(runtime, REF, spec(network), launched.status)
        return tracked, first, second

    tracked, first, second = run(launch_then_delete)

    assert live(moto_ec2) == []  # both, not only the tracked one
    assert moto_ec2.describe_instances(InstanceIds=[tracked])["Reservations"][0]["Instances"][0]["State"][
        "Name"] in ("shutting-down", "terminated")
    assert second.release  # nothing live is left: the finalizer may go
    assert first.error is None and second.error is None


def test_retain_removes_the_ownership_tags_and_keeps_the_instance_running(moto_ec2, network):
    async def launch_then_retain(runtime: Runtime):
        launched = await reconcile_pass(runtime, REF, spec(network), None, max_age=0)
        result = await deletion_pass(runtime, REF, spec(network, deletionPolicy="Retain"), launched.status)
        return launched.status["instanceId"], result

    instance_id, result = run(launch_then_retain)

    raw = moto_ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert raw["State"]["Name"] == "running"
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    assert not any(key.startswith("cml.dev/") for key in tags) and tags["team"] == "netops"
    assert result.release


def test_a_worker_that_never_had_an_instance_is_released_at_once(moto_ec2, network):
    result = run(lambda runtime: deletion_pass(runtime, replace(REF, uid="never"), spec(network), None))

    assert result.release and result.error is None
    assert moto_ec2.describe_instances()["Reservations"] == []


def test_a_start_ec2_refused_is_not_held_against_the_next_one_and_a_start_that_runs_leaves_no_record(
        moto_ec2, network):
    from cml_operator.ec2.exceptions import EC2QuotaExceededException

    async def passes(runtime: Runtime):
        ready = await reconcile_pass(runtime, REF, spec(network), None, max_age=0)
        ready = await reconcile_pass(runtime, REF, spec(network), ready.status, max_age=0)
        stopped = await reconcile_pass(runtime, REF, spec(network, desiredState="Stopped"), ready.status, max_age=0)
        stopped = await reconcile_pass(runtime, REF, spec(network, desiredState="Stopped"), stopped.status, max_age=0)
        real_start = runtime.ec2.start_instance

        async def refused(region: str, instance_id: str) -> bool:
            raise EC2QuotaExceededException("no capacity", code="InsufficientInstanceCapacity",
                                            operation="StartInstances", instance_id=instance_id)

        runtime.ec2.start_instance = refused  # type: ignore[method-assign]
        failed = await reconcile_pass(runtime, REF, spec(network), stopped.status, max_age=0)
        runtime.ec2.start_instance = real_start  # type: ignore[method-assign]
        started = await reconcile_pass(runtime, REF, spec(network), failed.status, max_age=0)
        return stopped, failed, started

    stopped, failed, started = run(passes)

    assert stopped.status["instanceState"] == "stopped"
    assert failed.error is not None and failed.health.reason == "InsufficientCapacity"
    # The refused call never started anything: no Start of ours is pending, nothing to count later.
    assert "startRequested" not in failed.status.get("recovery", {})
    # moto starts at once: the read right after the Start sees it running, so nothing is pending either.
    assert started.status["instanceState"] == "running"
    recovery = started.status.get("recovery", {})
    assert "startRequested" not in recovery and "failedStarts" not in recovery


def test_a_start_that_went_out_stays_pending_when_the_read_after_it_fails(moto_ec2, network):
    """The bound must hold when DescribeInstances is throttled right after a Start EC2 accepted."""
    from cml_operator.ec2.exceptions import EC2Exception

    async def passes(runtime: Runtime):
        ready = await reconcile_pass(runtime, REF, spec(network), None, max_age=0)
        ready = await reconcile_pass(runtime, REF, spec(network), ready.status, max_age=0)
        stopped = await reconcile_pass(runtime, REF, spec(network, desiredState="Stopped"), ready.status, max_age=0)
        stopped = await reconcile_pass(runtime, REF, spec(network, desiredState="Stopped"), stopped.status, max_age=0)
        real_start, real_describe = runtime.ec2.start_instance, runtime.ec2.describe_instances
        sent: list[str] = []

        async def start(region: str, instance_id: str) -> bool:
            sent.append(instance_id)
            return await real_start(region, instance_id)

        async def throttled_after_start(region: str, ids: list[str]):
            if sent:
                raise EC2Exception("Rate exceeded", code="RequestLimitExceeded", operation="DescribeInstances")
            return await real_describe(region, ids)

        runtime.ec2.start_instance = start  # type: ignore[method-assign]
        runtime.ec2.describe_instances = throttled_after_start  # type: ignore[method-assign]
        failed = await reconcile_pass(runtime, REF, spec(network), stopped.status, max_age=0)
        return sent, failed

    sent, failed = run(passes)

    assert len(sent) == 1 and failed.error is not None  # the Start went out, the read after it failed
    recovery = failed.status.get("recovery", {})
    assert recovery.get("startRequested") and recovery.get("startInstanceId") == sent[0]
