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


def expected_crds() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((REPO / "crds").glob("*.yaml"))}


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


if __name__ == "__main__":
    main()
