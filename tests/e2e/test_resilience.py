"""Drift, deletion safety, API-server restarts and an EC2 fault soak: promises, each with a test that could fail."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.faultproxy import FaultRule
from tests.support.processes import wait_for

from .conftest import instances_of, state_of, tags_of, worker_manifest

pytestmark = pytest.mark.e2e

#: Operator intervals for these tests: resync 3 s, poll 1 s (OperatorProcess.FAST_ARGS).
RESYNC, POLL = 3.0, 1.0
BULK = ("--mutating-rate", "50", "--mutating-burst", "100", "--mutating-concurrency", "8")


def ready_count(kube, names) -> int:
    return sum((kube.condition(n, "Ready") or {}).get("status") == "True" for n in names)


def total_calls(proxy) -> int:
    return sum(sum(outcomes.values()) for outcomes in proxy.calls().values())


# ---------------------------------------------------------------- drift


@pytest.mark.parametrize("drift", ["terminated", "stopped", "retagged", "resized"])
def test_drift_outside_the_operator_is_corrected_within_one_resync(kube, network, aws, operator, drift):
    kube.apply(worker_manifest("drifty", network, tags={"team": "netops"}))
    kube.wait_condition("drifty", "Ready")
    worker = kube.get("drifty")
    instance_id = worker["status"]["instanceId"]

    started = time.monotonic()
    if drift == "terminated":
        aws.terminate_instances(InstanceIds=[instance_id])
    elif drift == "stopped":
        aws.stop_instances(InstanceIds=[instance_id])
    elif drift == "retagged":
        # Not managed-by: without it the IAM policy denies the operator every change (the test below).
        aws.create_tags(Resources=[instance_id], Tags=[{"Key": "team", "Value": "hijacked"}])
    else:
        aws.stop_instances(InstanceIds=[instance_id])
        aws.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "t3.nano"})
        aws.start_instances(InstanceIds=[instance_id])

    def corrected() -> bool:
        live = instances_of(aws, worker["metadata"]["uid"])
        if drift == "terminated":
            return len(live) == 1 and live[0]["InstanceId"] != instance_id
        raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        return (raw["State"]["Name"] == "running" and raw["InstanceType"] == "m5.large"
                and tags.get("team") == "netops" and tags.get("cml.dev/managed-by") == "cml-operator")

    wait_for(corrected, 60, interval=0.25, what=f"{drift} drift to be corrected")
    detected_s = time.monotonic() - started
    if drift == "terminated":  # else the Ready below could still be the lost instance's
        wait_for(lambda: kube.get("drifty")["status"].get("instanceId") not in (None, instance_id), 30,
                 what="the status to name the replacement")
    kube.wait_condition("drifty", "Ready", timeout=60)
    print(f"{drift}: corrected {detected_s:.1f}s after the change (resync {RESYNC}s, poll {POLL}s)")
    # Seen by the next full pass (<= resync) and acted on by the next poll (<= poll), plus the actions.
    assert detected_s <= RESYNC + POLL + 8
    if drift == "terminated":
        kube.wait_event("drifty", "InstanceLost")
        assert kube.get("drifty")["status"]["creationAttempt"] == 1


def _remove_managed_by(aws, instance_id: str) -> None:
    aws.create_tags(Resources=[instance_id], Tags=[{"Key": "team", "Value": "hijacked"}])
    aws.delete_tags(Resources=[instance_id], Tags=[{"Key": "cml.dev/managed-by"}])


def _restore_managed_by(aws, instance_id: str) -> None:
    aws.create_tags(Resources=[instance_id], Tags=[{"Key": "cml.dev/managed-by", "Value": "cml-operator"}])


def test_a_removed_managed_by_tag_stalls_the_worker_naming_it_until_a_person_restores_it(
        kube, network, aws, proxy, operator):
    # deploy/iam-policy.json lets the operator change only instances tagged managed-by (and cluster):
    # with the tag gone, its own retag is denied like everything else (the proxy enforces the policy).
    kube.apply(worker_manifest("untagged", network, tags={"team": "netops"}))
    kube.wait_condition("untagged", "Ready")
    instance_id = kube.get("untagged")["status"]["instanceId"]

    _remove_managed_by(aws, instance_id)
    stalled = kube.wait_condition("untagged", "Stalled", reason="ManagedTagMissing", timeout=30)
    assert "cml.dev/managed-by=cml-operator" in stalled["message"]
    assert (f"aws ec2 create-tags --resources {instance_id} --tags Key=cml.dev/managed-by,Value=cml-operator"
            in stalled["message"])
    kube.wait_event("untagged", "ManagedTagMissing")
    assert proxy.count("CreateTags", "denied:UnauthorizedOperation") == 0  # it knows better than to try

    _restore_managed_by(aws, instance_id)
    # Recovers on its own (the slow recheck, 4 s here), with the drifted user tag put back too.
    wait_for(lambda: tags_of(aws, instance_id).get("team") == "netops", 60, what="the team tag restored")
    kube.wait_condition("untagged", "Ready", timeout=60)
    assert proxy.count("CreateTags", "denied:UnauthorizedOperation") == 0


def test_deleting_a_worker_whose_instance_lost_managed_by_is_stalled_not_silent_and_finishes_once_restored(
        kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("undeletable", network))
    kube.wait_condition("undeletable", "Ready")
    instance_id = kube.get("undeletable")["status"]["instanceId"]
    _remove_managed_by(aws, instance_id)

    kube.delete("undeletable", wait=False)
    stalled = kube.wait_condition("undeletable", "Stalled", reason="ManagedTagMissing", timeout=30)
    assert "finalizer stays" in stalled["message"] and f"--resources {instance_id}" in stalled["message"]
    kube.wait_event("undeletable", "ManagedTagMissing")
    assert kube.exists("undeletable") and state_of(aws, instance_id) == "running"
    assert proxy.count("TerminateInstances", "denied:UnauthorizedOperation") == 0

    _restore_managed_by(aws, instance_id)
    wait_for(lambda: not kube.exists("undeletable"), 60, what="the worker to be deleted once the tag is back")
    assert state_of(aws, instance_id) in ("shutting-down", "terminated")


# ---------------------------------------------------------------- deletion safety


@pytest.mark.slow
def test_deleting_many_workers_terminates_exactly_their_instances(kube, network, aws, operator_factory):
    operator_factory(*BULK)
    bystander = aws.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1,
                                  SubnetId=network["subnet"])["Instances"][0]["InstanceId"]
    count = int(os.environ.get("CML_DELETE_COUNT", "100"))
    names = [f"fleet-{i:03d}" for i in range(count)]
    kube.apply("---\n".join(__import__("yaml").safe_dump(worker_manifest(n, network)) for n in names))
    wait_for(lambda: ready_count(kube, names) == count, 240, interval=2, what=f"{count} workers Ready")
    tracked = {kube.get(n)["status"]["instanceId"] for n in names}
    assert len(tracked) == count

    kube.run("delete", "cmlworker", "--all", "--wait=true", "--timeout=240s")

    pages = aws.get_paginator("describe_instances").paginate()  # moto pages at 100 reservations
    everything = {i["InstanceId"]: i for page in pages for r in page["Reservations"] for i in r["Instances"]}
    states = {i: raw["State"]["Name"] for i, raw in everything.items()}
    terminated = {i for i, s in states.items() if s in ("shutting-down", "terminated")}
    def describe(ids: set[str]) -> dict:
        return {i: (states.get(i), {t["Key"]: t["Value"] for t in everything.get(i, {}).get("Tags", [])}.get(
            "cml.dev/worker")) for i in ids}

    assert terminated == tracked, (f"terminated, not tracked: {describe(terminated - tracked)}; "
                                   f"tracked, not terminated: {describe(tracked - terminated)}")
    assert states[bystander] == "running"


def test_deletion_while_authentication_fails_keeps_the_finalizer_and_retries(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("locked", network))
    kube.wait_condition("locked", "Ready")
    instance_id = kube.get("locked")["status"]["instanceId"]
    proxy.set_faults(FaultRule(code="UnauthorizedOperation", action="TerminateInstances"))

    kube.delete("locked", wait=False)

    wait_for(lambda: "AuthenticationFailed" in kube.event_reasons("locked", "Warning"), 30,
             what="a Warning about the failed termination")
    first = proxy.count("TerminateInstances")
    wait_for(lambda: proxy.count("TerminateInstances") > first, 30, what="a retry")
    worker = kube.get("locked")
    assert worker["metadata"]["deletionTimestamp"] and worker["metadata"]["finalizers"] == ["cml.dev/finalizer"]
    assert state_of(aws, instance_id) == "running"

    proxy.clear_faults()
    wait_for(lambda: not kube.exists("locked"), 60, what="release once credentials work")
    assert state_of(aws, instance_id) in ("shutting-down", "terminated")


# ---------------------------------------------------------------- API server restarts and conflicts


@pytest.mark.slow
def test_workers_converge_across_api_server_restarts(kube, network, aws, control_plane, operator):
    first = [f"before-{i}" for i in range(3)]
    for name in first:
        kube.apply(worker_manifest(name, network))
    control_plane.restart_apiserver()  # mid-reconcile: watches break, patches fail, then reconnect
    kube.patch_spec(first[0], {"desiredState": "Stopped"})
    later = [f"after-{i}" for i in range(3)]
    for name in later:
        kube.apply(worker_manifest(name, network))
    control_plane.restart_apiserver()

    # The stop asked for between the restarts is not missed.
    kube.wait_condition(first[0], "Ready", reason="InstanceStopped", timeout=120)
    wait_for(lambda: ready_count(kube, first + later) == 6, 120, interval=1, what="all six Ready")
    for name in first + later:
        assert len(instances_of(aws, kube.get(name)["metadata"]["uid"])) == 1, name
    # Changes made while the watch was down are not missed: spec edits after the second restart too.
    kube.patch_spec(later[0], {"tags": {"after": "restart"}})
    instance_id = kube.get(later[0])["status"]["instanceId"]
    wait_for(lambda: tags_of(aws, instance_id).get("after") == "restart", 30, what="post-restart tag sync")


def test_a_conflicting_writer_gets_409_while_the_operator_keeps_converging(kube, network, aws, operator):
    """The operator writes status with merge patches that carry no resourceVersion, so another
    writer's optimistic-concurrency conflict (409) never blocks it; the other writer retries."""
    kube.apply(worker_manifest("contested", network))
    kube.wait_condition("contested", "Ready")
    stale = kube.get("contested")
    kube.patch_spec("contested", {"tags": {"round": "1"}})  # the stored object moves on

    stale["spec"]["tags"] = {"round": "stale"}
    import json

    rejected = kube.run("replace", "-f", "-", input=json.dumps(stale), check=False)
    assert rejected.returncode != 0 and "the object has been modified" in rejected.stderr  # HTTP 409

    def write_with_retry() -> bool:  # what a well-behaved writer does on 409: re-read, re-apply
        fresh = kube.get("contested")
        fresh["spec"]["tags"] = {"round": "2"}
        return kube.run("replace", "-f", "-", input=json.dumps(fresh), check=False).returncode == 0

    wait_for(write_with_retry, 30, what="the writer's retried update")
    instance_id = kube.get("contested")["status"]["instanceId"]
    wait_for(lambda: tags_of(aws, instance_id).get("round") == "2", 30, what="the retried change to reach EC2")
    kube.wait_condition("contested", "Ready")
    assert "status=409" not in operator.logs() and "Conflict" not in operator.logs()


