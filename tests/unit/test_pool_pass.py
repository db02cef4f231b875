"""One pool pass against a fake KubeApi: what it asks the API server, and how refusals end up in the status."""

from __future__ import annotations

from typing import Any

from cml_operator.kubeapi import KubeApiError
from cml_operator.passes.pool import delete_children, pool_pass
from cml_operator.reconcile import reasons

from .asyncrun import async_test

SPEC = {"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678", "instanceType": "m5.large"}
POOL = {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerPool",
        "metadata": {"name": "lab", "namespace": "ns", "uid": "pool-uid", "generation": 3},
        "spec": {"replicas": 2, "template": {"spec": SPEC}}}


def worker(name: str, owner: str = "pool-uid", ready: bool = True, **meta: Any) -> dict:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": {"cml.dev/pool": "lab"},
                         "creationTimestamp": "2026-11-25T10:00:00Z",
                         "ownerReferences": [{"uid": owner, "controller": True}], **meta},
            "spec": dict(SPEC),
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class FakeKube:
    def __init__(self, items: list[dict], fail: dict[str, KubeApiError] | None = None) -> None:
        self.items = items
        self.fail = fail or {}
        self.calls: list[tuple[str, ...]] = []

    async def list(self, kind, namespace, label_selector=None):
        self.calls.append(("list", namespace, label_selector))
        if "list" in self.fail:
            raise self.fail["list"]
        return self.items

    async def create(self, kind, namespace, body):
        self.calls.append(("create", namespace, body["metadata"]["generateName"]))
        if "create" in self.fail:
            raise self.fail["create"]
        return {"metadata": {"name": f"lab-{len(self.calls):05d}"}}

    async def patch(self, kind, namespace, name, patch, subresource=None):
        self.calls.append(("patch", name))
        return {}

    async def delete(self, kind, namespace, name, uid=None):
        self.calls.append(("delete", name, uid))
        return True


@async_test
async def test_a_pass_creates_the_missing_children_and_ignores_what_it_does_not_own():
    kube = FakeKube([worker("lab-aaaaa"), worker("lab-zzzzz", owner="someone-else")])
    result = await pool_pass(kube, POOL)
    assert kube.calls == [("list", "ns", "cml.dev/pool=lab"), ("create", "ns", "lab-")]
    assert result.status["replicas"] == 2 and result.status["observedGeneration"] == 3
    assert [n.reason for n in result.notes] == [reasons.EVENT_POOL_SCALED_UP]


@async_test
async def test_a_pass_deletes_the_excess_with_a_uid_precondition():
    kube = FakeKube([worker("lab-aaaaa"), worker("lab-bbbbb"), worker("lab-ccccc", ready=False)])
    await pool_pass(kube, POOL)
    assert ("delete", "lab-ccccc", "uid-lab-ccccc") in kube.calls and len(kube.calls) == 2


@async_test
async def test_a_refused_create_is_stalled_when_retrying_cannot_help():
    kube = FakeKube([], fail={"create": KubeApiError(422, "Invalid", "spec.amiId: bad")})
    result = await pool_pass(kube, POOL)
    assert result.error is not None and result.health.reason == reasons.POOL_CREATE_FAILED
    stalled = {c["type"]: c for c in result.status["conditions"]}["Stalled"]
    assert stalled["status"] == "True" and "spec.amiId: bad" in stalled["message"]


@async_test
async def test_an_unreachable_api_server_changes_only_the_conditions():
    kube = FakeKube([], fail={"list": KubeApiError(0, "ConnectionError", "refused")})
    result = await pool_pass(kube, POOL)
    assert set(result.status) == {"conditions"}
    assert {c["type"]: c["status"] for c in result.status["conditions"]}["Reconciling"] == "True"


@async_test
async def test_deleting_a_pool_deletes_its_children_unless_orphaned():
    kube = FakeKube([worker("lab-aaaaa"), worker("lab-bbbbb", deletionTimestamp="x"), worker("x", owner="other")])
    assert await delete_children(kube, POOL) == ["lab-aaaaa"]
    orphaning = {**POOL, "metadata": {**POOL["metadata"], "finalizers": ["orphan"]}}
    kube.calls.clear()
    assert await delete_children(kube, orphaning) == [] and kube.calls == []
