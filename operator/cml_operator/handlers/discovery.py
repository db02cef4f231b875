"""CMLWorkerDiscovery handlers (thin): scan on create and spec change, then every spec.intervalSeconds.

Kopf timers have one interval for all objects, so a short timer (the poll interval)
asks whether this discovery's own interval has passed since ``status.lastScanTime``;
the time lives in status, so a restart does not rescan early. A failed scan is
retried after the policy's delay.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import kopf

from ..passes.discovery import discovery_pass
from ..reconcile.discovery import scan_due
from ..reconcile.status import status_patch
from ..runtime import DiscoveryMemory, Runtime
from ..settings import OperatorSettings
from .worker import EVENT_MESSAGE_LIMIT

GROUP, VERSION, PLURAL = "cml.dev", "v1alpha1", "cmlworkerdiscoveries"


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.create(*resource, id="discovery", registry=registry)
    @kopf.on.update(*resource, field="spec", id="discovery", registry=registry)
    async def changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await _scan(memo.runtime, body, patch, force=True)

    @kopf.timer(*resource, interval=config.poll_interval, id="discovery-poll", registry=registry)
    async def poll(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await _scan(memo.runtime, body, patch, force=False)

    @kopf.on.delete(*resource, id="discovery-delete", optional=True, registry=registry)
    async def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        memo.runtime.discoveries.pop(body["metadata"]["uid"], None)


async def _scan(runtime: Runtime, body: kopf.Body, patch: kopf.Patch, *, force: bool) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    memory = runtime.discovery(body["metadata"]["uid"])
    status = body.get("status") or {}
    interval = float((body.get("spec") or {}).get("intervalSeconds") or 300)
    async with memory.lock:
        now = runtime.clock()
        if not force and not _due(memory, status, interval, now):
            return
        memory.region = (body.get("spec") or {}).get("region")
        result = await discovery_pass(runtime, body, cluster_id=runtime.own_cluster_id())
        memory.account = result.account
        memory.next_attempt = now + result.delay if result.delay is not None else 0.0
        if result.delay is None:
            memory.last_scan_at = runtime.clock()
    changes = status_patch(status, result.status)
    if changes:
        patch.setdefault("status", {}).update(changes)
    for note in result.notes:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message[:EVENT_MESSAGE_LIMIT])


def _due(memory: DiscoveryMemory, status: dict, interval: float, now: float) -> bool:
    if now < memory.next_attempt:
        return False  # a failed scan waits out its retry delay
    if memory.last_scan_at is not None and now - memory.last_scan_at < interval:
        return False  # this process scanned lately, whatever the (possibly older) body says
    return scan_due(status.get("lastScanTime"), interval, datetime.now(timezone.utc))

