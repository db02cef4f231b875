"""Shared access to CML controllers: one HTTP session, bounded concurrency, per-worker clients and clocks.

The operator keeps one ``CMLClient`` per worker (its bearer token is reused
between looks) and remembers, per worker, when to look next and what it saw
last, so a pass that is not due reuses the last look instead of calling CML.
In-process only: what must survive a restart lives in ``status.cml``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from ..cml.client import CMLClient
from ..cml.models import LicenseStatus, SystemInfo
from ..kube_secrets import SecretReader
from ..settings import CMLSettings


@dataclass
class CMLMemory:
    """What this process remembers about one worker's controller."""

    client: CMLClient | None = None
    client_key: tuple | None = None
    seen_ready: bool = False  # the controller said ready since this client was made
    info: SystemInfo | None = None
    next_look: float = 0.0
    last_look: object | None = None  # reconcile.cml.CheckOutcome
    looked_generation: int | None = None
    looked_instance: str | None = None
    #: The Secret behind a refusal (credentials for a 401/403, the CA for an untrusted certificate)
    #: and its resourceVersion then (None: it did not exist); a new version means "try again now".
    refused_secret: str | None = None
    refused_secret_version: str | None = None
    secret_checked_at: float = 0.0
    release_failures: int = 0
    #: The last licensing answer and when (a valid licence is not read on every look).
    license_status: LicenseStatus | None = None
    license_checked_at: float = 0.0
    #: The licence token Secret's resourceVersion at the last registration (a refused token: retry when it changes).
    token_version: str | None = None
    #: Looks run outside the worker's lock (passes/cml.look_ahead); one at a time per worker.
    look_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    looked_pin_reset: str | None = None  # the cml.dev/reset-certificate-pin value the last look honoured
    looked_at: datetime | None = None
    #: The last look is not yet in status; what it changed there (a pin, a registration) and its events.
    unread: bool = False
    look_changes: dict[str, Any] = field(default_factory=dict)
    look_notes: list[Any] = field(default_factory=list)


class CMLService:
    def __init__(self, settings: CMLSettings, secrets: SecretReader,
                 on_call: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings
        self.secrets = secrets
        self.on_call = on_call or (lambda operation, outcome: None)
        self._semaphore: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._workers: dict[str, CMLMemory] = {}

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        return self._semaphore

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.concurrency * 2, limit_per_host=0),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def memory(self, uid: str) -> CMLMemory:
        memory = self._workers.get(uid)
        if memory is None:
            memory = self._workers[uid] = CMLMemory()
        return memory

    def forget(self, uid: str) -> None:
        self._workers.pop(uid, None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.secrets.close()