# ---------------------------------------------------------------- EC2 fault soak


def _converge(kube, network, proxy, prefix: str, count: int, faults: FaultRule | None, fault_seconds: float):
    proxy.reset_counts()
    if faults:
        proxy.set_faults(faults)
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        kube.apply(worker_manifest(name, network))
    if faults:
        time.sleep(fault_seconds)  # the fault window itself, not an assertion
        proxy.clear_faults()
    wait_for(lambda: ready_count(kube, names) == count, 180, interval=1, what=f"{prefix} workers Ready")
    return names, total_calls(proxy), proxy.calls()


@pytest.mark.slow
def test_fault_soak_converges_without_duplicates_within_3x_calls(kube, network, aws, proxy, operator_factory):
    operator_factory("--resync-interval", "60", "--fast-interval", "1", *BULK)
    count = int(os.environ.get("CML_SOAK_WORKERS", "10"))
    clean_names, clean_calls, _ = _converge(kube, network, proxy, "clean", count, None, 0)
    soak = FaultRule(code="InternalError", probability=0.3,
                     codes=["RequestLimitExceeded", "InternalError", "InsufficientInstanceCapacity"])
    soak_names, soak_calls, calls = _converge(kube, network, proxy, "soak", count, soak,
                                              float(os.environ.get("CML_SOAK_SECONDS", "20")))

    faults = sum(n for outcomes in calls.values() for outcome, n in outcomes.items() if outcome.startswith("fault:"))
    print(f"fault-free: {clean_calls} EC2 calls; 30% faults: {soak_calls} calls ({faults} faulted); "
          f"ratio {soak_calls / clean_calls:.2f}; fault proxy seed {proxy.seed}")
    assert faults > 0
    for name in clean_names + soak_names:
        assert len(instances_of(aws, kube.get(name)["metadata"]["uid"])) == 1, name
    assert soak_calls <= 3 * clean_calls
