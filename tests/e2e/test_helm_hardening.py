"""The chart's hardening (issue 22): schema, security contexts, spread, capabilities, CRDs, monitoring, helm test.

Rendering checks use `helm template`; the install checks run against a real API server: CRDs as
templates (crds.install / crds.keep) need a control plane of their own, since the session's already
has crds/ applied by kubectl (and other tests use them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane, ControlPlaneConfig
from tests.support.processes import OperatorProcess, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cml-operator"
MONITORING = REPO / "deploy" / "monitoring"
RELEASE = "cml-operator-hard"
COMMON = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart")


def _helm_runner(bin_dir: Path, kubeconfig: Path, home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           **{f"HELM_{kind}_HOME": str(home / f"helm-{kind.lower()}") for kind in ("CACHE", "CONFIG", "DATA")}}

    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(bin_dir / "helm"), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc
    return run


@pytest.fixture
def helm(tools_bin_dir: Path, control_plane: ControlPlane, tmp_path: Path):
    return _helm_runner(tools_bin_dir, control_plane.kubeconfig_path, tmp_path)


def _render(helm, *args: str) -> list[dict[str, Any]]:
    text = helm("template", RELEASE, str(CHART), "--namespace", "cml-system", *args).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _deployment_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = _kind(objects, "Deployment")
    return deployment["spec"]["template"]["spec"]


def test_typos_and_wrong_types_are_refused_by_the_schema(helm, namespace):
    for args, says in ((("--set", "replicsa=2"), "additional properties 'replicsa' not allowed"),
                       (("--set", "replicas=two"), "/replicas"),
                       (("--set", "leaderElection.enabeld=true"), "'enabeld' not allowed"),
                       (("--set", "logFormat=yaml"), "/logFormat"),
                       (("--set", "image.pullPolicy=Sometimes"), "/image/pullPolicy"),
                       (("--set-json", 'metrics={"port":"8080"}'), "/metrics/port")):
        proc = helm("template", RELEASE, str(CHART), *args, check=False)
        assert proc.returncode != 0 and says in proc.stderr, (args, proc.stderr)
    # And helm install against the API server refuses before creating anything.
    proc = helm("install", RELEASE, str(CHART), "-n", namespace, "--set", "crds.install=false",
                "--set", "admissionPolicies.enabled=false", "--set", "podSecurityContxt.runAsUser=1", check=False)
    assert proc.returncode != 0 and "'podSecurityContxt' not allowed" in proc.stderr, proc.stderr
    assert "cml-operator-hard" not in helm("list", "-n", namespace).stdout


def test_security_contexts_can_drop_fixed_ids_for_openshift_restricted_v2(helm):
    default = _deployment_pod(_render(helm))
    assert default["securityContext"]["runAsUser"] == 65532
    unset = ["--set", "podSecurityContext.runAsUser=null", "--set", "podSecurityContext.runAsGroup=null",
             "--set", "podSecurityContext.fsGroup=null", "--set", "containerSecurityContext.runAsUser=null",
             "--set", "containerSecurityContext.runAsGroup=null"]
    objects = _render(helm, *unset)
    pods = [_deployment_pod(objects), *[p["spec"] for p in _kind(objects, "Pod")]]  # the operator and the test Pod
    for pod in pods:
        assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        [container] = pod["containers"]
        context = container["securityContext"]
        assert not {"runAsUser", "runAsGroup"} & set(context)
        assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"] and context["capabilities"] == {
            "drop": ["ALL"]} and context["allowPrivilegeEscalation"] is False


def test_two_replicas_spread_across_nodes_by_default(helm):
    objects = _render(helm)
    [deployment] = _kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["labelSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}


def test_service_monitor_and_prometheus_rule_only_where_their_api_exists(helm):
    wanted = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"]
    assert not [o for o in _render(helm, *wanted) if o["kind"] in ("ServiceMonitor", "PrometheusRule")]
    objects = _render(helm, *wanted, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                      "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
    [monitor], [rule] = _kind(objects, "ServiceMonitor"), _kind(objects, "PrometheusRule")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    source = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["spec"] == source["spec"]  # {{ $labels }} in the annotations reach Prometheus untouched


def test_the_dashboard_configmap_carries_the_generated_json_and_the_sidecar_label(helm):
    assert not _kind(_render(helm), "ConfigMap")
    [config_map] = _kind(_render(helm, "--set", "grafanaDashboard.enabled=true",
                                 "--set", "grafanaDashboard.namespace=monitoring"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert json.loads(config_map["data"]["cml-operator.json"]) == json.loads((MONITORING / "dashboard.json").read_text())


def test_lease_timings_probes_and_network_policy_are_values(helm):
    objects = _render(helm, "--set", "leaderElection.leaseDuration=30", "--set", "leaderElection.renewDeadline=20",
                      "--set", "leaderElection.retryPeriod=4", "--set", "livenessProbe.periodSeconds=60",
                      "--set", "readinessProbe.failureThreshold=6", "--set", "networkPolicy.enabled=true",
                      "--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":'
                                    '{"kubernetes.io/metadata.name":"monitoring"}}}]')
    [container] = _deployment_pod(objects)["containers"]
    args = container["args"]
    for flag, value in (("--leader-election-lease-duration", "30"), ("--leader-election-renew-deadline", "20"),
                        ("--leader-election-retry-period", "4")):
        assert args[args.index(flag) + 1] == value
    assert container["livenessProbe"]["periodSeconds"] == 60 and container["readinessProbe"]["failureThreshold"] == 6
    [policy] = _kind(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    metrics_rule, health_rule = policy["spec"]["ingress"]
    assert metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert health_rule == {"ports": [{"port": "healthz", "protocol": "TCP"}]}
    assert not _kind(_render(helm), "NetworkPolicy")  # opt-in
    default_args = _deployment_pod(_render(helm))["containers"][0]["args"]
    assert "--leader-election-lease-duration" not in default_args  # the operator's defaults are the chart's


def test_every_object_carries_the_common_labels(helm):
    objects = _render(helm, "--set", "commonLabels.team=platform", "--set", "networkPolicy.enabled=true",
                      "--set", "grafanaDashboard.enabled=true")
    assert {o["kind"] for o in objects} >= {"CustomResourceDefinition", "ValidatingAdmissionPolicy", "Deployment",
                                            "Pod", "ConfigMap", "NetworkPolicy", "ClusterRole"}
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert set(COMMON) <= set(labels) and labels["team"] == "platform", (obj["kind"], obj["metadata"]["name"])


def test_kube_version_below_1_31_is_refused(helm):
    proc = helm("template", RELEASE, str(CHART), "--kube-version", "1.30.4", check=False)
    assert proc.returncode != 0 and ">=1.31" in proc.stderr


def test_crds_keep_and_install_options(helm):
    crds = _kind(_render(helm), "CustomResourceDefinition")
    assert len(crds) == len(list((CHART / "files" / "crds").glob("*.yaml")))
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    loose = _kind(_render(helm, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert loose and all("helm.sh/resource-policy" not in c["metadata"].get("annotations", {}) for c in loose)
    assert not _kind(_render(helm, "--set", "crds.install=false"), "CustomResourceDefinition")


# --------------------------------------------------------------------------------------------
# Against an API server of its own: CRDs installed, upgraded and kept by Helm; `helm test`.


@pytest.fixture
def fresh_plane(control_plane_bin_dir: Path) -> Iterator[ControlPlane]:
    with ControlPlane(ControlPlaneConfig(bin_dir=control_plane_bin_dir)) as plane:
        yield plane


def _crd(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    proc = plane.kubectl("get", "crd", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_helm_installs_upgrades_and_keeps_the_crds(tools_bin_dir, fresh_plane, tmp_path):
    helm = _helm_runner(tools_bin_dir, fresh_plane.kubeconfig_path, tmp_path)
    fresh_plane.kubectl("create", "namespace", "cml-system")
    helm("install", RELEASE, str(CHART), "-n", "cml-system", "--wait=false")
    crd = _crd(fresh_plane, "cmlworkers.cml.dev")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True"
                         for c in (_crd(fresh_plane, "cmlworkers.cml.dev") or {}).get("status", {}).get(
                             "conditions", [])), 30, what="the CRD to be Established")

    helm("upgrade", RELEASE, str(CHART), "-n", "cml-system", "--wait=false", "--set", "commonLabels.upgraded=yes")
    assert _crd(fresh_plane, "cmlworkers.cml.dev")["metadata"]["labels"]["upgraded"] == "yes"  # upgrade reached it

    helm("uninstall", RELEASE, "-n", "cml-system", "--wait=false")
    wait_for(lambda: fresh_plane.kubectl("get", "deployment", RELEASE, "-n", "cml-system",
                                         check=False).returncode != 0, 30, what="the Deployment to go")
    for name in ("cmlworkers.cml.dev", "cmlworkerpools.cml.dev", "cmlworkerdiscoveries.cml.dev"):
        assert _crd(fresh_plane, name) is not None, f"{name} was deleted by helm uninstall"


def _kubelet_for_test_pods(plane: ControlPlane, namespace: str, health_url: str, stop: threading.Event) -> None:
    """What a kubelet would do for the `helm test` Pod (this control plane runs none): run its command
    here, with HEALTH_URL pointing at the operator process, and write the phase its exit status gives."""
    done: set[str] = set()
    while not stop.is_set():
        pods = json.loads(plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if pod["metadata"].get("annotations", {}).get("helm.sh/hook") != "test" or uid in done:
                continue
            done.add(uid)
            [container] = pod["spec"]["containers"]
            command = [sys.executable if part == "python3" else part for part in container["command"]]
            proc = subprocess.run(command, env={**os.environ, "HEALTH_URL": health_url}, capture_output=True,
                                  text=True, timeout=120)
            phase = "Succeeded" if proc.returncode == 0 else "Failed"
            status = {"status": {"phase": phase, "containerStatuses": [{
                "name": container["name"], "ready": False, "restartCount": 0, "image": container["image"],
                "imageID": "", "state": {"terminated": {"exitCode": proc.returncode, "reason": phase}}}]}}
            plane.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                          "--type=merge", "-p", json.dumps(status))
        stop.wait(0.5)


@pytest.mark.slow
def test_helm_test_asks_the_operator_s_health_endpoint(tools_bin_dir, fresh_plane, tmp_path):
    helm = _helm_runner(tools_bin_dir, fresh_plane.kubeconfig_path, tmp_path)
    fresh_plane.kubectl("create", "namespace", "cml-system")
    helm("install", RELEASE, str(CHART), "-n", "cml-system", "--wait=false", "--set", "replicas=1",
         "--set", "leaderElection.enabled=false")
    # The operator itself, outside the cluster (no kubelet here): its /healthz is what the test Pod asks.
    operator = OperatorProcess(fresh_plane.kubeconfig_path, "http://127.0.0.1:9", namespaces=["cml-system"],
                               args=("--cluster-id", "helm-test")).start()
    stop = threading.Event()
    kubelet = threading.Thread(target=_kubelet_for_test_pods, daemon=True, args=(
        fresh_plane, "cml-system", f"http://127.0.0.1:{operator.liveness_port}/healthz", stop))
    kubelet.start()
    try:
        passed = helm("test", RELEASE, "-n", "cml-system", "--timeout", "120s")
        assert "Phase:          Succeeded" in passed.stdout, passed.stdout
        operator.stop()
        failed = helm("test", RELEASE, "-n", "cml-system", "--timeout", "150s", check=False)
        assert failed.returncode != 0 and "Failed" in failed.stdout + failed.stderr, failed.stdout + failed.stderr
    finally:
        stop.set()
        operator.kill()
        kubelet.join(30)


def test_kustomize_users_get_the_same_rule_and_dashboard(control_plane):
    objects = [doc for doc in yaml.safe_load_all(control_plane.kubectl("kustomize", str(MONITORING)).stdout) if doc]
    [rule], [config_map] = _kind(objects, "PrometheusRule"), _kind(objects, "ConfigMap")
    assert rule["spec"] == yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["cml-operator.json"]) == json.loads((MONITORING / "dashboard.json").read_text())
