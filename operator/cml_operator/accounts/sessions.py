"""``RoleSession``: one CMLAccount's assumed-role credentials, cached and renewed before they end.

Two paths renew, sharing one lock and one cache, so a renewal is one AssumeRole whoever asks:

* the operator asks ``credentials()`` before a worker's pass and on the CMLAccount's timer,
  which assumes the role when there is no session yet or less than ``margin`` seconds are left;
* botocore, signing an EC2 request in a worker thread (the region observers call EC2 on their
  own schedule), finds its ``RefreshableCredentials`` within the same margin and calls back here.

A failed AssumeRole is not cached: the next ask tries again (bounded by the callers' retry delays).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import boto3
from botocore.credentials import CredentialProvider, RefreshableCredentials

from ..ec2.botodata import botocore_session
from .sts import RoleRequest, SessionCredentials, STSClient

#: Renew this long before a session ends by default (botocore's own advisory window is 15 minutes,
#: which would renew a 15-minute session on every call).
DEFAULT_MARGIN = 300.0
#: Seconds a session is used at least before it is renewed.
MIN_USE = 10.0


@dataclass
class RoleSession:
    """Credentials for one role; thread-safe."""

    sts: STSClient
    request: RoleRequest
    margin: float = DEFAULT_MARGIN
    clock: Callable[[], float] = time.time  # wall clock: STS expirations are wall-clock times

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._current: SessionCredentials | None = None
        #: Called after every renewal (the fleet drops clients built on the old credentials).
        self.on_renewed: Callable[[SessionCredentials], None] | None = None

    @property
    def current(self) -> SessionCredentials | None:
        return self._current

    def update_request(self, request: RoleRequest) -> None:
        """The CMLAccount changed (role, ExternalId, duration): the next ask assumes anew."""
        with self._lock:
            if request != self.request:
                self.request = request
                self._current = None

    def remaining(self) -> float:
        current = self._current
        return -1.0 if current is None else current.expiration.timestamp() - self.clock()

    def _margin(self) -> float:
        # A session is used for 10 s at least: a margin as long as the session would renew on every ask.
        return max(0.0, min(self.margin, self.request.duration_seconds - MIN_USE))

    def credentials(self) -> SessionCredentials:
        """The cached session, or a new one when none is cached or it ends within the margin (blocking)."""
        with self._lock:
            current = self._current
            if current is not None and current.expiration.timestamp() - self.clock() > self._margin():
                return current
            renewed = self.sts.assume_role(self.request)
            self._current = renewed
        if self.on_renewed is not None:
            self.on_renewed(renewed)
        return renewed

    def boto3_session(self) -> boto3.session.Session:
        """A boto3 session whose credentials come from this role and renew themselves."""
        first = self.credentials()
        refreshable = RefreshableCredentials.create_from_metadata(
            metadata=first.botocore_metadata(), refresh_using=lambda: self.credentials().botocore_metadata(),
            method="cml-operator-assume-role")
        # botocore renews within these windows of the expiry (advisory: try; mandatory: must).
        refreshable._advisory_refresh_timeout = self._margin()  # noqa: SLF001 - botocore has no setter
        refreshable._mandatory_refresh_timeout = self._margin() / 2  # noqa: SLF001
        core = botocore_session()
        core.get_component("credential_provider").insert_before("env", _Fixed(refreshable))
        return boto3.session.Session(botocore_session=core)


class _Fixed(CredentialProvider):
    """A credential provider that hands out one (refreshable) credentials object."""

    METHOD = "cml-operator-assume-role"
    CANONICAL_NAME = "cml-operator-assume-role"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self._credentials


def session_name(namespace: str) -> str:
    """``cml-operator-<namespace>`` (the operator's own namespace: CloudTrail tells releases apart),
    within STS's 64 characters and alphabet."""
    name = f"cml-operator-{namespace}" if namespace else "cml-operator"
    return "".join(c if c.isalnum() or c in "=,.@-_" else "-" for c in name)[:64]


def expires_in(credentials: SessionCredentials, now: datetime | None = None) -> float:
    return (credentials.expiration - (now or datetime.now(timezone.utc))).total_seconds()


__all__ = ["RoleSession", "session_name", "expires_in"]
