"""Every exception type, injected as EC2's XML error at the HTTP proxy, ends in its documented condition.

Temporary errors: Reconciling with the reason, a Warning event, retries while the
fault lasts, and recovery by themselves once it stops. Permanent errors: Stalled
with the reason, a Warning event, and no further calls until the spec changes
(invalid parameters) or the slow recheck (quota, credentials: 4 s in tests).
"""

from __future__ import annotations

import time

import pytest

from tests.support.faultproxy import IMPAIRED_INSTANCE_CHECK, FaultRule
from tests.support.processes import wait_for

from .conftest import instances_of, state_of, tags_of, wait_resync_passes, worker_manifest

pytestmark = pytest.mark.e2e


def assert_stays(predicate, seconds: float, what: str) -> None:
    """``predicate`` must hold at every check for ``seconds`` (a negative property needs a window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.25)


def warning_reasons(kube, name: str) -> list[str]:
    return kube.event_reasons(name, "Warning")


# ---------------------------------------------------------------- permanent


def test_invalid_parameter_stalls_without_hammering_until_the_spec_changes(kube, network, aws, proxy, operator):
    proxy.set_faults(FaultRule(code="InvalidParameterValue", action="RunInstances",
                               message="Value (m5zn.metal) for parameter instanceType is invalid"))
    kube.apply(worker_manifest("bad-param", network))

    stalled = kube.wait_condition("bad-param", "Stalled", reason="InvalidParameter")
    assert "instanceType is invalid" in stalled["message"]
    assert kube.condition("bad-param", "Ready")["status"] == "False"
    assert kube.condition("bad-param", "Reconciling")["status"] == "False"
    assert kube.get("bad-param")["status"]["phase"] == "Failed"
    kube.wait_event("bad-param", "InvalidParameter")
    calls = proxy.count("RunInstances")
    assert_stays(lambda: proxy.count("RunInstances") == calls, 6, "RunInstances retried while stalled")

    proxy.clear_faults()
    kube.patch_spec("bad-param", {"tags": {"fixed": "yes"}})  # any spec change is a new attempt
    kube.wait_condition("bad-param", "Ready")
    assert len(instances_of(aws, kube.get("bad-param")["metadata"]["uid"])) == 1


def test_an_ami_that_does_not_exist_stalls_and_creates_nothing(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("no-ami", network, amiId="ami-0123456789abcdef0"))

    stalled = kube.wait_condition("no-ami", "Stalled", reason="InvalidParameter")
    assert "ami-0123456789abcdef0" in stalled["message"]
    assert proxy.count("RunInstances") == 0
    assert instances_of(aws, kube.get("no-ami")["metadata"]["uid"]) == []


@pytest.mark.parametrize(("code", "reason", "per_attempt"), [
    ("InstanceLimitExceeded", "QuotaExceeded", 1),
    ("MaxIOPSLimitExceeded", "QuotaExceeded", 1),
    ("UnauthorizedOperation", "AuthenticationFailed", 1),  # permission denied: never a credential refresh
    ("AuthFailure", "AuthenticationFailed", 2),  # a credential error: refreshed once per attempt
], ids=["quota", "iops-quota", "permission", "credentials"])
def test_quota_and_credentials_stall_then_recover_on_the_slow_recheck(kube, network, aws, proxy, operator,
                                                                       code, reason, per_attempt):
    proxy.set_faults(FaultRule(code=code, action="RunInstances"))
    kube.apply(worker_manifest("slow", network))

    stalled = kube.wait_condition("slow", "Stalled", reason=reason)
    if code == "UnauthorizedOperation":
        assert "ec2:RunInstances" in stalled["message"]  # the message names the missing permission
    kube.wait_event("slow", reason)
    # Stalled, the worker is retried only on the slow recheck (4 s in tests), not on every poll (1 s).
    start = proxy.count("RunInstances")
    assert start % per_attempt == 0  # read after the stalling attempt ended: each made exactly per_attempt calls
    time.sleep(3)  # less than one slow-recheck period: at most one more attempt
    assert proxy.count("RunInstances") - start <= per_attempt
    # An attempt the sleep ended in the middle of finishes within a second; the next is 4 s away.
    wait_for(lambda: proxy.count("RunInstances") % per_attempt == 0, 2,
             what=f"every attempt to make exactly {per_attempt} RunInstances calls")

    proxy.clear_faults()  # quota raised / credentials fixed: no spec change needed
    kube.wait_condition("slow", "Ready", timeout=30)


@pytest.mark.parametrize("code", ["Unsupported", "SecurityGroupsPerInstanceLimitExceeded"])
def test_invalid_input_codes_stall_until_the_spec_changes(kube, network, aws, proxy, operator, code):
    proxy.set_faults(FaultRule(code=code, action="RunInstances", message=f"EC2 refuses: {code}"))
    kube.apply(worker_manifest("invalid", network))

    stalled = kube.wait_condition("invalid", "Stalled", reason="InvalidParameter")
    assert code in stalled["message"]
    kube.wait_event("invalid", "InvalidParameter")
    calls = proxy.count("RunInstances")
    assert calls == 1  # a client error (400): botocore does not retry it either
    assert_stays(lambda: proxy.count("RunInstances") == calls, 6, "RunInstances retried while stalled")


def test_a_dependency_that_appears_later_is_picked_up_without_a_spec_change(kube, network, aws, proxy, operator):
    # GitOps applies the security group and the worker in one sync; EC2 may not know the group yet.
    proxy.set_faults(FaultRule(code="InvalidSecurityGroupID.NotFound", action="RunInstances"))
    kube.apply(worker_manifest("later", network))

    kube.wait_condition("later", "Stalled", reason="InvalidParameter")
    start = proxy.count("RunInstances")
    time.sleep(3)  # less than one slow-recheck period (4 s in tests)
    assert proxy.count("RunInstances") - start <= 1

    proxy.clear_faults()  # the group now exists
    kube.wait_condition("later", "Ready", timeout=30)
    assert len(instances_of(aws, kube.get("later")["metadata"]["uid"])) == 1


def test_stop_protection_stalls_operation_not_permitted_then_recovers(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("guarded", network))
    kube.wait_condition("guarded", "Ready")
    proxy.set_faults(FaultRule(code="OperationNotPermitted", action="StopInstances",
                               message="The instance may not be stopped. Modify its 'disableApiStop' attribute"))

    kube.patch_spec("guarded", {"desiredState": "Stopped"})

    stalled = kube.wait_condition("guarded", "Stalled", reason="OperationNotPermitted")
    assert "remove the protection" in stalled["message"]
    kube.wait_event("guarded", "OperationNotPermitted")
    start = proxy.count("StopInstances")
    time.sleep(3)  # less than one slow-recheck period
    assert proxy.count("StopInstances") - start <= 1

    proxy.clear_faults()  # protection removed
    kube.wait_condition("guarded", "Ready", reason="InstanceStopped", timeout=30)


def test_termination_protection_keeps_the_finalizer_and_warns_until_removed(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("protected", network))
    kube.wait_condition("protected", "Ready")
    instance_id = kube.get("protected")["status"]["instanceId"]
    proxy.set_faults(FaultRule(code="OperationNotPermitted", action="TerminateInstances",
                               message="The instance may not be terminated. Modify its 'disableApiTermination' "
                                       "instance attribute and try again."))

    kube.delete("protected", wait=False)

    wait_for(lambda: "OperationNotPermitted" in warning_reasons(kube, "protected"), 30,
             what="a Warning OperationNotPermitted")
    warning = [e for e in kube.events("protected") if e["reason"] == "OperationNotPermitted"][-1]
    assert "remove the protection" in warning["message"] and "finalizer stays" in warning["message"]
    assert kube.exists("protected") and state_of(aws, instance_id) == "running"
    start = proxy.count("TerminateInstances")
    time.sleep(4)
    # Retried on the slow recheck (capped by --max-retry-delay 2 s in tests), not in a loop.
    assert proxy.count("TerminateInstances") - start <= 3

    proxy.clear_faults()  # protection removed
    wait_for(lambda: not kube.exists("protected"), 30, what="the finalizer to go")
    assert state_of(aws, instance_id) in ("shutting-down", "terminated")


def test_a_client_token_mismatch_with_nothing_listed_retries_the_same_token_and_launches_once(
        kube, network, aws, proxy, operator):
    # IdempotentParameterMismatch says EC2 launched something with this token: while nothing is listed for
    # it, a new token could make a second instance, so the operator retries with the same one.
    proxy.set_faults(FaultRule(code="IdempotentParameterMismatch", action="RunInstances", times=1))
    kube.apply(worker_manifest("token", network))

    kube.wait_condition("token", "Ready")
    worker = kube.get("token")
    uid = worker["metadata"]["uid"]
    assert worker["status"]["creationAttempt"] == 0
    kube.wait_event("token", "InstanceCreationFailed")
    assert proxy.calls()["RunInstances"] == {"fault:IdempotentParameterMismatch": 1, "200": 1}
    live = instances_of(aws, uid)
    assert len(live) == 1 and live[0]["ClientToken"] == f"{uid}-0"
    # The answer to the mismatch was a lookup by the token itself (EC2's client-token filter), before the
    # next launch: the tag lookup alone misses an instance whose tags are not listed yet.
    log = [(action, outcome, filters) for _, action, outcome, filters, _ in proxy.call_log()[0]]
    mismatch = log.index(("RunInstances", "fault:IdempotentParameterMismatch", []))
    launched = next(i for i, (action, outcome, _) in enumerate(log) if (action, outcome) == ("RunInstances", "200"))
    assert any(action == "DescribeInstances" and "client-token" in filters
               for action, _, filters in log[mismatch:launched]), log


def test_an_adopted_instance_that_does_not_exist_stalls_instance_not_found(kube, network, proxy, adopting_operator):
    kube.apply(worker_manifest("ghost", network, instanceId="i-0123456789abcdef0"))

    stalled = kube.wait_condition("ghost", "Stalled", reason="InstanceNotFound")
    assert "i-0123456789abcdef0" in stalled["message"]
    assert proxy.count("RunInstances") == 0


def test_an_adopted_instance_that_vanished_stalls_instance_not_found(kube, network, aws, proxy, adopting_operator):
    existing = aws.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1, SubnetId=network["subnet"],
                                 Monitoring={"Enabled": True})["Instances"][0]["InstanceId"]
    kube.apply(worker_manifest("vanish", network, instanceId=existing))
    kube.wait_condition("vanish", "Ready")

    aws.terminate_instances(InstanceIds=[existing])

    kube.wait_condition("vanish", "Stalled", reason="InstanceNotFound", timeout=30)
    assert proxy.count("RunInstances") == 0


# ---------------------------------------------------------------- temporary


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (FaultRule(code="InsufficientInstanceCapacity", action="RunInstances"), "InsufficientCapacity"),
        (FaultRule(code="InsufficientVolumeCapacity", action="RunInstances"), "InsufficientCapacity"),
        (FaultRule(code="RequestLimitExceeded", action="RunInstances"), "Throttled"),
        (FaultRule(code="InternalError", action="RunInstances"), "InstanceCreationFailed"),
        (FaultRule(code="InternalError", action="DescribeInstances"), "IntegrationError"),
    ],
    ids=["capacity", "volume-capacity", "throttled", "creation", "integration"],
)
def test_temporary_errors_before_creation_retry_and_recover_by_themselves(kube, network, aws, proxy, operator,
                                                                          rule, reason):
    proxy.set_faults(rule)
    kube.apply(worker_manifest("temp", network))

    reconciling = kube.wait_condition("temp", "Reconciling", reason=reason)
    assert f"[{rule.code}]" in reconciling["message"] and rule.action in reconciling["message"], reconciling
    assert kube.condition("temp", "Stalled")["status"] == "False"
    kube.wait_event("temp", reason)
    faults = f"fault:{rule.code}"
    first = proxy.count(rule.action, faults)
    wait_for(lambda: proxy.count(rule.action, faults) > first, 20, what="a retry while the fault lasts")
    if rule.action == "RunInstances":
        # Retries are paced (delays capped at 2 s in tests; botocore makes up to 3 attempts per
        # pass on a 5xx): in 6 s at most 4 passes, never a storm.
        before = proxy.count(rule.action)
        time.sleep(6)
        assert proxy.count(rule.action) - before <= 4 * 3

    proxy.clear_faults()
    kube.wait_condition("temp", "Ready", timeout=40)
    assert len(instances_of(aws, kube.get("temp")["metadata"]["uid"])) == 1


def test_wrong_instance_state_on_stop_retries_then_stops(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("op", network))
    kube.wait_condition("op", "Ready")
    proxy.set_faults(FaultRule(code="IncorrectInstanceState", action="StopInstances"))

    kube.patch_spec("op", {"desiredState": "Stopped"})

    kube.wait_condition("op", "Reconciling", reason="InstanceOperationFailed")
    kube.wait_event("op", "InstanceOperationFailed")
    proxy.clear_faults()
    kube.wait_condition("op", "Ready", reason="InstanceStopped", timeout=30)


def test_failing_tag_calls_retry_then_sync(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("tags", network, tags={"team": "a"}))
    kube.wait_condition("tags", "Ready")
    instance_id = kube.get("tags")["status"]["instanceId"]
    proxy.set_faults(FaultRule(code="InternalError", action="CreateTags"))

    kube.patch_spec("tags", {"tags": {"team": "b"}})

    kube.wait_condition("tags", "Reconciling", reason="TagOperationFailed")
    kube.wait_event("tags", "TagOperationFailed")
    proxy.clear_faults()
    wait_for(lambda: tags_of(aws, instance_id).get("team") == "b", 30, what="the tag to sync")
    kube.wait_condition("tags", "Ready")


def test_status_checks_that_cannot_be_read_keep_the_worker_reconciling(kube, network, proxy, operator):
    proxy.set_faults(FaultRule(code="InternalError", action="DescribeInstanceStatus"))
    kube.apply(worker_manifest("checks", network))

    kube.wait_condition("checks", "Reconciling", reason="StatusChecksPending")
    kube.wait_event("checks", "StatusChecksPending")
    assert kube.condition("checks", "Ready")["status"] == "False"
    proxy.clear_faults()
    kube.wait_condition("checks", "Ready", timeout=30)


def test_an_impaired_status_check_is_reported_with_one_warning_then_clears(kube, network, proxy, operator):
    kube.apply(worker_manifest("sick", network))
    kube.wait_condition("sick", "Ready")

    proxy.set_rewrites(IMPAIRED_INSTANCE_CHECK)  # moto never reports impaired checks itself

    reconciling = kube.wait_condition("sick", "Reconciling", reason="StatusCheckImpaired", timeout=30)
    assert "instance impaired" in reconciling["message"]
    assert kube.condition("sick", "Ready")["status"] == "False"
    assert kube.get("sick")["status"]["statusChecks"]["instance"] == "impaired"
    wait_resync_passes(proxy, 2)  # a whole resync and the polls in it while still impaired: still one Warning
    assert kube.wait_event("sick", "StatusCheckImpaired").count("StatusCheckImpaired") == 1

    proxy.clear_faults()  # clears rewrites too
    kube.wait_condition("sick", "Ready", timeout=30)
