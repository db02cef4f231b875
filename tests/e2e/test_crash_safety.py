"""SIGKILL the operator at chosen and random points; afterwards one instance per worker, the one in status.

Chosen points are set at the fault proxy, which kills the operator process around
a forwarded EC2 call: ``before_response`` (EC2 acted, the operator never heard)
or ``after_response`` (it heard, and nothing after that ran: no status patch).
Random points kill it at a random moment (0-2 s) after the new process's first EC2
call, while workers are being created; after every kill no worker has two live
instances, and at the end moto launched exactly one instance per worker.
``CML_KILL_POINTS`` sets the number of random kills (``make soak`` runs 200).
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest

from tests.support.faultproxy import KillRule
from tests.support.processes import wait_for

from .conftest import instances_of, state_of, worker_manifest

pytestmark = pytest.mark.e2e

RANDOM_KILLS = int(os.environ.get("CML_KILL_POINTS", "14"))


def assert_one_instance_each(kube, aws, names: list[str]) -> None:
    for name in names:
        worker = kube.get(name)
        live = instances_of(aws, worker["metadata"]["uid"])
        assert len(live) == 1, f"{name}: {len(live)} live instances {[i['InstanceId'] for i in live]}"
        assert worker["status"]["instanceId"] == live[0]["InstanceId"], name


def all_ready(kube, names: list[str]) -> bool:
    return all((kube.condition(name, "Ready") or {}).get("status") == "True" for name in names)


@pytest.mark.parametrize("when", ["after_response", "before_response"])
def test_killed_right_around_run_instances_leaves_exactly_one_instance(kube, network, aws, proxy,
                                                                        operator_factory, when):
    first = operator_factory()
    proxy.set_kills(KillRule(pid=first.pid, action="RunInstances", when=when))
    names = ["crash-a", "crash-b"]
    for name in names:
        kube.apply(worker_manifest(name, network))

    first.wait_exit(30)  # SIGKILLed by the proxy around the first RunInstances
    assert proxy.count("RunInstances") >= 1
    # EC2 launched the instance; the operator died before (or right after) hearing so.
    assert sum(len(instances_of(aws, kube.get(name)["metadata"]["uid"])) for name in names) >= 1
    if when == "before_response":  # it never heard: no status patch can name the instance
        assert all("instanceId" not in kube.get(name).get("status", {}) for name in names)

    operator_factory()  # a new process resumes from what the API server and EC2 say
    wait_for(lambda: all_ready(kube, names), 60, what="workers Ready after the restart")
    assert_one_instance_each(kube, aws, names)


@pytest.mark.parametrize(("action", "when"), [("DescribeImages", "after_response"),
                                              ("DescribeInstances", "after_response")])
def test_killed_before_launching_leaves_exactly_one_instance(kube, network, aws, proxy, operator_factory,
                                                             action, when):
    first = operator_factory()
    proxy.set_kills(KillRule(pid=first.pid, action=action, when=when))
    kube.apply(worker_manifest("early", network))
    first.wait_exit(30)

    operator_factory()
    wait_for(lambda: all_ready(kube, ["early"]), 60, what="Ready after the restart")
    assert_one_instance_each(kube, aws, ["early"])


def test_killed_during_a_resize_finishes_it_after_restart(kube, network, aws, proxy, operator_factory):
    first = operator_factory()
    kube.apply(worker_manifest("resize", network))
    kube.wait_condition("resize", "Ready")
    proxy.set_kills(KillRule(pid=first.pid, action="StopInstances", when="after_response"))

    kube.patch_spec("resize", {"instanceType": "m5.2xlarge"})
    first.wait_exit(30)

    operator_factory()
    instance_id = kube.get("resize")["status"]["instanceId"]

    def resized() -> bool:
        raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return raw["InstanceType"] == "m5.2xlarge" and raw["State"]["Name"] == "running"

    wait_for(resized, 60, what="the resize to finish")
    kube.wait_condition("resize", "Ready", reason="InstanceReady")
    assert_one_instance_each(kube, aws, ["resize"])


@pytest.mark.parametrize("when", ["before_response", "after_response"])
def test_killed_while_terminating_still_releases_and_leaks_nothing(kube, network, aws, proxy, operator_factory,
                                                                   when):
    first = operator_factory()
    kube.apply(worker_manifest("bye", network))
    kube.wait_condition("bye", "Ready")
    worker = kube.get("bye")
    proxy.set_kills(KillRule(pid=first.pid, action="TerminateInstances", when=when))

    kube.delete("bye", wait=False)
    first.wait_exit(30)

    operator_factory()
    wait_for(lambda: not kube.exists("bye"), 60, what="the finalizer to be released")
    assert instances_of(aws, worker["metadata"]["uid"]) == []
    assert state_of(aws, worker["status"]["instanceId"]) in ("shutting-down", "terminated")


def ec2_calls_made(operator) -> float:
    """EC2 calls this operator process has completed, from its own /metrics (0 until it serves them)."""
    text = operator.metrics()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("cml_ec2_api_calls_total{"))


def live_instances_by_worker(kube, aws) -> tuple[dict[str, list[str]], int]:
    """Every applied worker's live instances at moto, and how many workers are not Ready yet; in two
    calls (one kubectl, one paged DescribeInstances)."""
    workers = json.loads(kube.run("get", "cmlworkers", "-o", "json").stdout)["items"]
    not_ready = sum(1 for w in workers if not any(
        c["type"] == "Ready" and c["status"] == "True" for c in (w.get("status") or {}).get("conditions", [])))
    uids = {w["metadata"]["uid"]: w["metadata"]["name"] for w in workers}
    live: dict[str, list[str]] = {name: [] for name in uids.values()}
    pages = aws.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag-key", "Values": ["cml.dev/worker-uid"]},
                 {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                uid = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get("cml.dev/worker-uid")
                if uid in uids:
                    live[uids[uid]].append(instance["InstanceId"])
    return live, not_ready


@pytest.mark.slow
def test_random_kills_while_creating_never_duplicate(kube, network, aws, proxy, operator_factory):
    seed = int(os.environ.get("CML_KILL_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    print(f"random kill seed {seed} (CML_KILL_SEED), {RANDOM_KILLS} kills")
    names = [f"rand-{n}" for n in range(6)]
    kills = 0
    kills_mid_creation = 0  # kills while some worker was not Ready yet (pending ones count too)
    pending = list(names)
    while kills < RANDOM_KILLS:
        operator = operator_factory(wait=False)
        if pending and kills % 2 == 0:  # new workers keep arriving, one every other kill
            kube.apply(worker_manifest(pending.pop(0), network))
        # Start the clock once this process has talked to EC2: a kill during start-up (imports, Kopf
        # login) would prove nothing about the work.
        wait_for(lambda: ec2_calls_made(operator) > 0, 60, interval=0.05, what="the operator's first EC2 call")
        time.sleep(rng.uniform(0.0, 2.0))
        operator.kill()
        kills += 1
        # After every restart point: never two live instances for one worker.
        live, not_ready = live_instances_by_worker(kube, aws)
        kills_mid_creation += bool(not_ready or pending)
        doubled = {name: ids for name, ids in live.items() if len(ids) > 1}
        assert not doubled, f"after kill {kills}: {doubled}"
    for name in pending:
        kube.apply(worker_manifest(name, network))

    operator_factory()
    wait_for(lambda: all_ready(kube, names), 90, what="every worker Ready after the last kill")
    assert_one_instance_each(kube, aws, names)
    launches = proxy.count("RunInstances", "200")  # replayed tokens are not launches
    print(f"{kills} random kills ({kills_mid_creation} while workers were still being created); {len(names)} "
          f"workers; RunInstances outcomes {proxy.calls().get('RunInstances')}")
    assert launches == len(names), f"{launches} successful RunInstances for {len(names)} workers"
