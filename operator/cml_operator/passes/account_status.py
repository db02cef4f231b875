"""The CMLAccount pass: assume the role (or renew the session), and say how it went in the account's status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..ec2.exceptions import IntegrationException
from ..reconcile import reasons
from ..reconcile.account import AccountSpec
from ..reconcile.conditions import Health, build_conditions
from ..reconcile.policy import Decision, classify
from ..runtime import Runtime
from .account import read_external_id


@dataclass(frozen=True)
class AccountPassResult:
    status: dict[str, Any]
    health: Health
    decision: Decision | None = None  # set when assuming failed


async def account_pass(runtime: Runtime, body: Mapping[str, Any], retry: int = 0) -> AccountPassResult:
    spec = AccountSpec.from_body(body)
    previous = (body.get("status") or {}) if isinstance(body.get("status"), Mapping) else {}
    status: dict[str, Any] = {"observedGeneration": spec.generation}
    accounts = runtime.accounts
    if accounts is None:  # a runtime without accounts (unit tests of other kinds)
        health = Health.reconciling(reasons.INTEGRATION_ERROR, "the operator has no account support")
        return AccountPassResult({**status, "conditions": build_conditions(previous.get("conditions"), health,
                                                                           spec.generation)}, health)
    accounts.upsert(spec)
    try:
        if spec.external_id_secret:
            await read_external_id(runtime, spec)
        fleet = await accounts.fleet(spec)
    except IntegrationException as error:
        decision = classify(error, retry=retry, slow_recheck_seconds=runtime.settings.slow_recheck)
        message = str(error)
        health = (Health.reconciling(decision.reason, message) if decision.temporary
                  else Health.stalled(decision.reason, message))
        status["conditions"] = build_conditions(previous.get("conditions"), health, spec.generation)
        return AccountPassResult(status, health, decision)
    current = fleet.session.current if fleet.session else None
    if current is not None:
        status["accountId"] = current.account_id
        status["sessionExpiration"] = current.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    health = Health.ready(reasons.ACCOUNT_ASSUMED,
                          f"Assumed {spec.role_arn} (account {fleet.account_id})")
    status["conditions"] = build_conditions(previous.get("conditions"), health, spec.generation)
    return AccountPassResult(status, health)
