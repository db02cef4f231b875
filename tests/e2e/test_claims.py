"""Claims the docs make that no other test held them to (issue 15 item 9).

`-o wide` columns (docs/resource.md), security-group drift and TagLimitExceeded
(docs/behaviour.md, docs/conditions.md), and deletion terminating every live instance
that carries the worker's uid, not only the tracked one (docs/behaviour.md).
"""

from __future__ import annotations

import time

import pytest

from tests.support.faultproxy import FaultRule
from tests.support.processes import wait_for

from .conftest import instances_of, state_of, tags_of, worker_manifest

pytestmark = pytest.mark.e2e

WIDE = ["NAME", "PHASE", "INSTANCE", "STATE", "READY", "REASON", "IP", "TYPE", "REGION", "PUBLIC-IP", "CML", "LABS",
        "HOURS", "AGE"]  # CML and LABS: status.cml (issue 12); HOURS: status.usage (issue 23)


def table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [line.split() for line in text.strip().splitlines()]
    return lines[0], lines[1:]


def groups_of(aws, instance_id: str) -> list[str]:
    raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return sorted(group["GroupId"] for group in raw["SecurityGroups"])


def test_wide_output_adds_type_region_and_public_ip(kube, network, operator):
    kube.apply(worker_manifest("wide", network, instanceType="m5.large"))
    kube.wait_condition("wide", "Ready")
    status = kube.get("wide")["status"]

    header, [row] = table(kube.run("get", "cmlw", "wide", "-o", "wide").stdout)
    assert header == WIDE
    # Without spec.cml the CML and LABS cells are blank (kubectl prints nothing for a missing value).
    assert len(row) == len(header) - 2
    shown = dict(zip([h for h in header if h not in ("CML", "LABS")], row))
    assert shown["NAME"] == "wide" and shown["PHASE"] == "Running" and shown["STATE"] == "running"
    assert shown["INSTANCE"] == status["instanceId"] and shown["IP"] == status["privateIp"]
    assert (shown["READY"], shown["REASON"]) == ("True", "InstanceReady")
    assert (shown["TYPE"], shown["REGION"]) == ("m5.large", "us-east-1")
    assert shown["PUBLIC-IP"] == status.get("publicIp", "<none>")

    narrow, _ = table(kube.run("get", "cmlw", "wide").stdout)
    assert narrow == [c for c in WIDE if c not in ("TYPE", "REGION", "PUBLIC-IP", "CML", "LABS", "HOURS")]


def test_security_groups_changed_outside_are_put_back_and_spec_changes_applied(kube, network, aws, operator):
    vpc = aws.describe_subnets(SubnetIds=[network["subnet"]])["Subnets"][0]["VpcId"]
    other = aws.create_security_group(GroupName="cml-e2e-other", Description="e2e", VpcId=vpc)["GroupId"]
    kube.apply(worker_manifest("groups", network))
    kube.wait_condition("groups", "Ready")
    instance_id = kube.get("groups")["status"]["instanceId"]

    aws.modify_instance_attribute(InstanceId=instance_id, Groups=[other])  # drift, outside the operator
    wait_for(lambda: groups_of(aws, instance_id) == [network["sg"]], 60, interval=0.5,
             what="the spec's security group to be put back")

    kube.patch_spec("groups", {"securityGroupIds": [network["sg"], other]})  # a spec change is applied too
    wait_for(lambda: groups_of(aws, instance_id) == sorted([network["sg"], other]), 60, interval=0.5,
             what="both security groups on the instance")
    kube.wait_condition("groups", "Ready")
    assert len(instances_of(aws, kube.get("groups")["metadata"]["uid"])) == 1  # changed in place


def test_tag_limit_exceeded_stalls_without_retrying_until_the_spec_changes(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("tagged", network, tags={"team": "a"}))
    kube.wait_condition("tagged", "Ready")
    instance_id = kube.get("tagged")["status"]["instanceId"]
    proxy.set_faults(FaultRule(code="TagLimitExceeded", action="CreateTags",
                               message="Tag limit exceeded for resource"))

    kube.patch_spec("tagged", {"tags": {"team": "b"}})

    stalled = kube.wait_condition("tagged", "Stalled", reason="TagOperationFailed")
    assert "[TagLimitExceeded]" in stalled["message"]
    assert kube.condition("tagged", "Reconciling")["status"] == "False"
    kube.wait_event("tagged", "TagOperationFailed", type_="Warning")  # Kopf may post it after the status
    calls = proxy.count("CreateTags")
    deadline = time.monotonic() + 6  # several polls (1 s) and a resync (3 s): permanent, so no retry
    while time.monotonic() < deadline:
        assert proxy.count("CreateTags") == calls, "CreateTags retried while stalled on TagLimitExceeded"
        time.sleep(0.5)

    proxy.clear_faults()
    kube.patch_spec("tagged", {"tags": {"team": "c"}})  # the spec changed: a new attempt
    wait_for(lambda: tags_of(aws, instance_id).get("team") == "c", 30, what="the tag to sync")
    kube.wait_condition("tagged", "Ready")


def test_deletion_terminates_every_live_instance_carrying_the_workers_uid(kube, network, aws, operator):
    kube.apply(worker_manifest("extra", network))
    kube.wait_condition("extra", "Ready")
    worker = kube.get("extra")
    tracked = worker["status"]["instanceId"]
    # A second instance with the worker's ownership tags (a launch the operator never heard of),
    # and a bystander that is not the worker's.
    ownership = [{"Key": k, "Value": v} for k, v in tags_of(aws, tracked).items() if k.startswith("cml.dev/")]
    launch = {"ImageId": network["ami"], "MinCount": 1, "MaxCount": 1, "SubnetId": network["subnet"]}
    stray = aws.run_instances(**launch, TagSpecifications=[{"ResourceType": "instance", "Tags": ownership}])
    bystander = aws.run_instances(**launch, TagSpecifications=[{"ResourceType": "instance", "Tags": [
        {"Key": "cml.dev/worker-uid", "Value": "someone-else"}]}])
    stray_id = stray["Instances"][0]["InstanceId"]
    bystander_id = bystander["Instances"][0]["InstanceId"]

    kube.delete("extra")

    assert state_of(aws, tracked) in ("shutting-down", "terminated")
    assert state_of(aws, stray_id) in ("shutting-down", "terminated")
    assert instances_of(aws, worker["metadata"]["uid"]) == []
    assert state_of(aws, bystander_id) == "running"
