"""HTTP status or transport error -> CML exception: one table, one function per kind of failure.

``cml_http_error`` is the only place that knows what a CML status code means;
``cml_transport_error`` the only place that knows aiohttp's and asyncio's
exceptions. Licensing calls get their own family (a 4xx there means the
controller refused the token: permanent; anything else is temporary).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from .exceptions import (
    CMLAuthenticationException,
    CMLCertificateException,
    CMLException,
    CMLLicensingException,
    CMLUnavailableException,
)


@dataclass(frozen=True)
class StatusRule:
    exception: type[CMLException]
    retryable: bool
    meaning: str


#: Status -> meaning, for every call but licensing. First match wins: an exact status, then its class (4xx/5xx).
STATUS_TABLE: dict[int | str, StatusRule] = {
    401: StatusRule(CMLAuthenticationException, False, "token or credentials refused"),
    403: StatusRule(CMLAuthenticationException, False, "credentials refused"),
    408: StatusRule(CMLUnavailableException, True, "request timed out"),
    429: StatusRule(CMLUnavailableException, True, "too many requests"),
    "5xx": StatusRule(CMLUnavailableException, True, "controller error"),
    "4xx": StatusRule(CMLException, True, "request refused"),
}

#: Licensing calls: a refused registration is permanent until the token changes.
LICENSING_TABLE: dict[int | str, StatusRule] = {
    401: StatusRule(CMLAuthenticationException, False, "token or credentials refused"),
    403: StatusRule(CMLAuthenticationException, False, "credentials refused"),
    "5xx": StatusRule(CMLLicensingException, True, "licensing service error"),
    "4xx": StatusRule(CMLLicensingException, False, "licence token refused"),
}


def _rule(table: dict[int | str, StatusRule], status: int) -> StatusRule:
    return table.get(status) or table.get(f"{status // 100}xx") or StatusRule(CMLException, True, "unexpected status")


def cml_http_error(status: int, operation: str, detail: str = "") -> CMLException:
    """The exception for an HTTP error ``status`` answered to ``operation`` (an API path)."""
    table = LICENSING_TABLE if operation.startswith("licensing") else STATUS_TABLE
    rule = _rule(table, status)
    text = f"CML {operation}: HTTP {status} ({rule.meaning})"
    if detail:
        text += f": {detail[:200]}"
    return rule.exception(text, code=f"HTTP{status}", operation=operation, retryable=rule.retryable)


def cml_transport_error(error: BaseException, operation: str) -> CMLException:
    """The exception for a failure below HTTP: TLS, connection, timeout, a body that is not JSON."""
    if isinstance(error, aiohttp.ServerFingerprintMismatch):
        return CMLCertificateException(
            f"CML {operation}: the controller's certificate (SHA-256 {error.got.hex()}) differs from the pinned "
            f"one ({error.expected.hex()}); if the change is expected, set the annotation "
            "cml.dev/reset-certificate-pin to a new value",
            code="CertificateChanged", operation=operation)
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return CMLCertificateException(f"CML {operation}: certificate not trusted: {error}",
                                       code="CertificateUntrusted", operation=operation)
    if isinstance(error, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return CMLUnavailableException(f"CML {operation}: timed out", code="Timeout", operation=operation)
    if isinstance(error, aiohttp.ClientConnectionError | OSError):
        return CMLUnavailableException(f"CML {operation}: cannot connect: {error}", code="ConnectionError",
                                       operation=operation)
    if isinstance(error, aiohttp.ContentTypeError | ValueError):
        return CMLUnavailableException(f"CML {operation}: the answer is not the expected JSON",
                                       code="BadResponse", operation=operation)
    return CMLException(f"CML {operation}: {type(error).__name__}: {error}", code=type(error).__name__,
                        operation=operation)
