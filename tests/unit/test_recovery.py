"""Bounded launches, starts and replacements: failed launches and starts back off then stall; replacements are
capped per hour."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from cml_operator.ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from cml_operator.reconcile import reasons
from cml_operator.reconcile.conditions import HealthState
from cml_operator.reconcile.recovery import Limits, Recovery, launch_gate
from cml_operator.reconcile.spec import parse_spec
from cml_operator.reconcile.actions import Launch, ModifyType, Start
from cml_operator.reconcile.worker import Observation, WorkerRef, WorkerStatus, decide

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
REF = WorkerRef(uid="u1", namespace="lab", name="w1", generation=3, cluster_id="c1", may_adopt=True)
SPEC = parse_spec({"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678"})
IID = "i-0123456789abcdef0"
LIMITS = Limits()
REASON = "Server.InsufficientInstanceCapacity: Insufficient capacity."


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated() -> Observation:
    dto = CMLWorkerInstanceDto(
        aws_instance_id=IID, aws_region="us-east-1", instance_name=None, ami_id="ami-12345678", ami_name=None,
        instance_type="m5zn.metal", security_group_ids=[], subnet_id=None, instance_state="terminated",
        public_ip=None, private_ip=None, key_pair_name=None, state_reason=REASON)
    return Observation(IID, dto, None)


@pytest.mark.parametrize(("failures", "backoff"), [(1, 15), (2, 30), (3, 60), (10, 900)])
def test_backoff_starts_at_15_seconds_and_doubles(failures, backoff):
    assert LIMITS.backoff(failures) == backoff


@pytest.mark.parametrize(("record", "generation", "allowed", "stalled"), [
    (Recovery(), 3, True, False),
    (Recovery(failed_launches=1, last_failure_time=_ago(5), failure_generation=3), 3, False, False),
    (Recovery(failed_launches=1, last_failure_time=_ago(16), failure_generation=3), 3, True, False),
    (Recovery(failed_launches=2, last_failure_time=_ago(16), failure_generation=3), 3, False, False),
    (Recovery(failed_launches=3, last_failure_time=_ago(60), failure_generation=3), 3, False, True),
    (Recovery(failed_launches=3, last_failure_time=_ago(60), failure_generation=3), 4, True, False),  # spec changed
    (Recovery(failed_launches=3, last_failure_time=_ago(601), failure_generation=3), 3, True, False),  # recheck
])
def test_the_launch_gate(record, generation, allowed, stalled):
    gate = launch_gate(record, LIMITS, generation, NOW)
    assert (gate.allowed, gate.stalled) == (allowed, stalled)


def test_an_instance_that_dies_before_ready_is_a_failed_launch_that_backs_off():
    plan = decide(REF, SPEC, WorkerStatus(instance_id=IID, instance_state="pending"), _terminated(), NOW)
    assert plan.actions == () and plan.health.state is HealthState.RECONCILING
    assert plan.health.reason == reasons.LAUNCH_FAILED and REASON in plan.health.message
    assert plan.recovery.failed_launches == 1 and plan.recovery.last_failure_reason == REASON
    assert plan.instance_id is None and plan.creation_attempt == 1 and plan.recheck_after == 15
    assert [n.reason for n in plan.notes] == [reasons.LAUNCH_FAILED]


def test_the_third_failed_launch_stalls_quoting_the_state_reason():
    status = WorkerStatus(instance_id=IID, creation_attempt=2,
                          recovery=Recovery(failed_launches=2, last_failure_time=_ago(40), failure_generation=3))
    plan = decide(REF, SPEC, status, _terminated(), NOW)
    assert plan.actions == () and plan.health.state is HealthState.STALLED
    assert plan.health.reason == reasons.LAUNCH_FAILED and REASON in plan.health.message
    assert plan.recheck_after == LIMITS.recheck


def test_after_the_backoff_the_next_pass_launches_with_a_new_token():
    status = WorkerStatus(creation_attempt=1,
                          recovery=Recovery(failed_launches=1, last_failure_time=_ago(20), failure_generation=3))
    plan = decide(REF, SPEC, status, None, NOW)
    assert isinstance(plan.actions[0], Launch) and plan.actions[0].client_token == "u1-1"


def test_a_lost_ready_instance_is_replaced_until_the_hourly_limit():
    record = Recovery(ready_instance_id=IID, replacement_times=(_ago(3000), _ago(1000)))
    plan = decide(REF, SPEC, WorkerStatus(instance_id=IID, recovery=record), _terminated(), NOW, LIMITS)
    assert isinstance(plan.actions[0], Launch) and len(plan.recovery.replacement_times) == 3

    full = Recovery(ready_instance_id=IID, replacement_times=(_ago(3000), _ago(1000), _ago(10)))
    stalled = decide(REF, SPEC, WorkerStatus(instance_id=IID, recovery=full), _terminated(), NOW, LIMITS)
    assert stalled.actions == () and stalled.health.reason == reasons.REPLACEMENT_LIMIT_REACHED
    assert stalled.recheck_after == pytest.approx(600)  # the oldest leaves the hour window in 10 minutes


def test_replacements_older_than_an_hour_do_not_count():
    old = Recovery(ready_instance_id=IID, replacement_times=(_ago(4000), _ago(3700), _ago(3601)))
    plan = decide(REF, SPEC, WorkerStatus(instance_id=IID, recovery=old), _terminated(), NOW, LIMITS)
    assert isinstance(plan.actions[0], Launch) and len(plan.recovery.replacement_times) == 1


def test_the_record_round_trips_through_status():
    record = Recovery(2, _ago(5), REASON, 3, (_ago(9),), IID)
    assert Recovery.from_dict(record.to_dict()) == record
    assert Recovery.from_dict({"failedLaunches": "x", "replacementTimes": [1]}) == Recovery()


# ---------------------------------------------------------------- starts that fall back to stopped

CAPACITY = "Server.InsufficientInstanceCapacity: Insufficient capacity."
RUNNING = parse_spec({"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678",
                      "instanceType": "m5.large"})


def _stopped(state: str = "stopped", reason: str | None = CAPACITY, instance_type: str = "m5.large") -> Observation:
    dto = CMLWorkerInstanceDto(
        aws_instance_id=IID, aws_region="us-east-1", instance_name=None, ami_id="ami-12345678", ami_name=None,
        instance_type=instance_type, security_group_ids=[], subnet_id=None, instance_state=state,
        public_ip=None, private_ip=None, key_pair_name=None, state_reason=reason,
        tags={"cml.dev/worker-uid": "u1", "cml.dev/worker": "lab/w1", "cml.dev/managed-by": "cml-operator",
              "cml.dev/cluster": "c1", "Name": "lab/w1"})
    return Observation(IID, dto, InstanceStatusChecks(IID, "ok", "ok") if state == "running" else None)


def _tracked(record: Recovery) -> WorkerStatus:
    return WorkerStatus(instance_id=IID, instance_state="stopped", managed_tag_keys=(), recovery=record)


def _pending_start(seconds_ago: float, **more) -> Recovery:
    return Recovery(start_requested=_ago(seconds_ago), start_instance_id=IID, **more)


def test_a_stopped_instance_with_no_start_of_ours_pending_is_started_and_the_start_noted():
    # A stop made by hand (no Start of ours pending) counts nothing: the operator just starts it.
    plan = decide(REF, RUNNING, _tracked(Recovery()), _stopped(reason="Client.UserInitiatedShutdown"), NOW, LIMITS)
    assert [type(a) for a in plan.actions] == [Start]
    assert plan.recovery.failed_starts == 0 and plan.notes == ()
    assert (plan.recovery.start_requested, plan.recovery.start_instance_id) == (_ago(0), IID)


def test_stopped_within_the_grace_after_our_start_waits_without_sending_another():
    plan = decide(REF, RUNNING, _tracked(_pending_start(2)), _stopped(), NOW, LIMITS)
    assert plan.actions == () and plan.poll_soon
    assert plan.health.reason == reasons.STARTING and plan.recovery.failed_starts == 0


@pytest.mark.parametrize(("failures_before", "backoff"), [(0, 15), (1, 30)])
def test_stopped_again_after_our_start_is_a_failed_start_that_backs_off(failures_before, backoff):
    record = _pending_start(LIMITS.start_grace + 2, failed_starts=failures_before,
                            last_start_failure_time=_ago(60) if failures_before else None, start_failure_generation=3)
    plan = decide(REF, RUNNING, _tracked(record), _stopped(), NOW, LIMITS)
    assert plan.actions == () and not plan.poll_soon and plan.recheck_after == backoff
    assert plan.health.state is HealthState.RECONCILING and plan.health.reason == reasons.START_FAILED
    assert CAPACITY in plan.health.message
    assert plan.recovery.failed_starts == failures_before + 1 and plan.recovery.start_requested is None
    assert (plan.recovery.last_start_failure_reason, plan.recovery.last_start_failure_time) == (CAPACITY, _ago(0))
    [note] = plan.notes
    assert note.type == "Warning" and note.reason == reasons.START_FAILED and CAPACITY in note.message
    assert f"failed start {failures_before + 1} of 3" in note.message


@pytest.mark.parametrize(("seconds_ago", "failures", "started"), [(10, 1, False), (16, 1, True), (16, 2, False),
                                                                    (31, 2, True)])
def test_the_next_start_waits_out_the_backoff(seconds_ago, failures, started):
    record = Recovery(failed_starts=failures, last_start_failure_time=_ago(seconds_ago), start_failure_generation=3,
                      last_start_failure_reason=CAPACITY)
    plan = decide(REF, RUNNING, _tracked(record), _stopped(), NOW, LIMITS)
    assert (plan.actions == (Start(),)) is started
    if not started:
        assert plan.recheck_after == pytest.approx(LIMITS.backoff(failures) - (seconds_ago - 1))
        assert plan.notes == () and plan.recovery == record  # no new failure counted while waiting


def test_the_third_failed_start_stalls_start_failed_quoting_the_state_reason():
    record = _pending_start(LIMITS.start_grace + 2, failed_starts=2, last_start_failure_time=_ago(40),
                            start_failure_generation=3)
    plan = decide(REF, RUNNING, _tracked(record), _stopped(), NOW, LIMITS)
    assert plan.actions == () and plan.health.state is HealthState.STALLED
    assert plan.health.reason == reasons.START_FAILED and "Server.InsufficientInstanceCapacity" in plan.health.message
    assert plan.recheck_after == LIMITS.recheck and plan.recovery.failed_starts == 3
    assert [n.reason for n in plan.notes] == [reasons.START_FAILED]


def _stalled_starts(seconds_ago: float) -> Recovery:
    return Recovery(failed_starts=3, last_start_failure_time=_ago(seconds_ago), start_failure_generation=3,
                    last_start_failure_reason=CAPACITY)


def test_a_start_stalled_worker_sends_nothing_until_the_spec_changes_or_the_slow_recheck():
    still = decide(REF, RUNNING, _tracked(_stalled_starts(60)), _stopped(), NOW, LIMITS)
    assert still.actions == () and still.health.reason == reasons.START_FAILED
    assert still.health.state is HealthState.STALLED and still.recheck_after == pytest.approx(600 - 59)

    changed = decide(replace(REF, generation=4), RUNNING, _tracked(_stalled_starts(60)), _stopped(), NOW, LIMITS)
    assert changed.actions == (Start(),) and changed.recovery.start_requested == _ago(0)

    rechecked = decide(REF, RUNNING, _tracked(_stalled_starts(602)), _stopped(), NOW, LIMITS)
    assert rechecked.actions == (Start(),)


def test_one_more_try_that_falls_back_again_stalls_again():
    record = replace(_stalled_starts(60), start_requested=_ago(LIMITS.start_grace + 2), start_instance_id=IID)
    plan = decide(replace(REF, generation=4), RUNNING, _tracked(record), _stopped(), NOW, LIMITS)
    assert plan.actions == () and plan.health.state is HealthState.STALLED
    assert plan.recovery.failed_starts == 4 and plan.recovery.start_failure_generation == 4


def test_seeing_the_instance_running_resets_the_failed_starts():
    record = _pending_start(30, failed_starts=2, last_start_failure_time=_ago(40), start_failure_generation=3,
                            last_start_failure_reason=CAPACITY)
    plan = decide(REF, RUNNING, _tracked(record), _stopped("running", reason=None), NOW, LIMITS)
    assert plan.health.state is HealthState.READY
    assert plan.recovery.failed_starts == 0 and plan.recovery.start_requested is None
    assert plan.recovery.last_start_failure_reason == CAPACITY  # still readable afterwards


def test_a_hand_stop_after_ready_is_not_a_failed_start():
    # Ready -> the pending start was cleared; a stop by hand then finds no Start of ours to blame.
    ready_plan = decide(REF, RUNNING, _tracked(_pending_start(30)), _stopped("running", reason=None), NOW, LIMITS)
    later = NOW + timedelta(minutes=5)
    plan = decide(REF, RUNNING, replace(_tracked(ready_plan.recovery), instance_state="running"),
                  _stopped(reason="Client.UserInitiatedShutdown: User initiated shutdown"), later, LIMITS)
    assert plan.actions == (Start(),) and plan.recovery.failed_starts == 0 and plan.notes == ()


def test_desired_state_stopped_clears_the_start_bound():
    stopped = parse_spec({"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678",
                          "instanceType": "m5.large", "desiredState": "Stopped"})
    plan = decide(REF, stopped, _tracked(_stalled_starts(60)), _stopped(), NOW, LIMITS)
    assert plan.health.state is HealthState.READY and plan.actions == ()
    assert (plan.recovery.failed_starts, plan.recovery.last_start_failure_reason) == (0, None)


def test_a_start_after_a_type_change_is_bounded_too():
    plan = decide(REF, RUNNING, _tracked(Recovery()), _stopped(instance_type="m5.xlarge"), NOW, LIMITS)
    assert [type(a) for a in plan.actions] == [ModifyType, Start] and plan.recovery.start_requested == _ago(0)
    waiting = decide(REF, RUNNING, _tracked(_stalled_starts(60)), _stopped(instance_type="m5.xlarge"), NOW, LIMITS)
    assert waiting.actions == () and waiting.health.reason == reasons.START_FAILED


def test_the_start_record_round_trips_through_status():
    record = Recovery(start_requested=_ago(3), start_instance_id=IID, failed_starts=2,
                      last_start_failure_time=_ago(9), last_start_failure_reason=CAPACITY, start_failure_generation=4)
    raw = record.to_dict()
    assert raw == {"failedLaunches": 0, "startRequested": _ago(3), "startInstanceId": IID, "failedStarts": 2,
                   "lastStartFailureTime": _ago(9), "lastStartFailureReason": CAPACITY, "startFailureGeneration": 4}
    assert Recovery.from_dict(raw) == record
