"""Pure decisions of issue 19's trust points: adoption is an administrator's opt-in, the deletion
policy follows how the worker got its instance, the region is recorded, restarts are bounded,
and a type change EC2 refused is not retried by stopping the worker again."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from cml_operator.reconcile import reasons
from cml_operator.reconcile.actions import ModifyType, SetMetadataOptions, Start, Stop, Terminate
from cml_operator.reconcile.adoption import adoption_allowed, parse_adoption_namespaces
from cml_operator.reconcile.conditions import HealthState
from cml_operator.reconcile.recovery import Limits, Recovery, restart_wait, restarted
from cml_operator.reconcile.spec import effective_deletion_policy
from cml_operator.reconcile.worker import WorkerStatus, decide, decide_deletion, desired_tags

from .test_worker import IID, NOW, REF, TRACKED, instance, observed, spec

NOT_ALLOWED = replace(REF, may_adopt=False)
UNTAGGED = {"Name": "by-hand"}


# ---------------------------------------------------------------- 1. adoption is an administrator's decision


def test_the_adoption_namespaces_flag_parses_a_list_or_a_star():
    assert parse_adoption_namespaces("") == ()
    assert parse_adoption_namespaces(" lab , ops,lab") == ("lab", "ops")
    assert parse_adoption_namespaces("lab,*") == ("*",)
    assert adoption_allowed("lab", ("lab",)) and adoption_allowed("any", ("*",))
    assert not adoption_allowed("lab", ()) and not adoption_allowed("lab", ("ops",))


def test_adopting_outside_the_allowed_namespaces_is_stalled_with_no_call_and_nothing_shown():
    plan = decide(NOT_ALLOWED, spec(instanceId=IID, desiredState="Stopped"), WorkerStatus(),
                  observed(instance(tags=UNTAGGED)), NOW)

    assert plan.actions == ()  # no tag, no stop
    assert plan.health.state is HealthState.STALLED and plan.health.reason == reasons.ADOPTION_NOT_ALLOWED
    assert "--adoption-namespaces" in plan.health.message and "lab" in plan.health.message
    assert plan.instance_id is None and plan.adopted is False and plan.shows_instance is False
    assert [n.reason for n in plan.notes] == [reasons.ADOPTION_NOT_ALLOWED]


def test_a_refused_adoption_of_an_instance_that_does_not_exist_says_adoption_first():
    plan = decide(NOT_ALLOWED, spec(instanceId=IID), WorkerStatus(), observed(None), NOW)
    assert plan.health.reason == reasons.ADOPTION_NOT_ALLOWED and plan.actions == ()


def test_an_instance_this_worker_claimed_before_stays_managed_whatever_the_flag_says():
    claimed = instance(tags=desired_tags(REF, spec(instanceId=IID)))
    plan = decide(NOT_ALLOWED, spec(instanceId=IID, desiredState="Stopped"),
                  replace(TRACKED, adopted=True), observed(claimed), NOW)
    assert plan.actions == (Stop(),)


def test_an_allowed_namespace_claims_the_named_instance():
    plan = decide(REF, spec(instanceId=IID), WorkerStatus(), observed(instance(tags=UNTAGGED)), NOW)
    assert plan.actions and plan.actions[0].add["cml.dev/worker-uid"] == REF.uid and plan.adopted


def test_unstated_deletion_policy_is_retain_for_adopted_and_delete_for_launched():
    assert effective_deletion_policy(None, IID) == "Retain"
    assert effective_deletion_policy(None, None) == "Delete"
    assert effective_deletion_policy("Delete", IID) == "Delete"
    assert effective_deletion_policy("Retain", None) == "Retain"
    assert spec(instanceId=IID).effective_deletion_policy == "Retain"


def test_deleting_a_worker_whose_named_instance_it_never_claimed_leaves_it_untouched():
    plan = decide_deletion("Delete", WorkerStatus(), observed(instance(tags=UNTAGGED)), NOT_ALLOWED,
                           adopted_instance_id=IID)
    assert plan.actions == () and plan.release and "never claimed" in plan.message
    # A launched instance whose tags were removed outside is still the worker's to terminate.
    launched = decide_deletion("Delete", TRACKED, observed(instance(tags=UNTAGGED)), REF)
    assert launched.actions == (Terminate(),)


def test_an_adopted_instance_keeps_its_metadata_options_unless_the_spec_states_them():
    adopted = instance(tags=desired_tags(REF, spec(instanceId=IID)))
    adopted = replace(adopted, metadata_http_tokens="optional", metadata_hop_limit=2)
    status = replace(TRACKED, adopted=True)
    kept = decide(REF, spec(instanceId=IID), status, observed(adopted), NOW)
    assert not any(isinstance(a, SetMetadataOptions) for a in kept.actions)

    stated = decide(REF, spec(instanceId=IID, metadataOptions={"httpTokens": "required"}), status,
                    observed(adopted), NOW)
    assert SetMetadataOptions("required", 2) in stated.actions  # only the stated field changes

    launched = replace(instance(), metadata_http_tokens="optional", metadata_hop_limit=2)
    assert SetMetadataOptions("required", 1) in decide(REF, spec(), TRACKED, observed(launched), NOW).actions


# ---------------------------------------------------------------- 5. the region is recorded


def test_a_spec_region_other_than_the_recorded_one_stalls_and_launches_nothing():
    status = WorkerStatus(region="us-west-2")  # status.instanceId lost, the region kept
    plan = decide(REF, spec(), status, None, NOW)
    assert plan.actions == () and plan.health.reason == reasons.REGION_CHANGED
    assert "us-west-2" in plan.health.message and "us-east-1" in plan.health.message

    by_annotation = decide(replace(REF, recorded_region="eu-west-1"), spec(), WorkerStatus(), None, NOW)
    assert by_annotation.health.reason == reasons.REGION_CHANGED and by_annotation.actions == ()

    same = decide(REF, spec(), replace(TRACKED, region="us-east-1"), observed(instance()), NOW)
    assert same.health.state is HealthState.READY


# ---------------------------------------------------------------- 4. bounded restarts


def _stopped_by_itself(reason="Client.InstanceInitiatedShutdown: Instance initiated shutdown"):
    return replace(instance(state="stopped"), state_reason=reason)


def test_starts_after_stops_nobody_asked_for_are_counted_and_bounded_per_hour():
    limits = Limits(max_starts=3)
    record = Recovery()
    for n in range(3):
        plan = decide(REF, spec(), replace(TRACKED, recovery=record), observed(_stopped_by_itself(), None),
                      NOW + timedelta(minutes=n), limits)
        assert Start() in plan.actions, n
        assert len(plan.recovery.restart_times) == n + 1
        record = replace(plan.recovery, start_requested=None, start_instance_id=None)  # it ran again

    plan = decide(REF, spec(), replace(TRACKED, recovery=record), observed(_stopped_by_itself(), None),
                  NOW + timedelta(minutes=5), limits)
    assert plan.actions == () and plan.health.state is HealthState.STALLED
    assert plan.health.reason == reasons.START_LIMIT_REACHED
    assert "Client.InstanceInitiatedShutdown" in plan.health.message and "--max-starts" in plan.health.message
    assert plan.recheck_after is not None and 3000 < plan.recheck_after <= 3600
    # The hour passes: one more start.
    later = decide(REF, spec(), replace(TRACKED, recovery=record), observed(_stopped_by_itself(), None),
                   NOW + timedelta(minutes=61), limits)
    assert Start() in later.actions


def test_stops_the_operator_asked_for_are_not_counted():
    # desiredState Stopped marks the stop as expected (an idle stop holds the spec stopped the same way).
    held = decide(REF, spec(desiredState="Stopped"), TRACKED, observed(instance(state="stopped"), None), NOW)
    assert held.recovery.stop_expected and held.recovery.restart_times == ()
    woken = decide(REF, spec(), replace(TRACKED, recovery=held.recovery),
                   observed(instance(state="stopped"), None), NOW)
    assert Start() in woken.actions and woken.recovery.restart_times == ()
    # A resize's stop is the operator's own too.
    resizing = decide(REF, spec(instanceType="m5.xlarge"), TRACKED, observed(instance()), NOW)
    assert resizing.actions[0] == Stop(resize_to="m5.xlarge") and resizing.recovery.stop_expected
    # Running again: the next stop is unasked.
    ran = decide(REF, spec(), replace(TRACKED, recovery=resizing.recovery), observed(instance()), NOW)
    assert not ran.recovery.stop_expected


def test_desired_state_stopped_clears_the_restart_count():
    full = Recovery(restart_times=tuple(f"2026-11-25T11:5{n}:00Z" for n in range(3)))
    assert restart_wait(full, Limits(max_starts=3), NOW) is not None
    cleared = decide(REF, spec(desiredState="Stopped"), replace(TRACKED, recovery=full),
                     observed(instance(state="stopped"), None), NOW)
    assert cleared.recovery.restart_times == ()
    assert restarted(Recovery(), Limits(), NOW).restart_times == ("2026-11-25T12:00:00Z",)


# ---------------------------------------------------------------- 4. a resize EC2 refused


def test_a_refused_resize_is_not_tried_again_until_the_spec_changes():
    refused = Recovery(resize_refused_type="m5.metal", resize_refused_generation=REF.generation,
                       resize_refused_reason="InsufficientInstanceCapacity: no capacity")
    status = replace(TRACKED, recovery=refused)
    plan = decide(REF, spec(instanceType="m5.metal"), status, observed(instance()), NOW)
    assert plan.actions == ()  # no stop for that type again
    assert plan.health.state is HealthState.STALLED and plan.health.reason == reasons.RESIZE_REFUSED
    assert "InsufficientInstanceCapacity" in plan.health.message and plan.recheck_after is not None

    # A stopped worker that should run is started with the type it has.
    stopped = decide(REF, spec(instanceType="m5.metal"), status, observed(instance(state="stopped"), None), NOW)
    assert stopped.actions == (Start(),)

    # A new spec generation earns the resize another try.
    newer = decide(replace(REF, generation=REF.generation + 1), spec(instanceType="m5.metal"), status,
                   observed(instance()), NOW)
    assert newer.actions == (Stop(resize_to="m5.metal"),) and newer.recovery.resize_refused_type is None
    assert not any(isinstance(a, ModifyType) for a in plan.actions)


def test_the_recovery_record_round_trips_the_new_fields():
    record = Recovery(restart_times=("2026-11-25T12:00:00Z",), stop_expected=True, resize_refused_type="m5.metal",
                      resize_refused_generation=4, resize_refused_reason="Unsupported: no")
    assert Recovery.from_dict(record.to_dict()) == record
    assert "stopExpected" not in Recovery().to_dict()

