"""An idle stop reads the instance's tags from EC2 right before it stops it (issue 19 point 3).

The pass may have decided on a cached observation; if the instance was handed to another worker
or cluster meanwhile, the stop must not go out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from cml_operator.ec2.models import CMLWorkerInstanceDto
from cml_operator.passes.cml import CMLStep
from cml_operator.reconcile import reasons
from cml_operator.reconcile.cml import CMLStatus
from cml_operator.reconcile.cml_spec import CMLSpec
from cml_operator.reconcile.conditions import Health, now_rfc3339
from cml_operator.reconcile.spec import parse_spec
from cml_operator.reconcile.worker import Observation, WorkerRef

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
REF = WorkerRef(uid="uid-a", namespace="ns", name="a", cluster_id="cluster-1")
OURS = {"cml.dev/worker-uid": "uid-a", "cml.dev/cluster": "cluster-1", "cml.dev/managed-by": "cml-operator"}
INSTANCE = CMLWorkerInstanceDto("i-0123456789abcdef0", "us-east-1", "a", "ami-1", None, "m5.large", [], None,
                                "running", None, "10.0.0.1", None, tags=dict(OURS))


@dataclass
class FakeEC2:
    stops: list[str] = field(default_factory=list)

    async def stop_instance(self, region: str, instance_id: str) -> None:
        self.stops.append(instance_id)


@dataclass
class FakeObserver:
    current: CMLWorkerInstanceDto
    reads: list[float] = field(default_factory=list)

    async def observe(self, instance_id: str, *, max_age: float, hot: bool = False) -> Observation:
        self.reads.append(max_age)
        return Observation(instance_id, self.current)


def _step(current_tags: dict[str, str]) -> tuple[CMLStep, FakeEC2, FakeObserver]:
    ec2, observer = FakeEC2(), FakeObserver(replace(INSTANCE, tags=current_tags))
    runtime: Any = SimpleNamespace(ec2=ec2, observers=lambda region: observer,
                                   metrics=SimpleNamespace(idle_stops=SimpleNamespace(inc=lambda: None)),
                                   settings=SimpleNamespace(slow_recheck=60))
    spec = parse_spec({"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678"})
    cml = CMLSpec(credentials_secret="login", idle_after_minutes=30)
    status = CMLStatus(idle_since=now_rfc3339(NOW - timedelta(minutes=45)))
    return CMLStep(runtime, REF, spec, cml, status, {}), ec2, observer


def test_an_idle_stop_goes_out_when_the_fresh_tags_still_name_the_worker() -> None:
    step, ec2, observer = _step(OURS)
    asyncio.run(step._maybe_idle_stop(INSTANCE, Health.ready(reasons.CML_READY, "ok"), NOW))
    assert ec2.stops == [INSTANCE.aws_instance_id] and observer.reads[0] == 0
    assert step.status.idle_stopped_at is not None


def test_an_idle_stop_is_skipped_when_the_instance_was_handed_to_another_worker() -> None:
    step, ec2, observer = _step({**OURS, "cml.dev/worker-uid": "uid-b", "cml.dev/worker": "ns/b"})
    health = asyncio.run(step._maybe_idle_stop(INSTANCE, Health.ready(reasons.CML_READY, "ok"), NOW))
    assert ec2.stops == [] and observer.reads == [0]  # read fresh (max_age 0), then nothing sent
    assert step.status.idle_stopped_at is None and health.reason == reasons.CML_READY
    assert [(n.type, n.reason) for n in step.notes] == [("Warning", reasons.EVENT_IDLE_STOP_SKIPPED)]
