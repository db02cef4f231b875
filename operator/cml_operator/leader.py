"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go / controller-runtime do it.

Only the leader runs Kopf (handlers, timers, observers); a standby waits, retrying every
``retry_period``, and takes over when the lease is released or has not been renewed for
``lease_duration`` as *this* process measured it (the holder's clock is never trusted).
The leader renews every ``retry_period``, each attempt bounded by the time left to its
renew deadline (``renew_deadline`` after the last successful renewal was *sent*). Mutating EC2
calls pass a fence (ec2/fence.py) that closes at that deadline by itself, whatever the event
loop is doing, so a leader that could not renew stops changing EC2 ``lease_duration -
renew_deadline`` seconds (5 s by default) before any other replica may take the Lease; seeing
another holder closes it at once. The leader then stops reconciling, and if stopping takes too
long it exits hard before the lease can expire. On SIGTERM it stops Kopf, drains the mutating
EC2 calls still in flight (renewing meanwhile), then releases the lease (holder emptied), and a
standby takes over within one retry period.

Handlers never check leadership themselves: cli.py starts Kopf only once leading and
stops it when leadership is lost (the process then exits; its Deployment restarts it
as a standby).

The Lease is read and written over aiohttp with Kopf's own login (ServiceAccount token in
a pod, else the kubeconfig); optimistic concurrency (resourceVersion) decides races.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from .ec2.fence import MutationFence

