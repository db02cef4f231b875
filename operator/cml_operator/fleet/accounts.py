"""One fleet per AWS account: its own EC2 client, rate limiter, batchers, region observers and lookups.

The operator's own identity is the fleet named ``""`` (``OWN_IDENTITY``); every CMLAccount in use
gets its own, built on first use from the account's ``RoleSession``. Nothing is shared between
fleets but the thread pool size and the metrics: an instance id, a cache entry, a token bucket or
an orphan clock of one account is never consulted for another (EC2 itself throttles per account
and region, so the buckets are per account and region too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..accounts.sessions import RoleSession
from ..accounts.sts import RoleRequest, SessionCredentials, STSClient
from ..reconcile.account import OWN_IDENTITY, AccountSpec
from .gateway import EC2Api
from .lookups import SharedLookups
from .observer import Observers

logger = logging.getLogger(__name__)

#: The metrics label of the operator's own identity (its account id is not looked up: no STS call).
OWN_ACCOUNT_LABEL = "self"


@dataclass
class Fleet:
    """Everything that talks to EC2 in one account."""

    name: str  # the CMLAccount's name; OWN_IDENTITY for the operator's own identity
    ec2: EC2Api
    observers: Observers
    lookups: SharedLookups
    session: RoleSession | None = None
    #: Per region: when each orphan was first seen (runtime.OrphanClock); owned here so accounts never mix.
    orphan_clocks: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] | None = None

    @property
    def account_id(self) -> str:
        current = self.session.current if self.session else None
        return current.account_id if current else ""

    @property
    def label(self) -> str:
        """The account as metrics and events name it: its id, or 'self'."""
        return self.account_id or (OWN_ACCOUNT_LABEL if self.name == OWN_IDENTITY else self.name)


#: Builds a fleet for a CMLAccount from its role session (the runtime wires the EC2 client, limiter, observers).
FleetBuilder = Callable[[str, RoleSession], Fleet]


class AccountFleets:
    """The fleets by account name, and the CMLAccounts the operator knows (kept current by their handler)."""

    def __init__(self, own: Fleet, build: FleetBuilder, sts: STSClient, *, margin: float,
                 operator_namespace: str, session_name: Callable[[str], str]) -> None:
        self.own = own
        self._build = build
        self._sts = sts
        self._margin = margin
        self._session_name = session_name(operator_namespace)
        self._fleets: dict[str, Fleet] = {}
        self.specs: dict[str, AccountSpec] = {}
        #: The ExternalId each account's Secret held when last read (spec.externalIdSecretRef).
        self._external_ids: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: When the CMLAccounts were last listed from the API server (monotonic; 0: never).
        self.listed_at = 0.0
        #: Objects with an instance re-list at most this often (watch events keep the list current between).
        self.relist_after = 60.0
        self.list_lock = asyncio.Lock()

    # ------------------------------------------------------------ what the CMLAccount handler keeps current

    def upsert(self, spec: AccountSpec) -> None:
        self.specs[spec.name] = spec
        fleet = self._fleets.get(spec.name)
        if fleet is not None and fleet.session is not None:
            fleet.session.update_request(self._request(spec))

    def replace_all(self, specs: list[AccountSpec], at: float) -> None:
        for name in set(self.specs) - {spec.name for spec in specs}:
            self.remove(name)
        for spec in specs:
            self.upsert(spec)
        self.listed_at = at

    def remove(self, name: str) -> None:
        self.specs.pop(name, None)

    def known(self) -> list[AccountSpec]:
        return list(self.specs.values())

    def set_external_id(self, name: str, external_id: str) -> None:
        self._external_ids[name] = external_id
        spec = self.specs.get(name)
        if spec is not None:
            self.upsert(spec)

    # ------------------------------------------------------------ what passes ask

    def _request(self, spec: AccountSpec) -> RoleRequest:
        external_id = spec.external_id or (self._external_ids.get(spec.name) if spec.external_id_secret else None)
        return RoleRequest(spec.role_arn, self._session_name, spec.session_seconds, external_id,
                           spec.source_identity)

    async def fleet(self, spec: AccountSpec | None) -> Fleet:
        """The account's fleet with credentials that last beyond the renewal margin (AssumeRole when not).

        Raises ``AssumeRoleException`` before any EC2 call when the role cannot be assumed.
        """
        if spec is None:
            return self.own
        lock = self._locks.setdefault(spec.name, asyncio.Lock())
        async with lock:
            fleet = self._fleets.get(spec.name)
            if fleet is None or fleet.session is None:
                session = RoleSession(self._sts, self._request(spec), self._margin)
                await asyncio.to_thread(session.credentials)  # fails here, before a fleet (or EC2) exists
                fleet = self._fleets[spec.name] = self._build(spec.name, session)
            else:
                fleet.session.update_request(self._request(spec))
                await asyncio.to_thread(fleet.session.credentials)
            return fleet

    def existing(self, name: str) -> Fleet | None:
        return self.own if name == OWN_IDENTITY else self._fleets.get(name)

    def all(self) -> list[Fleet]:
        return [self.own, *self._fleets.values()]

    async def stop(self) -> None:
        for fleet in self.all():
            await fleet.observers.stop()
            if fleet.close is not None:
                fleet.close()


def credentials_summary(credentials: SessionCredentials) -> str:
    return f"account {credentials.account_id}, until {credentials.expiration.isoformat()}"
