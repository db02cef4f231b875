"""Prometheus metrics (prometheus-client), in a registry the operator owns.

Series (all prefixed ``cml_``):

    ec2_api_calls_total{operation,region,outcome}   every HTTP attempt; outcome "ok" or the AWS code
    exceptions_total{exception,kind}                 errors met by reconciles; kind temporary|permanent
    reconcile_duration_seconds{trigger}              one reconcile pass (create/update/resume/timer/delete)
    retries_total{reason}                            passes that scheduled a retry, by condition reason
    workers{phase}                                   workers this replica tracks, by status.phase
    ec2_batch_size{kind}                             ids per batched read (describe/status/uid/managed)
    orphan_instances{region}                         instances this cluster manages whose worker is gone (last scan)
    cml_api_calls_total{operation,outcome}           every CML request; outcome "ok", "HTTP503", "Timeout", ...
    cml_idle_stops_total                             instances stopped by the idle rule (spec.cml.idleStop)
    status_patches_total{state,reason}               CMLWorker status patches written, by the health they carried
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Provisioning", "Starting", "Running", "Stopping", "Stopped", "Terminating", "Terminated",
          "Failed")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.ec2_calls = Counter("cml_ec2_api_calls", "EC2 API calls (HTTP attempts) by operation, region and outcome",
                                 ["operation", "region", "outcome"], registry=self.registry)
        self.exceptions = Counter("cml_exceptions", "Errors met while reconciling, by class and kind",
                                  ["exception", "kind"], registry=self.registry)
        self.reconcile_duration = Histogram(
            "cml_reconcile_duration_seconds", "Duration of one reconcile pass", ["trigger"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.retries = Counter("cml_retries", "Reconcile passes that scheduled a retry, by reason", ["reason"],
                               registry=self.registry)
        self.workers = Gauge("cml_workers", "Workers tracked by this replica, by phase", ["phase"],
                             registry=self.registry)
        self.batch_size = Histogram("cml_ec2_batch_size", "Instance ids per batched EC2 read", ["kind"],
                                    registry=self.registry, buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500))
        self.orphan_instances = Gauge("cml_orphan_instances",
                                      "Instances tagged for this cluster whose CMLWorker no longer exists, by region "
                                      "(at the last discovery scan)", ["region"], registry=self.registry)
        self.cml_calls = Counter("cml_api_calls", "CML controller requests by operation and outcome",
                                 ["operation", "outcome"], registry=self.registry)
        self.idle_stops = Counter("cml_idle_stops", "Instances stopped for inactivity (spec.cml.idleStop)",
                                  registry=self.registry)
        self.status_patches = Counter("cml_status_patches", "CMLWorker status patches written, by the health "
                                      "state and reason they carried", ["state", "reason"], registry=self.registry)
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        for phase in PHASES:
            self.workers.labels(phase).set(0)

    def ec2_call(self, operation: str, region: str, outcome: str) -> None:
        self.ec2_calls.labels(operation, region, outcome).inc()

    def cml_call(self, operation: str, outcome: str) -> None:
        self.cml_calls.labels(operation, outcome).inc()

    def set_phase(self, uid: str, phase: str | None) -> None:
        """Track one worker's phase (None: forget it) and keep the per-phase gauge exact."""
        with self._lock:
            old = self._phases.pop(uid, None)
            if phase is not None:
                self._phases[uid] = phase
            if old != phase:
                if old is not None:
                    self.workers.labels(old).dec()
                if phase is not None:
                    self.workers.labels(phase).inc()

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)
