"""``KubeApi``: the few Kubernetes calls the operator makes itself (Kopf makes the rest).

Pools create, list, patch and delete their CMLWorkers; discovery creates them.
Kopf has no public client for that, and the ``kubernetes`` package is a test
dependency only, so this is a small typed layer over aiohttp with Kopf's own
login (ServiceAccount token in a pod, else the kubeconfig). On 401 it logs in
again once (projected ServiceAccount tokens rotate) and repeats the request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from .kube import session_for

MERGE_PATCH = "application/merge-patch+json"
#: Items per LIST page; pools hold at most 500 children.
PAGE_SIZE = 500


@dataclass(frozen=True)
class Kind:
    """A namespaced custom resource's API coordinates."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        parts = [f"/apis/{self.group}/{self.version}"]
        if namespace:
            parts.append(f"namespaces/{quote(namespace)}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


CMLWORKERS = Kind("cml.dev", "v1alpha1", "cmlworkers")
CMLACCOUNTS = Kind("cml.dev", "v1alpha1", "cmlaccounts")  # cluster-scoped: list with namespace None


class KubeApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP code, ``reason`` Kubernetes' word for it."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def permanent(self) -> bool:
        """Retrying the same request cannot help (invalid object, forbidden, and the like)."""
        return self.status in (400, 403, 422)


class KubeApi:
    def __init__(self, login: Callable[[], kopf.ConnectionInfo | None], *, connections: int = 4) -> None:
        self._login = login
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._server = ""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def list(self, kind: Kind, namespace: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Every object (all pages), read from the API server, not a cache."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": str(PAGE_SIZE)}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self._request("GET", kind.path(namespace), params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        """One Secret by name (the ones spec.cml names): GET only, never list or watch."""
        return await self._request("GET", f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}")

    async def get_namespace(self, name: str) -> dict[str, Any]:
        """One Namespace by name (its labels decide which CMLAccounts it may use)."""
        return await self._request("GET", f"/api/v1/namespaces/{quote(name)}")

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        """One ConfigMap by name (the --price-table): GET only."""
        return await self._request("GET", f"/api/v1/namespaces/{quote(namespace)}/configmaps/{quote(name)}")

    async def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", kind.path(namespace), body=body)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        """A JSON merge patch."""
        return await self._request("PATCH", kind.path(namespace, name, subresource), body=patch,
                                   content_type=MERGE_PATCH)

    async def secret_value(self, namespace: str, name: str, key: str) -> bytes | None:
        """One key of a Secret, decoded; None when the Secret or the key does not exist.

        The value is returned to the caller only: it is never logged, and errors name the
        Secret and key, never the content.
        """
        try:
            secret = await self._request("GET", f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}")
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise
        encoded = (secret.get("data") or {}).get(key)
        return None if encoded is None else base64.b64decode(encoded)

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete (in the background); False when it was already gone. ``uid`` guards against a namesake."""
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self._request("DELETE", kind.path(namespace, name), body=options)
        except KubeApiError as error:
            if error.status == 404 or (error.status == 409 and uid):  # gone, or a namesake: not ours
                return False
            raise
        return True

    async def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                       body: Mapping[str, Any] | None = None, content_type: str = "application/json") -> Any:
        for attempt in (1, 2):
            session = await self._connect(fresh=attempt == 2)
            data = json.dumps(body) if body is not None else None
            try:
                async with session.request(method, self._server + path, params=params, data=data,
                                           headers={"Content-Type": content_type}) as response:
                    text = await response.text()
                    if response.status == 401 and attempt == 1:
                        continue  # the token may have rotated: log in again once
                    if response.status >= 400:
                        raise _error(response.status, text)
                    return json.loads(text) if text else {}
            except aiohttp.ClientError as error:
                raise KubeApiError(0, "ConnectionError", str(error) or type(error).__name__) from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self, fresh: bool) -> aiohttp.ClientSession:
        if self._session is not None and not fresh:
            return self._session
        await self.close()
        info = self._login()
        if info is None:
            raise KubeApiError(0, "NoCredentials", "no ServiceAccount token and no kubeconfig found")
        self._server = info.server.rstrip("/")
        self._session = session_for(info, self._connections)
        return self._session


def _error(status: int, text: str) -> KubeApiError:
    try:
        payload = json.loads(text)
    except ValueError:
        payload = {}
    reason = payload.get("reason") if isinstance(payload, dict) else None
    message = payload.get("message") if isinstance(payload, dict) else None
    return KubeApiError(status, str(reason or "Error"), str(message or text[:500]))
