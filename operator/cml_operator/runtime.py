"""The operator's shared, explicitly owned state: EC2 access, observers, metrics, per-worker memory.

One ``Runtime`` is built at start-up and handed to Kopf handlers through ``memo``.
Per-worker memory is in-process only; everything that must survive a restart
lives on the object (status) or on the instance (tags).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from . import __version__
from .accounts.sessions import RoleSession, session_name
from .accounts.sts import STSClient
from .ec2.client import EC2Client
from .ec2.fence import MutationFence
from .fleet.accounts import OWN_ACCOUNT_LABEL, AccountFleets, Fleet
from .fleet.cml import CMLService
from .fleet.gateway import EC2Api, EC2Gateway
from .fleet.lookups import SharedLookups
from .fleet.observer import Observers
from .fleet.prices import PriceTable
from .fleet.ratelimit import EC2RateLimiter
from .identity import instance_identity
from .kube_secrets import SecretReader
from .kubeapi import KubeApi
from .leader import default_namespace
from .metrics import Metrics
from .settings import OperatorSettings

#: AWS codes that mean "slow down"; the rate limiter halves its pace on them.
THROTTLING_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
                              "TooManyRequestsException"})


@dataclass
class WorkerMemory:
    """What this process remembers about one worker between passes."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The instance this process launched last; trusted before a possibly stale status.
    launched_instance_id: str | None = None
    launched_attempt: int = 0
    #: Monotonic time before which the timer leaves the worker alone (retry delay, slow recheck).
    next_attempt: float = 0.0
    #: The generation a permanent error blocked; the timer waits for the spec to change.
    blocked_generation: int | None = None
    #: In transition: read EC2 often.
    hot: bool = True
    #: The status this process last wrote: a timer's body can predate it, and must not rewrite it.
    last_status: dict | None = None
    last_status_at: float = 0.0
    #: The duplicates of its instance this process last reported on the worker (Warning DuplicateInstance).
    reported_duplicates: tuple[str, ...] = ()
    #: The instance id this process last wrote into the cml.dev/instance-id annotation, and when.
    annotated_instance_id: str | None = None
    annotated_at: float = 0.0
    #: Kopf starts a worker's timer before its create handler (it adds the finalizer first), so
    #: under load the timer can go first; the create pass would then repeat the timer's calls
    #: (a second RunInstances after a permanent error, a second Warning). Timers wait for it.
    change_pass_ran: bool = False
    first_timer_at: float | None = None
    #: When Kopf retries a create/update/resume pass that raised a temporary error: the timer
    #: stands down until then, so one retry chain paces the worker, not two side by side.
    change_retry_at: float | None = None
    #: The generation that pass saw: after a spec change Kopf may never retry it (a reverted spec
    #: leaves no diff to handle), so the timer stands down for that generation only.
    change_retry_generation: int | None = None
    #: (ClientToken, monotonic time) of the first IdempotentParameterMismatch with no instance listed for it.
    token_unlisted_since: tuple[str, float] | None = None

    def block(self, generation: int, delay: float | None, clock: float) -> None:
        self.blocked_generation = generation
        self.next_attempt = clock + delay if delay is not None else math.inf

    def defer(self, delay: float, clock: float) -> None:
        self.next_attempt = clock + delay

    def clear(self) -> None:
        self.next_attempt = 0.0
        self.blocked_generation = None

    def timer_may_act(self, clock: float, grace: float, generation: int | None = None) -> bool:
        """Whether a timer may act: once this process ran the worker's create, update or resume
        pass, or, should that never come, ``grace`` seconds after the first timer tick; and not
        while Kopf is retrying that pass for this generation (unless ``grace`` seconds overdue)."""
        if self.change_retry_at is not None and (generation is None or generation == self.change_retry_generation):
            return clock >= self.change_retry_at + grace
        if self.change_pass_ran:
            return True
        if self.first_timer_at is None:
            self.first_timer_at = clock
        return clock - self.first_timer_at >= grace

    def due(self, generation: int, clock: float) -> bool:
        if self.blocked_generation is not None and self.blocked_generation != generation:
            return True  # the spec changed since it was blocked
        return clock >= self.next_attempt


