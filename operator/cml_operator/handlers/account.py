"""CMLAccount handlers (cluster-scoped): keep the operator's account list current, assume the role, report it.

Events keep ``runtime.accounts`` current at once (a deleted account is forgotten); the
change handlers and a timer assume the role (renewing the session before it ends) and write
``status``: Ready ``RoleAssumed`` with the account id, or Stalled/Reconciling ``AssumeRoleFailed``.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..passes.account_status import account_pass
from ..reconcile.account import AccountSpec
from ..reconcile.status import status_patch
from ..runtime import Runtime
from ..settings import OperatorSettings

GROUP, VERSION, PLURAL = "cml.dev", "v1alpha1", "cmlaccounts"
#: The timer's period bounds how late a renewal (and a recovered role) shows in status.
CHECK_INTERVAL = 60.0


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.event(*resource, id="track", registry=registry)
    async def track(event: dict[str, Any], body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is None or runtime.accounts is None:
            return
        if event.get("type") == "DELETED":
            runtime.accounts.remove(body["metadata"]["name"])
        else:
            runtime.accounts.upsert(AccountSpec.from_body(body))

    @kopf.on.resume(*resource, id="assume", registry=registry)
    @kopf.on.create(*resource, id="assume", registry=registry)
    @kopf.on.update(*resource, field="spec", id="assume", registry=registry)
    async def assume(body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any) -> None:
        await _assume(memo.runtime, body, patch, retry, raise_errors=True)

    @kopf.timer(*resource, interval=min(CHECK_INTERVAL, max(config.poll_interval, 1.0)), id="renew",
                registry=registry)
    async def renew(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await _assume(memo.runtime, body, patch, 0, raise_errors=False)


async def _assume(runtime: Runtime, body: kopf.Body, patch: kopf.Patch, retry: int, *, raise_errors: bool) -> None:
    result = await account_pass(runtime, body, retry)
    changes = status_patch(body.get("status"), result.status)
    if changes:
        patch.setdefault("status", {}).update(changes)
    decision = result.decision
    if decision is None:
        return
    if decision.temporary:
        if raise_errors:
            raise kopf.TemporaryError(result.health.message, delay=decision.delay or 10.0)
        return
    if raise_errors:  # the timer keeps retrying quietly; the condition says it all
        kopf.event(body, type="Warning", reason=decision.reason, message=result.health.message[:1000])
        raise kopf.PermanentError(result.health.message)
