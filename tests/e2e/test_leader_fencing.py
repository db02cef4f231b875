"""A leader cut off from the API server stops changing EC2 before a standby takes over.

The leader reaches kube-apiserver through a TCP delay proxy (tests/support/delayproxy.py); the
standby connects directly. Once the leader's traffic is delayed past its clients' timeouts, it can
no longer renew, and the standby takes the Lease a lease duration later. Meanwhile both are given
EC2 work that needs no API server: a worker's instance is stopped by hand again and again, so
whoever leads keeps starting it (and new workers wait to be launched). Every EC2 request names its replica in the User-Agent, so the fault proxy's log
tells whose calls reached EC2 when: no mutating call of the old leader may come after the new
leader's first (issue 19 point 2; issue 20 point 5's "deposed leader's writes").
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.delayproxy import DelayProxy
from tests.support.processes import OperatorProcess, wait_for

from .conftest import state_of, worker_manifest

pytestmark = pytest.mark.e2e
LEASE = "cml-operator"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0  # the operator's defaults (leader.py)
#: Per direction: a Lease request (5 s client timeout) never gets its answer.
PARTITION_DELAY = 8.0
READ_ONLY = ("Describe", "Get", "List")


def _holder(kube: Any) -> str:
    proc = kube.run("get", "lease", LEASE, "-o", "json", check=False)
    return json.loads(proc.stdout)["spec"].get("holderIdentity", "") if proc.returncode == 0 else ""


def _identity(process: OperatorProcess) -> str:
    return f"{socket.gethostname()}_{process.pid}"


def _kubeconfig_through(original: Path, port: int, target: Path) -> Path:
    config = yaml.safe_load(original.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


def _replica(agent: str, identities: dict[str, str]) -> str:
    """Which replica sent a call, from the ``cml-operator/<version> (<identity>)`` User-Agent part."""
    named = [name for name, identity in identities.items() if f"({identity})" in agent]
    return named[0] if len(named) == 1 else "?"


def test_a_partitioned_leader_sends_no_mutating_call_after_the_new_leaders_first(
        kube, network, aws, proxy, control_plane, operator_factory, tmp_path):
    delayed = DelayProxy(control_plane.apiserver_port).start()
    try:
        args = ("--leader-election", "--leader-election-namespace", kube.namespace)
        kubeconfig = _kubeconfig_through(control_plane.kubeconfig_path, delayed.port, tmp_path / "delayed.kubeconfig")
        old = operator_factory(*args, kubeconfig=kubeconfig)
        wait_for(lambda: _holder(kube) == _identity(old), 30, what="the first operator to lead")
        new = operator_factory(*args)
        wait_for(lambda: "standing by" in new.logs(), 30, what="the second operator to stand by")
        kube.apply(worker_manifest("fence-0", network))
        kube.wait_condition("fence-0", "Ready", timeout=60)
        instance_id = kube.get("fence-0")["status"]["instanceId"]
        proxy.reset_counts()

        old.exit_expected = True  # it is meant to lose the Lease and exit
        delayed.delay = PARTITION_DELAY
        names = [f"fence-{i}" for i in range(1, 5)]
        for name in names:  # work for both replicas: the old one hears of it late, the new one at takeover
            kube.apply(worker_manifest(name, network))

        def stopped_by_hand_until_taken_over() -> bool:
            if state_of(aws, instance_id) == "running":
                aws.stop_instances(InstanceIds=[instance_id])  # straight to moto: not in the proxy's log
            return _holder(kube) == _identity(new)

        wait_for(stopped_by_hand_until_taken_over, LEASE_DURATION + 4 * RETRY_PERIOD + 2 * PARTITION_DELAY,
                 interval=0.5, what="the standby to take the Lease over")
        assert old.wait_exit(30) == 1, old.logs()[-3000:]
        assert "lost the Lease" in old.logs()
        for name in names:
            kube.wait_condition(name, "Ready", timeout=90)
        wait_for(lambda: state_of(aws, instance_id) == "running", 60, what="the new leader to start fence-0 again")
    finally:
        delayed.stop()

    identities = {"old": _identity(old), "new": _identity(new)}
    calls = [(t, action, _replica(agent, identities)) for t, action, _, _, agent in proxy.call_log()[0]]
    mutating = [(t, action, who) for t, action, who in calls if not action.startswith(READ_ONLY)]
    assert mutating, "the new leader launched workers, so EC2 must have seen mutating calls"
    unnamed = [(action, who) for _, action, who in calls if who == "?"]
    assert not unnamed, f"EC2 requests without the replica in their User-Agent: {unnamed[:5]}"
    assert any(who == "old" for *_, who in mutating), "the old leader was never asked to act: nothing was proven"
    first_new = min(t for t, _, who in mutating if who == "new")
    late = [(round(t - first_new, 1), action) for t, action, who in mutating if who == "old" and t >= first_new]
    assert not late, f"the deposed leader changed EC2 after the new leader's first change: {late}"
    print(f"\nmutating calls: {sum(who == 'old' for *_, who in mutating)} from the old leader, "
          f"{sum(who == 'new' for *_, who in mutating)} from the new one")
