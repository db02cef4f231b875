"""Keep charts/cml-operator in step with crds/, deploy/rbac.yaml and deploy/monitoring/: `make crds` runs this.

The chart cannot read files outside its folder, so it carries copies: crds/*.yaml's CRDs in its
files/crds/ (templates/crds.yaml renders them, so `helm upgrade` upgrades them), the admission
policies in files/policies/, the ClusterRole's rules from deploy/rbac.yaml in
files/clusterrole-rules.yaml (its templates/rbac.yaml includes them), and deploy/monitoring's
PrometheusRule and dashboard in files/monitoring/. tests/unit/test_chart_crds.py fails when a copy
is stale; tests/e2e/test_helm.py compares the rendered chart with the kustomize base.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cml-operator"
RULES_FILE = CHART / "files" / "clusterrole-rules.yaml"
#: The namespace-scoped install (watchNamespaces): the overlay's cluster-wide rules (but the namespaces
#: rule, whose names the chart fills in) and the Role every watched namespace gets.
NAMESPACED = REPO / "deploy" / "overlays" / "namespaced"
NAMESPACED_CLUSTER_RULES_FILE = CHART / "files" / "namespaced-clusterrole-rules.yaml"
NAMESPACED_ROLE_RULES_FILE = CHART / "files" / "namespaced-role-rules.yaml"
HEADER = "# GENERATED from deploy/rbac.yaml's ClusterRole by `make crds` (tests/support/chartgen.py): edit that file.\n"


def _only_crds(path: Path) -> bool:
    return all(doc.get("kind") == "CustomResourceDefinition" for doc in yaml.safe_load_all(path.read_text()) if doc)


MONITORING_FILES = ("prometheusrule.yaml", "dashboard.json")


def expected_crds() -> dict[str, bytes]:
    """crds/ files holding only CRDs: the chart's files/crds/ (templates/crds.yaml renders them)."""
    return {path.name: path.read_bytes() for path in sorted((REPO / "crds").glob("*.yaml")) if _only_crds(path)}


def expected_policies() -> dict[str, bytes]:
    """The other crds/ files (admission policies): the chart renders them from files/policies/."""
    return {path.name: path.read_bytes() for path in sorted((REPO / "crds").glob("*.yaml")) if not _only_crds(path)}


def expected_rules() -> str:
    docs = [doc for doc in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()) if doc]
    [role] = [doc for doc in docs if doc["kind"] == "ClusterRole"]
    return HEADER + yaml.safe_dump(role["rules"], sort_keys=False, default_flow_style=None)


def expected_monitoring() -> dict[str, bytes]:
    return {name: (REPO / "deploy" / "monitoring" / name).read_bytes() for name in MONITORING_FILES}


def expected_namespaced_rules() -> dict:
    """{file: text} for the namespace-scoped install, from deploy/overlays/namespaced/."""
    [cluster] = [doc for doc in yaml.safe_load_all((NAMESPACED / "clusterrole.yaml").read_text()) if doc]
    [role] = [doc for doc in yaml.safe_load_all((NAMESPACED / "role.yaml").read_text())
              if doc and doc["kind"] == "Role"]
    header = HEADER.replace("deploy/rbac.yaml's ClusterRole", "deploy/overlays/namespaced/")
    cluster_rules = [rule for rule in cluster["rules"] if rule.get("resources") != ["namespaces"]]
    return {
        NAMESPACED_CLUSTER_RULES_FILE: header + yaml.safe_dump(cluster_rules, sort_keys=False, default_flow_style=None),
        NAMESPACED_ROLE_RULES_FILE: header + yaml.safe_dump(role["rules"], sort_keys=False, default_flow_style=None),
    }


def _replace_folder(folder: Path, files: dict[str, bytes], pattern: str = "*.yaml") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(pattern):
        stale.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)


def main() -> None:
    _replace_folder(CHART / "files" / "crds", expected_crds())
    RULES_FILE.parent.mkdir(exist_ok=True)
    RULES_FILE.write_text(expected_rules())
    for path, text in expected_namespaced_rules().items():
        path.write_text(text)
    _replace_folder(CHART / "files" / "policies", expected_policies())
    _replace_folder(CHART / "files" / "monitoring", expected_monitoring(), "*")


if __name__ == "__main__":
    main()
