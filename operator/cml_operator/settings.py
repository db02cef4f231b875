"""All operator settings in one typed tree; defaults and units here, values from CLI flags or env.

Every flag of ``cml-operator run`` has an environment variable twin named
``CML_<FLAG>`` (``--resync-interval`` -> ``CML_RESYNC_INTERVAL``); flags win.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ec2.client import EC2ClientSettings
from .fleet.observer import ObserverSettings
from .fleet.ratelimit import RateLimitSettings
from .leader import LeaderElectionSettings


@dataclass(frozen=True)
class CMLSettings:
    """Talking to CML controllers (workers with ``spec.cml``); seconds unless noted."""

    #: A ready controller is looked at this often (each look: at most 3 requests).
    interval: float = 60.0
    #: A controller that is not ready yet (booting) is looked at this often (one unauthenticated request).
    starting_interval: float = 15.0
    #: After the instance became ready, CMLStarting turns into CMLUnreachable (with a Warning) after this long.
    boot_timeout: float = 1800.0
    #: Timeout of every CML request.
    timeout: float = 10.0
    #: CML looks in flight at once, across all workers.
    concurrency: int = 20
    #: Failed licence deregistrations before an operator-made stop goes ahead anyway (with a Warning).
    release_attempts: int = 3


@dataclass(frozen=True)
class OperatorSettings:
    #: Namespaces to watch; empty means all namespaces (cluster-wide).
    namespaces: tuple[str, ...] = ()
    #: Seconds between per-worker checks of the observed state (reads the observers' cache, no EC2 call).
    poll_interval: float = 10.0
    #: Seconds a permanent error that may cure itself outside the spec (quota, credentials) waits before a retry.
    slow_recheck: float = 600.0
    #: Upper bound for any temporary-error retry delay (None: the policy's own caps, up to 15 minutes).
    max_retry_delay: float | None = None
    #: Port of the Prometheus /metrics endpoint; 0 disables it.
    metrics_port: int = 8080
    #: Port of Kopf's liveness endpoint (/healthz); 0 disables it.
    liveness_port: int = 8081
    log_format: str = "text"  # text | json
    log_level: str = "INFO"
    #: Kopf peering object name; None = standalone (one replica, the default).
    peering: str | None = None
    #: Peering priority: among peers the highest works and the others pause (equal ones all pause).
    priority: int = 0
    #: Lease-based leader election for running several replicas (off: one replica, or Kopf peering).
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    #: Connections to the Kubernetes API server at most (each TLS connection holds 128 KiB).
    api_connections: int = 20
    #: What to do with orphans (instances this cluster manages whose worker is gone): report | stop | terminate.
    orphan_policy: str = "report"
    #: Seconds an instance must stay an orphan before --orphan-policy stop/terminate acts on it.
    orphan_grace: float = 3600.0
    #: ``NAMESPACE/NAME`` of a ConfigMap: instance type -> USD per hour (None: no cost estimates).
    price_table: str | None = None
    #: Value of the ``cml.dev/cluster`` tag on every instance; None: the kube-system namespace's uid.
    cluster_id: str | None = None
    #: Refuse (Stalled AccountNotAllowed) workers whose namespace no CMLAccount selects, instead of using
    #: the operator's own AWS identity for them.
    require_account: bool = False
    #: Seconds before an assumed role's session ends that the operator renews it (CMLAccounts).
    credential_refresh_margin: float = 300.0
    #: Replacements of a worker's lost instance (one that had been Ready) allowed per hour.
    max_replacements: int = 3
    #: Starts per worker per hour of an instance that stopped without the operator asking; then Stalled.
    max_starts: int = 3
    #: Namespaces whose workers may adopt (spec.instanceId) or import (CMLWorkerDiscovery) an instance the
    #: operator did not launch; ("*",) allows all, () (the default) none.
    adoption_namespaces: tuple[str, ...] = ()
    #: Threads running blocking boto3 calls.
    ec2_threads: int = 16
    #: glibc malloc arenas at most (0: glibc's default); see malloc.py for the measurement.
    malloc_arenas: int = 2
    ec2: EC2ClientSettings = field(default_factory=EC2ClientSettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    observer: ObserverSettings = field(default_factory=ObserverSettings)
    cml: CMLSettings = field(default_factory=CMLSettings)

    @property
    def resync_interval(self) -> float:
        return self.observer.resync_interval
