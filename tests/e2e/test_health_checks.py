"""Health as GitOps tools judge it, on workers the operator really wrote.

Three workers: one Ready, one retrying a temporary error (InsufficientInstanceCapacity
from the fault proxy), one stalled on a permanent one (an AMI that does not exist).
The kstatus library itself (sigs.k8s.io/cli-utils/pkg/kstatus/status, built by
tests/tools/build.sh) must say Current, InProgress and Failed, exactly as
docs/conditions.md says; the Argo CD check (deploy/argocd/health.lua) must say Healthy,
Progressing and Degraded for the same objects.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultRule
from tests.unit.test_argocd_health import argocd_health

from .conftest import worker_manifest

pytestmark = pytest.mark.e2e


def kstatus(tools_bin_dir: Path, objects: list[dict[str, Any]]) -> dict[str, str]:
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    proc = subprocess.run([str(tools_bin_dir / "kstatus")], input=listing, capture_output=True, text=True,
                          timeout=30, check=True)
    return {item["name"]: item["status"] for item in json.loads(proc.stdout)}


def test_kstatus_and_the_argocd_check_agree_with_the_docs_on_ready_in_progress_and_stalled_workers(
        kube, network, proxy, operator, tools_bin_dir):
    kube.apply(worker_manifest("ks-ready", network))
    kube.wait_condition("ks-ready", "Ready")
    kube.apply(worker_manifest("ks-stalled", network, amiId="ami-0123456789abcdef0"))
    kube.wait_condition("ks-stalled", "Stalled")
    proxy.set_faults(FaultRule(code="InsufficientInstanceCapacity", action="RunInstances"))
    kube.apply(worker_manifest("ks-progress", network))
    kube.wait_condition("ks-progress", "Reconciling", reason="InsufficientCapacity")

    names = ["ks-ready", "ks-progress", "ks-stalled"]
    objects = [kube.get(name) for name in names]
    assert kstatus(tools_bin_dir, objects) == {"ks-ready": "Current", "ks-progress": "InProgress",
                                               "ks-stalled": "Failed"}
    assert {obj["metadata"]["name"]: argocd_health(obj)["status"] for obj in objects} == {
        "ks-ready": "Healthy", "ks-progress": "Progressing", "ks-stalled": "Degraded"}

    # A spec change the operator has not acted on yet is InProgress whatever the conditions say.
    stale = dict(objects[0], metadata={**objects[0]["metadata"], "generation": objects[0]["metadata"]["generation"] + 1})
    assert kstatus(tools_bin_dir, [stale]) == {"ks-ready": "InProgress"}
    assert argocd_health(stale)["status"] == "Progressing"

    proxy.clear_faults()
    kube.wait_condition("ks-progress", "Ready", timeout=60)
    assert kstatus(tools_bin_dir, [kube.get("ks-progress")]) == {"ks-progress": "Current"}
