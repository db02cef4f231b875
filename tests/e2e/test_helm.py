"""charts/cml-operator: lint, render, agree with deploy/ (kustomize), and install / upgrade / uninstall for real.

helm is built from its Go module by tests/tools/build.sh. The chart and deploy/ are two ways to
install the same thing, so the rendered chart (default values) is checked against the kustomize
base field by field: RBAC rules, pod and container security, probes, ports, resources, volumes,
the budget, and the operator settings its arguments and environment produce. A change to one
that is not made to the other fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cml_operator.cli import build_parser, settings_from_args
from tests.cluster.controlplane import ControlPlane
from tests.support.processes import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cml-operator"
DEPLOY = REPO / "deploy"
RELEASE = "cml-operator-e2e"


@pytest.fixture
def helm(tools_bin_dir: Path, control_plane: ControlPlane, tmp_path: Path) -> Callable[..., str]:
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path),
           **{f"HELM_{kind}_HOME": str(tmp_path / f"helm-{kind.lower()}") for kind in ("CACHE", "CONFIG", "DATA")}}

    def run(*args: str, check: bool = True) -> str:
        proc = subprocess.run([str(tools_bin_dir / "helm"), *args], env=env, capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout + proc.stderr
    return run


def _objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    return found


def _kustomize(control_plane: ControlPlane) -> list[dict[str, Any]]:
    return _objects(control_plane.kubectl("kustomize", str(DEPLOY)).stdout)


def _settings(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    for item in container.get("env", []):
        if item["name"].startswith("CML_") and "value" in item:
            monkeypatch.setenv(item["name"], item["value"])
    settings = settings_from_args(build_parser().parse_args(container["args"]))
    for item in container.get("env", []):
        monkeypatch.delenv(item["name"], raising=False)
    return settings


def _without_chart_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    """A rendered CRD or policy less what the chart adds: its labels and the keep policy."""
    meta = dict(crd["metadata"])
    meta.pop("labels", None)
    annotations = {k: v for k, v in meta.pop("annotations", {}).items() if k != "helm.sh/resource-policy"}
    if annotations:
        meta["annotations"] = annotations
    return {**crd, "metadata": meta}


def test_the_chart_lints_clean_and_renders_the_crds_folder(helm):
    linted = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in linted and "[WARNING]" not in linted and "[ERROR]" not in linted, linted
    rendered = _objects(helm("template", RELEASE, str(CHART), "--namespace", "cml-system"))
    crds = {o["metadata"]["name"]: _without_chart_metadata(o) for o in rendered
            if o["kind"] == "CustomResourceDefinition"}
    from_folder = [doc for path in sorted((REPO / "crds").glob("*.yaml")) for doc in _objects(path.read_text())]
    assert crds == {doc["metadata"]["name"]: doc for doc in from_folder if doc["kind"] == "CustomResourceDefinition"}
    # The admission policies, named after the release so that releases side by side never clash.
    others = [yaml.safe_load(yaml.safe_dump(doc).replace("cmlworkers.cml.dev-immutable-once-launched",
                                                         f"cmlworkers.cml.dev-immutable-once-launched-{RELEASE}"))
              for doc in from_folder if doc["kind"] != "CustomResourceDefinition"]
    rendered_policies = [_without_chart_metadata(doc) for doc in rendered
                         if doc["kind"].startswith("ValidatingAdmissionPolicy")]
    assert rendered_policies == others


def test_the_rendered_chart_matches_the_kustomize_base(helm, control_plane, monkeypatch):
    chart = _objects(helm("template", "cml-operator", str(CHART), "--namespace", "cml-system"))
    base = _kustomize(control_plane)

    same_rules = "charts/cml-operator/templates/rbac.yaml must grant what deploy/rbac.yaml grants"
    assert _one(chart, "ClusterRole")["rules"] == _one(base, "ClusterRole")["rules"], same_rules
    assert _one(chart, "Role")["rules"] == _one(base, "Role")["rules"], same_rules
    assert _one(chart, "PodDisruptionBudget")["spec"]["minAvailable"] == \
        _one(base, "PodDisruptionBudget")["spec"]["minAvailable"]
    assert _one(chart, "Service", "-metrics")["spec"]["ports"] == _one(base, "Service")["spec"]["ports"]
    assert _one(chart, "ServiceAccount")["automountServiceAccountToken"] is True

    mine, theirs = _one(chart, "Deployment")["spec"], _one(base, "Deployment")["spec"]
    assert (mine["replicas"], mine["strategy"]) == (theirs["replicas"], theirs["strategy"])
    pod, base_pod = mine["template"]["spec"], theirs["template"]["spec"]
    for key in ("securityContext", "volumes", "automountServiceAccountToken"):
        assert pod[key] == base_pod[key], key
    [container], [base_container] = pod["containers"], base_pod["containers"]
    for key in ("securityContext", "livenessProbe", "readinessProbe", "resources", "volumeMounts", "ports",
                "imagePullPolicy", "image"):
        assert container[key] == base_container[key], key
    env = {e["name"]: e for e in container["env"]}
    for item in base_container["env"]:
        if not item["name"].startswith("CML_"):  # the chart says with flags what the base says with CML_ twins
            assert env[item["name"]] == item, item["name"]
    ours, kustomize = _settings(container, monkeypatch), _settings(base_container, monkeypatch)
    assert ours == kustomize
    assert ours.leader_election.enabled and ours.namespaces == () and ours.log_format == "json"


def test_values_reach_the_objects(helm, monkeypatch):
    values = ["--set", "replicas=1", "--set", "leaderElection.enabled=false",
              "--set", "watchNamespaces={team-a,team-b}", "--set", "clusterId=prod-1",
              "--set", "serviceAccount.roleArn=arn:aws:iam::123456789012:role/cml-operator",
              "--set", "metrics.serviceMonitor.enabled=true", "--set", "logFormat=text",
              "--set", "nodeSelector.pool=system", "--set", "tolerations[0].key=dedicated",
              "--set", "tolerations[0].operator=Exists", "--set", "image.digest=sha256:" + "a" * 64,
              "--set", "extraEnv[0].name=HTTPS_PROXY", "--set", "extraEnv[0].value=http://proxy:3128",
              "--set", "crds.install=false", "--set", "tests.enabled=false",
              "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]
    rendered = _objects(helm("template", RELEASE, str(CHART), "--namespace", "ops", *values))
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "Role", "RoleBinding", "RoleBinding",
                     "Service", "ServiceAccount", "ServiceMonitor",
                     "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    # watchNamespaces: a Role in each (Secrets there only), nothing namespaced left in the ClusterRole.
    assert sorted(o["metadata"]["namespace"] for o in rendered if o["kind"] == "Role") == ["team-a", "team-b"]
    assert all("secrets" not in rule["resources"] for rule in _one(rendered, "ClusterRole")["rules"])
    deployment = _one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["image"] == "ghcr.io/cml-dev/cml-operator@sha256:" + "a" * 64
    assert pod["nodeSelector"] == {"pool": "system"} and pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CML_CLUSTER_ID"] == "prod-1" and env["HTTPS_PROXY"] == "http://proxy:3128"
    settings = _settings(container, monkeypatch)
    assert settings.namespaces == ("team-a", "team-b") and not settings.leader_election.enabled
    assert settings.log_format == "text"
    account = _one(rendered, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/cml-operator"}
    assert _one(rendered, "ServiceMonitor")["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s",
                                                                       "honorLabels": True}]

    refused = helm("template", RELEASE, str(CHART), "--set", "leaderElection.enabled=false", check=False)
    assert "replicas > 1 needs leaderElection.enabled" in refused


def test_install_upgrade_and_uninstall_against_the_api_server(helm, control_plane, namespace):
    def get(kind: str, name: str) -> dict[str, Any] | None:
        proc = control_plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    # The session's cluster has crds/ applied with kubectl, admission policy included: as for users
    # who do that, the chart must not try to own it.
    installed = helm("install", RELEASE, str(CHART), "--namespace", namespace, "--wait=false",
                     "--set", "admissionPolicies.enabled=false", "--set", "crds.install=false")
    assert "STATUS: deployed" in installed
    deployment = get("deployment", RELEASE)
    assert deployment["spec"]["replicas"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--leader-election" in container["args"] and "--all-namespaces" in container["args"]
    # The Lease is named after the release (leaderElection.id empty): releases never share one.
    assert get("role", f"{RELEASE}-leader-election")["rules"][1]["resourceNames"] == [RELEASE]
    assert get("pdb", RELEASE)["spec"]["minAvailable"] == 1
    assert get("serviceaccount", RELEASE) and get("service", f"{RELEASE}-metrics")
    assert control_plane.kubectl("get", "clusterrole", RELEASE, check=False).returncode == 0

    upgraded = helm("upgrade", RELEASE, str(CHART), "--namespace", namespace, "--wait=false",
                    "--set", "admissionPolicies.enabled=false", "--set", "crds.install=false",
                    "--set", "replicas=1", "--set", "leaderElection.enabled=false",
                    "--set", f"watchNamespaces={{{namespace}}}", "--set", "logLevel=DEBUG",
                    "--set", "serviceAccount.roleArn=arn:aws:iam::123456789012:role/cml-operator",
                    "--set", "resources.limits.memory=512Mi")
    assert "STATUS: deployed" in upgraded and "REVISION: 2" in upgraded
    deployment = get("deployment", RELEASE)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert "--leader-election" not in container["args"]
    assert container["args"][container["args"].index("--namespace") + 1] == namespace
    assert container["args"][container["args"].index("--log-level") + 1] == "DEBUG"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert get("serviceaccount", RELEASE)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        ":role/cml-operator")
    wait_for(lambda: get("role", f"{RELEASE}-leader-election") is None and get("pdb", RELEASE) is None, 30,
             what="the Role and the budget to go with leader election off")

    uninstalled = helm("uninstall", RELEASE, "--namespace", namespace, "--wait=false")
    assert "uninstalled" in uninstalled
    wait_for(lambda: all(get(kind, name) is None for kind, name in
                         (("deployment", RELEASE), ("serviceaccount", RELEASE), ("service", f"{RELEASE}-metrics"))),
             30, what="the release's objects to be deleted")
    assert control_plane.kubectl("get", "clusterrole", RELEASE, check=False).returncode != 0
    # Helm never deletes CRDs: the CMLWorkers (and their instances) survive an uninstall.
    assert control_plane.kubectl("get", "crd", "cmlworkers.cml.dev", check=False).returncode == 0
