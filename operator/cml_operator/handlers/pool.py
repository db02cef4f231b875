"""CMLWorkerPool handlers (thin): one pool pass on create, spec change, resume and every poll interval.

A pass lists the pool's children afresh and creates, patches or deletes them
(``passes.pool``); its status is written through Kopf's patch, only when changed.
Deleting a pool deletes its children here too (the garbage collector does the same
from the ownerReferences where kube-controller-manager runs), unless the pool is
deleted with ``--cascade=orphan``.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..passes.pool import delete_children, pool_pass
from ..reconcile.status import status_patch
from ..runtime import Runtime
from ..settings import OperatorSettings
from .worker import EVENT_MESSAGE_LIMIT

GROUP, VERSION, PLURAL = "cml.dev", "v1alpha1", "cmlworkerpools"
#: Seconds before a pass refused by the API server is tried again.
RETRY_DELAY = 10.0


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.resume(*resource, id="pool", registry=registry)
    @kopf.on.create(*resource, id="pool", registry=registry)
    @kopf.on.update(*resource, field="spec", id="pool", registry=registry)
    async def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await _pass(memo.runtime, body, patch, raise_errors=True)

    @kopf.timer(*resource, interval=config.poll_interval, id="pool-poll", registry=registry)
    async def poll(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await _pass(memo.runtime, body, patch, raise_errors=False)

    @kopf.on.delete(*resource, id="pool-delete", registry=registry)
    async def delete(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        assert runtime.kube is not None
        async with runtime.object_lock(body["metadata"]["uid"]):
            deleted = await delete_children(runtime.kube, body)
        runtime.object_locks.pop(body["metadata"]["uid"], None)
        if deleted:
            logger.info("Deleted the pool's %d worker(s): %s", len(deleted), ", ".join(deleted))


async def _pass(runtime: Runtime, body: kopf.Body, patch: kopf.Patch, *, raise_errors: bool) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    assert runtime.kube is not None
    prices = await runtime.prices.refresh_if_due(runtime.kube) if runtime.prices is not None else None
    async with runtime.object_lock(body["metadata"]["uid"]):
        result = await pool_pass(runtime.kube, body, prices)
    changes = status_patch(body.get("status"), result.status)
    if changes:
        patch.setdefault("status", {}).update(changes)
    for note in result.notes:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message[:EVENT_MESSAGE_LIMIT])
    if result.error is not None and raise_errors and not result.error.permanent:
        raise kopf.TemporaryError(str(result.error), delay=RETRY_DELAY)