log = logging.getLogger("cml_operator.leader")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace() -> str:
    """The pod's namespace (POD_NAMESPACE or the ServiceAccount mount), else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass(frozen=True)
class LeaderElectionSettings:
    enabled: bool = False
    #: Namespace of the Lease; None means the pod's namespace (``default`` outside a pod).
    namespace: str | None = None
    #: Name of the Lease.
    name: str = "cml-operator"
    #: Seconds a standby waits after the last renewal it saw before taking over.
    lease_duration: float = 15.0
    #: Seconds the leader keeps trying to renew before it stops reconciling.
    renew_deadline: float = 10.0
    #: Seconds between attempts to acquire or renew.
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration")


# --------------------------------------------------------------------------
# The Lease record and the pure decisions about it


@dataclass(frozen=True)
class LeaseRecord:
    holder: str = ""
    lease_duration_seconds: int = 15
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or "",
                   lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0),
                   resource_version=(body.get("metadata") or {}).get("resourceVersion"))

    def same_term(self, other: LeaseRecord | None) -> bool:
        """Whether nobody renewed, released or took the lease between the two reads."""
        return other is not None and (self.holder, self.renew_time, self.transitions) == \
            (other.holder, other.renew_time, other.transitions)


def micro_time(moment: datetime.datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def may_acquire(record: LeaseRecord, me: str, seen_unchanged_for: float, lease_duration: float) -> bool:
    """May ``me`` take or renew the lease? Pure: no clock, no I/O.

    ``seen_unchanged_for`` is how long this process has watched the record stay the same:
    only this process's own clock counts, never the holder's timestamps.
    """
    if not record.holder or record.holder == me:
        return True
    duration = record.lease_duration_seconds or lease_duration
    return seen_unchanged_for >= duration


def claimed(record: LeaseRecord, me: str, now: datetime.datetime, lease_duration: float) -> dict[str, Any]:
    """The spec that makes ``me`` the holder (keeping acquireTime while renewing)."""
    taking_over = record.holder != me
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": int(lease_duration),
        "acquireTime": micro_time(now) if taking_over or not record.acquire_time else record.acquire_time,
        "renewTime": micro_time(now),
        "leaseTransitions": record.transitions + (1 if taking_over and record.holder else 0),
    }


def released(record: LeaseRecord, now: datetime.datetime) -> dict[str, Any]:
    """The spec that gives the lease up at once (what client-go writes with ReleaseOnCancel)."""
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": micro_time(now),
            "renewTime": micro_time(now), "leaseTransitions": record.transitions}


# --------------------------------------------------------------------------
# Talking to the API server


class LeaseConflict(Exception):
    """Someone else wrote the Lease between our read and our write (HTTP 409)."""


@dataclass
class LeaseClient:
    """GET / POST / PUT of one Lease over aiohttp, with Kopf's login."""

    namespace: str
    name: str
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _server: str = field(default="", init=False)

    @property
    def _collection(self) -> str:
        """The path of the namespace's leases (the server is known only after logging in)."""
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            import kopf

            settings = kopf.OperatorSettings()
            info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
            if info is None:
                raise RuntimeError("no Kubernetes credentials for leader election (no ServiceAccount, no kubeconfig)")
            context: ssl.SSLContext = info.as_ssl_context()
            self._server = info.server.rstrip("/")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2, ssl=context), headers=info.as_http_headers(),
                timeout=aiohttp.ClientTimeout(total=5))
        return self._session

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        session = await self._open()
        async with session.request(method, self._server + path, json=body) as response:
            if response.status == 404:
                return None
            if response.status == 409:
                raise LeaseConflict(await response.text())
            if response.status == 401:  # a rotated token: log in again next time
                await self.close()
            response.raise_for_status()
            return await response.json()

    async def get(self) -> LeaseRecord | None:
        body = await self._request("GET", f"{self._collection}/{self.name}")
        return LeaseRecord.from_body(body) if body is not None else None

    async def create(self, spec: dict[str, Any]) -> LeaseRecord:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        created = await self._request("POST", self._collection, body)
        assert created is not None
        return LeaseRecord.from_body(created)

    async def update(self, record: LeaseRecord, spec: dict[str, Any]) -> LeaseRecord:
        """PUT with the resourceVersion read: fails with LeaseConflict if anyone wrote since."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": record.resource_version}, "spec": spec}
        updated = await self._request("PUT", f"{self._collection}/{self.name}", body)
        if updated is None:
            raise LeaseConflict("the Lease was deleted")
        return LeaseRecord.from_body(updated)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------
# The elector


Clock = Callable[[], float]


@dataclass
class LeaderElector:
    """Acquire, keep and release one Lease for ``identity``."""

    settings: LeaderElectionSettings
    identity: str
    client: LeaseClient
    monotonic: Clock = time.monotonic
    #: Closed until this process leads; moved to (renewal sent + renew deadline) by every renewal.
    fence: MutationFence | None = None
    #: The record as last read, and when (monotonic) it was first seen in that state.
    _observed: LeaseRecord | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)
    #: When (monotonic) the last successful acquire/renew request was *sent*.
    last_renewed: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.fence is None:
            self.fence = MutationFence.closed(clock=self.monotonic)

    def _observe(self, record: LeaseRecord) -> None:
        if not record.same_term(self._observed):
            self._observed_at = self.monotonic()
        self._observed = record
        if record.holder and record.holder != self.identity:
            assert self.fence is not None
            self.fence.close(f"{record.holder} holds the Lease")  # at once: another replica may act now

    def renew_deadline(self) -> float:
        """When (monotonic) this process must stop acting unless it renews before."""
        assert self.last_renewed is not None
        return self.last_renewed + self.settings.renew_deadline

    def held_by_another(self) -> bool:
        return self._observed is not None and self._observed.holder not in ("", self.identity)

    async def try_within(self, seconds: float) -> bool:
        """One attempt, given up after ``seconds``: a slow API server cannot stretch it."""
        if seconds <= 0:
            return False
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), timeout=seconds)
        except asyncio.TimeoutError:
            log.warning("leader election: no answer about the Lease %s/%s within %.1fs", self.client.namespace,
                        self.client.name, seconds)
            return False

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if this process holds the lease afterwards."""
        sent = self.monotonic()
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            record = await self.client.get()
            if record is None:
                record = await self.client.create(claimed(LeaseRecord(), self.identity, now,
                                                          self.settings.lease_duration))
            else:
                self._observe(record)
                if not may_acquire(record, self.identity, self.monotonic() - self._observed_at,
                                   self.settings.lease_duration):
                    return False
                record = await self.client.update(record, claimed(record, self.identity, now,
                                                                  self.settings.lease_duration))
        except LeaseConflict:
            return False
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("leader election: cannot read or write the Lease %s/%s: %r", self.client.namespace,
                        self.client.name, exc)
            return False
        self._observe(record)
        self.last_renewed = sent
        assert self.fence is not None
        self.fence.extend(sent + self.settings.renew_deadline)
        return True

    async def acquire(self) -> None:
        """Block until this process leads (cancel the task to give up waiting)."""
        logged = False
        while not await self.try_within(self.settings.renew_deadline):
            if not logged and self._observed is not None:
                log.info("leader election: standing by; %s leads (Lease %s/%s)", self._observed.holder or "nobody",
                         self.client.namespace, self.client.name)
                logged = True
            await asyncio.sleep(self.settings.retry_period)
        log.info("leader election: this process (%s) leads now (Lease %s/%s)", self.identity,
                 self.client.namespace, self.client.name)

    async def keep(self) -> None:
        """Renew every retry period; return once another holder is seen or the renew deadline passed.

        Each attempt gets only the time left to the deadline, so returning is never later than it
        (the fence has closed by itself at the deadline in any case).
        """
        while True:
            await asyncio.sleep(self.settings.retry_period)
            if await self.try_within(self.renew_deadline() - self.monotonic()):
                continue
            if self.held_by_another():
                assert self._observed is not None
                log.error("leader election: lost the Lease (%s holds it now)", self._observed.holder)
                return
            if self.monotonic() >= self.renew_deadline():
                assert self.last_renewed is not None
                log.error("leader election: lost the Lease (not renewed for %.0fs)",
                          self.monotonic() - self.last_renewed)
                return

    def expires_in(self) -> float:
        """Seconds until a standby may take over, counted from the last renewal this process sent."""
        assert self.last_renewed is not None
        return self.last_renewed + self.settings.lease_duration - self.monotonic()

    async def release(self) -> None:
        """Give the lease up at once, if this process still holds it."""
        try:
            record = await self.client.get()
            if record is not None and record.holder == self.identity:
                await self.client.update(record, released(record, datetime.datetime.now(datetime.timezone.utc)))
                log.info("leader election: released the Lease %s/%s", self.client.namespace, self.client.name)
        except (LeaseConflict, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("leader election: could not release the Lease (it expires by itself): %s", exc)


def take_stop_signals(stop_flag: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop_flag`` (again, after Kopf installed its own handlers).

    With Kopf's handlers a signal stops Kopf but leaves its waiter on our stop-flag pending,
    and Kopf then waits 5 s for that "hung" task: 5 s more before the Lease is released.
    """
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_flag.set)


def exit_hard_before(seconds: float, why: str) -> threading.Timer:
    """Kill this process after ``seconds`` from a thread, whatever the event loop is doing.

    The last line of defence: a leader that lost its lease must be gone before a standby may
    take over, even if a handler is stuck in a blocking EC2 call.
    """
    def bail_out() -> None:
        log.critical("leader election: %s; exiting now so two leaders never act at once", why)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(max(0.0, seconds), bail_out)
    timer.daemon = True
    timer.start()
    return timer


def effective(settings: LeaderElectionSettings) -> LeaderElectionSettings:
    """The settings with the namespace filled in."""
    return settings if settings.namespace else replace(settings, namespace=default_namespace())


# --------------------------------------------------------------------------
# Running the operator only while leading


async def _standby_liveness(port: int) -> Callable[[], Any] | None:
    """Answer /healthz while standing by, so the probes of a healthy standby pass; returns a closer."""
    if not port:
        return None
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"leader": False, "standby": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port, reuse_address=True).start()
    return runner.cleanup


async def run_when_leading(settings: LeaderElectionSettings, identity: str,
                           operator: Callable[[asyncio.Event], Any], liveness_port: int = 0,
                           fence: MutationFence | None = None) -> int:
    """Stand by until this process leads, run ``operator(stop_flag)`` while it does; the exit status.

    0 after a stop signal (in-flight mutating EC2 calls drained, then the lease released),
    1 when leadership was lost (the operator was stopped; the caller exits and is restarted).
    ``fence``: the one the EC2 client asks before mutating calls (opened while leading).
    """
    settings = effective(settings)
    assert settings.namespace is not None
    elector = LeaderElector(settings, identity, LeaseClient(settings.namespace, settings.name), fence=fence)
    fence = elector.fence
    assert fence is not None
    stop_flag = asyncio.Event()  # set by a stop signal or by losing the lease; Kopf watches it
    take_stop_signals(stop_flag)
    close_liveness = await _standby_liveness(liveness_port)
    try:
        acquiring = asyncio.create_task(elector.acquire())
        stopping = asyncio.create_task(stop_flag.wait())
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not acquiring.done():
            acquiring.cancel()
            log.info("leader election: stopped while standing by")
            return 0
        acquiring.result()  # no credentials, say: fail loudly instead of leading without a Lease
    finally:
        if close_liveness is not None:
            await close_liveness()  # Kopf binds the same port for its own /healthz

    lost = False

    def on_lost(task: asyncio.Task[None]) -> None:
        nonlocal lost
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("leader election: renewing failed: %r", task.exception())
        lost = True
        fence.close("this replica lost the Lease")
        stop_flag.set()
        exit_hard_before(elector.expires_in() - 1.0, "the operator did not stop before its lease expired")

    keeping = asyncio.create_task(elector.keep())
    keeping.add_done_callback(on_lost)
    drained = False
    try:
        if not stop_flag.is_set():  # a signal may have come while acquiring
            await operator(stop_flag)
        if not lost:  # a lost lease has closed the fence already; nothing is released then
            drained = await drain(fence, settings.lease_duration, keeping)
    finally:
        keeping.cancel()
        if not lost and drained:
            await elector.release()
        await elector.client.close()
    return 1 if lost else 0


async def drain(fence: MutationFence, timeout: float, keeping: asyncio.Task[None]) -> bool:
    """Wait (renewing meanwhile) for the mutating EC2 calls in flight; True when none is left.

    Kopf cancels its handlers on stop, but a boto3 call in a worker thread runs on. Releasing the
    Lease before it ends would let a standby act while it still lands. Bounded: past ``timeout`` the
    Lease is kept (not released) and expires by itself, while the fence stops the call's retries.
    """
    if fence.in_flight:
        log.info("leader election: waiting for %d mutating EC2 call(s) in flight", fence.in_flight)
    waiting = asyncio.create_task(asyncio.to_thread(fence.drain, timeout))
    await asyncio.wait({waiting, keeping}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():  # leadership lost while draining: the fence is closed, nothing to release
        return False
    drained = waiting.result()
    if not drained:
        log.warning("leader election: %d mutating EC2 call(s) still in flight after %.0fs; leaving the Lease to "
                    "expire instead of releasing it", fence.in_flight, timeout)
    return drained
