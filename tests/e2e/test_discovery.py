"""CMLWorkerDiscovery against the real API server, moto_server and the operator: import, idempotency, orphans."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.motoserver import amazon_image
from tests.support.processes import wait_for

from .conftest import REGION, Kube, instances_of, state_of, tags_of, worker_manifest

pytestmark = pytest.mark.e2e

MUTATING = ("StopInstances", "StartInstances", "ModifyInstanceAttribute", "MonitorInstances", "UnmonitorInstances",
            "TerminateInstances", "RunInstances")


def discovery_manifest(name: str, pattern: str, **spec: Any) -> dict:
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerDiscovery", "metadata": {"name": name},
            "spec": {"region": REGION, "amiNamePattern": pattern, "intervalSeconds": 60, **spec}}


def discovery(kube: Kube, name: str) -> dict:
    return kube.read("cmlworkerdiscoveries", name)


def launch(aws: Any, network: dict[str, str], image: str, tags: dict[str, str] | None = None,
           instance_type: str = "t3.large") -> str:
    spec = {"ImageId": image, "MinCount": 1, "MaxCount": 1, "InstanceType": instance_type,
            "SubnetId": network["subnet"], "SecurityGroupIds": [network["sg"]]}
    if tags:
        spec["TagSpecifications"] = [{"ResourceType": "instance",
                                      "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return aws.run_instances(**spec)["Instances"][0]["InstanceId"]


@pytest.fixture
def own_image(aws: Any, network: dict[str, str]) -> str:
    """An image of this account (owner self), as a CML AMI would be."""
    base = launch(aws, network, network["ami"])
    image = aws.create_image(InstanceId=base, Name="cml-2.8.1-e2e")["ImageId"]
    aws.terminate_instances(InstanceIds=[base])
    return image


def test_discovery_imports_each_unmanaged_instance_once_without_touching_it(kube, network, aws, proxy, own_image,
                                                                              operator_factory):
    running = launch(aws, network, own_image, {"env": "lab"})
    stopped = launch(aws, network, own_image, {"env": "lab"})
    aws.stop_instances(InstanceIds=[stopped])
    untagged = launch(aws, network, own_image)  # lacks the selector's tag
    foreign = launch(aws, network, amazon_image(aws)["ImageId"], {"env": "lab"})  # an image of another owner
    operator = operator_factory("--adoption-namespaces", kube.namespace)
    # A worker the operator launched from the same image is managed already.
    kube.apply(worker_manifest("managed", network, amiId=own_image, tags={"env": "lab"}))
    kube.wait_condition("managed", "Ready")
    proxy.reset_counts()

    kube.apply(discovery_manifest("scan", "cml-2.8*", tagSelector={"env": "lab"},
                                  workerTemplate={"metadata": {"labels": {"imported": "yes"}}}))
    try:
        wait_for(lambda: (discovery(kube, "scan").get("status") or {}).get("imported") == 2, 60,
                 what="two instances imported")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {json.dumps(discovery(kube, 'scan'), indent=1)}") from exc
    for instance_id, desired, reason in ((running, "Running", "InstanceReady"), (stopped, "Stopped", "InstanceStopped")):
        worker = kube.get(instance_id)  # named after the instance
        assert worker["metadata"]["labels"] == {"imported": "yes", "cml.dev/discovery": "scan"}
        spec = worker["spec"]
        assert (spec["instanceId"], spec["amiId"], spec["instanceType"], spec["desiredState"]) == (
            instance_id, own_image, "t3.large", desired)
        assert spec["deletionPolicy"] == "Retain"  # the discovery default
        kube.wait_condition(instance_id, "Ready", reason=reason)
        assert tags_of(aws, instance_id)["cml.dev/worker-uid"] == worker["metadata"]["uid"]
    for left_alone in (untagged, foreign):
        assert not kube.exists(left_alone)
    assert state_of(aws, running) == "running" and state_of(aws, stopped) == "stopped"
    assert {action: proxy.count(action) for action in MUTATING} == {action: 0 for action in MUTATING}
    status = discovery(kube, "scan")["status"]
    assert status["matched"] == 3 and status["lastScanTime"]  # running, stopped and the managed one
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "ScanSucceeded"
    wait_for(lambda: sum(1 for e in kube.events("scan") if e["reason"] == "Imported") == 2, 15,
             what="an Imported event per instance")
    messages = " ".join(e["message"] for e in kube.events("scan") if e["reason"] == "Imported")
    assert running in messages and stopped in messages

    # Idempotent across restarts and repeated scans: a new operator, a forced rescan, nothing new.
    operator.stop()
    operator_factory("--adoption-namespaces", kube.namespace)
    kube.run("patch", "cmlworkerdiscovery", "scan", "--type=merge", "-p", '{"spec":{"intervalSeconds":61}}')
    wait_for(lambda: (discovery(kube, "scan").get("status") or {}).get("observedGeneration") == 2, 30,
             what="the rescan after the spec change")
    # A second discovery with the same pattern (a concurrent scanner) finds nothing left to import.
    kube.apply(discovery_manifest("scan-2", "cml-*", tagSelector={"env": "lab"}))
    wait_for(lambda: "lastScanTime" in (discovery(kube, "scan-2").get("status") or {}), 30, what="second scan")
    assert discovery(kube, "scan")["status"]["imported"] == 2 and discovery(kube, "scan-2")["status"]["imported"] == 0
    names = json.loads(kube.run("get", "cmlworkers", "-o", "json").stdout)["items"]
    assert sorted(w["metadata"]["name"] for w in names) == sorted(["managed", running, stopped])
    assert all(len(instances_of(aws, w["metadata"]["uid"])) == 1 for w in names)


def test_an_image_of_an_owner_not_allowed_is_never_matched(kube, network, aws, adopting_operator):
    image = amazon_image(aws)
    launch(aws, network, image["ImageId"], {"env": "lab"})
    kube.apply(discovery_manifest("amazon-name", image["Name"]))  # amiOwners defaults to [self]
    kube.run("wait", "--for=condition=Ready", "cmlworkerdiscovery/amazon-name", "--timeout=45s")
    status = discovery(kube, "amazon-name")["status"]
    assert (status["matched"], status["imported"]) == (0, 0)
    assert json.loads(kube.run("get", "cmlworkers", "-o", "json").stdout)["items"] == []


def test_bad_discoveries_are_refused_at_apply_time(kube):
    refused = kube.apply(discovery_manifest("bad", "cml-*", intervalSeconds=10), check=False)
    assert refused.returncode != 0 and "spec.intervalSeconds" in refused.stderr
    refused = kube.apply(discovery_manifest("bad", "cml-*", amiOwners=["someone"]), check=False)
    assert refused.returncode != 0 and "spec.amiOwners" in refused.stderr


def orphan_metric(operator: Any) -> float | None:
    for line in operator.metrics().splitlines():
        if line.startswith('cml_orphan_instances{account="self",region="us-east-1"}'):
            return float(line.split()[-1])
    return None


def test_an_instance_whose_worker_was_force_deleted_is_reported_then_handled_after_the_grace(
        kube, network, aws, operator_factory):
    operator = operator_factory("--cluster-id", "e2e-cluster")
    kube.apply(worker_manifest("doomed", network))
    kube.apply(worker_manifest("survivor", network))  # keeps us-east-1 among the regions the operator watches
    kube.wait_condition("doomed", "Ready")
    kube.wait_condition("survivor", "Ready")
    uid = kube.get("doomed")["metadata"]["uid"]
    [instance] = instances_of(aws, uid)
    orphan = instance["InstanceId"]
    assert tags_of(aws, orphan)["cml.dev/cluster"] == "e2e-cluster"
    # A worker force-deleted while the operator was away: its finalizer removed by hand.
    operator.stop()
    kube.run("patch", "cmlworker", "doomed", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kube.run("delete", "cmlworker", "doomed", "--wait=true", "--timeout=30s")
    # An instance tagged for another cluster is never judged, whatever its tags say.
    foreign = launch(aws, network, network["ami"], {"cml.dev/cluster": "other-cluster", "cml.dev/worker-uid": "x",
                                                     "cml.dev/managed-by": "cml-operator"})

    operator = operator_factory("--cluster-id", "e2e-cluster", "--orphan-policy", "terminate",
                                "--orphan-grace", "15")
    # Without any discovery, the operator's own watch reports it: metric and log line.
    wait_for(lambda: orphan_metric(operator) == 1.0, 30, what="the orphan metric from the watch")
    wait_for(lambda: f"Orphan instance {orphan}" in operator.logs(), 10, what="the orphan log line")
    kube.apply(discovery_manifest("scan", "no-such-image-*"))
    wait_for(lambda: (discovery(kube, "scan").get("status") or {}).get("orphans") == 1, 30, what="one orphan")
    assert orphan_metric(operator) == 1.0
    wait_for(lambda: any(e["reason"] == "OrphanInstances" and e["type"] == "Warning" and orphan in e["message"]
                         for e in kube.events("scan")), 15, what="the OrphanInstances warning")
    assert state_of(aws, orphan) == "running"  # within the grace: reported only

    def rescan_terminates() -> bool:
        kube.run("patch", "cmlworkerdiscovery", "scan", "--type=merge", "-p",
                 json.dumps({"spec": {"intervalSeconds": 60 + int(time.time()) % 1000}}))
        return state_of(aws, orphan) in ("shutting-down", "terminated")

    wait_for(rescan_terminates, 40, interval=3, what="the orphan terminated after the grace")
    assert state_of(aws, foreign) == "running"
    assert state_of(aws, instances_of(aws, kube.get("survivor")["metadata"]["uid"])[0]["InstanceId"]) == "running"
    # Once a discovery scans the region, it (not the watch) handles the region's orphans, with events.
    wait_for(lambda: "OrphanTerminated" in kube.event_reasons("scan"), 15, what="the OrphanTerminated event")
    assert f"Terminated orphan instance {orphan}" in operator.logs()
