"""Every exception type, injected as EC2's XML error at the HTTP proxy, ends in its documented condition.

Temporary errors: Reconciling with the reason, a Warning event, retries while the
fault lasts, and recovery by themselves once it stops. Permanent errors: Stalled
with the reason, a Warning event, and no further calls until the spec changes
(invalid parameters) or the slow recheck (quota, credentials: 4 s in tests).
"""

from __future__ import annotations

import time

import pytest

from tests.support.faultproxy import FaultRule
from tests.support.processes import wait_for

from .conftest import instances_of, tags_of, worker_manifest

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
    assert "InvalidParameter" in warning_reasons(kube, "bad-param")
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


@pytest.mark.parametrize(("code", "reason"), [("InstanceLimitExceeded", "QuotaExceeded"),
                                              ("UnauthorizedOperation", "AuthenticationFailed")])
def test_quota_and_credentials_stall_then_recover_on_the_slow_recheck(kube, network, aws, proxy, operator,
                                                                       code, reason):
    proxy.set_faults(FaultRule(code=code, action="RunInstances"))
    kube.apply(worker_manifest("slow", network))

    kube.wait_condition("slow", "Stalled", reason=reason)
    assert reason in warning_reasons(kube, "slow")
    # Stalled, the worker is retried only on the slow recheck (4 s in tests), not on every poll (1 s).
    start = proxy.count("RunInstances")
    time.sleep(3)  # less than one slow-recheck period: at most one more attempt
    per_attempt = 2 if code == "UnauthorizedOperation" else 1  # the client refreshes credentials once
    assert proxy.count("RunInstances") - start <= per_attempt

    proxy.clear_faults()  # quota raised / credentials fixed: no spec change needed
    kube.wait_condition("slow", "Ready", timeout=30)


def test_an_adopted_instance_that_does_not_exist_stalls_instance_not_found(kube, network, proxy, operator):
    kube.apply(worker_manifest("ghost", network, instanceId="i-0123456789abcdef0"))

    stalled = kube.wait_condition("ghost", "Stalled", reason="InstanceNotFound")
    assert "i-0123456789abcdef0" in stalled["message"]
    assert proxy.count("RunInstances") == 0


def test_an_adopted_instance_that_vanished_stalls_instance_not_found(kube, network, aws, proxy, operator):
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
        (FaultRule(code="RequestLimitExceeded", action="RunInstances"), "Throttled"),
        (FaultRule(code="InternalError", action="RunInstances"), "InstanceCreationFailed"),
        (FaultRule(code="InternalError", action="DescribeInstances"), "IntegrationError"),
    ],
    ids=["capacity", "throttled", "creation", "integration"],
)
def test_temporary_errors_before_creation_retry_and_recover_by_themselves(kube, network, aws, proxy, operator,
                                                                          rule, reason):
    proxy.set_faults(rule)
    kube.apply(worker_manifest("temp", network))

    reconciling = kube.wait_condition("temp", "Reconciling", reason=reason)
    assert f"[{rule.code}]" in reconciling["message"] and rule.action in reconciling["message"], reconciling
    assert kube.condition("temp", "Stalled")["status"] == "False"
    assert reason in warning_reasons(kube, "temp")
    faults = f"fault:{rule.code}"
    first = proxy.count(rule.action, faults)
    wait_for(lambda: proxy.count(rule.action, faults) > first, 20, what="a retry while the fault lasts")

    proxy.clear_faults()
    kube.wait_condition("temp", "Ready", timeout=40)
    assert len(instances_of(aws, kube.get("temp")["metadata"]["uid"])) == 1


def test_wrong_instance_state_on_stop_retries_then_stops(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("op", network))
    kube.wait_condition("op", "Ready")
    proxy.set_faults(FaultRule(code="IncorrectInstanceState", action="StopInstances"))

    kube.patch_spec("op", {"desiredState": "Stopped"})

    kube.wait_condition("op", "Reconciling", reason="InstanceOperationFailed")
    assert "InstanceOperationFailed" in warning_reasons(kube, "op")
    proxy.clear_faults()
    kube.wait_condition("op", "Ready", reason="InstanceStopped", timeout=30)


def test_failing_tag_calls_retry_then_sync(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("tags", network, tags={"team": "a"}))
    kube.wait_condition("tags", "Ready")
    instance_id = kube.get("tags")["status"]["instanceId"]
    proxy.set_faults(FaultRule(code="InternalError", action="CreateTags"))

    kube.patch_spec("tags", {"tags": {"team": "b"}})

    kube.wait_condition("tags", "Reconciling", reason="TagOperationFailed")
    assert "TagOperationFailed" in warning_reasons(kube, "tags")
    proxy.clear_faults()
    wait_for(lambda: tags_of(aws, instance_id).get("team") == "b", 30, what="the tag to sync")
    kube.wait_condition("tags", "Ready")


def test_status_checks_that_cannot_be_read_keep_the_worker_reconciling(kube, network, proxy, operator):
    proxy.set_faults(FaultRule(code="InternalError", action="DescribeInstanceStatus"))
    kube.apply(worker_manifest("checks", network))

    kube.wait_condition("checks", "Reconciling", reason="StatusChecksPending")
    assert "StatusChecksPending" in warning_reasons(kube, "checks")
    assert kube.condition("checks", "Ready")["status"] == "False"
    proxy.clear_faults()
    kube.wait_condition("checks", "Ready", timeout=30)
