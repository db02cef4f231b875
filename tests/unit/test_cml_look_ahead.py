"""The pass reads CML looks from memory and never talks to CML itself (issue 19 point 7).

Looks run in ``look_ahead``, outside the worker's lock; the pass (under the lock) takes the
last outcome, and what that look changed (a pin, a registration sent) and its events, once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from cml_operator.cml.models import LabCounts, Snapshot, SystemInfo, SystemStats
from cml_operator.ec2.models import CMLWorkerInstanceDto
from cml_operator.fleet.cml import CMLMemory
from cml_operator.passes.cml import CMLStep
from cml_operator.reconcile import reasons
from cml_operator.reconcile.actions import Note
from cml_operator.reconcile.cml import CheckOutcome, CMLStatus
from cml_operator.reconcile.cml_spec import CMLSpec
from cml_operator.reconcile.conditions import Health, HealthState
from cml_operator.reconcile.spec import parse_spec
from cml_operator.reconcile.worker import Observation, Plan, WorkerRef

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
REF = WorkerRef(uid="uid-a", namespace="ns", name="a", cluster_id="cluster-1")
INSTANCE = CMLWorkerInstanceDto("i-0123456789abcdef0", "us-east-1", "a", "ami-1", None, "m5.large", [], None,
                                "running", "198.51.100.7", "10.0.0.1", None)
ENDPOINT = "https://198.51.100.7/"
READY_EC2 = Plan(actions=(), health=Health.ready(reasons.INSTANCE_READY, "running and healthy"))


class NoCML:
    """A CML service whose every way to the network fails the test."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(interval=60.0, starting_interval=15.0, boot_timeout=1800.0, timeout=10.0)
        self._memory = CMLMemory()

    def memory(self, uid: str) -> CMLMemory:
        return self._memory

    def session(self) -> Any:
        raise AssertionError("the pass opened a CML connection")

    @property
    def semaphore(self) -> Any:
        raise AssertionError("the pass queued for a CML look")


def _step(status: CMLStatus) -> tuple[CMLStep, NoCML]:
    service = NoCML()
    runtime: Any = SimpleNamespace(cml=service, clock=lambda: 100.0, settings=SimpleNamespace(slow_recheck=60))
    spec = parse_spec({"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678"})
    return CMLStep(runtime, REF, spec, CMLSpec(credentials_secret="login"), status, {}), service


def _finish(step: CMLStep) -> Plan:
    return asyncio.run(step.finish(READY_EC2, Observation(INSTANCE.aws_instance_id, INSTANCE), ()))


def test_without_a_look_yet_the_pass_waits_for_one_and_a_ready_worker_stays_ready() -> None:
    waiting = _finish(_step(CMLStatus())[0])
    assert (waiting.health.state, waiting.health.reason) == (HealthState.RECONCILING, reasons.CML_STARTING)
    assert "not looked at yet" in waiting.health.message and waiting.poll_soon
    kept = _finish(_step(CMLStatus(ready=True))[0])
    assert (kept.health.state, kept.health.reason) == (HealthState.READY, reasons.CML_READY)


def test_the_pass_takes_a_look_and_its_effects_once() -> None:
    step, service = _step(CMLStatus())
    memory = service.memory(REF.uid)
    snapshot = Snapshot(LabCounts(1, 0), SystemStats(0, 5.0, 10.0))
    memory.last_look = CheckOutcome(ENDPOINT, info=SystemInfo("2.10.0", True), snapshot=snapshot)
    memory.looked_instance, memory.looked_at, memory.unread = INSTANCE.aws_instance_id, NOW, True
    memory.look_changes = {"certificate_sha256": "ab" * 32, "certificate_instance_id": INSTANCE.aws_instance_id}
    memory.look_notes = [Note("Normal", reasons.EVENT_CERTIFICATE_PINNED, "pinned")]

    first = _finish(step)
    assert first.health.reason == reasons.CML_READY and step.looked
    assert step.status.certificate_sha256 == "ab" * 32 and step.status.idle_since is not None
    assert [n.reason for n in step.notes] == [reasons.EVENT_CERTIFICATE_PINNED]

    again, _ = _step(replace(step.status))
    again.runtime = step.runtime
    _finish(again)
    assert not again.looked and again.notes == []  # the same look is not taken twice


def test_a_look_from_before_a_stop_is_not_taken_after_the_next_start() -> None:
    step, service = _step(CMLStatus(ready=True))
    memory = service.memory(REF.uid)
    memory.last_look = CheckOutcome(ENDPOINT, info=SystemInfo("2.10.0", True),
                                    snapshot=Snapshot(LabCounts(1, 1), SystemStats(2, 5.0, 10.0)))
    memory.looked_instance, memory.next_look = INSTANCE.aws_instance_id, 500.0
    stopped = replace(INSTANCE, instance_state="stopped")
    stopping = Plan(actions=(), health=Health.ready(reasons.INSTANCE_STOPPED, "stopped"))
    asyncio.run(step.finish(stopping, Observation(stopped.aws_instance_id, stopped), ()))
    assert memory.last_look is None and memory.next_look == 0.0
    started, _ = _step(step.status)
    started.runtime = step.runtime
    plan = _finish(started)
    assert plan.health.reason == reasons.CML_STARTING  # waits for a fresh look, not the old "ready"
