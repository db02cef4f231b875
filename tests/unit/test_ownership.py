"""May this worker touch that instance? The ownership table, and the decisions built on it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from cml_operator.ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from cml_operator.reconcile import reasons
from cml_operator.reconcile.conditions import HealthState
from cml_operator.reconcile.ownership import (
    MAX_TAG_VALUE,
    TAG_CLUSTER,
    TAG_UID,
    TAG_WORKER,
    Verdict,
    ownership,
    worker_tag_value,
)
from cml_operator.reconcile.spec import parse_spec
from cml_operator.reconcile.actions import RemoveOwnershipTags, Stop, SyncTags, Terminate
from cml_operator.reconcile.worker import (
    Observation,
    WorkerRef,
    WorkerStatus,
    decide,
    decide_deletion,
    desired_tags,
)

UID, OTHER_UID = "uid-mine", "uid-theirs"
CLUSTER, OTHER_CLUSTER = "cluster-a", "cluster-b"
REF = WorkerRef(uid=UID, namespace="lab", name="w1", cluster_id=CLUSTER, may_adopt=True)
IID = "i-0123456789abcdef0"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("tags", "verdict"), [
    ({TAG_UID: UID, TAG_CLUSTER: CLUSTER}, Verdict.OURS),
    ({TAG_UID: UID}, Verdict.OURS),  # tagged by a release before cml.dev/cluster: ours, the tag is added
    ({}, Verdict.UNCLAIMED),
    ({TAG_CLUSTER: CLUSTER}, Verdict.UNCLAIMED),
    ({TAG_UID: ""}, Verdict.UNCLAIMED),
    ({"Name": "hand-made"}, Verdict.UNCLAIMED),
    ({TAG_UID: OTHER_UID, TAG_CLUSTER: CLUSTER}, Verdict.OTHER_WORKER),
    ({TAG_UID: OTHER_UID}, Verdict.OTHER_WORKER),
    ({TAG_UID: UID, TAG_CLUSTER: OTHER_CLUSTER}, Verdict.OTHER_CLUSTER),  # same uid, other cluster: foreign
    ({TAG_UID: OTHER_UID, TAG_CLUSTER: OTHER_CLUSTER}, Verdict.OTHER_CLUSTER),
    ({TAG_CLUSTER: OTHER_CLUSTER}, Verdict.OTHER_CLUSTER),
])
def test_ownership_is_judged_from_the_worker_uid_and_cluster_tags(tags, verdict):
    assert ownership(tags, UID, CLUSTER).verdict is verdict


def test_the_owner_is_named_for_people():
    owner = ownership({TAG_UID: OTHER_UID, TAG_WORKER: "team-b/w9"}, UID, CLUSTER)
    assert owner.foreign and owner.owner == f"team-b/w9 (uid {OTHER_UID})"
    cluster = ownership({TAG_UID: OTHER_UID, TAG_CLUSTER: OTHER_CLUSTER, TAG_WORKER: "x/y"}, UID, CLUSTER)
    assert cluster.owner == f"cluster {OTHER_CLUSTER}, worker x/y"


@pytest.mark.parametrize(("namespace", "name"), [("ns", "n" * 250), ("n" * 63, "w" * 253)])
def test_a_long_worker_tag_is_shortened_deterministically_with_a_hash(namespace, name):
    value = worker_tag_value(namespace, name)
    assert len(value) <= MAX_TAG_VALUE
    assert value == worker_tag_value(namespace, name)
    assert value != worker_tag_value(namespace, name[:-1] + "x")  # same prefix, other worker: other value
    assert value.startswith(f"{namespace}/")


def test_a_short_worker_tag_is_namespace_slash_name():
    assert worker_tag_value("lab", "w1") == "lab/w1"


def test_every_launch_carries_the_cluster_tag():
    tags = desired_tags(REF, parse_spec(SPEC))
    assert tags[TAG_CLUSTER] == CLUSTER and tags[TAG_UID] == UID


# ---------------------------------------------------------------- decisions

SPEC = {"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678"}


def _instance(tags, state="running"):
    return CMLWorkerInstanceDto(
        aws_instance_id=IID, aws_region="us-east-1", instance_name=None, ami_id="ami-12345678", ami_name=None,
        instance_type="m5zn.metal", security_group_ids=[], subnet_id="subnet-12345678", instance_state=state,
        public_ip=None, private_ip=None, key_pair_name=None, tags=dict(tags), monitoring="enabled")


def _observed(tags, state="running"):
    return Observation(IID, _instance(tags, state), InstanceStatusChecks(IID, "ok", "ok"))


THEIRS = {TAG_UID: OTHER_UID, TAG_WORKER: "team-b/w9", TAG_CLUSTER: CLUSTER}
OTHER_CLUSTERS = {TAG_UID: UID, TAG_CLUSTER: OTHER_CLUSTER}


@pytest.mark.parametrize("tags", [THEIRS, OTHER_CLUSTERS])
@pytest.mark.parametrize("status", [WorkerStatus(), WorkerStatus(instance_id=IID)])
def test_adopting_or_tracking_a_foreign_instance_stalls_without_any_call(tags, status):
    spec = parse_spec({**SPEC, "instanceId": IID, "desiredState": "Stopped"})
    plan = decide(REF, spec, status, _observed(tags), NOW)
    assert plan.actions == ()
    assert plan.health.state is HealthState.STALLED and plan.health.reason == reasons.INSTANCE_OWNED_BY_OTHER
    assert IID in plan.health.message and ("team-b/w9" in plan.health.message or OTHER_CLUSTER in plan.health.message)


def test_an_unclaimed_instance_named_by_spec_is_claimed_first():
    spec = parse_spec({**SPEC, "instanceId": IID, "desiredState": "Stopped"})
    plan = decide(REF, spec, WorkerStatus(), _observed({"Name": "hand-made"}), NOW)
    claim, stop = plan.actions[0], plan.actions[1]
    assert isinstance(claim, SyncTags) and claim.add[TAG_UID] == UID and claim.add[TAG_CLUSTER] == CLUSTER
    assert stop == Stop()


def test_our_instance_without_the_tags_the_iam_policy_needs_is_stalled_naming_them_and_the_fix():
    # deploy/iam-policy.json allows CreateTags (and every other change) only on an instance that already
    # carries managed-by and cluster: the operator cannot add them itself, a person must (docs/install.md).
    plan = decide(REF, parse_spec({**SPEC, "desiredState": "Stopped"}), WorkerStatus(instance_id=IID),
                  _observed({TAG_UID: UID}), NOW)
    assert plan.actions == ()
    assert plan.health.state is HealthState.STALLED and plan.health.reason == reasons.MANAGED_TAG_MISSING
    assert f"cml.dev/managed-by=cml-operator and {TAG_CLUSTER}={CLUSTER}" in plan.health.message
    assert (f"aws ec2 create-tags --resources {IID} --tags Key=cml.dev/managed-by,Value=cml-operator "
            f"Key={TAG_CLUSTER},Value={CLUSTER}") in plan.health.message
    assert plan.recheck_after is not None and [n.reason for n in plan.notes] == [reasons.MANAGED_TAG_MISSING]


def test_an_instance_of_ours_with_only_managed_by_removed_names_that_tag_alone():
    tags = {**desired_tags(REF, parse_spec(SPEC))}
    del tags["cml.dev/managed-by"]
    plan = decide(REF, parse_spec(SPEC), WorkerStatus(instance_id=IID), _observed(tags), NOW)
    assert plan.actions == () and plan.health.reason == reasons.MANAGED_TAG_MISSING
    assert "lacks the tag cml.dev/managed-by=cml-operator, which" in plan.health.message


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
def test_deleting_a_worker_whose_instance_lost_managed_by_keeps_the_finalizer_and_says_why(policy):
    tags = {**desired_tags(REF, parse_spec(SPEC))}
    del tags["cml.dev/managed-by"]
    plan = decide_deletion(policy, WorkerStatus(instance_id=IID), _observed(tags), REF)
    assert plan.actions == () and not plan.release and plan.blocked == reasons.MANAGED_TAG_MISSING
    assert "aws ec2 create-tags" in plan.message and "finalizer stays" in plan.message
    assert [(n.type, n.reason) for n in plan.notes] == [("Warning", reasons.MANAGED_TAG_MISSING)]


def test_power_state_comes_before_user_tags():
    mine = desired_tags(REF, parse_spec(SPEC))
    plan = decide(REF, parse_spec({**SPEC, "desiredState": "Stopped", "tags": {"team": "x"}}),
                  WorkerStatus(instance_id=IID), _observed(mine), NOW)
    assert plan.actions == (Stop(), SyncTags({"team": "x"}))
    assert [(i, n.reason) for i, n in plan.after] == [(0, reasons.EVENT_STOPPING), (1, reasons.EVENT_UPDATED)]


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
@pytest.mark.parametrize("tags", [THEIRS, OTHER_CLUSTERS])
def test_deleting_a_worker_leaves_a_foreign_instance_untouched(policy, tags):
    plan = decide_deletion(policy, WorkerStatus(instance_id=IID), _observed(tags), REF)
    assert plan.actions == () and plan.release and "untouched" in plan.message


@pytest.mark.parametrize(("policy", "action"), [("Delete", Terminate()), ("Retain", RemoveOwnershipTags())])
def test_deleting_a_worker_acts_on_its_own_instance(policy, action):
    tags = {TAG_UID: UID, TAG_CLUSTER: CLUSTER, "cml.dev/managed-by": "cml-operator"}
    plan = decide_deletion(policy, WorkerStatus(instance_id=IID), _observed(tags), REF)
    assert plan.actions == (action,)


def test_a_ready_instance_is_remembered_for_the_replacement_bound():
    status = replace(WorkerStatus(instance_id=IID), managed_tag_keys=())
    plan = decide(REF, parse_spec({**SPEC, "detailedMonitoring": True}), status,
                  _observed(desired_tags(REF, parse_spec(SPEC))), NOW)
    assert plan.health.state is HealthState.READY and plan.recovery.ready_instance_id == IID


# ---------------------------------------------------------------- 5. re-attach after a backup and restore

RESTORED = WorkerRef(uid="uid-new", namespace="lab", name="w1", cluster_id=CLUSTER, recorded_instance_id=IID)
OLD_TAGS = {TAG_UID: "uid-old", TAG_WORKER: "lab/w1", TAG_CLUSTER: CLUSTER, "cml.dev/managed-by": "cml-operator"}


@pytest.mark.parametrize(("ref", "tags", "reattach"), [
    (RESTORED, OLD_TAGS, True),
    (replace(RESTORED, name="copy"), OLD_TAGS, False),  # a manifest copied under another name
    (replace(RESTORED, recorded_instance_id=None), OLD_TAGS, False),  # no annotation: no claim
    (RESTORED, {**OLD_TAGS, TAG_CLUSTER: OTHER_CLUSTER}, False),  # another cluster's instance
    (RESTORED, {k: v for k, v in OLD_TAGS.items() if k != TAG_CLUSTER}, False),  # cluster unknown: not proven
])
def test_a_restored_worker_takes_back_only_its_own_instance(ref, tags, reattach):
    spec = parse_spec(SPEC)
    plan = decide(ref, spec, WorkerStatus(), _observed(tags), NOW)
    if reattach:
        assert plan.instance_id == IID and plan.actions[0].add[TAG_UID] == "uid-new"
        assert "re-attached" in plan.notes[0].message
    else:
        assert plan.actions == () and plan.health.reason == reasons.INSTANCE_OWNED_BY_OTHER
