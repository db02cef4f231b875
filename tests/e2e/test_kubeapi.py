"""KubeApi (the operator's own reads and deletes) against the real API server: pages and the uid precondition.

A pool lists its children with ``KubeApi.list`` and deletes them with a uid
precondition; both promises are the API server's to keep, so they are checked
against kube-apiserver itself rather than a fake.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from cml_operator import kubeapi
from cml_operator.kubeapi import CMLWORKERS, KubeApi

from .conftest import worker_manifest

pytestmark = pytest.mark.e2e

FAKE_NETWORK = {"subnet": "subnet-0123456789abcdef0", "sg": "sg-0123456789abcdef0", "ami": "ami-0123456789abcdef0"}


def _api(control_plane) -> KubeApi:
    creds = control_plane.credentials
    info = kopf.ConnectionInfo(server=control_plane.server_url, ca_path=str(creds.ca_cert),
                               certificate_path=str(creds.admin_cert), private_key_path=str(creds.admin_key))
    return KubeApi(lambda: info)


def _counting(api: KubeApi) -> list[tuple[str, dict[str, str]]]:
    """Record every request's method and query parameters."""
    seen: list[tuple[str, dict[str, str]]] = []
    request = api._request

    async def recorded(method: str, path: str, **kwargs: Any) -> Any:
        seen.append((method, dict(kwargs.get("params") or {})))
        return await request(method, path, **kwargs)

    api._request = recorded  # type: ignore[method-assign]
    return seen


def test_list_reads_every_page(kube, control_plane, monkeypatch):
    for index in range(7):
        manifest = worker_manifest(f"paged-{index}", FAKE_NETWORK, desiredState="Stopped")
        manifest["metadata"]["labels"] = {"batch": "paged"}
        kube.apply(manifest)
    monkeypatch.setattr(kubeapi, "PAGE_SIZE", 3)

    async def listed() -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
        api = _api(control_plane)
        seen = _counting(api)
        try:
            items = await api.list(CMLWORKERS, kube.namespace, label_selector="batch=paged")
        finally:
            await api.close()
        return sorted(i["metadata"]["name"] for i in items), seen

    names, seen = asyncio.run(listed())
    assert names == [f"paged-{i}" for i in range(7)]
    assert [params.get("limit") for _, params in seen] == ["3", "3", "3"]  # 3 + 3 + 1: every page, no more
    assert ["continue" in params for _, params in seen] == [False, True, True]


def test_delete_with_a_uid_spares_a_namesake(kube, control_plane):
    kube.apply(worker_manifest("twin", FAKE_NETWORK, desiredState="Stopped"))
    old_uid = kube.get("twin")["metadata"]["uid"]
    kube.delete("twin")  # no operator runs here: no finalizer holds it
    kube.apply(worker_manifest("twin", FAKE_NETWORK, desiredState="Stopped"))
    new_uid = kube.get("twin")["metadata"]["uid"]
    assert new_uid != old_uid

    async def deletes() -> tuple[bool, bool, bool]:
        api = _api(control_plane)
        try:
            spared = await api.delete(CMLWORKERS, kube.namespace, "twin", uid=old_uid)
            still_there = kube.exists("twin")
            deleted = await api.delete(CMLWORKERS, kube.namespace, "twin", uid=new_uid)
        finally:
            await api.close()
        return spared, still_there, deleted

    spared, still_there, deleted = asyncio.run(deletes())
    assert (spared, still_there, deleted) == (False, True, True)
    assert not kube.exists("twin")
