"""Two operators on one peering object: the higher --priority works, the lower pauses, and takes
over once the higher one is gone (docs/settings.md, `--peering` / `--priority`).

The e2e operators watch one namespace, so Kopf uses the namespaced KopfPeering
(kopfpeerings.kopf.dev) there; deploy/peering/ ships only the cluster-wide kind for the
Deployment, so this test installs the namespaced twin of that CRD itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tests.support.processes import wait_for

from .conftest import worker_manifest

pytestmark = pytest.mark.e2e

PEERING_CRDS = Path(__file__).resolve().parents[2] / "deploy" / "peering" / "crds.yaml"
NAME = "cml-e2e"


@pytest.fixture
def namespaced_peering(control_plane, kube) -> str:
    [cluster_crd] = [d for d in yaml.safe_load_all(PEERING_CRDS.read_text()) if d]
    crd = copy.deepcopy(cluster_crd)
    crd["metadata"]["name"] = "kopfpeerings.kopf.dev"
    crd["spec"]["scope"] = "Namespaced"
    crd["spec"]["names"] = {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"}
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd))
    control_plane.wait_established(["customresourcedefinition.apiextensions.k8s.io/kopfpeerings.kopf.dev"])
    kube.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": NAME}})
    return NAME


def priorities(kube, name: str) -> set[int]:
    peering = json.loads(kube.run("get", "kopfpeering", name, "-o", "json").stdout)
    return {peer["priority"] for peer in (peering.get("status") or {}).values()}


def handled(operator, name: str) -> bool:
    return f"/{name}] Creation is processed" in operator.logs()


def test_the_higher_priority_works_the_lower_pauses_and_takes_over_when_it_leaves(
        kube, network, namespaced_peering, operator_factory):
    high = operator_factory("--peering", namespaced_peering, "--priority", "100")
    low = operator_factory("--peering", namespaced_peering, "--priority", "50")
    # Both keep-alives are in the peering object (Kopf starts a peered operator paused; the lower one
    # stays paused without a word, the higher one resumes at once).
    wait_for(lambda: {50, 100} <= priorities(kube, namespaced_peering), 30, what="both keep-alives")

    kube.apply(worker_manifest("first", network))
    kube.wait_condition("first", "Ready")
    assert handled(high, "first") and not handled(low, "first")
    assert "Resuming operations after the pause" not in low.logs()

    high.stop()  # a clean exit removes its keep-alive from the peering object
    wait_for(lambda: "Resuming operations after the pause" in low.logs(), 30, what="the lower priority to resume")
    kube.apply(worker_manifest("second", network))
    kube.wait_condition("second", "Ready")
    assert handled(low, "second")
