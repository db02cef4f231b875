"""Pure discovery decisions: which instances to import, the worker for each, when to scan, orphans."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cml_operator.ec2.models import CMLWorkerInstanceDto
from cml_operator.reconcile.discovery import (
    DiscoverySpec,
    find_orphans,
    orphan_action,
    scan_due,
    select_imports,
    tracked_instance_ids,
    worker_for_instance,
)

IMAGE = "ami-0aaaaaaaaaaaaaaaa"
SPEC = DiscoverySpec(region="us-east-1", ami_name_pattern="cml-*", tag_selector={"env": "lab"})
CLUSTER = "cluster-1"


def dto(iid: str, *, state: str = "running", image: str = IMAGE, tags: dict | None = None,
        groups: tuple[str, ...] = ("sg-12345678",), monitoring: str = "disabled") -> CMLWorkerInstanceDto:
    return CMLWorkerInstanceDto(
        aws_instance_id=iid, aws_region="us-east-1", instance_name=None, ami_id=image, ami_name=None,
        instance_type="t3.large", security_group_ids=list(groups), subnet_id="subnet-12345678",
        instance_state=state, public_ip=None, private_ip=None, key_pair_name=None,
        tags={"env": "lab"} if tags is None else tags, monitoring=monitoring)


def managed(iid: str, uid: str, *, cluster: str = CLUSTER, namespace: str = "lab", state: str = "running"):
    return dto(iid, state=state, tags={"cml.dev/worker-uid": uid, "cml.dev/worker": f"{namespace}/w",
                                       "cml.dev/managed-by": "cml-operator", "cml.dev/cluster": cluster})


@pytest.mark.parametrize(("instance", "tracked", "imported"), [
    (dto("i-1"), set(), True),
    (dto("i-1", state="stopped"), set(), True),
    (dto("i-1", state="pending"), set(), True),
    (dto("i-1", state="stopping"), set(), True),
    (dto("i-1", state="shutting-down"), set(), False),
    (dto("i-1", state="terminated"), set(), False),
    (dto("i-1", image="ami-0bbbbbbbbbbbbbbbb"), set(), False),  # not from a matching image
    (dto("i-1", tags={}), set(), False),  # lacks the selector's tag
    (dto("i-1", tags={"env": "prod"}), set(), False),
    (dto("i-1", tags={"env": "lab", "cml.dev/worker-uid": "x"}), set(), False),  # some worker manages it
    (dto("i-1"), {"i-1"}, False),  # a CMLWorker names it already
])
def test_which_instances_are_imported(instance, tracked, imported):
    selection = select_imports(SPEC, [IMAGE], [instance], tracked)
    assert bool(selection.to_import) is imported


def test_matched_counts_managed_instances_too_and_imports_are_bounded():
    instances = [dto(f"i-{n:02d}") for n in range(5)] + [dto("i-99", tags={"env": "lab", "cml.dev/worker-uid": "u"})]
    selection = select_imports(SPEC, [IMAGE], instances, set(), limit=3)
    assert len(selection.matched) == 6 and len(selection.candidates) == 5
    assert [d.aws_instance_id for d in selection.to_import] == ["i-00", "i-01", "i-02"]  # by id: deterministic


@pytest.mark.parametrize(("state", "desired"), [("running", "Running"), ("pending", "Running"),
                                                ("stopped", "Stopped"), ("stopping", "Stopped")])
def test_the_imported_worker_states_what_the_instance_is(state, desired):
    spec = DiscoverySpec(region="us-east-1", ami_name_pattern="cml-*", labels={"team": "a"},
                         worker_spec={"cml": {"idleStop": {"afterMinutes": 60}}})
    manifest = worker_for_instance(dto("i-0abc", state=state, monitoring="enabled"), spec, "scan", "lab")
    assert manifest["metadata"] == {"name": "i-0abc", "namespace": "lab",
                                    "labels": {"team": "a", "cml.dev/discovery": "scan"}}
    assert manifest["spec"] == {
        "region": "us-east-1", "instanceId": "i-0abc", "amiId": IMAGE, "instanceType": "t3.large",
        "desiredState": desired, "detailedMonitoring": True, "deletionPolicy": "Retain",
        "subnetId": "subnet-12345678", "securityGroupIds": ["sg-12345678"],
        "cml": {"idleStop": {"afterMinutes": 60}}}


def test_more_security_groups_than_a_worker_may_name_are_left_out():
    many = tuple(f"sg-0000000{n}" for n in range(6))
    assert "securityGroupIds" not in worker_for_instance(dto("i-1", groups=many), SPEC, "s", "ns")["spec"]


def test_deletion_policy_comes_from_the_template():
    spec = DiscoverySpec(region="us-east-1", ami_name_pattern="x", worker_spec={"deletionPolicy": "Delete"})
    assert worker_for_instance(dto("i-1"), spec, "s", "ns")["spec"]["deletionPolicy"] == "Delete"


def test_tracked_ids_come_from_spec_and_status():
    workers = [{"spec": {"instanceId": "i-1"}}, {"spec": {}, "status": {"instanceId": "i-2"}}, {"spec": {}}]
    assert tracked_instance_ids(workers) == {"i-1", "i-2"}


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("last", "due"), [
    (None, True), ("", True), ("garbage", True),
    ("2026-11-25T11:55:00Z", True),   # 300 s ago
    ("2026-11-25T11:56:00Z", False),  # 240 s ago
])
def test_scan_due(last, due):
    assert scan_due(last, 300, NOW) is due


@pytest.mark.parametrize(("instance", "orphan"), [
    (managed("i-1", "gone-uid"), True),
    (managed("i-1", "live-uid"), False),  # its worker exists
    (managed("i-1", "gone-uid", cluster="other"), False),  # another cluster's
    (managed("i-1", "gone-uid", state="terminated"), False),
    (managed("i-1", "gone-uid", state="shutting-down"), False),
    (managed("i-1", "gone-uid", state="stopped"), True),
    (dto("i-1", tags={"cml.dev/cluster": CLUSTER}), False),  # no worker uid: never managed
    (dto("i-1", tags={"cml.dev/cluster": CLUSTER, "cml.dev/worker-uid": "gone-uid"}), False),  # not cml-operator's
])
def test_orphans_are_this_clusters_live_instances_whose_worker_is_gone(instance, orphan):
    assert bool(find_orphans([instance], {"live-uid"}, CLUSTER)) is orphan


def test_no_cluster_id_means_no_orphans():
    assert find_orphans([managed("i-1", "gone-uid")], set(), "") == []


def test_with_watched_namespaces_only_their_instances_are_judged():
    instances = [managed("i-1", "u1", namespace="lab"), managed("i-2", "u2", namespace="elsewhere")]
    assert [d.aws_instance_id for d in find_orphans(instances, set(), CLUSTER, ("lab",))] == ["i-1"]


@pytest.mark.parametrize(("policy", "state", "age", "action"), [
    ("report", "running", 10_000, None),
    ("stop", "running", 10, None),  # within the grace
    ("stop", "running", 3600, "stop"),
    ("stop", "stopped", 3600, None),  # already stopped
    ("terminate", "stopped", 3600, "terminate"),
    ("terminate", "running", 3599, None),
])
def test_orphan_action_waits_out_the_grace(policy, state, age, action):
    assert orphan_action(policy, dto("i-1", state=state), first_seen=0.0, now=age, grace_seconds=3600) == action
