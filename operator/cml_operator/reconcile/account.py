"""Which AWS account a worker, pool or discovery uses, or why none: pure, no I/O.

An administrator owns ``CMLAccount`` objects (cluster-scoped); each names an IAM role and
selects, by label, the namespaces that may use it. An object names one with
``spec.accountRef.name`` or takes the one that selects its namespace; with none, the
operator's own identity serves, unless ``--require-account`` is set. Once an instance
exists the account it lives in is fixed (``status.account``): re-resolving later could
point the worker at another account where its instance is not, and it would launch a second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import reasons

#: Where status.account is absent: the operator's own identity (no CMLAccount).
OWN_IDENTITY = ""


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry of a label selector."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        return False  # an operator the schema does not allow: select nothing rather than everything


@dataclass(frozen=True)
class LabelSelector:
    """Kubernetes label selector; unlike Kubernetes', an empty one selects nothing (an account is opt-in)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> LabelSelector:
        raw = raw or {}
        labels = tuple(sorted((str(k), str(v)) for k, v in (raw.get("matchLabels") or {}).items()))
        requirements = tuple(Requirement(str(item.get("key", "")), str(item.get("operator", "")),
                                         tuple(str(v) for v in item.get("values") or ()))
                             for item in raw.get("matchExpressions") or ())
        return cls(labels, requirements)

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.requirements

    def selects(self, labels: Mapping[str, str]) -> bool:
        if self.empty:
            return False
        return (all(labels.get(k) == v for k, v in self.match_labels)
                and all(r.matches(labels) for r in self.requirements))


@dataclass(frozen=True)
class AccountSpec:
    """A CMLAccount as the operator reads it."""

    name: str
    role_arn: str
    selector: LabelSelector = field(default_factory=LabelSelector)
    external_id: str | None = None
    external_id_secret: tuple[str, str, str] | None = None  # (namespace, name, key)
    source_identity: str | None = None
    session_seconds: int = 3600
    regions: tuple[str, ...] = ()
    generation: int = 1

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AccountSpec:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        secret = spec.get("externalIdSecretRef")
        return cls(
            name=str(meta.get("name", "")),
            role_arn=str(spec.get("roleArn", "")),
            selector=LabelSelector.from_dict(spec.get("namespaceSelector")),
            external_id=spec.get("externalId") or None,
            external_id_secret=((str(secret.get("namespace", "")), str(secret.get("name", "")),
                                 str(secret.get("key", ""))) if isinstance(secret, Mapping) else None),
            source_identity=spec.get("sourceIdentity") or None,
            session_seconds=int(spec.get("sessionDurationSeconds") or 3600),
            regions=tuple(spec.get("regions") or ()),
            generation=int(meta.get("generation") or 1),
        )

    def allows_region(self, region: str | None) -> bool:
        return not self.regions or region is None or region in self.regions


@dataclass(frozen=True)
class UseAccount:
    """Use this CMLAccount (None: the operator's own identity)."""

    account: AccountSpec | None

    @property
    def name(self) -> str:
        return self.account.name if self.account else OWN_IDENTITY


@dataclass(frozen=True)
class Refusal:
    """No account may be used: Stalled with ``reason``."""

    reason: str
    message: str


@dataclass(frozen=True)
class Subject:
    """What asks for an account: where it lives and what it names."""

    kind: str  # CMLWorker, CMLWorkerDiscovery
    namespace: str
    namespace_labels: Mapping[str, str]
    requested: str | None  # spec.accountRef.name
    region: str | None = None
    #: The account its instance lives in (status.account.name, OWN_IDENTITY for none), once it has one.
    recorded: str | None = None
    #: Being deleted: its own instance may be terminated in the account it lives in even when that account
    #: no longer selects the namespace (else the finalizer could never go).
    deleting: bool = False


def resolve_account(subject: Subject, accounts: Sequence[AccountSpec], *, require_account: bool) -> UseAccount | Refusal:
    """The account ``subject`` uses, or why it may use none."""
    by_name = {account.name: account for account in accounts}
    if subject.recorded is not None:
        return _recorded(subject, by_name)
    if subject.requested:
        account = by_name.get(subject.requested)
        if account is None:
            return Refusal(reasons.ACCOUNT_NOT_ALLOWED,
                           f"spec.accountRef names CMLAccount {subject.requested!r}, which does not exist")
        if not account.selector.selects(subject.namespace_labels):
            return Refusal(reasons.ACCOUNT_NOT_ALLOWED,
                           f"CMLAccount {account.name!r} (spec.accountRef) does not select namespace "
                           f"{subject.namespace!r}: its spec.namespaceSelector must match the namespace's labels")
        return _in_region(subject, account)
    selecting = sorted((a for a in accounts if a.selector.selects(subject.namespace_labels)), key=lambda a: a.name)
    if len(selecting) > 1:
        names = ", ".join(a.name for a in selecting)
        return Refusal(reasons.ACCOUNT_AMBIGUOUS,
                       f"{len(selecting)} CMLAccounts select namespace {subject.namespace!r} ({names}): "
                       f"name one in spec.accountRef.name")
    if selecting:
        return _in_region(subject, selecting[0])
    if require_account:
        return Refusal(reasons.ACCOUNT_NOT_ALLOWED,
                       f"no CMLAccount selects namespace {subject.namespace!r} and the operator runs with "
                       f"--require-account (its own identity is not used for workers)")
    return UseAccount(None)


def _recorded(subject: Subject, by_name: Mapping[str, AccountSpec]) -> UseAccount | Refusal:
    """An instance exists: it stays in the account it was launched in."""
    if subject.requested and subject.requested != subject.recorded:
        where = f"CMLAccount {subject.recorded!r}" if subject.recorded else "the operator's own account"
        return Refusal(reasons.ACCOUNT_NOT_ALLOWED,
                       f"spec.accountRef names {subject.requested!r} but the instance lives in {where}; "
                       f"the account cannot change once launched")
    if subject.recorded == OWN_IDENTITY:
        return UseAccount(None)
    account = by_name.get(subject.recorded or "")
    if account is None:
        return Refusal(reasons.ACCOUNT_NOT_ALLOWED,
                       f"the instance lives in CMLAccount {subject.recorded!r}, which no longer exists")
    if not subject.deleting and not account.selector.selects(subject.namespace_labels):
        return Refusal(reasons.ACCOUNT_NOT_ALLOWED,
                       f"CMLAccount {account.name!r} no longer selects namespace {subject.namespace!r}")
    return UseAccount(account)


def _in_region(subject: Subject, account: AccountSpec) -> UseAccount | Refusal:
    if account.allows_region(subject.region):
        return UseAccount(account)
    return Refusal(reasons.ACCOUNT_NOT_ALLOWED,
                   f"CMLAccount {account.name!r} allows regions {', '.join(account.regions)}, not {subject.region} "
                   f"(spec.region)")


def recorded_account(raw_status: Mapping[str, Any] | None, *, launched: bool) -> str | None:
    """The account an existing instance lives in: status.account.name, or the own identity; None before launch."""
    status = raw_status or {}
    account = status.get("account")
    if isinstance(account, Mapping) and account.get("name"):
        return str(account["name"])
    return OWN_IDENTITY if launched else None
