"""Safe to trust with an AWS account (issue 10): image owners, bounded launches, ownership, pause, bad regions.

Each test drives the real API server and the operator process against moto_server
behind the fault proxy, and reads the truth from moto directly (``aws``) and the
proxy's call counters (``proxy``), never from the operator's own reports alone.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.faultproxy import FaultRule, RewriteRule, start_accepted_xml
from tests.support.processes import wait_for

from .conftest import instances_of, policy_with_image_owners, state_of, tags_of, wait_resync_passes, worker_manifest

pytestmark = pytest.mark.e2e


def _kube_system_uid(kube) -> str:
    return json.loads(kube.plane.kubectl("get", "namespace", "kube-system", "-o", "json").stdout)["metadata"]["uid"]


def _hand_made(aws, network, tags: dict[str, str]) -> str:
    """An instance the operator did not launch (moto_server cannot MonitorInstances, so monitoring is on)."""
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    created = aws.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1, InstanceType="m5.large",
                                SubnetId=network["subnet"], SecurityGroupIds=[network["sg"]],
                                Monitoring={"Enabled": True}, TagSpecifications=spec)
    return created["Instances"][0]["InstanceId"]


# ---------------------------------------------------------------- 1. image trust


def test_an_ami_id_of_an_owner_outside_ami_owners_is_refused_and_nothing_launches(kube, network, proxy, operator):
    kube.apply(worker_manifest("img-1", network, amiId=network["amazon_ami"]))

    stalled = kube.wait_condition("img-1", "Stalled", reason="InvalidParameter")
    assert "spec.amiOwners" in stalled["message"] and "amazon" in stalled["message"]
    assert network["amazon_ami"] in stalled["message"]
    assert proxy.count("RunInstances") == 0


def test_ami_name_resolves_only_among_the_allowed_owners(kube, network, aws, proxy, operator_factory, tmp_path):
    # The IAM policy too must allow Amazon's images, as docs/install.md says (the proxy enforces it).
    operator_factory(iam_policies=(policy_with_image_owners(tmp_path, "amazon"), "deploy/iam-policy-adoption.json"))
    amazon_name = aws.describe_images(ImageIds=[network["amazon_ami"]])["Images"][0]["Name"]
    kube.apply(worker_manifest("img-2", network, amiId=None, amiName=amazon_name))

    stalled = kube.wait_condition("img-2", "Stalled", reason="InvalidParameter")
    assert "spec.amiOwners" in stalled["message"] and "amazon" in stalled["message"]
    assert proxy.count("RunInstances") == 0
    # The owner named in amiOwners is allowed.
    kube.apply(worker_manifest("img-3", network, amiId=None, amiName=amazon_name, amiOwners=["amazon"]))
    kube.wait_condition("img-3", "Ready")
    assert kube.get("img-3")["status"]["amiId"] == network["amazon_ami"]


# ---------------------------------------------------------------- 2. bounded launches and replacements


def test_instances_dying_before_ready_stall_launch_failed_after_three_launches(kube, network, aws, proxy,
                                                                                operator_factory):
    operator_factory("--slow-recheck", "600")
    # Status checks never answer, so no instance ever reaches Ready; each dies in moto.
    proxy.set_faults(FaultRule(action="DescribeInstanceStatus", code="InternalError"))
    kube.apply(worker_manifest("boot-1", network))
    uid = wait_for(lambda: kube.get("boot-1")["metadata"]["uid"], 10)
    killed: set[str] = set()

    def kill_each_launch() -> dict | None:
        for instance in instances_of(aws, uid):
            aws.terminate_instances(InstanceIds=[instance["InstanceId"]])
            killed.add(instance["InstanceId"])
        stalled = kube.condition("boot-1", "Stalled")
        return stalled if stalled and stalled["status"] == "True" else None

    stalled = wait_for(kill_each_launch, 120, interval=0.3, what="Stalled LaunchFailed")
    assert stalled["reason"] == "LaunchFailed"
    assert "Client.UserInitiatedShutdown" in stalled["message"]  # EC2's StateReason, quoted
    assert len(killed) == 3 and proxy.count("RunInstances") == 3
    recovery = kube.get("boot-1")["status"]["recovery"]
    assert recovery["failedLaunches"] == 3
    kube.wait_event("boot-1", "LaunchFailed", count=3)
    # A spec change earns exactly one more try.
    kube.patch_spec("boot-1", {"tags": {"retry": "1"}})
    wait_for(lambda: proxy.count("RunInstances") == 4, 30, what="one more launch after the spec change")


def test_a_lost_ready_instance_is_replaced_at_most_max_replacements_times(kube, network, aws, proxy,
                                                                          operator_factory):
    operator_factory("--max-replacements", "1", "--slow-recheck", "600")
    kube.apply(worker_manifest("lost-1", network))
    kube.wait_condition("lost-1", "Ready")
    first = kube.get("lost-1")["status"]["instanceId"]

    aws.terminate_instances(InstanceIds=[first])
    second = wait_for(lambda: (kube.get("lost-1")["status"].get("instanceId") or first) != first
                      and kube.get("lost-1")["status"]["instanceId"], 60, what="a replacement")
    kube.wait_condition("lost-1", "Ready")
    kube.wait_event("lost-1", "InstanceLost")

    aws.terminate_instances(InstanceIds=[second])
    stalled = kube.wait_condition("lost-1", "Stalled", reason="ReplacementLimitReached")
    assert "--max-replacements" in stalled["message"]
    assert proxy.count("RunInstances") == 2
    assert instances_of(aws, kube.get("lost-1")["metadata"]["uid"]) == []


@pytest.mark.slow
def test_a_start_that_falls_back_to_stopped_backs_off_and_stalls_start_failed_after_three(
        kube, network, aws, proxy, operator_factory):
    backoff, grace = 6.0, 5.0  # --max-retry-delay caps the 15 s base; the start grace is at least 5 s
    operator_factory("--max-retry-delay", str(backoff), "--slow-recheck", "600")
    kube.apply(worker_manifest("cap-1", network))
    kube.wait_condition("cap-1", "Ready")
    instance_id = kube.get("cap-1")["status"]["instanceId"]
    # EC2 accepts every StartInstances for this instance (pending) but it falls back to stopped for lack of
    # capacity: the proxy answers the call without moto (which keeps it stopped) and shows EC2's StateReason.
    proxy.set_faults(FaultRule(code="", action="StartInstances", effect="answer", param_value=instance_id,
                               body=start_accepted_xml(instance_id)))
    proxy.set_rewrites(RewriteRule(
        "DescribeInstances",
        "<code>Client.UserInitiatedShutdown</code><message>Client.UserInitiatedShutdown: User initiated shutdown",
        "<code>Server.InsufficientInstanceCapacity</code><message>Server.InsufficientInstanceCapacity: "
        "Insufficient capacity."))
    proxy.reset_counts()

    aws.stop_instances(InstanceIds=[instance_id])  # by hand: not a failed start, the operator just starts it

    stalled = kube.wait_condition("cap-1", "Stalled", reason="StartFailed", timeout=120)
    assert "Server.InsufficientInstanceCapacity" in stalled["message"]
    starts = [t for t, action, *_ in proxy.call_log()[0] if action == "StartInstances"]
    assert len(starts) == 3 and proxy.count("StartInstances", "fault:answer") == 3
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    # Each retry waited for the grace (the stop is judged on a read after the Start) plus the backoff.
    assert all(gap >= backoff + grace - 1 for gap in gaps), gaps
    status = kube.get("cap-1")["status"]
    assert status["recovery"]["failedStarts"] == 3 and status["instanceState"] == "stopped"
    assert kube.wait_event("cap-1", "StartFailed", count=3).count("StartFailed") == 3
    time.sleep(backoff + grace + 2)  # longer than a retry would take: none may come while stalled
    assert proxy.count("StartInstances") == 3

    # Capacity is back; a spec change earns one more try, which now starts it.
    proxy.clear_faults()
    kube.patch_spec("cap-1", {"tags": {"retry": "1"}})
    kube.wait_condition("cap-1", "Ready", reason="InstanceReady")
    assert state_of(aws, instance_id) == "running" and proxy.count("StartInstances") == 4
    assert "failedStarts" not in kube.get("cap-1")["status"].get("recovery", {})


# ---------------------------------------------------------------- 3. ownership


def test_every_instance_carries_the_cluster_tag_of_this_cluster(kube, network, aws, operator):
    kube.apply(worker_manifest("own-1", network))
    kube.wait_condition("own-1", "Ready")
    tags = tags_of(aws, kube.get("own-1")["status"]["instanceId"])
    assert tags["cml.dev/cluster"] == _kube_system_uid(kube)


def test_adopting_another_workers_instance_stalls_and_deleting_leaves_it_untouched(kube, network, aws, proxy,
                                                                                   adopting_operator):
    kube.apply(worker_manifest("own-a", network))
    kube.wait_condition("own-a", "Ready")
    owner = kube.get("own-a")
    instance_id = owner["status"]["instanceId"]
    before = tags_of(aws, instance_id)
    proxy.reset_counts()

    kube.apply(worker_manifest("own-b", network, instanceId=instance_id, desiredState="Stopped",
                               instanceType="m5.xlarge", tags={"team": "b"}))
    stalled = kube.wait_condition("own-b", "Stalled", reason="InstanceOwnedByOther")
    assert f"{kube.namespace}/own-a" in stalled["message"] and owner["metadata"]["uid"] in stalled["message"]

    kube.delete("own-b")
    assert not kube.exists("own-b")
    assert state_of(aws, instance_id) == "running" and tags_of(aws, instance_id) == before
    for action in ("StopInstances", "TerminateInstances", "CreateTags", "DeleteTags", "ModifyInstanceAttribute"):
        assert proxy.count(action) == 0, action


def test_an_instance_of_another_cluster_is_never_adopted_or_terminated(kube, network, aws, proxy, adopting_operator):
    instance_id = _hand_made(aws, network, {"cml.dev/cluster": "some-other-cluster",
                                            "cml.dev/worker-uid": "0000-elsewhere"})
    kube.apply(worker_manifest("own-c", network, instanceId=instance_id))
    stalled = kube.wait_condition("own-c", "Stalled", reason="InstanceOwnedByOther")
    assert "some-other-cluster" in stalled["message"]

    kube.delete("own-c")
    assert state_of(aws, instance_id) == "running"
    assert tags_of(aws, instance_id)["cml.dev/worker-uid"] == "0000-elsewhere"
    assert proxy.count("TerminateInstances") == 0 and proxy.count("CreateTags") == 0


def test_ownership_is_read_again_right_before_a_stop(kube, network, aws, proxy, operator_factory):
    first = operator_factory()
    kube.apply(worker_manifest("own-d", network))
    kube.wait_condition("own-d", "Ready")
    instance_id = kube.get("own-d")["status"]["instanceId"]
    first.stop()
    # An operator whose cache goes stale: it reads the instance once (on resume) and then not for 10 minutes,
    # so its timer decides on a view that still says "ours".
    operator_factory("--resync-interval", "600", "--fast-interval", "600")
    kube.run("annotate", "cmlworker", "own-d", "cml.dev/paused=true")
    wait_for(lambda: kube.get("own-d")["status"].get("paused") is True, 30, what="status.paused")
    kube.patch_spec("own-d", {"desiredState": "Stopped"})  # seen while paused: nothing happens
    aws.create_tags(Resources=[instance_id], Tags=[{"Key": "cml.dev/worker-uid", "Value": "someone-else"},
                                                   {"Key": "cml.dev/worker", "Value": "other/worker"}])
    proxy.reset_counts()

    kube.run("annotate", "cmlworker", "own-d", "cml.dev/paused-")  # only the timer notices: it acts on its cache
    stalled = kube.wait_condition("own-d", "Stalled", reason="InstanceOwnedByOther")
    assert "other/worker" in stalled["message"]
    assert proxy.count("DescribeInstances") >= 1  # the fresh read right before the stop
    assert proxy.count("StopInstances") == 0 and state_of(aws, instance_id) == "running"


# ---------------------------------------------------------------- 9. pause


def test_a_paused_worker_makes_no_ec2_calls_until_unpaused_and_still_deletes(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("pause-1", network))
    kube.wait_condition("pause-1", "Ready")
    instance_id = kube.get("pause-1")["status"]["instanceId"]

    kube.run("annotate", "cmlworker", "pause-1", "cml.dev/paused=true")
    wait_for(lambda: kube.get("pause-1")["status"].get("paused") is True, 30, what="status.paused")
    wait_for(lambda: "Paused" in kube.event_reasons("pause-1"), 30, what="a Paused event")
    kube.patch_spec("pause-1", {"desiredState": "Stopped", "tags": {"while": "paused"}})
    proxy.reset_counts()
    wait_resync_passes(proxy, 2)  # a whole resync, the timers (1 s) and the change handler: none may call EC2 here
    assert proxy.count("StopInstances") == 0 and proxy.count("CreateTags") == 0
    assert state_of(aws, instance_id) == "running"

    kube.run("annotate", "cmlworker", "pause-1", "cml.dev/paused-")
    kube.wait_condition("pause-1", "Ready", reason="InstanceStopped")
    assert "paused" not in kube.get("pause-1")["status"]
    assert tags_of(aws, instance_id)["while"] == "paused"

    kube.run("annotate", "cmlworker", "pause-1", "cml.dev/paused=true")
    wait_for(lambda: kube.get("pause-1")["status"].get("paused") is True, 30, what="status.paused again")
    kube.delete("pause-1")
    assert state_of(aws, instance_id) in ("shutting-down", "terminated")


# ---------------------------------------------------------------- 10. input the schema cannot judge


def test_an_unknown_region_stalls_naming_spec_region(kube, network, proxy, operator):
    kube.apply(worker_manifest("region-1", network, region="us-east-7"))
    stalled = kube.wait_condition("region-1", "Stalled", reason="InvalidParameter", timeout=30)
    assert "spec.region" in stalled["message"] and "us-east-7" in stalled["message"]
    assert proxy.count("RunInstances") == 0


def test_a_worker_tag_longer_than_256_characters_is_shortened(kube, network, aws, operator):
    name = "w" * 250  # namespace/name passes EC2's 256-character tag value limit
    kube.apply(worker_manifest(name, network))
    kube.wait_condition(name, "Ready")
    tags = tags_of(aws, kube.get(name)["status"]["instanceId"])
    assert len(tags["cml.dev/worker"]) <= 256 and tags["cml.dev/worker"].startswith(f"{kube.namespace}/www")
    assert tags["cml.dev/worker"] != f"{kube.namespace}/{name}"


# ---------------------------------------------------------------- 4. adoption without surprises


def test_adopting_with_only_region_and_instance_id_changes_nothing_on_the_instance(kube, network, aws, proxy,
                                                                                    adopting_operator):
    created = aws.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1, InstanceType="t3.large",
                                SubnetId=network["subnet"], SecurityGroupIds=[network["sg"]])
    instance_id = created["Instances"][0]["InstanceId"]
    manifest = {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker", "metadata": {"name": "late-1"},
                "spec": {"region": "us-east-1", "instanceId": instance_id}}
    kube.apply(manifest)
    kube.wait_condition("late-1", "Ready")

    status = kube.get("late-1")["status"]
    assert status["instanceType"] == "t3.large" and status["securityGroupIds"] == [network["sg"]]
    assert status["detailedMonitoring"] is False
    assert "instanceType" not in kube.get("late-1")["spec"]  # no CRD default stamped on an adoption
    for action in ("StopInstances", "ModifyInstanceAttribute", "MonitorInstances", "UnmonitorInstances",
                   "RunInstances"):
        assert proxy.count(action) == 0, action
    raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert raw["InstanceType"] == "t3.large" and raw["State"]["Name"] == "running"


# ---------------------------------------------------------------- 5. backup and restore


def test_a_restored_worker_reattaches_its_instance_instead_of_launching(kube, network, aws, proxy, operator_factory):
    first = operator_factory()
    kube.apply(worker_manifest("restore-1", network))
    kube.wait_condition("restore-1", "Ready")
    old = kube.get("restore-1")
    instance_id = old["status"]["instanceId"]
    wait_for(lambda: kube.get("restore-1")["metadata"].get("annotations", {}).get("cml.dev/instance-id")
             == instance_id, 30, what="the cml.dev/instance-id annotation")
    backup = kube.get("restore-1")

    # Lose the object the way a restore does: operator down, finalizer removed by hand, object deleted.
    first.stop()
    kube.run("patch", "cmlworker", "restore-1", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kube.delete("restore-1")
    restored = {"apiVersion": backup["apiVersion"], "kind": backup["kind"], "spec": backup["spec"],
                "metadata": {"name": "restore-1", "annotations": backup["metadata"]["annotations"]}}
    kube.apply(restored)
    proxy.reset_counts()
    operator_factory()

    kube.wait_condition("restore-1", "Ready")
    now = kube.get("restore-1")
    assert now["metadata"]["uid"] != old["metadata"]["uid"]
    assert now["status"]["instanceId"] == instance_id and proxy.count("RunInstances") == 0
    assert tags_of(aws, instance_id)["cml.dev/worker-uid"] == now["metadata"]["uid"]
    assert any("re-attached" in e["message"] for e in kube.events("restore-1") if e["reason"] == "InstanceAdopted")


def test_a_copied_manifest_under_another_name_does_not_take_the_instance(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("orig-1", network))
    kube.wait_condition("orig-1", "Ready")
    instance_id = kube.get("orig-1")["status"]["instanceId"]
    wait_for(lambda: kube.get("orig-1")["metadata"].get("annotations", {}).get("cml.dev/instance-id"), 30,
             what="the annotation")
    copy = worker_manifest("copy-1", network)
    copy["metadata"]["annotations"] = {"cml.dev/instance-id": instance_id}
    kube.apply(copy)
    kube.wait_condition("copy-1", "Ready")
    assert kube.get("copy-1")["status"]["instanceId"] != instance_id
    assert tags_of(aws, instance_id)["cml.dev/worker-uid"] == kube.get("orig-1")["metadata"]["uid"]


# ---------------------------------------------------------------- 6. fix what you can while nothing was launched


def test_a_refused_image_is_fixed_with_apply_and_then_the_image_is_immutable(kube, network, operator):
    kube.apply(worker_manifest("typo-1", network, amiId=network["amazon_ami"]))
    kube.wait_condition("typo-1", "Stalled", reason="InvalidParameter")

    kube.apply(worker_manifest("typo-1", network))  # the right image: accepted, nothing was launched
    kube.wait_condition("typo-1", "Ready")

    refused = kube.apply(worker_manifest("typo-1", network, amiId=network["amazon_ami"]), check=False)
    assert refused.returncode != 0 and "spec.amiId is immutable" in refused.stderr


# ---------------------------------------------------------------- 7. power state first


def test_desired_state_is_applied_even_when_tagging_fails(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("power-1", network, tags={"team": "a"}))
    kube.wait_condition("power-1", "Ready")
    instance_id = kube.get("power-1")["status"]["instanceId"]
    proxy.set_faults(FaultRule(action="CreateTags", code="UnauthorizedOperation"))

    kube.patch_spec("power-1", {"desiredState": "Stopped", "tags": {"team": "b"}})

    wait_for(lambda: state_of(aws, instance_id) == "stopped", 60, what="the stop despite failing tags")
    wait_for(lambda: proxy.count("CreateTags", "fault:UnauthorizedOperation") >= 1, 30,
             what="the tag call after the stop (refused)")
    assert tags_of(aws, instance_id)["team"] == "a"


# ---------------------------------------------------------------- 8 and 11. no re-sent writes, no double calls

FLEET = 100  # the figure: one tag changed on 100 Ready workers


def ready_names(kube) -> set[str]:
    """Workers whose Ready condition is True, in one list call (100 gets per poll would be slow)."""
    items = json.loads(kube.run("get", "cmlworkers", "-o", "json").stdout)["items"]
    return {w["metadata"]["name"] for w in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in w.get("status", {}).get("conditions", []))}


def tag_values(aws, key: str, instance_ids: list[str]) -> dict[str, str | None]:
    """The value of one tag on each instance, read from moto in one call."""
    pages = aws.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)  # moto pages at 100
    return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(key)
            for page in pages for r in page["Reservations"] for i in r["Instances"]}


@pytest.mark.slow
def test_changing_one_tag_on_many_ready_workers_sends_one_create_tags_each(kube, network, aws, proxy,
                                                                           operator_factory):
    # A faster token bucket than AWS's: the test counts calls, the rate is not its subject.
    operator_factory("--mutating-rate", "25", "--mutating-burst", "50")
    names = [f"fleet-{i}" for i in range(FLEET)]
    kube.apply("\n---\n".join(json.dumps(worker_manifest(n, network, tags={"v": "1"})) for n in names))
    wait_for(lambda: ready_names(kube) >= set(names), 300, interval=3, what=f"{FLEET} workers Ready")
    ids = [kube.get(n)["status"]["instanceId"] for n in names]
    assert len(set(ids)) == FLEET
    wait_resync_passes(proxy, 2)  # a whole resync pass: every worker's cache agrees with EC2 before counting
    proxy.reset_counts()

    for name in names:
        kube.patch_spec(name, {"tags": {"v": "2"}})
    wait_for(lambda: set(tag_values(aws, "v", ids).values()) == {"2"}, 180, interval=2,
             what="every instance retagged")
    wait_resync_passes(proxy, 3)  # two whole resyncs and the timer passes between: a re-sent write would show up

    assert proxy.count("CreateTags") == FLEET
    updated = json.loads(kube.run("get", "events", "-o", "json").stdout)["items"]
    per_worker = [e["involvedObject"]["name"] for e in updated if e["reason"] == "InstanceUpdated"
                  and "'v'" in e["message"]]
    assert sorted(per_worker) == sorted(names)