@dataclass
class OrphanClock:
    """When this process first saw each orphan (monotonic): the grace runs from there, and restarts with it."""

    first_seen: dict[str, float] = field(default_factory=dict)

    def observe(self, ids: list[str], now: float) -> dict[str, float]:
        for gone in set(self.first_seen) - set(ids):
            del self.first_seen[gone]
        for instance_id in ids:
            self.first_seen.setdefault(instance_id, now)
        return dict(self.first_seen)


@dataclass
class DiscoveryMemory:
    """What this process remembers about one CMLWorkerDiscovery between scans."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The region it scans (its orphans are judged there, not by the operator-wide watch).
    region: str | None = None
    #: The account it scans in (a CMLAccount's name; "" the operator's own identity).
    account: str = ""
    #: Monotonic time before which a failed scan is not repeated.
    next_attempt: float = 0.0
    #: Monotonic time this process last finished a scan: a timer's body may not show that scan yet.
    last_scan_at: float | None = None


@dataclass
class Runtime:
    settings: OperatorSettings
    ec2: EC2Api
    observers: Observers
    metrics: Metrics
    lookups: SharedLookups | None = None
    #: The ``cml.dev/cluster`` tag value; set at start-up (``--cluster-id`` or the kube-system uid).
    cluster_id: str = ""
    workers: dict[str, WorkerMemory] = field(default_factory=dict)
    #: The operator's own Kubernetes calls (pools and discovery create CMLWorkers); set at start-up.
    kube: KubeApi | None = None
    #: One pass at a time per pool or discovery object (an update and a timer may fire together).
    object_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    discoveries: dict[str, DiscoveryMemory] = field(default_factory=dict)
    #: When each orphan was first seen, per region (the --orphan-grace clock).
    orphan_clocks: dict[str, OrphanClock] = field(default_factory=dict)
    #: Duplicates (a second live instance with a worker's uid) per region: uid -> their ids, for the worker's pass.
    duplicates: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    #: Operator-wide background loops (the orphan watch), cancelled at close.
    tasks: list[asyncio.Task] = field(default_factory=list)
    #: CML controllers of workers with spec.cml (None: a runtime built without it, e.g. in unit tests).
    cml: CMLService | None = None
    #: One fleet per AWS account (CMLAccounts); None: only the operator's own identity (unit tests).
    accounts: AccountFleets | None = None
    #: Namespace labels (they select CMLAccounts), by namespace: (monotonic read time, labels).
    namespace_labels: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)
    #: The fleet this runtime is bound to (``for_fleet``): its ec2, observers, lookups and orphan clocks.
    fleet: Fleet | None = None
    #: Instance type -> USD per hour from the --price-table ConfigMap (None: no table).
    prices: PriceTable | None = None

    def __post_init__(self) -> None:
        if self.lookups is None:
            self.lookups = SharedLookups(self.ec2)

    def for_fleet(self, fleet: Fleet) -> Runtime:
        """This runtime seen from one account: EC2, observers, lookups and orphan clocks are that account's.

        A shallow copy: per-worker memory, locks, Kubernetes and CML access stay shared.
        """
        if fleet is self.fleet or (self.fleet is None and fleet.ec2 is self.ec2):
            return self if self.fleet is fleet else replace(self, fleet=fleet)
        return replace(self, ec2=fleet.ec2, observers=fleet.observers, lookups=fleet.lookups,
                       orphan_clocks=fleet.orphan_clocks, fleet=fleet)

    @property
    def account_name(self) -> str:
        return self.fleet.name if self.fleet is not None else ""

    @property
    def account_label(self) -> str:
        """The account metrics and events name: its id, or 'self' for the operator's own identity."""
        return self.fleet.label if self.fleet is not None else OWN_ACCOUNT_LABEL

    def memory(self, uid: str) -> WorkerMemory:
        memory = self.workers.get(uid)
        if memory is None:
            memory = self.workers[uid] = WorkerMemory()
        return memory

    def object_lock(self, uid: str) -> asyncio.Lock:
        lock = self.object_locks.get(uid)
        if lock is None:
            lock = self.object_locks[uid] = asyncio.Lock()
        return lock

    def discovery(self, uid: str) -> DiscoveryMemory:
        memory = self.discoveries.get(uid)
        if memory is None:
            memory = self.discoveries[uid] = DiscoveryMemory()
        return memory

    def own_cluster_id(self) -> str | None:
        """This cluster's ``cml.dev/cluster`` tag value (resolved at start-up); None until then."""
        return self.cluster_id or None

    def discovery_regions(self) -> set[str]:
        """Regions a discovery scans in this runtime's account."""
        return {memory.region for memory in self.discoveries.values()
                if memory.region and memory.account == self.account_name}

    def orphan_clock(self, region: str) -> OrphanClock:
        clock = self.orphan_clocks.get(region)
        if clock is None:
            clock = self.orphan_clocks[region] = OrphanClock()
        return clock

    def record_duplicates(self, region: str, by_uid: dict[str, tuple[str, ...]]) -> None:
        self.duplicates[f"{self.account_label}/{region}"] = by_uid  # shared by every account's view

    def duplicates_of(self, uid: str) -> tuple[str, ...]:
        return tuple(i for by_uid in self.duplicates.values() for i in by_uid.get(uid, ()))

    def forget(self, uid: str) -> None:
        self.workers.pop(uid, None)
        if self.cml is not None:
            self.cml.forget(uid)
        self.metrics.set_phase(uid, None)
        self.metrics.forget_running(uid)

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.observers.stop()
        if self.accounts is not None:
            await self.accounts.stop()
        if self.kube is not None:
            await self.kube.close()
        if self.cml is not None:
            await self.cml.close()
        if isinstance(self.ec2, EC2Gateway):
            self.ec2.close()


