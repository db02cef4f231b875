"""``CMLClient``: the only code that talks to a CML controller (its REST API under ``/api/v0/``).

Built on aiohttp rather than virl2-client (see docs/cml.md, "Why not virl2-client"):
the operator is asynchronous and already ships aiohttp (Kopf's HTTP client), and
aiohttp checks a pinned certificate's SHA-256 during the TLS handshake
(``aiohttp.Fingerprint``), before any byte of a request (let alone a password)
leaves the operator. virl2-client is synchronous, makes several calls on every
connect (version check, token, test call), and only knows "verify against a CA"
or "do not verify".

Trust: with a CA the certificate must verify against it; without one, before the
first ``system_information`` call a bare TLS handshake (no HTTP, no credentials)
reads the certificate and records its SHA-256 (DER), and every request from then
on must present the same one.

One client per worker keeps its bearer token and reuses it; a 401 re-authenticates
once. Every call has a timeout; every HTTP attempt is reported to ``on_call``
(for the ``cml_api_calls_total`` metric). Errors leave as the ``CMLException``
family (``errors``), never as aiohttp's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json as json_module
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from .errors import cml_http_error, cml_transport_error
from .exceptions import CMLAuthenticationException, CMLCertificateException, CMLException
from .models import LabCounts, LicenseStatus, SystemInfo, SystemStats

CallObserver = Callable[[str, str], None]  # (operation, outcome: "ok" | "HTTP503" | "Timeout" ...)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Trust:
    """How to trust the controller: a CA (PEM), or a pinned SHA-256 (None: pin on first use)."""

    ca_pem: str | None = None
    pin: str | None = None


def api_base(endpoint: str) -> str:
    """``https://host:8443/cml-a`` -> ``https://host:8443/cml-a/api/v0/`` (a path prefix is kept)."""
    return endpoint.rstrip("/") + "/api/v0/"


def certificate_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class CMLClient:
    """One controller endpoint; keeps the bearer token between calls."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str, trust: Trust, credentials: Credentials,
                 *, timeout: float = 10.0, on_call: CallObserver | None = None) -> None:
        self._session = session
        self.endpoint = endpoint
        self._base = api_base(endpoint)
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._on_call = on_call or (lambda operation, outcome: None)
        self._token: str | None = None
        self.ca_pem = trust.ca_pem
        self.pin = trust.pin
        self._ca_context = _ca_context(trust.ca_pem) if trust.ca_pem else None
        self._fingerprint: aiohttp.Fingerprint | None = None

    @property
    def authenticated(self) -> bool:
        return self._token is not None

    def forget_token(self) -> None:
        self._token = None

    # ------------------------------------------------------------ calls

    async def system_information(self) -> SystemInfo:
        """Unauthenticated; on first use (no CA, no pin) it records the certificate's SHA-256."""
        return SystemInfo.parse(await self._call("GET", "system_information", auth=False, first_use=True))

    async def authenticate(self) -> None:
        body = {"username": self._credentials.username, "password": self._credentials.password}
        token = await self._call("POST", "authenticate", auth=False, json=body)
        if not isinstance(token, str) or not token:
            raise CMLAuthenticationException("CML authenticate: no token in the answer", code="NoToken",
                                             operation="authenticate")
        self._token = token

    async def lab_counts(self) -> LabCounts:
        """Every lab in one call (``populate_lab_tiles``)."""
        return LabCounts.from_tiles(await self._call("GET", "populate_lab_tiles"))

    async def system_stats(self) -> SystemStats:
        return SystemStats.parse(await self._call("GET", "system_stats"))

    async def licensing(self) -> LicenseStatus:
        return LicenseStatus.parse(await self._call("GET", "licensing"))

    async def register_license(self, token: str) -> None:
        await self._call("POST", "licensing/registration", json={"token": token, "reregister": False})

    async def deregister_license(self) -> None:
        await self._call("DELETE", "licensing/deregistration")

    # ------------------------------------------------------------ plumbing

    async def _call(self, method: str, operation: str, *, auth: bool = True, first_use: bool = False,
                    json: Any = None) -> Any:
        if auth and self._token is None:
            await self.authenticate()
        try:
            return await self._once(method, operation, auth=auth, first_use=first_use, json=json)
        except CMLAuthenticationException as error:
            if not auth or error.code != "HTTP401":
                raise
        self._token = None  # expired or revoked: one fresh token, then give up
        await self.authenticate()
        return await self._once(method, operation, auth=True, first_use=False, json=json)

    async def _once(self, method: str, operation: str, *, auth: bool, first_use: bool, json: Any) -> Any:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        if first_use and self._ca_context is None and not self.pin:
            await self._pin_on_first_use(operation)
        tls = self._tls(first_use, operation)
        try:
            async with self._session.request(method, self._base + operation, json=json, headers=headers,
                                             ssl=tls, timeout=self._timeout) as response:
                if response.status >= 400:
                    detail = (await response.text())[:200] if operation != "authenticate" else ""
                    raise cml_http_error(response.status, operation, detail)
                body = await response.read()
        except CMLException as error:
            self._on_call(operation, error.code or type(error).__name__)
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            translated = cml_transport_error(error, operation)
            self._on_call(operation, translated.code or type(error).__name__)
            raise translated from error
        self._on_call(operation, "ok")
        if not body:
            return None
        try:
            return json_module.loads(body)
        except ValueError as error:
            raise cml_transport_error(error, operation) from error

    def _tls(self, first_use: bool, operation: str) -> ssl.SSLContext | aiohttp.Fingerprint:
        if self._ca_context is not None:
            return self._ca_context
        if self.pin:
            # One object per pin: aiohttp pools connections by their ssl argument, compared by
            # identity for a Fingerprint, so a new one per request would open a new connection each time.
            if self._fingerprint is None or self._fingerprint.fingerprint != bytes.fromhex(self.pin):
                self._fingerprint = aiohttp.Fingerprint(bytes.fromhex(self.pin))
            return self._fingerprint
        raise CMLCertificateException(f"CML {operation}: no certificate pinned yet", code="NotPinned",
                                      operation=operation)

    async def _pin_on_first_use(self, operation: str) -> None:
        """A bare TLS handshake (no HTTP, no credentials) reads the certificate to pin."""
        url = URL(self._base)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # nothing is trusted yet: this is what gets pinned
        try:
            async with asyncio.timeout(self._timeout.total):
                _, writer = await asyncio.open_connection(url.host, url.port or 443, ssl=context)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            translated = cml_transport_error(error, operation)
            self._on_call("tls", translated.code or "error")
            raise translated from error
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        finally:
            writer.close()
        if not der:
            raise CMLCertificateException(f"CML {operation}: the controller presented no certificate",
                                          code="NoCertificate", operation=operation)
        self.pin = certificate_sha256(der)


def _ca_context(ca_pem: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as error:
        raise CMLCertificateException(f"the CA in spec.cml.tls.caSecretRef is not a PEM certificate: {error}",
                                      code="BadCA", operation="tls") from error
