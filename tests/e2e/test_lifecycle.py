"""A CMLWorker's life against the real API server, moto_server over HTTP and the operator process."""

from __future__ import annotations

import socket
from datetime import datetime

import pytest

from tests.support.processes import wait_for

from .conftest import instances_of, state_of, tags_of, worker_manifest

pytestmark = pytest.mark.e2e


def test_apply_then_wait_ready_fills_the_status_and_posts_events(kube, network, aws, operator):
    manifest = worker_manifest("lab-1", network, tags={"team": "netops"})
    applied = kube.apply(manifest)
    assert "cmlworker.cml.dev/lab-1 created" in applied.stdout

    waited = kube.run("wait", "--for=condition=Ready", "cmlworker/lab-1", "--timeout=60s")
    assert "condition met" in waited.stdout

    worker = kube.get("lab-1")
    status = worker["status"]
    uid = worker["metadata"]["uid"]
    [instance] = instances_of(aws, uid)
    assert status["instanceId"] == instance["InstanceId"]
    assert status["phase"] == "Running" and status["instanceState"] == "running"
    assert status["amiId"] == network["ami"] and status["instanceType"] == "m5.large"
    assert status["privateIp"] == instance["PrivateIpAddress"]
    assert status["availabilityZone"] == instance["Placement"]["AvailabilityZone"]
    assert datetime.fromisoformat(status["launchTime"].replace("Z", "+00:00")) == instance["LaunchTime"]
    assert status["statusChecks"]["system"] == "ok" and status["statusChecks"]["instance"] == "ok"
    assert status["observedGeneration"] == worker["metadata"]["generation"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Reconciling"]["status"], conditions["Stalled"]["status"]) == \
        ("True", "False", "False")
    assert worker["metadata"]["finalizers"] == ["cml.dev/finalizer"]

    tags = tags_of(aws, instance["InstanceId"])
    assert tags["cml.dev/worker-uid"] == uid and tags["cml.dev/managed-by"] == "cml-operator"
    assert tags["cml.dev/worker"] == f"{kube.namespace}/lab-1" and tags["team"] == "netops"
    assert tags["Name"] == f"{kube.namespace}/lab-1"

    printed = kube.run("get", "cmlw", "lab-1").stdout
    assert "Running" in printed and instance["InstanceId"] in printed and "InstanceReady" in printed

    events = kube.run("get", "events", "--field-selector", "involvedObject.name=lab-1").stdout
    assert "InstanceCreated" in events and "Ready" in events
    # the events name the operator (the From column of kubectl describe), not Kopf
    senders = {(e.get("reportingComponent"), e.get("source", {}).get("component"), e.get("reportingInstance"))
               for e in kube.events("lab-1")}
    assert senders == {("cml-operator", "cml-operator", f"{socket.gethostname()}_{operator.pid}")}, senders
    assert "From" in (described := kube.run("describe", "cmlworker", "lab-1").stdout) and "cml-operator" in described


def test_stop_and_start_through_desired_state(kube, network, aws, operator):
    kube.apply(worker_manifest("lab-2", network))
    kube.wait_condition("lab-2", "Ready")
    instance_id = kube.get("lab-2")["status"]["instanceId"]

    kube.patch_spec("lab-2", {"desiredState": "Stopped"})
    kube.wait_condition("lab-2", "Ready", reason="InstanceStopped")
    assert state_of(aws, instance_id) == "stopped"
    assert kube.get("lab-2")["status"]["phase"] == "Stopped"

    kube.patch_spec("lab-2", {"desiredState": "Running"})
    kube.wait_condition("lab-2", "Ready", reason="InstanceReady")
    assert state_of(aws, instance_id) == "running"
    reasons = kube.event_reasons("lab-2")
    assert "Stopping" in reasons and "Starting" in reasons


def test_tags_are_added_changed_and_removed_on_ec2(kube, network, aws, operator):
    kube.apply(worker_manifest("lab-3", network, tags={"team": "netops", "env": "lab"}))
    kube.wait_condition("lab-3", "Ready")
    instance_id = kube.get("lab-3")["status"]["instanceId"]
    aws.create_tags(Resources=[instance_id], Tags=[{"Key": "backup", "Value": "daily"}])  # someone else's tag

    manifest = worker_manifest("lab-3", network, tags={"team": "sre", "cost": "42"})  # env removed
    kube.apply(manifest)

    def synced() -> bool:
        tags = tags_of(aws, instance_id)
        return tags.get("team") == "sre" and tags.get("cost") == "42" and "env" not in tags

    wait_for(synced, 30, what="tags to sync")
    tags = tags_of(aws, instance_id)
    assert tags["backup"] == "daily"  # foreign tags are left alone
    assert tags["cml.dev/worker-uid"] == kube.get("lab-3")["metadata"]["uid"]
    # The status is written when the pass that synced the tags ends, a moment after EC2 has them.
    wait_for(lambda: sorted(kube.get("lab-3")["status"]["managedTagKeys"]) == ["cost", "team"], 15,
             what="status.managedTagKeys to name exactly the spec's tags")


def test_changing_the_instance_type_stops_modifies_and_starts(kube, network, aws, operator):
    kube.apply(worker_manifest("lab-4", network))
    kube.wait_condition("lab-4", "Ready")
    instance_id = kube.get("lab-4")["status"]["instanceId"]

    kube.patch_spec("lab-4", {"instanceType": "m5.xlarge"})

    def resized() -> bool:
        raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return raw["InstanceType"] == "m5.xlarge" and raw["State"]["Name"] == "running"

    wait_for(resized, 60, what="the resize")
    kube.wait_condition("lab-4", "Ready", reason="InstanceReady")
    worker = kube.get("lab-4")
    assert worker["status"]["instanceType"] == "m5.xlarge" and worker["status"]["instanceId"] == instance_id
    assert {"Resizing", "Resized"} <= set(kube.event_reasons("lab-4"))


def test_delete_terminates_the_instance_then_releases(kube, network, aws, operator):
    kube.apply(worker_manifest("lab-5", network))
    kube.wait_condition("lab-5", "Ready")
    instance_id = kube.get("lab-5")["status"]["instanceId"]

    kube.delete("lab-5")

    assert not kube.exists("lab-5")
    assert state_of(aws, instance_id) in ("shutting-down", "terminated")


def test_retain_keeps_the_instance_and_removes_ownership_tags(kube, network, aws, operator):
    kube.apply(worker_manifest("lab-6", network, deletionPolicy="Retain", tags={"team": "netops"}))
    kube.wait_condition("lab-6", "Ready")
    instance_id = kube.get("lab-6")["status"]["instanceId"]

    kube.delete("lab-6")

    assert not kube.exists("lab-6")
    assert state_of(aws, instance_id) == "running"
    tags = tags_of(aws, instance_id)
    assert not any(key.startswith("cml.dev/") for key in tags)
    assert tags["team"] == "netops"


def test_adopting_an_existing_instance(kube, network, aws, adopting_operator):
    existing = aws.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1, InstanceType="m5.large",
                                 SubnetId=network["subnet"], SecurityGroupIds=[network["sg"]],
                                 Monitoring={"Enabled": True},  # moto_server cannot MonitorInstances
                                 TagSpecifications=[{"ResourceType": "instance",
                                                     "Tags": [{"Key": "Name", "Value": "hand-made"}]}])
    instance_id = existing["Instances"][0]["InstanceId"]

    kube.apply(worker_manifest("lab-7", network, instanceId=instance_id))
    kube.wait_condition("lab-7", "Ready")

    worker = kube.get("lab-7")
    assert worker["status"]["instanceId"] == instance_id and worker["status"]["adopted"] is True
    assert len(instances_of(aws, worker["metadata"]["uid"])) == 1  # adopted, nothing launched
    tags = tags_of(aws, instance_id)
    assert tags["cml.dev/worker-uid"] == worker["metadata"]["uid"] and tags["Name"] == "hand-made"
    kube.wait_event("lab-7", "InstanceAdopted", type_=None)  # Kopf may post it after the status
def test_resolving_the_ami_by_name(kube, network, aws, operator):
    base = aws.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1, SubnetId=network["subnet"])
    image = aws.create_image(InstanceId=base["Instances"][0]["InstanceId"], Name="cml-controller-2.9.0")["ImageId"]

    kube.apply(worker_manifest("lab-8", network, amiId=None, amiName="cml-controller-2.9.*"))
    kube.wait_condition("lab-8", "Ready")

    assert kube.get("lab-8")["status"]["amiId"] == image


def test_a_worker_that_never_got_an_instance_is_released_at_once(kube, network, operator):
    kube.apply(worker_manifest("lab-9", network, amiId="ami-0000000000000dead"))
    kube.wait_condition("lab-9", "Stalled", reason="InvalidParameter")

    kube.delete("lab-9", timeout="20s")

    assert not kube.exists("lab-9")
