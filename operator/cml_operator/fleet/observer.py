"""One observer per region: every known instance refreshed in one batched pass.

Per-object timers fire at scattered moments, so batching their reads over a short
window would batch little. Instead the observer owns the reads:

* every ``resync_interval`` it describes every instance a worker asked about
  recently (DescribeInstances filtered by this cluster's ``cml.dev/cluster`` tag,
  1000 a page; DescribeInstanceStatus by 100 ids), so the calls per resync grow with
  regions and fleet size / 100, not with workers times two. That one tag-filtered
  read is kept (``cluster_instances``) and is what the orphan watch judges, so a
  region costs one DescribeInstances per resync for both;
* every ``fast_interval`` it refreshes the "hot" instances, those in transition
  whose workers want news soon;
* a worker that needs something the cache cannot answer (a new id, a read right
  after an action) goes through batchers that collect such requests for a few
  tens of milliseconds.

Workers then read their instance from the cache and act on drift without calling
EC2 themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from ..reconcile.ownership import TAG_CLUSTER
from ..reconcile.worker import GONE_STATES, MANAGED_BY, TAG_MANAGED_BY, TAG_UID, Observation
from .batcher import Batcher, BatchSettings
from .gateway import EC2Api

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObserverSettings:
    resync_interval: float = 60.0
    fast_interval: float = 5.0
    forget_after: float = 300.0  # drop ids no worker asked about for this long
    batching: bool = True  # False: every read is its own call (benchmark baseline)
    batch: BatchSettings = BatchSettings()


@dataclass
class _Entry:
    observation: Observation
    observed_at: float


@dataclass(frozen=True)
class _ClusterRead:
    """Every instance carrying this cluster's tag in the region (all states), and when it was read."""

    cluster_id: str
    instances: tuple[CMLWorkerInstanceDto, ...]
    read_at: float


_NOT_FOUND = object()


