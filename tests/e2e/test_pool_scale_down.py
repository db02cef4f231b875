"""Which workers a shrinking pool deletes (issue 19 point 8): never one marked cml.dev/do-not-disrupt,
and those with running labs last, whatever spec.scaleDown.order says.

All children share the template's CML endpoint (one simulated controller, up while any
child's instance runs: ``worker="spare-*"``); one child's
spec.cml.endpoint is edited to a controller with a running lab (the pool rolls only
cml.idleStop, so the edit stays), which gives the pool one busy child.
"""

from __future__ import annotations

import json

import pytest

from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME
from tests.support.processes import wait_for

from .test_cml import CML_ARGS, secret, sim, unique  # noqa: F401  (sim: the module's simulator fixture)
from .test_pools import children, pool, pool_manifest, wait_pool_ready

pytestmark = pytest.mark.e2e


def _first_by_newest(bodies: list[dict]) -> dict:
    """The child ``scaleDown.order: [Newest]`` alone picks first: the newest, ties by name."""
    ranked = sorted(bodies, key=lambda body: body["metadata"]["name"])
    ranked.sort(key=lambda body: body["metadata"]["creationTimestamp"], reverse=True)
    return ranked[0]


def _conditions(body: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}


def test_scale_down_spares_busy_and_do_not_disrupt_workers(kube, network, sim, operator_factory):  # noqa: F811
    quiet, busy = unique("pq", kube), unique("pb", kube)
    sim.set_lab(busy, "lab-1", "STARTED")
    secret(kube, "pool-login", username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    operator_factory(*CML_ARGS)
    manifest = pool_manifest("spare", network, 3,
                             cml={"endpoint": sim.endpoint(quiet, worker="spare-*"),
                                  "credentialsSecretRef": {"name": "pool-login"}})
    manifest["spec"]["scaleDown"] = {"order": ["Newest"]}
    kube.apply(manifest)
    wait_pool_ready(kube, "spare", 3)

    bodies = children(kube, "spare")
    target = _first_by_newest(bodies)["metadata"]["name"]  # what the order alone would delete first
    kube.run("patch", "cmlworker", target, "--type=merge", "-p",
             json.dumps({"spec": {"cml": {"endpoint": sim.endpoint(busy, worker=target)}}}))
    wait_for(lambda: ((kube.get(target)["status"].get("cml") or {}).get("labs") or {}).get("running") == 1, 60,
             what=f"{target} to report its running lab")
    protected = sorted(b["metadata"]["name"] for b in bodies if b["metadata"]["name"] != target)[0]
    kube.run("annotate", "cmlworker", protected, "cml.dev/do-not-disrupt=true")

    kube.run("scale", "cmlworkerpool", "spare", "--replicas=2")
    wait_for(lambda: len(children(kube, "spare")) == 2, 60, what="the pool to delete one worker")
    left = {c["metadata"]["name"] for c in children(kube, "spare")}
    assert target in left, f"the pool deleted {target}, the worker with a running lab"
    assert protected in left

    kube.run("scale", "cmlworkerpool", "spare", "--replicas=0")
    wait_for(lambda: [c["metadata"]["name"] for c in children(kube, "spare")] == [protected], 60,
             what="every worker but the protected one to go")
    reconciling = wait_for(lambda: (c := _conditions(pool(kube, "spare")).get("Reconciling"))
                           and c["reason"] == "ScaleDownBlocked" and c, 30, what="the pool to say it waits")
    assert protected in reconciling["message"] and "cml.dev/do-not-disrupt" in reconciling["message"]

    kube.run("annotate", "cmlworker", protected, "cml.dev/do-not-disrupt-")
    wait_for(lambda: not children(kube, "spare"), 60, what="the last worker to go once the annotation is gone")
