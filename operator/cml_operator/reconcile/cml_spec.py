"""``CMLWorker.spec.cml`` as a typed value (optional; without it a worker is a plain EC2 worker).

Checked again here for the same reason as ``spec.py``: an object that slipped past
the CRD's schema becomes ``Stalled/InvalidParameter`` naming the field, never a crash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ADDRESS_TYPES = ("Public", "Private")
IDLE_MINUTES = (1, 10080)
DEFAULT_CA_KEY = "ca.crt"
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class CMLSpecError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class LicenseSpec:
    token: SecretKeyRef
    deregister_on_stop: bool = True


@dataclass(frozen=True)
class CMLSpec:
    credentials_secret: str
    endpoint: str | None = None  # None: https://<public or private IP>/
    address_type: str = "Public"
    ca: SecretKeyRef | None = None  # None: trust on first use
    idle_after_minutes: int | None = None
    license: LicenseSpec | None = None


def parse_cml_spec(raw: Any) -> CMLSpec | None:
    """``spec.cml`` -> ``CMLSpec`` (None when absent); raises ``CMLSpecError`` naming the field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise CMLSpecError("spec.cml", "must be an object")
    endpoint = raw.get("endpoint") or None
    if endpoint is not None:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise CMLSpecError("spec.cml.endpoint", "must be an https:// URL (a path prefix is allowed)")
    address_type = raw.get("addressType") or "Public"
    if address_type not in ADDRESS_TYPES:
        raise CMLSpecError("spec.cml.addressType", f"must be one of {', '.join(ADDRESS_TYPES)}")
    credentials = raw.get("credentialsSecretRef")
    if not isinstance(credentials, Mapping):
        raise CMLSpecError("spec.cml.credentialsSecretRef", "is required (a Secret with username and password)")
    tls = raw.get("tls") or {}
    if not isinstance(tls, Mapping):
        raise CMLSpecError("spec.cml.tls", "must be an object")
    ca = _key_ref(tls.get("caSecretRef"), "spec.cml.tls.caSecretRef", DEFAULT_CA_KEY) if tls.get("caSecretRef") else None
    return CMLSpec(
        credentials_secret=_name(credentials.get("name"), "spec.cml.credentialsSecretRef.name"),
        endpoint=endpoint,
        address_type=address_type,
        ca=ca,
        idle_after_minutes=_idle(raw.get("idleStop")),
        license=_license(raw.get("license")),
    )


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _SECRET_NAME.match(value) or len(value) > 253:
        raise CMLSpecError(field, "must be the name of a Secret in the worker's namespace")
    return value


def _key_ref(raw: Any, field: str, default_key: str | None) -> SecretKeyRef:
    if not isinstance(raw, Mapping):
        raise CMLSpecError(field, "must be an object with name and key")
    key = raw.get("key") or default_key
    if not isinstance(key, str) or not _SECRET_KEY.match(key):
        raise CMLSpecError(f"{field}.key", "must be a Secret key")
    return SecretKeyRef(_name(raw.get("name"), f"{field}.name"), key)


def _idle(raw: Any) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise CMLSpecError("spec.cml.idleStop", "must be an object")
    minutes = raw.get("afterMinutes")
    low, high = IDLE_MINUTES
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not low <= minutes <= high:
        raise CMLSpecError("spec.cml.idleStop.afterMinutes", f"must be an integer from {low} to {high}")
    return minutes


def _license(raw: Any) -> LicenseSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise CMLSpecError("spec.cml.license", "must be an object")
    deregister = raw.get("deregisterOnStop", True)
    if not isinstance(deregister, bool):
        raise CMLSpecError("spec.cml.license.deregisterOnStop", "must be true or false")
    return LicenseSpec(_key_ref(raw.get("tokenSecretRef"), "spec.cml.license.tokenSecretRef", None), deregister)