def build_runtime(settings: OperatorSettings, metrics: Metrics | None = None,
                  fence: MutationFence | None = None) -> Runtime:
    """Wire the real EC2 client, rate limiter, gateway and observers (one set per account), and CML access.

    ``fence``: the leader elector's, when there is one (mutating EC2 calls only while leading, in every account).
    """
    metrics = metrics or Metrics()
    # Every request names the replica (CloudTrail's userAgent; the test fault proxy's log).
    ec2_settings = replace(settings.ec2, user_agent=f"cml-operator/{__version__} ({instance_identity()})")

    def build_fleet(name: str, session: RoleSession | None, executor: Any = None) -> Fleet:
        limiter = EC2RateLimiter(settings.rate_limits)
        fleet: Fleet | None = None

        def on_call(operation: str, region: str, outcome: str) -> None:
            metrics.ec2_call(operation, region, outcome, fleet.label if fleet else OWN_ACCOUNT_LABEL)
            if outcome in THROTTLING_CODES:
                limiter.throttled(region, operation)

        if session is None:
            client = EC2Client(ec2_settings, call_observer=on_call, fence=fence)
        else:
            client = EC2Client(ec2_settings, call_observer=on_call, fence=fence,
                               session_factory=session.boto3_session)
        gateway = EC2Gateway(client, limiter, threads=settings.ec2_threads, executor=executor)
        observers = Observers(gateway, settings.observer,
                              on_batch=lambda region, kind, size: metrics.batch_size.labels(kind).observe(size),
                              cluster_id=lambda: runtime.own_cluster_id())  # resolved at start-up, after this
        fleet = Fleet(name, gateway, observers, SharedLookups(gateway), session, close=gateway.close)
        if session is not None:
            session.on_renewed = lambda _credentials: client.refresh_credentials()
        return fleet

    own = build_fleet("", None)
    assert isinstance(own.ec2, EC2Gateway)
    shared_pool = own.ec2.executor
    sts = STSClient(call_observer=lambda account, outcome: metrics.sts_calls.labels(account, outcome).inc())
    accounts = AccountFleets(own, lambda name, session: build_fleet(name, session, shared_pool), sts,
                             margin=settings.credential_refresh_margin, operator_namespace=default_namespace(),
                             session_name=session_name)
    cml = CMLService(settings.cml, SecretReader(), on_call=metrics.cml_call)
    prices = PriceTable(settings.price_table, refresh=settings.resync_interval) if settings.price_table else None
    runtime = Runtime(settings=settings, ec2=own.ec2, observers=own.observers, metrics=metrics, cml=cml,
                      lookups=own.lookups, accounts=accounts, fleet=own, orphan_clocks=own.orphan_clocks,
                      prices=prices)
    return runtime
