"""Bounded launches and replacements: failed launches back off then stall; replacements are capped per hour."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cml_operator.ec2.models import CMLWorkerInstanceDto
from cml_operator.reconcile import reasons
from cml_operator.reconcile.conditions import HealthState
from cml_operator.reconcile.recovery import Limits, Recovery, launch_gate
from cml_operator.reconcile.spec import parse_spec
from cml_operator.reconcile.worker import Launch, Observation, WorkerRef, WorkerStatus, decide

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
REF = WorkerRef(uid="u1", namespace="lab", name="w1", generation=3, cluster_id="c1")
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
