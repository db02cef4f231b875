"""Reading one Secret by name for spec.cml: CML credentials, CA and licence token.

Through the operator's own ``KubeApi`` (Kopf's login; a 401 logs in again once).
Secret values never leave this module except to the CML client: never in status,
events, logs or metrics (errors name the Secret, never a value).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from .ec2.exceptions import IntegrationException
from .kubeapi import KubeApi, KubeApiError


class SecretNotFound(LookupError):
    """The Secret does not exist (or the operator may not read it)."""


@dataclass(frozen=True)
class Secret:
    name: str
    resource_version: str
    data: dict[str, str] = field(repr=False)


class SecretReader:
    def __init__(self) -> None:
        self._api: KubeApi | None = None

    def attach(self, api: KubeApi) -> None:
        """Set at start-up, once the operator's Kubernetes access exists."""
        self._api = api

    async def read(self, namespace: str, name: str) -> Secret:
        if self._api is None:
            raise IntegrationException("no Kubernetes API access yet", code="NotLoggedIn", operation="GetSecret")
        try:
            body = await self._api.get_secret(namespace, name)
        except KubeApiError as error:
            if error.status == 404:
                raise SecretNotFound(f"Secret {namespace}/{name} not found") from None
            if error.status == 403:
                raise SecretNotFound(f"the operator may not read Secret {namespace}/{name} (RBAC: get secrets)"
                                     ) from None
            raise IntegrationException(f"reading Secret {namespace}/{name}: HTTP {error.status} {error.reason}",
                                       code=f"HTTP{error.status}", operation="GetSecret") from None
        raw = body.get("data") or {}
        data = {key: base64.b64decode(value).decode("utf-8", "replace") for key, value in raw.items()}
        return Secret(name, str((body.get("metadata") or {}).get("resourceVersion") or ""), data)

    async def close(self) -> None:
        return None  # the KubeApi is closed by the runtime
