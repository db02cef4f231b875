"""Two replicas with --leader-election: one reconciles, the other takes over when it dies or stops.

The Lease lives in the test's namespace (--leader-election-namespace), so tests cannot see
each other's leaders. Takeover is measured from the moment the signal was sent to the moment
the Lease names the standby; the figures are printed (run with -s) for docs/install.md.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any

import pytest

from tests.support.processes import OperatorProcess, wait_for

from .conftest import instances_of, worker_manifest

pytestmark = pytest.mark.e2e
LEASE = "cml-operator"
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0  # the operator's defaults (leader.py)
#: SIGKILL: the standby takes over once it has seen the same record for a lease duration on its own
#: clock; it saw the last renewal up to one retry period late and polls on that period: 19 s + requests.
KILL_TAKEOVER_LIMIT = LEASE_DURATION + 2 * RETRY_PERIOD + 2
#: SIGTERM: Kopf stops (a second or two under load), the lease is released, the standby's next poll takes it.
#: Without the release it would take a lease duration, so this still fails if the release breaks.
TERM_TAKEOVER_LIMIT = RETRY_PERIOD + 4


def _holder(kube: Any) -> str:
    proc = kube.run("get", "lease", LEASE, "-o", "json", check=False)
    return json.loads(proc.stdout)["spec"].get("holderIdentity", "") if proc.returncode == 0 else ""


def _identity(process: OperatorProcess) -> str:
    return f"{socket.gethostname()}_{process.pid}"


def _two_replicas(operator_factory: Any, kube: Any) -> tuple[OperatorProcess, OperatorProcess]:
    args = ("--leader-election", "--leader-election-namespace", kube.namespace)
    first = operator_factory(*args)
    second = operator_factory(*args)  # /healthz answers on a standby too (its probes must pass)
    holder = wait_for(lambda: _holder(kube), 30, what="a leader")
    leader, standby = (first, second) if holder == _identity(first) else (second, first)
    assert holder == _identity(leader), f"the Lease names {holder!r}, not one of the two operators"
    time.sleep(3)  # a retry period and more: the standby must still stand by
    assert _holder(kube) == _identity(leader)
    assert "standing by" in standby.logs() and "leads now" not in standby.logs()
    return leader, standby


def _takeover_seconds(kube: Any, standby: OperatorProcess, sent: float, limit: float) -> float:
    wait_for(lambda: _holder(kube) == _identity(standby), limit + 10, interval=0.1,
             what="the standby to hold the Lease")
    return time.monotonic() - sent


def test_sigkill_of_the_leader_while_creating_ten_workers_the_standby_finishes_them(
        kube, network, aws, operator_factory):
    leader, standby = _two_replicas(operator_factory, kube)
    names = [f"ha-{i}" for i in range(10)]
    for name in names:
        kube.apply(worker_manifest(name, network))
    wait_for(lambda: any((kube.get(n).get("status") or {}).get("instanceId") for n in names), 30,
             what="the leader to start creating")

    killed = time.monotonic()
    leader.kill()
    took = _takeover_seconds(kube, standby, killed, KILL_TAKEOVER_LIMIT)
    print(f"\ntakeover after SIGKILL of the leader: {took:.1f}s")
    assert took < KILL_TAKEOVER_LIMIT, f"the standby led only {took:.1f}s after the leader died"

    for name in names:
        kube.wait_condition(name, "Ready", timeout=120)
    for name in names:
        uid = kube.get(name)["metadata"]["uid"]
        assert len(instances_of(aws, uid, include_gone=True)) == 1, f"{name} has more than one instance"
    assert "leads now" in standby.logs()


def test_sigterm_of_the_leader_releases_the_lease_and_the_standby_takes_over_at_once(
        kube, network, aws, operator_factory):
    leader, standby = _two_replicas(operator_factory, kube)
    kube.apply(worker_manifest("ha-term-1", network))
    kube.wait_condition("ha-term-1", "Ready", timeout=60)

    leader.exit_expected = True  # the test stops it: its exit must not end the waits below
    sent = time.monotonic()
    leader.process.send_signal(signal.SIGTERM)
    took = _takeover_seconds(kube, standby, sent, TERM_TAKEOVER_LIMIT)
    print(f"\ntakeover after SIGTERM of the leader: {took:.1f}s")
    assert leader.wait_exit(30) == 0, leader.logs()[-3000:]
    assert "released the Lease" in leader.logs()
    assert took < TERM_TAKEOVER_LIMIT, f"the standby led only {took:.1f}s after the leader was told to stop"

    # the new leader reconciles: a new worker becomes Ready and the old one stays at one instance
    kube.apply(worker_manifest("ha-term-2", network))
    kube.wait_condition("ha-term-2", "Ready", timeout=60)
    for name in ("ha-term-1", "ha-term-2"):
        assert len(instances_of(aws, kube.get(name)["metadata"]["uid"], include_gone=True)) == 1


def test_a_leader_that_cannot_renew_stops_within_the_renew_deadline_and_exits(kube, operator_factory):
    """Renewals fail once someone else holds the Lease: the leader stops after the renew deadline (10 s).

    (The unit tests cover renewals failing because the API server is unreachable, with a fake store.)
    """
    leader, _ = _two_replicas(operator_factory, kube)
    leader.exit_expected = True  # it is meant to exit
    forced = time.monotonic()
    kube.run("patch", "lease", LEASE, "--type=merge", "-p",
             json.dumps({"spec": {"holderIdentity": "someone-else_1", "leaseDurationSeconds": 15}}))
    code = leader.wait_exit(30)
    stopped = time.monotonic() - forced
    print(f"\nleader stopped {stopped:.1f}s after its Lease was taken")
    assert code == 1, leader.logs()[-3000:]
    assert "lost the Lease" in leader.logs()
    assert stopped < 15, "the old leader kept running past a lease duration"
