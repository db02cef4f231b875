"""The series a dashboard and the alerts need: cml_workers by namespace/phase/reason, build info, leader, memory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prometheus_client import generate_latest

from cml_operator import __version__
from cml_operator.metrics import Metrics
from cml_operator.reconcile.conditions import not_ready_for


def _samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in metrics.registry.collect() for sample in family.samples if sample.name == name}


def test_workers_are_counted_by_namespace_phase_and_reason_and_empty_series_go_away() -> None:
    metrics = Metrics()
    metrics.set_phase("a", ("lab", "Provisioning", "Provisioning"))
    metrics.set_phase("b", ("lab", "Provisioning", "Provisioning"))
    metrics.set_phase("c", ("prod", "Failed", "QuotaExceeded"))
    metrics.set_phase("a", ("lab", "Running", "InstanceReady"))
    metrics.set_phase("a", ("lab", "Running", "InstanceReady"))  # unchanged: counted once
    metrics.set_phase("c", None)
    assert _samples(metrics, "cml_workers") == {
        (("namespace", "lab"), ("phase", "Provisioning"), ("reason", "Provisioning")): 1.0,
        (("namespace", "lab"), ("phase", "Running"), ("reason", "InstanceReady")): 1.0,
    }
    metrics.set_phase("b", ("lab", "Running", "InstanceReady"))
    assert _samples(metrics, "cml_workers") == {
        (("namespace", "lab"), ("phase", "Running"), ("reason", "InstanceReady")): 2.0}


def test_build_info_leader_and_process_memory_are_exported() -> None:
    metrics = Metrics()
    assert _samples(metrics, "cml_build_info") == {(("version", __version__),): 1.0}
    assert _samples(metrics, "cml_leader") == {(): 0.0}
    metrics.leader.set(1)
    assert _samples(metrics, "cml_leader") == {(): 1.0}
    text = generate_latest(metrics.registry).decode()
    assert "process_resident_memory_bytes" in text


def test_ready_latency_runs_from_the_last_time_ready_turned_false() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    since = (now - timedelta(seconds=95)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not_ready_for([{"type": "Ready", "status": "False", "lastTransitionTime": since}], now) == 95.0
    assert not_ready_for([{"type": "Ready", "status": "True", "lastTransitionTime": since}], now) is None
    assert not_ready_for([], now) is None
    assert not_ready_for([{"type": "Ready", "status": "False"}], now) is None
