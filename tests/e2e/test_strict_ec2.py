"""The operator against EC2 as strict as production (tests/support/ec2timing.py, ec2iam.py).

Each test here fails against the kind double (CML_EC2_TIMING=off, or the operator's promise broken):
states moto skips (pending, stopping, initializing), monitoring moto cannot switch, ClientTokens
spent before a crash.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from tests.support.faultproxy import FaultRule, KillRule
from tests.support.processes import FAKE_AWS_ENV, wait_for

from .conftest import REGION, instances_of, worker_manifest

pytestmark = pytest.mark.e2e


@pytest.fixture
def user_ec2(proxy) -> Any:
    """The user's EC2 client through the strict endpoint (what .dev/env gives): unrestricted by IAM."""
    return boto3.client("ec2", region_name=REGION, endpoint_url=proxy.url,
                        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


def _states_seen(kube, name: str, until, timeout: float) -> list[str]:
    """status.instanceState values in the order seen, polling until ``until(worker)``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker = kube.get(name)
        state = (worker.get("status") or {}).get("instanceState")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if until(worker):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"timed out; states seen: {seen}, status: {kube.get(name).get('status')}")


def _ready(worker) -> bool:
    conditions = (worker.get("status") or {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_a_worker_is_ready_only_after_pending_and_initializing_status_checks(kube, network, proxy, operator):
    kube.apply(worker_manifest("clock", network))
    seen = _states_seen(kube, "clock", _ready, 90)
    assert seen[0] == "pending" and seen[-1] == "running", seen
    # Ready waited for the checks: DescribeInstanceStatus said initializing at least once before.
    calls, _ = proxy.call_log()
    assert any(action == "DescribeInstanceStatus" for _, action, *_ in calls)
    worker = kube.get("clock")
    assert worker["status"]["statusChecks"] == {**worker["status"]["statusChecks"], "instance": "ok", "system": "ok"}

    kube.patch_spec("clock", {"desiredState": "Stopped"})
    seen = _states_seen(kube, "clock", lambda w: (w.get("status") or {}).get("instanceState") == "stopped"
                        and _ready(w), 90)
    assert "stopping" in seen and seen[-1] == "stopped", seen
    assert proxy.count("StopInstances", "model:IncorrectInstanceState") == 0


@pytest.mark.parametrize("wanted", [True, False])
def test_detailed_monitoring_drift_is_corrected_through_monitor_and_unmonitor_instances(
        kube, network, proxy, user_ec2, operator, wanted):
    kube.apply(worker_manifest("watched", network, detailedMonitoring=wanted))
    kube.wait_condition("watched", "Ready")
    instance_id = kube.get("watched")["status"]["instanceId"]

    def monitoring() -> str:
        raw = user_ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return raw["Monitoring"]["State"]

    if monitoring() != ("enabled" if wanted else "disabled"):  # launched with the spec's choice? set it first
        wait_for(lambda: monitoring() == ("enabled" if wanted else "disabled"), 30, what="the spec's monitoring")
    proxy.reset_counts()
    # Someone flips it by hand (EC2 console, CLI): moto cannot, the proxy's model does.
    (user_ec2.unmonitor_instances if wanted else user_ec2.monitor_instances)(InstanceIds=[instance_id])
    assert monitoring() == ("disabled" if wanted else "enabled")

    wait_for(lambda: monitoring() == ("enabled" if wanted else "disabled"), 30, what="monitoring drift corrected")
    corrective = "MonitorInstances" if wanted else "UnmonitorInstances"
    assert proxy.count(corrective, "model") == 1  # exactly one corrective call, from the operator
    kube.wait_condition("watched", "Ready")


def test_a_spent_client_token_after_a_crash_and_a_spec_edit_never_launches_a_second_instance(
        kube, network, aws, proxy, operator_factory):
    first = operator_factory()
    proxy.set_kills(KillRule(pid=first.pid, action="RunInstances", when="before_response"))
    kube.apply(worker_manifest("respec", network))
    first.wait_exit(30)  # EC2 launched with token uid-0; the operator died before hearing so
    uid = kube.get("respec")["metadata"]["uid"]
    assert len(instances_of(aws, uid)) == 1

    # While it is down the spec changes, so RunInstances with the same token has other parameters now
    # (IdempotentParameterMismatch); and EC2 does not list the instance by its tag yet.
    kube.patch_spec("respec", {"instanceType": "m5.xlarge"})
    proxy.set_faults(FaultRule(code="", action="DescribeInstances", effect="empty",
                               param_value="tag:cml.dev/worker-uid"))
    operator_factory()
    wait_for(lambda: _mismatches(proxy) >= 2 or len(instances_of(aws, uid)) > 1, 60,
             what="two launches refused as mismatched (or a second instance)")
    assert len(instances_of(aws, uid)) == 1, "a new token launched a second instance"
    assert kube.get("respec")["status"].get("creationAttempt", 0) == 0

    proxy.clear_faults()  # EC2 lists it now: the operator takes it and applies the edit to it
    wait_for(lambda: (kube.get("respec").get("status") or {}).get("instanceType") == "m5.xlarge"
             and _ready(kube.get("respec")), 120, what="the launched instance resized and Ready")
    live = instances_of(aws, uid)
    assert [i["InstanceId"] for i in live] == [kube.get("respec")["status"]["instanceId"]]
    assert live[0]["ClientToken"] == f"{uid}-0"


def _mismatches(proxy) -> int:
    outcomes = proxy.calls().get("RunInstances", {})
    return sum(n for outcome, n in outcomes.items() if "IdempotentParameterMismatch" in outcome)


def test_a_stop_asked_while_the_instance_is_pending_waits_for_running_and_never_meets_incorrect_state(
        kube, network, proxy, operator):
    kube.apply(worker_manifest("early-stop", network))
    wait_for(lambda: (kube.get("early-stop").get("status") or {}).get("instanceState") == "pending", 30,
             interval=0.1, what="the instance pending")
    kube.patch_spec("early-stop", {"desiredState": "Stopped"})
    kube.wait_condition("early-stop", "Ready", reason="InstanceStopped", timeout=90)
    assert kube.get("early-stop")["status"]["instanceState"] == "stopped"
    assert proxy.count("StopInstances", "model:IncorrectInstanceState") == 0
    assert proxy.count("StopInstances", "200") == 1
