"""One instance per worker: which live instances are duplicates of a worker's (pure)."""

from __future__ import annotations

from dataclasses import replace

from cml_operator.ec2.models import CMLWorkerInstanceDto
from cml_operator.reconcile.duplicates import find_duplicates

CLUSTER = "c1"


def dto(iid: str, uid: str = "u1", state: str = "running", cluster: str = CLUSTER) -> CMLWorkerInstanceDto:
    tags = {"cml.dev/worker-uid": uid, "cml.dev/cluster": cluster, "cml.dev/managed-by": "cml-operator"}
    return CMLWorkerInstanceDto(aws_instance_id=iid, aws_region="us-east-1", instance_name=None, ami_id="ami-1",
                                ami_name=None, instance_type="m5.large", security_group_ids=[], subnet_id=None,
                                instance_state=state, public_ip=None, private_ip=None, key_pair_name=None, tags=tags)


def worker(uid: str = "u1", tracked: str | None = "i-a") -> dict:
    return {"metadata": {"uid": uid, "namespace": "lab", "name": "w1"},
            "status": {"instanceId": tracked} if tracked else {}}


def test_a_second_live_instance_with_the_workers_uid_is_a_duplicate():
    found = find_duplicates([dto("i-a"), dto("i-b", state="stopped")], [worker()], CLUSTER)
    assert [(d.instance.aws_instance_id, d.tracked_instance_id) for d in found] == [("i-b", "i-a")]


def test_the_tracked_instance_gone_or_not_yet_recorded_is_never_judged():
    # a replacement under way: the tracked instance is terminated, the new one not yet in status
    assert find_duplicates([dto("i-a", state="terminated"), dto("i-b")], [worker()], CLUSTER) == []
    # a launch whose status write is pending: the worker tracks nothing yet
    assert find_duplicates([dto("i-a"), dto("i-b")], [worker(tracked=None)], CLUSTER) == []


def test_only_live_instances_of_this_cluster_managed_by_the_operator_count():
    gone = dto("i-b", state="shutting-down")
    other_cluster = dto("i-c", cluster="elsewhere")
    unmanaged = replace(dto("i-d"), tags={"cml.dev/worker-uid": "u1", "cml.dev/cluster": CLUSTER})
    assert find_duplicates([dto("i-a"), gone, other_cluster, unmanaged], [worker()], CLUSTER) == []
    assert find_duplicates([dto("i-a"), dto("i-b")], [worker()], "") == []


def test_an_instance_of_no_worker_is_an_orphan_not_a_duplicate():
    assert find_duplicates([dto("i-a"), dto("i-z", uid="gone")], [worker()], CLUSTER) == []