class RegionObserver:
    def __init__(self, region: str, ec2: EC2Api, settings: ObserverSettings | None = None,
                 # Decides "hot" and "time for a resync"; the loop itself waits with asyncio.sleep, so
                 # tests run it on a virtual-time event loop and pass that loop's clock here.
                 clock: Callable[[], float] = time.monotonic,
                 on_batch: Callable[[str, int], None] | None = None,
                 # This cluster's cml.dev/cluster value, resolved at start-up (None until then).
                 cluster_id: Callable[[], str | None] = lambda: None) -> None:
        self.region = region
        self._ec2 = ec2
        self.settings = settings or ObserverSettings()
        self._clock = clock
        self._cluster_id = cluster_id
        self._pass_read: _ClusterRead | None = None  # the last full pass's read of this cluster's instances
        self._cluster_reading: asyncio.Task[_ClusterRead] | None = None
        self._cache: dict[str, _Entry] = {}
        self._wanted: dict[str, float] = {}  # id -> last time a worker asked
        self._hot: dict[str, float] = {}  # id -> hot until
        self._on_batch = on_batch
        batch = self.settings.batch if self.settings.batching else BatchSettings(idle=0, max_wait=0, max_items=1)

        def counted(kind: str) -> Callable[[int], None] | None:
            return (lambda size: on_batch(kind, size)) if on_batch else None

        self._instances: Batcher[str, object] = Batcher(
            self._describe, lambda _: _NOT_FOUND, batch, name=f"describe-{region}", on_batch=counted("describe"))
        self._checks: Batcher[str, InstanceStatusChecks | None] = Batcher(
            self._status, lambda _: None, batch, name=f"status-{region}", on_batch=counted("status"))
        self._uids: Batcher[str, list[CMLWorkerInstanceDto]] = Batcher(
            self._by_uid, lambda _: [], BatchSettings(batch.idle, batch.max_wait, min(batch.max_items, 200)),
            name=f"uid-{region}", on_batch=counted("uid"))
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ what workers call

    async def observe(self, instance_id: str, *, max_age: float, hot: bool = False) -> Observation:
        """The instance as of at most ``max_age`` seconds ago (0: read it now, batched with others)."""
        now = self._clock()
        self._wanted[instance_id] = now
        if hot:
            self._hot[instance_id] = now + 3 * self.settings.fast_interval
        else:
            self._hot.pop(instance_id, None)
        entry = self._cache.get(instance_id)
        if entry is not None and max_age > 0 and now - entry.observed_at <= max_age:
            return entry.observation
        return await self._read_one(instance_id)

    async def find_by_uid(self, uid: str) -> list[CMLWorkerInstanceDto]:
        """Instances tagged ``cml.dev/worker-uid=uid`` that are not shutting down or terminated."""
        found = await self._uids.get(uid)
        return [dto for dto in found if dto.instance_state not in GONE_STATES]

    async def cluster_instances(self, max_age: float) -> list[CMLWorkerInstanceDto]:
        """Every instance tagged ``cml.dev/cluster`` = this cluster in the region, any state, as read at most
        ``max_age`` seconds ago: the last full pass's read when it is that recent, else a read now.

        [] without a cluster id: no instance can be known to be this cluster's. A read made
        here is not kept for the next caller (only a pass's is), so a caller on its own timer
        reads once per call while no pass runs; callers that overlap share one read.
        """
        cluster_id = self._cluster_id()
        if not cluster_id:
            return []
        last = self._pass_read
        if last is not None and last.cluster_id == cluster_id and self._clock() - last.read_at <= max_age:
            return list(last.instances)
        return list((await self._read_cluster(cluster_id)).instances)

    async def _read_cluster(self, cluster_id: str) -> _ClusterRead:
        if self._cluster_reading is None or self._cluster_reading.done():
            self._cluster_reading = asyncio.ensure_future(self._describe_cluster(cluster_id))
        return await asyncio.shield(self._cluster_reading)  # one caller cancelled does not cancel the others

    async def _describe_cluster(self, cluster_id: str) -> _ClusterRead:
        began = self._clock()
        grouped = await self._ec2.find_by_tag_values(self.region, TAG_CLUSTER, [cluster_id])
        return _ClusterRead(cluster_id, tuple(grouped.get(cluster_id, [])), began)

    def forget(self, instance_id: str) -> None:
        for table in (self._cache, self._wanted, self._hot):
            table.pop(instance_id, None)

    def cached(self, instance_id: str) -> Observation | None:
        entry = self._cache.get(instance_id)
        return entry.observation if entry else None

    # ------------------------------------------------------------ the periodic passes

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"observer-{self.region}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._cluster_reading is not None:
            self._cluster_reading.cancel()
            await asyncio.gather(self._cluster_reading, return_exceptions=True)
        for batcher in (self._instances, self._checks, self._uids):
            await batcher.close()

    async def _run(self) -> None:
        last_full = self._clock()
        while True:
            await asyncio.sleep(self.settings.fast_interval)
            now = self._clock()
            try:
                if now - last_full >= self.settings.resync_interval:
                    last_full = now
                    await self.refresh(self._known_ids(now), full=True)
                else:
                    await self.refresh([i for i, until in self._hot.items() if until >= now])
            except IntegrationException as exc:
                # Workers see stale data age out and read for themselves; log once per pass.
                logger.warning("region %s: refresh failed: %s", self.region, exc)
            except Exception:  # noqa: BLE001 - the observer must outlive any one bad pass
                logger.exception("region %s: refresh failed", self.region)

    def _known_ids(self, now: float) -> list[str]:
        for instance_id, asked in list(self._wanted.items()):
            if now - asked > self.settings.forget_after:
                self.forget(instance_id)
        return list(self._wanted)

    async def refresh(self, instance_ids: Sequence[str], *, full: bool = False) -> None:
        """Describe ``instance_ids`` (and the status of the running ones) in as few calls as allowed.

        A ``full`` pass first asks for every instance tagged with this cluster's id, 1000 a
        page (DescribeInstances takes at most 500 ids a call, and some endpoints page id lists
        at 100), then reads by id only the tracked ids that answer missed, so an instance
        whose tags were changed outside (or that an older release tagged without the cluster
        tag) is confirmed, not presumed gone. Before the cluster id is known it asks by the
        operator's managed-by tag instead.
        """
        if not instance_ids:
            return
        if not self.settings.batching:
            await asyncio.gather(*(self._read_one(i) for i in instance_ids), return_exceptions=True)
            return
        now = self._clock()
        if full:
            instances = await self._managed_instances(instance_ids)
        else:
            self._heard("describe", len(instance_ids))
            instances = await self._ec2.describe_instances(self.region, list(instance_ids))
        running = [i for i, dto in instances.items() if dto.instance_state == "running"]
        if running:
            self._heard("status", len(running))
        checks = await self._ec2.status_checks(self.region, running) if running else {}
        for instance_id in instance_ids:
            self._store(instance_id, instances.get(instance_id), checks.get(instance_id), now)

    async def _managed_instances(self, instance_ids: Sequence[str]) -> dict[str, CMLWorkerInstanceDto]:
        wanted = set(instance_ids)
        cluster_id = self._cluster_id()
        if cluster_id:
            self._pass_read = await self._read_cluster(cluster_id)
            tagged = list(self._pass_read.instances)
        else:
            tagged = (await self._ec2.find_by_tag_values(self.region, TAG_MANAGED_BY, [MANAGED_BY])).get(MANAGED_BY, [])
        found = {dto.aws_instance_id: dto for dto in tagged if dto.aws_instance_id in wanted}
        self._heard("managed", len(found))
        missed = [i for i in instance_ids if i not in found]
        if missed:
            self._heard("describe", len(missed))
            found.update(await self._ec2.describe_instances(self.region, missed))
        return found

    def _heard(self, kind: str, size: int) -> None:
        """Report a pass's own batched read, as the batchers report theirs (metrics must not break a pass)."""
        if self._on_batch is None:
            return
        try:
            self._on_batch(kind, size)
        except Exception:  # noqa: BLE001
            logger.exception("region %s: batch-size hook failed", self.region)

    # ------------------------------------------------------------ batch executors

    async def _read_one(self, instance_id: str) -> Observation:
        now = self._clock()
        found = await self._instances.get(instance_id)
        instance = None if found is _NOT_FOUND else found
        assert instance is None or isinstance(instance, CMLWorkerInstanceDto)
        checks = None
        if instance is not None and instance.instance_state == "running":
            checks = await self._checks.get(instance_id)
        return self._store(instance_id, instance, checks, now)

    def seed(self, instance: CMLWorkerInstanceDto) -> None:
        """Remember an instance a worker just launched: hot, so the next fast pass reads it with the others."""
        now = self._clock()
        instance_id = instance.aws_instance_id
        self._wanted[instance_id] = now
        self._hot[instance_id] = now + 3 * self.settings.fast_interval
        self._store(instance_id, instance, None, now)

    def amend(self, observation: Observation) -> None:
        """Take what a worker's own successful call changed (tags, groups, monitoring) as observed now."""
        if observation.instance_id and observation.instance is not None:
            self._store(observation.instance_id, observation.instance, observation.checks, self._clock())

    def _store(self, instance_id: str, instance: CMLWorkerInstanceDto | None,
               checks: InstanceStatusChecks | None, at: float) -> Observation:
        observation = Observation(instance_id, instance, checks)
        entry = self._cache.get(instance_id)
        if entry is not None and entry.observed_at > at:
            return observation  # a newer read (or a launch) already answered; keep it
        if instance is None and entry is not None and entry.observation.instance is not None:
            logger.warning("region %s: EC2 no longer reports instance %s (last seen %s)", self.region,
                           instance_id, entry.observation.state)
        self._cache[instance_id] = _Entry(observation, at)
        return observation

    async def _describe(self, ids: list[str]) -> dict[str, object]:
        return dict(await self._ec2.describe_instances(self.region, ids))

    async def _status(self, ids: list[str]) -> dict[str, InstanceStatusChecks | None]:
        return dict(await self._ec2.status_checks(self.region, ids))

    async def _by_uid(self, uids: list[str]) -> dict[str, list[CMLWorkerInstanceDto]]:
        return await self._ec2.find_by_tag_values(self.region, TAG_UID, uids)


class Observers:
    """The region observers, created on first use."""

    def __init__(self, ec2: EC2Api, settings: ObserverSettings | None = None,
                 on_batch: Callable[[str, str, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cluster_id: Callable[[], str | None] = lambda: None) -> None:
        self._ec2 = ec2
        self.settings = settings or ObserverSettings()
        self._on_batch = on_batch
        self._clock = clock
        self._cluster_id = cluster_id
        self._observers: dict[str, RegionObserver] = {}

    def __call__(self, region: str) -> RegionObserver:
        observer = self._observers.get(region)
        if observer is None:
            hook = (lambda kind, size: self._on_batch(region, kind, size)) if self._on_batch else None
            observer = self._observers[region] = RegionObserver(region, self._ec2, self.settings, clock=self._clock,
                                                                on_batch=hook, cluster_id=self._cluster_id)
            observer.start()
        return observer

    def regions(self) -> Iterable[str]:
        return list(self._observers)

    async def stop(self) -> None:
        await asyncio.gather(*(o.stop() for o in self._observers.values()), return_exceptions=True)
