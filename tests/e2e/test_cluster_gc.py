"""What kube-controller-manager does to our objects, for real: ownerReference cascades and namespace deletion.

The test control plane runs the garbage collector and the namespace controller
(tests/cluster/controlplane.py), as every real cluster does. These tests hold the
operator to what a cluster then does to its objects: children deleted by the
collector while the operator is down are finalized when it is back, an orphaning
delete keeps the workers and their instances, and deleting a whole namespace
(workers, pools, Secrets) releases the licence, terminates every instance and
leaves nothing behind.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME, CMLSimProcess
from tests.support.processes import wait_for

from .conftest import state_of, worker_manifest
from .test_pools import children, pool_instances, pool_manifest, wait_pool_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def sim(moto_server) -> Iterator[CMLSimProcess]:
    process = CMLSimProcess(ec2_endpoint=moto_server.url, boot_seconds=1.0).start()
    yield process
    process.stop()


def test_the_garbage_collector_deletes_a_pools_children_while_the_operator_is_down(kube, network, aws,
                                                                                  operator_factory):
    operator = operator_factory()
    kube.apply(pool_manifest("cascade", network, 2))
    wait_pool_ready(kube, "cascade", 2)
    instances = pool_instances(aws, kube, "cascade")
    operator.stop()  # nothing of ours runs: only the garbage collector can delete the children now

    kube.run("delete", "cmlworkerpool", "cascade", "--cascade=foreground", "--wait=false")
    wait_for(lambda: all(c["metadata"].get("deletionTimestamp") for c in children(kube, "cascade", False)), 60,
             what="the garbage collector to delete the pool's children")
    assert len(children(kube, "cascade", live_only=False)) == 2  # held by our finalizer until we are back

    operator_factory()
    wait_for(lambda: not children(kube, "cascade", live_only=False), 90, what="the children finalized")
    wait_for(lambda: kube.run("get", "cmlworkerpool", "cascade", "--ignore-not-found", "-o", "name",
                              check=False).stdout.strip() == "", 60, what="the pool gone (foreground: after them)")
    assert sorted(state_of(aws, i) for i in instances.values()) == ["terminated", "terminated"]


def test_an_orphaning_delete_of_a_pool_keeps_its_workers_and_their_instances(kube, network, aws, operator):
    kube.apply(pool_manifest("keep", network, 2))
    wait_pool_ready(kube, "keep", 2)
    instances = pool_instances(aws, kube, "keep")

    kube.run("delete", "cmlworkerpool", "keep", "--cascade=orphan", "--wait=true", "--timeout=60s")
    left = children(kube, "keep")
    assert sorted(c["metadata"]["name"] for c in left) == sorted(instances)
    assert [c["metadata"].get("ownerReferences") for c in left] == [None, None]  # the collector un-owned them
    assert sorted(state_of(aws, i) for i in instances.values()) == ["running", "running"]


def _secret(kube, name: str, **data: str) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def _namespace_gone(kube) -> bool:
    found = kube.plane.kubectl("get", "namespace", kube.namespace, "--ignore-not-found", "-o", "name", check=False)
    return found.returncode == 0 and found.stdout.strip() == ""


def test_deleting_a_namespace_releases_terminates_and_leaves_nothing_behind(kube, network, aws, sim,
                                                                           operator_factory):
    operator_factory("--cml-interval", "2", "--cml-starting-interval", "1", "--cml-timeout", "3")
    _secret(kube, "solo-login", username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    _secret(kube, "solo-token", token="namespace-licence-token")
    _secret(kube, "unrelated", note="deleted with the namespace")
    sim.configure("solo", registration_seconds=0.0)
    kube.apply(worker_manifest("solo", network, cml={
        "endpoint": sim.endpoint("solo"), "credentialsSecretRef": {"name": "solo-login"},
        "license": {"tokenSecretRef": {"name": "solo-token", "key": "token"}}}))
    kube.apply(pool_manifest("crew", network, 2))
    wait_pool_ready(kube, "crew", 2)
    kube.wait_condition("solo", "Ready", reason="CMLReady", timeout=90)
    assert sim.worker("solo")["license"]["registration"] == "COMPLETED"
    tagged = aws.describe_instances(Filters=[{"Name": "tag:cml.dev/worker", "Values": [f"{kube.namespace}/*"]}])
    instances = [i["InstanceId"] for r in tagged["Reservations"] for i in r["Instances"]]
    assert len(instances) == 3

    kube.plane.kubectl("delete", "namespace", kube.namespace, "--wait=false")
    wait_for(lambda: _namespace_gone(kube), 120, what="the namespace gone, every finalizer released")

    assert sorted(state_of(aws, i) for i in instances) == ["terminated"] * 3
    solo = sim.worker("solo")
    assert solo["license"]["registration"] == "NOT_REGISTERED"  # released before the terminate, not after
    assert solo["calls"].get("DELETE licensing/deregistration") == 1 and not solo["refused"]
    leftovers: dict[str, Any] = json.loads(kube.plane.kubectl(
        "get", "cmlworkers,cmlworkerpools,secrets", "-A", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in leftovers["items"] if i["metadata"]["namespace"] == kube.namespace] == []
