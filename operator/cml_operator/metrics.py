"""Prometheus metrics (prometheus-client), in a registry the operator owns.

Series (all prefixed ``cml_``):

    ec2_api_calls_total{operation,region,outcome,account}  every HTTP attempt; outcome "ok" or the AWS code;
                                                     account: the AWS account id, "self" for the operator's own
    sts_assume_role_total{account,outcome}           every AssumeRole attempt (CMLAccounts), by target account
    exceptions_total{exception,kind}                 errors met by reconciles; kind temporary|permanent
    reconcile_duration_seconds{trigger}              one reconcile pass (create/update/resume/timer/delete)
    retries_total{reason}                            passes that scheduled a retry, by condition reason
    workers{namespace,phase,reason}                  workers this replica tracks, by namespace, phase and health reason
    worker_ready_seconds                             Ready=False -> True: from the transition to not-ready to Ready
    build_info{version}                              1, labelled with the operator's version
    leader                                           1 while this replica reconciles (leads, or runs without election)
    ec2_batch_size{kind}                             ids per batched read (describe/status/uid/managed)
    orphan_instances{region,account}                 instances this cluster manages whose worker is gone (last scan)
    duplicate_instances{region,account}              live instances carrying a worker's uid besides the one it tracks
    cml_api_calls_total{operation,outcome}           every CML request; outcome "ok", "HTTP503", "Timeout", ...
    cml_idle_stops_total                             instances stopped by the idle rule (spec.cml.idleStop)
    status_patches_total{state,reason}               CMLWorker status patches written, by the health they carried
    instance_running_seconds_total{namespace,pool,instance_type,region}  seconds instances ran (docs/schedules.md)
    estimated_cost_usd_total{namespace,pool,instance_type,region}        the same seconds priced by --price-table
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from . import __version__

PHASES = ("Pending", "Provisioning", "Starting", "Running", "Stopping", "Stopped", "Terminating", "Terminated",
          "Failed")


#: (namespace, phase, reason): where one worker is counted in cml_workers.
Placement = tuple[str, str, str]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes etc., for the dashboard
        self.build_info = Gauge("cml_build_info", "Always 1; the operator's version as a label", ["version"],
                                registry=self.registry)
        self.build_info.labels(__version__).set(1)
        self.leader = Gauge("cml_leader", "1 while this replica reconciles: it holds the leader Lease, or runs "
                            "without leader election", registry=self.registry)
        self.ready_latency = Histogram(
            "cml_worker_ready_seconds", "Seconds from a worker's Ready condition turning False (or its first "
            "status) to Ready=True", registry=self.registry,
            buckets=(5, 15, 30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600))
        self.ec2_calls = Counter("cml_ec2_api_calls", "EC2 API calls (HTTP attempts) by operation, region, outcome "
                                 "and AWS account", ["operation", "region", "outcome", "account"],
                                 registry=self.registry)
        self.sts_calls = Counter("cml_sts_assume_role", "STS AssumeRole attempts by target account and outcome",
                                 ["account", "outcome"], registry=self.registry)
        self.exceptions = Counter("cml_exceptions", "Errors met while reconciling, by class and kind",
                                  ["exception", "kind"], registry=self.registry)
        self.reconcile_duration = Histogram(
            "cml_reconcile_duration_seconds", "Duration of one reconcile pass", ["trigger"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.retries = Counter("cml_retries", "Reconcile passes that scheduled a retry, by reason", ["reason"],
                               registry=self.registry)
        self.workers = Gauge("cml_workers", "Workers tracked by this replica, by namespace, status.phase and "
                             "the reason of their health condition", ["namespace", "phase", "reason"],
                             registry=self.registry)
        self.batch_size = Histogram("cml_ec2_batch_size", "Instance ids per batched EC2 read", ["kind"],
                                    registry=self.registry, buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500))
        self.orphan_instances = Gauge("cml_orphan_instances",
                                      "Instances tagged for this cluster whose CMLWorker no longer exists, by region "
                                      "and AWS account (at the last scan)", ["region", "account"],
                                      registry=self.registry)
        self.duplicate_instances = Gauge("cml_duplicate_instances",
                                         "Live instances tagged with a worker's uid that are not the instance it "
                                         "tracks, by region and AWS account (at the last orphan scan)",
                                         ["region", "account"], registry=self.registry)
        self.cml_calls = Counter("cml_api_calls", "CML controller requests by operation and outcome",
                                 ["operation", "outcome"], registry=self.registry)
        self.idle_stops = Counter("cml_idle_stops", "Instances stopped for inactivity (spec.cml.idleStop)",
                                  registry=self.registry)
        self.status_patches = Counter("cml_status_patches", "CMLWorker status patches written, by the health "
                                      "state and reason they carried", ["state", "reason"], registry=self.registry)
        self._placements: dict[str, Placement] = {}
        self._counts: dict[Placement, int] = {}
        usage_labels = ["namespace", "pool", "instance_type", "region"]
        self.running_seconds = Counter("cml_instance_running_seconds", "Seconds instances were seen running, by "
                                       "namespace, pool (empty: none), instance type and region",
                                       usage_labels, registry=self.registry)
        self.estimated_cost = Counter("cml_estimated_cost_usd", "Running seconds priced by the --price-table "
                                      "ConfigMap (instance types it lists only), in USD", usage_labels,
                                      registry=self.registry)
        #: Per worker uid: the wall-clock second up to which its running time is counted.
        self._running_counted: dict[str, float] = {}
        self._started = time.time()
        self._lock = threading.Lock()

    def ec2_call(self, operation: str, region: str, outcome: str, account: str = "self") -> None:
        self.ec2_calls.labels(operation, region, outcome, account).inc()

    def cml_call(self, operation: str, outcome: str) -> None:
        self.cml_calls.labels(operation, outcome).inc()

    def set_phase(self, uid: str, placement: Placement | None) -> None:
        """Track where one worker stands (None: forget it) and keep cml_workers exact.

        A series whose count drops to 0 is removed, so cardinality stays what the workers
        occupy now (namespaces x 9 phases x the named reasons), not every place ever seen.
        """
        with self._lock:
            old = self._placements.pop(uid, None)
            if placement is not None:
                self._placements[uid] = placement
            if old == placement:
                return
            if old is not None:
                self._counts[old] -= 1
                if self._counts[old] == 0:
                    del self._counts[old]
                    self.workers.remove(*old)
                else:
                    self.workers.labels(*old).set(self._counts[old])
            if placement is not None:
                self._counts[placement] = self._counts.get(placement, 0) + 1
                self.workers.labels(*placement).set(self._counts[placement])

    def count_running(self, uid: str, labels: tuple[str, str, str, str], running: bool, since: float | None,
                      now: float, price: float | None) -> None:
        """Count a worker's running time up to ``now`` (epoch seconds); ``since``: its open (or just ended) period.

        After a restart counting resumes from this process's start (a counter restarts at 0;
        Prometheus' ``increase`` spans the reset), so nothing is counted twice.
        """
        with self._lock:
            last = self._running_counted.get(uid)
            if last is None and since is not None:
                last = max(since, self._started)
            if last is not None and now > last:
                seconds = now - last
                self.running_seconds.labels(*labels).inc(seconds)
                if price is not None:
                    self.estimated_cost.labels(*labels).inc(seconds / 3600.0 * price)
            if running:
                self._running_counted[uid] = max(now, last or now)
            else:
                self._running_counted.pop(uid, None)

    def forget_running(self, uid: str) -> None:
        with self._lock:
            self._running_counted.pop(uid, None)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)
