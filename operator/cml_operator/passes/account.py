"""Bind a pass to the AWS account its object uses: resolve (pure), then assume the role if needed.

Everything a pass does afterwards with ``runtime.ec2`` / ``observers`` / ``lookups`` happens in
that account (``Runtime.for_fleet``). Refusals and STS failures raise before any EC2 call:
``AccountRefusedException`` (Stalled AccountNotAllowed / AccountAmbiguous) and
``AssumeRoleException`` (Stalled or Reconciling AssumeRoleFailed), decided by the policy table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..accounts.exceptions import AccountRefusedException
from ..ec2.exceptions import IntegrationException
from ..kubeapi import CMLACCOUNTS, KubeApiError
from ..reconcile.account import AccountSpec, Refusal, Subject, UseAccount, resolve_account
from ..runtime import Runtime

logger = logging.getLogger(__name__)

#: An object that has not launched yet reads the CMLAccounts again when the known list is older than
#: this: GitOps applies an account and its first worker together, and a worker must not launch with
#: the operator's own identity only because the account's watch event had not arrived yet.
FRESH_BEFORE_LAUNCH = 2.0
#: Namespace labels are read again after this long.
NAMESPACE_TTL = 10.0


async def bind_account(runtime: Runtime, subject: Subject) -> tuple[Runtime, UseAccount]:
    """The runtime bound to ``subject``'s account, and which account that is; raises when it may use none."""
    accounts = runtime.accounts
    if accounts is None:
        return runtime, UseAccount(None)
    known = await _accounts(runtime, fresh=subject.recorded is None)
    if not known and not runtime.settings.require_account and not subject.requested and not subject.recorded:
        return runtime.for_fleet(accounts.own), UseAccount(None)  # no CMLAccount at all: no namespace read
    labels = await _namespace_labels(runtime, subject.namespace)
    decision = resolve_account(replace(subject, namespace_labels=labels), known,
                               require_account=runtime.settings.require_account)
    if isinstance(decision, Refusal):
        raise AccountRefusedException(decision.message, code=decision.reason, region=subject.region)
    if decision.account is not None and decision.account.external_id_secret:
        await read_external_id(runtime, decision.account)
    fleet = await accounts.fleet(decision.account)
    return runtime.for_fleet(fleet), decision


async def _accounts(runtime: Runtime, *, fresh: bool) -> list[AccountSpec]:
    accounts = runtime.accounts
    assert accounts is not None
    if runtime.kube is None or not _stale(accounts.listed_at, accounts.relist_after, fresh):
        return accounts.known()
    async with accounts.list_lock:  # a thousand workers resuming at once share one list
        if not _stale(accounts.listed_at, accounts.relist_after, fresh):
            return accounts.known()
        try:
            items = await runtime.kube.list(CMLACCOUNTS, None)
        except KubeApiError as error:
            if error.status != 404:  # 404: the CRD is not installed, so there are no accounts
                raise IntegrationException(f"listing CMLAccounts: HTTP {error.status} {error.reason}",
                                           code=f"HTTP{error.status}", operation="ListCMLAccounts") from None
            items = []
        accounts.replace_all([AccountSpec.from_body(item) for item in items], time.monotonic())
    return accounts.known()


def _stale(listed_at: float, relist_after: float, fresh: bool) -> bool:
    age = time.monotonic() - listed_at
    return age > relist_after or (fresh and age > FRESH_BEFORE_LAUNCH)


async def _namespace_labels(runtime: Runtime, namespace: str) -> Mapping[str, str]:
    cached = runtime.namespace_labels.get(namespace)
    now = time.monotonic()
    if cached is not None and now - cached[0] < NAMESPACE_TTL:
        return cached[1]
    if runtime.kube is None:
        return {}
    try:
        body: Mapping[str, Any] = await runtime.kube.get_namespace(namespace)
    except KubeApiError as error:
        raise IntegrationException(f"reading namespace {namespace} (its labels select CMLAccounts): HTTP "
                                   f"{error.status} {error.reason}", code=f"HTTP{error.status}",
                                   operation="GetNamespace") from None
    labels = dict((body.get("metadata") or {}).get("labels") or {})
    runtime.namespace_labels[namespace] = (now, labels)
    return labels


async def read_external_id(runtime: Runtime, account: AccountSpec) -> None:
    assert account.external_id_secret is not None and runtime.accounts is not None
    namespace, name, key = account.external_id_secret
    if runtime.kube is None:
        return
    try:
        value = await runtime.kube.secret_value(namespace, name, key)
    except KubeApiError as error:
        raise AccountRefusedException(
            f"CMLAccount {account.name}: cannot read spec.externalIdSecretRef {namespace}/{name}: HTTP {error.status}",
            code="AssumeRoleFailed") from None
    if value is None:
        raise AccountRefusedException(
            f"CMLAccount {account.name}: spec.externalIdSecretRef {namespace}/{name} has no key {key!r}",
            code="AssumeRoleFailed")
    runtime.accounts.set_external_id(account.name, value.decode().strip())


def subject_of(kind: str, body: Mapping[str, Any], region: str | None, recorded: str | None) -> Subject:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    ref = spec.get("accountRef") if isinstance(spec, Mapping) else None
    requested = str(ref.get("name")) if isinstance(ref, Mapping) and ref.get("name") else None
    return Subject(kind, str(meta.get("namespace") or ""), {}, requested, region, recorded)


def account_status(decision: UseAccount, runtime: Runtime) -> dict[str, str] | None:
    """status.account: the CMLAccount's name and the account id it resolved to (None: own identity)."""
    if decision.account is None:
        return None
    fleet = runtime.fleet
    return {"name": decision.account.name, "id": fleet.account_id if fleet is not None else ""}
