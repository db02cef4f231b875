"""Pure decisions: (spec, status, observation) -> actions and health, case by case."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from cml_operator.ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from cml_operator.reconcile import reasons
from cml_operator.reconcile.conditions import HealthState, build_conditions
from cml_operator.reconcile.recovery import Recovery
from cml_operator.reconcile.spec import SpecError, parse_spec
from cml_operator.reconcile.actions import (
    Launch,
    ModifySecurityGroups,
    ModifyType,
    RemoveOwnershipTags,
    SetMetadataOptions,
    SetMonitoring,
    Start,
    Stop,
    SyncTags,
    Terminate,
)
from cml_operator.reconcile.worker import (
    Observation,
    WorkerRef,
    WorkerStatus,
    attempt_of_token,
    client_token,
    decide,
    decide_deletion,
    desired_tags,
)

REF = WorkerRef(uid="0f8e7a5c-1111-2222-3333-444455556666", namespace="lab", name="w1", generation=2,
                may_adopt=True)  # the adoption flag has tests of its own (test_adoption.py)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
IID = "i-0123456789abcdef0"


def spec(**overrides):
    raw = {"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678",
           "securityGroupIds": ["sg-12345678"], "tags": {"team": "netops"}}
    raw.update(overrides)
    return parse_spec(raw)


def instance(state="running", instance_type="m5zn.metal", tags=None, groups=("sg-12345678",),
             monitoring="enabled", iid=IID):
    wanted = desired_tags(REF, spec()) if tags is None else tags
    return CMLWorkerInstanceDto(
        aws_instance_id=iid, aws_region="us-east-1", instance_name="lab/w1", ami_id="ami-12345678",
        ami_name=None, instance_type=instance_type, security_group_ids=list(groups), subnet_id="subnet-12345678",
        instance_state=state, public_ip=None, private_ip="10.0.0.5", key_pair_name=None, tags=dict(wanted),
        monitoring=monitoring, launch_time="2026-11-25T11:00:00+00:00",
    )


OK = InstanceStatusChecks(IID, "ok", "ok")
TRACKED = WorkerStatus(instance_id=IID, instance_state="running", phase="Running", managed_tag_keys=("team",))


def observed(dto=None, checks=OK):
    return Observation(IID, dto, checks)


# ---------------------------------------------------------------- creation


def test_no_instance_launches_with_the_uid_token_and_all_tags():
    plan = decide(REF, spec(), WorkerStatus(), None, NOW)

    assert plan.actions == (Launch(client_token(REF.uid, 0), desired_tags(REF, spec())),)
    assert plan.health.state is HealthState.RECONCILING and plan.health.reason == reasons.PROVISIONING
    tags = plan.actions[0].tags
    assert tags["cml.dev/worker-uid"] == REF.uid
    assert tags["cml.dev/worker"] == "lab/w1" and tags["cml.dev/managed-by"] == "cml-operator"
    assert tags["Name"] == "lab/w1" and tags["team"] == "netops"


def test_an_instance_found_by_uid_records_the_attempt_of_its_token():
    found = replace(instance(), client_token=client_token(REF.uid, 3))

    plan = decide(REF, spec(instance_type="m5zn.metal"), WorkerStatus(creation_attempt=1), observed(found), NOW)

    assert plan.instance_id == IID and plan.creation_attempt == 3


def test_a_found_instance_with_a_foreign_token_keeps_the_status_attempt():
    found = replace(instance(), client_token="terraform-7")

    plan = decide(REF, spec(), WorkerStatus(creation_attempt=2), observed(found), NOW)

    assert plan.creation_attempt == 2


@pytest.mark.parametrize(("token", "attempt"), [(f"{REF.uid}-0", 0), (f"{REF.uid}-12", 12), (None, None),
                                                ("other-uid-1", None), (f"{REF.uid}-x", None)])
def test_attempt_of_token_reads_back_client_token(token, attempt):
    assert attempt_of_token(REF.uid, token) == attempt


@pytest.mark.parametrize(("observed_imds", "wanted", "action"), [
    (("optional", 1), {}, SetMetadataOptions("required", 1)),  # IMDSv1 opened outside: closed again
    (("required", 1), {"httpTokens": "optional", "httpPutResponseHopLimit": 2}, SetMetadataOptions("optional", 2)),
    (("required", 1), {}, None),
    ((None, None), {}, None),  # EC2 did not report them: nothing to compare
])
def test_metadata_options_are_kept_in_sync(observed_imds, wanted, action):
    dto = replace(instance(), metadata_http_tokens=observed_imds[0], metadata_hop_limit=observed_imds[1])

    plan = decide(REF, spec(instanceType="m5zn.metal", metadataOptions=wanted), TRACKED, observed(dto), NOW)

    assert [a for a in plan.actions if isinstance(a, SetMetadataOptions)] == ([action] if action else [])


def test_a_user_name_tag_wins_over_the_default():
    assert desired_tags(REF, spec(tags={"Name": "cml-lab"}))["Name"] == "cml-lab"


def test_invalid_spec_stalls_without_actions():
    plan = decide(REF, SpecError("spec.amiId", "exactly one of ..."), WorkerStatus(), None, NOW)
    assert plan.actions == () and plan.health.state is HealthState.STALLED
    assert plan.health.reason == reasons.INVALID_PARAMETER and "spec.amiId" in plan.health.message


#: A worker whose instance had reached Ready: losing it is a replacement, not a failed launch.
WAS_READY = replace(TRACKED, recovery=Recovery(ready_instance_id=IID))


def test_a_tracked_instance_that_vanished_is_replaced_with_a_new_token():
    status = replace(WAS_READY, creation_attempt=0)
    plan = decide(REF, spec(), status, observed(None), NOW)

    assert isinstance(plan.actions[0], Launch) and plan.actions[0].client_token == client_token(REF.uid, 1)
    assert plan.creation_attempt == 1
    assert [n.reason for n in plan.notes] == [reasons.EVENT_LOST] and plan.notes[0].type == "Warning"
    assert len(plan.recovery.replacement_times) == 1


@pytest.mark.parametrize("state", ["shutting-down", "terminated"])
def test_an_instance_terminated_outside_the_operator_is_replaced(state):
    plan = decide(REF, spec(), WAS_READY, observed(instance(state)), NOW)
    assert isinstance(plan.actions[0], Launch)
    assert state in plan.notes[0].message


def test_not_found_right_after_launch_is_eventual_consistency_not_a_loss():
    status = WorkerStatus(instance_id=IID, instance_state="pending", launch_time="2026-11-25T11:59:30Z")
    plan = decide(REF, spec(), status, observed(None), NOW)
    assert plan.actions == () and plan.poll_soon and plan.instance_id == IID


def test_not_found_after_the_grace_period_is_a_failed_launch():
    status = WorkerStatus(instance_id=IID, instance_state="pending",
                          launch_time=(NOW - timedelta(minutes=10)).isoformat())
    plan = decide(REF, spec(), status, observed(None), NOW)
    assert plan.actions == () and plan.health.reason == reasons.LAUNCH_FAILED
    assert plan.recovery.failed_launches == 1 and plan.instance_id is None


def test_an_adopted_instance_that_vanished_stalls_instance_not_found():
    plan = decide(REF, spec(instanceId=IID), WorkerStatus(instance_id=IID, adopted=True), observed(None), NOW)
    assert plan.actions == () and plan.health.state is HealthState.STALLED
    assert plan.health.reason == reasons.INSTANCE_NOT_FOUND and IID in plan.health.message


def test_adopting_an_existing_instance_by_spec_instance_id_retags_it():
    foreign = instance(tags={"Name": "hand-made"})
    plan = decide(REF, spec(instanceId=IID), WorkerStatus(), observed(foreign), NOW)

    assert plan.adopted and plan.instance_id == IID
    sync = plan.actions[0]
    assert isinstance(sync, SyncTags) and sync.add["cml.dev/worker-uid"] == REF.uid
    assert reasons.EVENT_ADOPTED in [n.reason for n in plan.notes]


def test_spec_instance_id_conflicting_with_the_tracked_instance_stalls():
    plan = decide(REF, spec(instanceId="i-0fffffffffffffff0"), TRACKED, observed(instance()), NOW)
    assert plan.health.reason == reasons.INVALID_PARAMETER and "spec.instanceId" in plan.health.message


# ---------------------------------------------------------------- lifecycle


def test_running_with_ok_checks_is_ready_and_does_nothing():
    plan = decide(REF, spec(), TRACKED, observed(instance()), NOW)
    assert plan.actions == () and plan.health.state is HealthState.READY
    assert plan.health.reason == reasons.INSTANCE_READY and not plan.poll_soon


@pytest.mark.parametrize("checks", [None, InstanceStatusChecks(IID, "initializing", "ok"),
                                    InstanceStatusChecks(IID, "ok", "insufficient-data")])
def test_running_without_ok_checks_waits_for_them(checks):
    plan = decide(REF, spec(), TRACKED, observed(instance(), checks), NOW)
    assert plan.actions == () and plan.health.reason == reasons.STATUS_CHECKS_PENDING and plan.poll_soon


@pytest.mark.parametrize("checks", [InstanceStatusChecks(IID, "ok", "impaired"),
                                    InstanceStatusChecks(IID, "impaired", "initializing")])
def test_an_impaired_check_is_reported_as_such_with_one_warning_per_transition(checks):
    first = decide(REF, spec(), TRACKED, observed(instance(), checks), NOW)

    assert first.actions == ()
    assert first.health.state is HealthState.RECONCILING and first.health.reason == reasons.STATUS_CHECK_IMPAIRED
    assert f"system {checks.system}, instance {checks.instance}" in first.health.message
    assert [(n.type, n.reason) for n in first.notes] == [("Warning", reasons.STATUS_CHECK_IMPAIRED)]

    still = replace(TRACKED, conditions=tuple(build_conditions(None, first.health, 2)))
    again = decide(REF, spec(), still, observed(instance(), checks), NOW)
    assert again.health.reason == reasons.STATUS_CHECK_IMPAIRED and again.notes == ()

    healed = decide(REF, spec(), still, observed(instance(), OK), NOW)
    assert healed.health.state is HealthState.READY


def test_pending_waits_as_provisioning_after_creation_and_starting_after_a_stop():
    fresh = decide(REF, spec(), WorkerStatus(instance_id=IID, phase="Provisioning"), observed(instance("pending")), NOW)
    restart = decide(REF, spec(), replace(TRACKED, phase="Stopped"), observed(instance("pending")), NOW)
    assert fresh.actions == restart.actions == ()
    assert fresh.health.reason == reasons.PROVISIONING and restart.health.reason == reasons.STARTING


def test_desired_stopped_stops_a_running_instance():
    plan = decide(REF, spec(desiredState="Stopped"), TRACKED, observed(instance()), NOW)
    assert plan.actions == (Stop(),) and plan.health.reason == reasons.STOPPING
    assert plan.notes == () and [(i, n.reason) for i, n in plan.after] == [(0, reasons.EVENT_STOPPING)]


def test_desired_stopped_and_stopped_is_ready():
    plan = decide(REF, spec(desiredState="Stopped"), TRACKED, observed(instance("stopped"), None), NOW)
    assert plan.actions == () and plan.health.state is HealthState.READY
    assert plan.health.reason == reasons.INSTANCE_STOPPED


def test_desired_running_starts_a_stopped_instance():
    plan = decide(REF, spec(), TRACKED, observed(instance("stopped"), None), NOW)
    assert plan.actions == (Start(),) and plan.health.reason == reasons.STARTING


@pytest.mark.parametrize("desired", ["Running", "Stopped"])
def test_never_fights_a_stopping_instance(desired):
    plan = decide(REF, spec(desiredState=desired), TRACKED, observed(instance("stopping"), None), NOW)
    assert plan.actions == () and plan.poll_soon


def test_resize_stops_a_running_instance_first():
    plan = decide(REF, spec(instanceType="m5.large"), TRACKED, observed(instance()), NOW)
    assert plan.actions == (Stop(resize_to="m5.large"),) and plan.health.reason == reasons.RESIZING
    assert [(i, n.reason) for i, n in plan.after] == [(0, reasons.EVENT_RESIZING)]


def test_resize_of_a_stopped_instance_modifies_then_starts():
    plan = decide(REF, spec(instanceType="m5.large"), TRACKED, observed(instance("stopped"), None), NOW)
    assert plan.actions == (ModifyType("m5.large"), Start())


def test_resize_while_desired_stopped_modifies_only():
    plan = decide(REF, spec(instanceType="m5.large", desiredState="Stopped"), TRACKED,
                  observed(instance("stopped"), None), NOW)
    assert plan.actions == (ModifyType("m5.large"),) and plan.health.state is HealthState.READY


# ---------------------------------------------------------------- drift of attributes


def test_tags_added_changed_and_removed_from_spec_are_synced_foreign_tags_kept():
    observed_tags = {**desired_tags(REF, spec()), "team": "old", "gone": "x", "aws:cloudformation:stack": "s"}
    status = replace(TRACKED, managed_tag_keys=("team", "gone"))
    plan = decide(REF, spec(tags={"team": "netops", "env": "lab"}), status,
                  observed(instance(tags=observed_tags)), NOW)

    sync = plan.actions[0]
    assert sync == SyncTags(add={"team": "netops", "env": "lab"}, remove=("gone",))
    assert plan.health.state is HealthState.READY  # tags are fixed in the same pass


def test_a_removed_ownership_tag_is_put_back():
    tags = desired_tags(REF, spec())
    del tags["cml.dev/worker-uid"]
    plan = decide(REF, spec(), TRACKED, observed(instance(tags=tags)), NOW)
    assert plan.actions == (SyncTags(add={"cml.dev/worker-uid": REF.uid}),)


def test_security_group_and_monitoring_drift_are_corrected_when_settled():
    plan = decide(REF, spec(securityGroupIds=["sg-87654321"], detailedMonitoring=False), TRACKED,
                  observed(instance()), NOW)
    assert ModifySecurityGroups(("sg-87654321",)) in plan.actions and SetMonitoring(False) in plan.actions


def test_no_attribute_changes_during_a_transition():
    plan = decide(REF, spec(securityGroupIds=["sg-87654321"]), TRACKED, observed(instance("pending")), NOW)
    assert plan.actions == ()


# ---------------------------------------------------------------- deletion


def test_deleting_a_worker_without_instance_releases_at_once():
    plan = decide_deletion("Delete", WorkerStatus(), None)
    assert plan.release and plan.actions == ()


@pytest.mark.parametrize("state", ["running", "stopped", "pending", "stopping"])
def test_delete_policy_terminates_a_live_instance_and_holds_the_finalizer(state):
    plan = decide_deletion("Delete", TRACKED, observed(instance(state)))
    assert plan.actions == (Terminate(),) and not plan.release


@pytest.mark.parametrize("state", ["shutting-down", "terminated"])
def test_delete_policy_releases_once_the_instance_is_going(state):
    plan = decide_deletion("Delete", TRACKED, observed(instance(state)))
    assert plan.release and plan.actions == ()


def test_delete_releases_when_the_instance_no_longer_exists():
    assert decide_deletion("Delete", TRACKED, observed(None)).release


def test_retain_policy_removes_ownership_tags_and_releases():
    plan = decide_deletion("Retain", TRACKED, observed(instance()))
    assert plan.actions == (RemoveOwnershipTags(),) and plan.release
    assert plan.notes[0].reason == reasons.EVENT_RETAINED


def test_client_token_fits_ec2s_limit():
    assert len(client_token(REF.uid, 12345)) <= 64
    assert client_token(REF.uid, 0) != client_token(REF.uid, 1)
