"""Keep charts/cml-operator in step with crds/ and deploy/rbac.yaml: `make crds` runs this.

The chart cannot read files outside its folder, so it carries copies: crds/*.yaml in its
crds/, and the ClusterRole's rules from deploy/rbac.yaml in files/clusterrole-rules.yaml
(its templates/rbac.yaml includes them). tests/unit/test_chart_crds.py fails when a copy
is stale; tests/e2e/test_helm.py compares the rendered chart with the kustomize base.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cml-operator"
RULES_FILE = CHART / "files" / "clusterrole-rules.yaml"
HEADER = "# GENERATED from deploy/rbac.yaml's ClusterRole by `make crds` (tests/support/chartgen.py): edit that file.\n"


def _only_crds(path: Path) -> bool:
    return all(doc.get("kind") == "CustomResourceDefinition" for doc in yaml.safe_load_all(path.read_text()) if doc)


def expected_crds() -> dict[str, bytes]:
    """crds/ files holding only CRDs: the chart's crds/ (Helm installs those first, never templated)."""
    return {path.name: path.read_bytes() for path in sorted((REPO / "crds").glob("*.yaml")) if _only_crds(path)}


def expected_policies() -> dict[str, bytes]:
    """The other crds/ files (admission policies): the chart renders them from files/crds/."""
    return {path.name: path.read_bytes() for path in sorted((REPO / "crds").glob("*.yaml")) if not _only_crds(path)}


def expected_rules() -> str:
    docs = [doc for doc in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()) if doc]
    [role] = [doc for doc in docs if doc["kind"] == "ClusterRole"]
    return HEADER + yaml.safe_dump(role["rules"], sort_keys=False, default_flow_style=None)


def main() -> None:
    crds_dir = CHART / "crds"
    crds_dir.mkdir(parents=True, exist_ok=True)
    for stale in crds_dir.glob("*.yaml"):
        stale.unlink()
    for name, data in expected_crds().items():
        (crds_dir / name).write_bytes(data)
    RULES_FILE.parent.mkdir(exist_ok=True)
    RULES_FILE.write_text(expected_rules())
    policies = CHART / "files" / "crds"
    policies.mkdir(exist_ok=True)
    for stale in policies.glob("*.yaml"):
        stale.unlink()
    for name, data in expected_policies().items():
        (policies / name).write_bytes(data)


if __name__ == "__main__":
    main()
