"""CMLWorkerPool against the real API server, moto_server and the operator: scale, roll, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cml_operator.reconcile.pool import Child, scale_down_order
from tests.support.faultproxy import FaultRule
from tests.support.motoserver import own_image
from tests.support.processes import wait_for

from .conftest import REGION, Kube, instances_of, state_of, tags_of

pytestmark = pytest.mark.e2e


def pool_manifest(name: str, network: dict[str, str], replicas: int, **spec: Any) -> dict:
    worker = {"region": REGION, "amiId": network["ami"], "subnetId": network["subnet"],
              "securityGroupIds": [network["sg"]], "instanceType": "m5.large", "tags": {"team": "a"}}
    worker.update(spec)
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerPool", "metadata": {"name": name},
            "spec": {"replicas": replicas,
                     "template": {"metadata": {"labels": {"course": "ccna"}}, "spec": worker}}}


def pool(kube: Kube, name: str) -> dict:
    return kube.read("cmlworkerpools", name)


def children(kube: Kube, name: str, live_only: bool = True) -> list[dict]:
    items = kube.read("cmlworkers", labelSelector=f"cml.dev/pool={name}")["items"]
    return [c for c in items if not (live_only and c["metadata"].get("deletionTimestamp"))]


def ready_children(kube: Kube, name: str) -> list[dict]:
    return [c for c in children(kube, name) if Child.from_body(c).ready]


def wait_pool_ready(kube: Kube, name: str, replicas: int, timeout: float = 90) -> dict:
    def converged() -> dict | None:
        body = pool(kube, name)
        status = body.get("status") or {}
        ready = {c["type"]: c for c in status.get("conditions", [])}.get("Ready", {})
        settled = (status.get("replicas"), status.get("readyReplicas")) == (replicas, replicas)
        if settled and ready.get("status") == "True" and len(children(kube, name, live_only=False)) == replicas:
            return body
        return None

    try:
        return wait_for(converged, timeout, interval=0.5, what=f"pool {name} with {replicas} ready workers")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; pool status: {json.dumps(pool(kube, name).get('status'), indent=1)}") from exc


def pool_instances(aws: Any, kube: Kube, name: str) -> dict[str, str]:
    """Child name -> its live instance id, as moto sees it."""
    found = {}
    for child in children(kube, name):
        [instance] = instances_of(aws, child["metadata"]["uid"])
        found[child["metadata"]["name"]] = instance["InstanceId"]
    return found


def test_the_sample_pool_passes_a_server_side_dry_run(kube):
    sample = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "cmlworkerpool.yaml"
    applied = kube.plane.kubectl("apply", "--dry-run=server", "-f", str(sample))
    assert "cmlworkerpool.cml.dev/ccna-class created (server dry run)" in applied.stdout


def test_bad_pools_are_refused_at_apply_time_naming_the_field(kube, network):
    adopting = pool_manifest("bad-1", network, 1, instanceId="i-0123456789abcdef0")
    refused = kube.apply(adopting, check=False)
    assert refused.returncode != 0 and "spec.template.spec.instanceId cannot be set in a pool" in refused.stderr
    too_many = pool_manifest("bad-2", network, 501)
    refused = kube.apply(too_many, check=False)
    assert refused.returncode != 0 and "spec.replicas" in refused.stderr
    no_ami = pool_manifest("bad-3", network, 1)
    del no_ami["spec"]["template"]["spec"]["amiId"]
    refused = kube.apply(no_ami, check=False)
    assert refused.returncode != 0 and "exactly one of spec.template.spec.amiId and spec.template.spec.amiName" \
        in refused.stderr


def test_scale_up_down_with_kubectl_scale_and_to_zero(kube, network, aws, operator):
    kube.apply(pool_manifest("lab", network, 3))
    body = wait_pool_ready(kube, "lab", 3)
    status = body["status"]
    assert status["selector"] == "cml.dev/pool=lab" and status["updatedReplicas"] == 3
    assert status["outdatedReplicas"] == 0 and status["observedGeneration"] == body["metadata"]["generation"]
    made = children(kube, "lab")
    for child in made:
        meta = child["metadata"]
        assert meta["name"].startswith("lab-") and len(meta["name"]) == len("lab-") + 5
        assert meta["labels"] == {"cml.dev/pool": "lab", "course": "ccna"}
        [owner] = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "CMLWorkerPool", "lab", body["metadata"]["uid"], True)
    instances = pool_instances(aws, kube, "lab")
    assert len(set(instances.values())) == 3
    wait_for(lambda: "WorkersCreated" in kube.event_reasons("lab"), 15, what="the WorkersCreated event")

    # The scale subresource: what `kubectl scale` and an autoscaler use.
    scale = json.loads(kube.run("get", "--raw", f"/apis/cml.dev/v1alpha1/namespaces/{kube.namespace}"
                                "/cmlworkerpools/lab/scale").stdout)
    assert (scale["spec"]["replicas"], scale["status"]["replicas"], scale["status"]["selector"]) == (
        3, 3, "cml.dev/pool=lab")
    survivor = scale_down_order([Child.from_body(c) for c in made])[-1].name  # the last one the order removes
    kube.run("scale", "cmlworkerpool/lab", "--replicas=1")
    wait_pool_ready(kube, "lab", 1)
    [kept] = children(kube, "lab")
    assert kept["metadata"]["name"] == survivor
    for name, instance_id in instances.items():
        if name != survivor:
            wait_for(lambda: state_of(aws, instance_id) in ("shutting-down", "terminated"), 30,
                     what=f"{name}'s instance terminated")
    assert state_of(aws, instances[survivor]) == "running"
    wait_for(lambda: "WorkersDeleted" in kube.event_reasons("lab"), 15, what="the WorkersDeleted event")

    kube.run("scale", "cmlworkerpool/lab", "--replicas=0")
    body = wait_pool_ready(kube, "lab", 0)
    assert body["status"]["conditions"][0]["message"] == "0 of 0 workers ready"
    wait_for(lambda: state_of(aws, instances[survivor]) in ("shutting-down", "terminated"), 30,
             what="the last instance terminated")

    kube.run("scale", "cmlworkerpool/lab", "--replicas=2")
    wait_pool_ready(kube, "lab", 2)
    assert not set(pool_instances(aws, kube, "lab").values()) & set(instances.values())


def test_template_changes_roll_mutable_fields_and_count_outdated_children(kube, network, aws, operator):
    kube.apply(pool_manifest("roll", network, 2))
    wait_pool_ready(kube, "roll", 2)
    before = pool_instances(aws, kube, "roll")

    # Mutable fields reach every child and its instance in place.
    kube.run("patch", "cmlworkerpool", "roll", "--type=merge", "-p", json.dumps(
        {"spec": {"template": {"metadata": {"labels": {"cohort": "b"}},
                               "spec": {"tags": {"team": "b", "cost": "lab"}, "instanceType": "m5.xlarge"}}}}))

    def rolled() -> bool:
        current = children(kube, "roll")
        return len(current) == 2 and all(
            c["spec"]["tags"] == {"team": "b", "cost": "lab"} and c["spec"]["instanceType"] == "m5.xlarge"
            and c["metadata"]["labels"].get("cohort") == "b" for c in current)

    wait_for(rolled, 30, what="the template rolled to both children")
    for instance_id in before.values():
        def applied(instance_id: str = instance_id) -> bool:
            raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
            tags = tags_of(aws, instance_id)
            return raw["InstanceType"] == "m5.xlarge" and tags.get("team") == "b" and tags.get("cost") == "lab"
        wait_for(applied, 60, what=f"{instance_id} resized and retagged")
    body = wait_pool_ready(kube, "roll", 2)
    assert pool_instances(aws, kube, "roll") == before  # the same instances, changed in place
    assert (body["status"]["updatedReplicas"], body["status"]["outdatedReplicas"]) == (2, 0)

    # An immutable field affects new children only; the others are counted as outdated.
    image = own_image(aws, network["subnet"], name="cml-test-image-2")["ami"]  # amiOwners defaults to [self]
    kube.run("patch", "cmlworkerpool", "roll", "--type=merge", "-p",
             json.dumps({"spec": {"template": {"spec": {"amiId": image}}}}))
    wait_for(lambda: (pool(kube, "roll").get("status") or {}).get("outdatedReplicas") == 2, 20,
             what="two outdated children")
    assert all(c["spec"]["amiId"] == network["ami"] for c in children(kube, "roll"))

    # Replacing one: delete it; the pool makes a new one from the current template.
    old = sorted(before)[0]
    kube.delete(old)
    body = wait_pool_ready(kube, "roll", 2)
    wait_for(lambda: (pool(kube, "roll").get("status") or {}).get("outdatedReplicas") == 1, 20,
             what="one outdated child left")
    fresh = [c for c in children(kube, "roll") if c["metadata"]["name"] not in before]
    assert len(fresh) == 1 and fresh[0]["spec"]["amiId"] == image
    assert pool(kube, "roll")["status"]["updatedReplicas"] == 1

    # updateStrategy RollingUpdate: the operator replaces the last outdated child itself.
    [last_old] = [name for name in before if name != old]
    kube.run("patch", "cmlworkerpool", "roll", "--type=merge", "-p",
             json.dumps({"spec": {"updateStrategy": {"type": "RollingUpdate"}}}))
    wait_for(lambda: not kube.exists(last_old), 60, what=f"outdated {last_old} replaced")
    body = wait_pool_ready(kube, "roll", 2)
    assert (body["status"]["updatedReplicas"], body["status"]["outdatedReplicas"]) == (2, 0)
    assert all(c["spec"]["amiId"] == image for c in children(kube, "roll"))
    assert state_of(aws, before[last_old]) in ("shutting-down", "terminated")


def test_deleting_the_pool_deletes_its_children_and_terminates_their_instances(kube, network, aws, operator):
    kube.apply(pool_manifest("gone", network, 2))
    wait_pool_ready(kube, "gone", 2)
    instances = pool_instances(aws, kube, "gone")

    kube.run("delete", "cmlworkerpool", "gone", "--wait=true", "--timeout=60s")
    wait_for(lambda: not children(kube, "gone", live_only=False), 60, what="the children gone")
    for instance_id in instances.values():
        assert state_of(aws, instance_id) in ("shutting-down", "terminated")


def test_a_pool_whose_children_all_stall_for_one_reason_is_stalled_with_it(kube, network, proxy, operator):
    proxy.set_faults(FaultRule(code="InstanceLimitExceeded", action="RunInstances"))
    kube.apply(pool_manifest("quota", network, 2))

    def stalled() -> dict | None:
        status = pool(kube, "quota").get("status") or {}
        condition = {c["type"]: c for c in status.get("conditions", [])}.get("Stalled", {})
        return condition if condition.get("status") == "True" else None

    condition = wait_for(stalled, 60, what="the pool Stalled")
    assert condition["reason"] == "QuotaExceeded" and "2 of 2 workers stalled (QuotaExceeded)" in condition["message"]
    ready = {c["type"]: c for c in pool(kube, "quota")["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "QuotaExceeded"

    proxy.clear_faults()  # the quota is raised: the children retry on their slow recheck and the pool follows
    wait_pool_ready(kube, "quota", 2)
