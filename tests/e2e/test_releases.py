"""Namespace-scoped installs and several releases side by side, on the real API server.

The chart is installed with Helm for real; the operator runs as a local process with the
release's own ServiceAccount token (the test cluster has no kubelet to run its pod), so
everything it does is subject to the RBAC the chart rendered.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane
from tests.e2e.conftest import Kube, worker_manifest
from tests.e2e.test_helm import CHART, DEPLOY, helm  # noqa: F401 - the helm fixture
from tests.support.processes import OperatorProcess, wait_for

pytestmark = pytest.mark.e2e


def can_i(plane: ControlPlane, user: str, verb: str, resource: str, *extra: str) -> bool:
    proc = plane.kubectl("auth", "can-i", verb, resource, f"--as={user}", *extra, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource} {extra}: {proc.stdout!r} {proc.stderr!r}"
    return answer == "yes"


@pytest.fixture
def namespaces(control_plane: ControlPlane) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(role: str) -> str:
        name = f"t-rel-{role}-{uuid.uuid4().hex[:6]}"
        control_plane.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        control_plane.kubectl("delete", "cmlworker", "--all", "-n", name, "--wait=true", "--timeout=30s", check=False)
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _get(plane: ControlPlane, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    proc = plane.kubectl(*args, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_a_namespaced_install_reads_secrets_only_in_the_watched_namespaces(helm, control_plane, namespaces):
    home, watched, other = namespaces("home"), namespaces("watched"), namespaces("other")
    release = f"cml-ns-{uuid.uuid4().hex[:4]}"
    try:
        helm("install", release, str(CHART), "--namespace", home, "--wait=false",
             "--set", f"watchNamespaces={{{watched}}}", "--set", "admissionPolicies.enabled=false",
             "--set", "crds.install=false")  # the session applied crds/ with kubectl
        user = f"system:serviceaccount:{home}:{release}-cml-operator"
        assert can_i(control_plane, user, "get", "secrets", "-n", watched)
        assert not can_i(control_plane, user, "get", "secrets", "-n", other)
        assert not can_i(control_plane, user, "get", "secrets", "-n", home)
        assert not can_i(control_plane, user, "get", "secrets", "-n", "kube-system")
        assert can_i(control_plane, user, "list", "cmlworkers.cml.dev", "-n", watched)
        assert not can_i(control_plane, user, "list", "cmlworkers.cml.dev", "-n", other)
        assert not can_i(control_plane, user, "list", "cmlworkers.cml.dev", "--all-namespaces")
        assert can_i(control_plane, user, "watch", "cmlaccounts.cml.dev")
        assert can_i(control_plane, user, "get", f"namespaces/{watched}")
        assert can_i(control_plane, user, "get", "namespaces/kube-system")
        assert not can_i(control_plane, user, "get", f"namespaces/{other}")
        assert not can_i(control_plane, user, "create", "events", "-n", other)
    finally:
        helm("uninstall", release, "--namespace", home, "--wait=false", check=False)


def test_the_chart_grants_what_the_namespaced_component_grants(helm, control_plane, tmp_path):
    shutil.copytree(DEPLOY, tmp_path / "deploy")  # kustomize wants the base below the kustomization's parent
    (tmp_path / "install").mkdir()
    (tmp_path / "install" / "kustomization.yaml").write_text(
        "resources: [../deploy]\ncomponents: [../deploy/overlays/namespaced]\n")
    built = [doc for doc in yaml.safe_load_all(control_plane.kubectl("kustomize", str(tmp_path / "install")).stdout)
             if doc]
    rendered = [doc for doc in yaml.safe_load_all(helm("template", "cml-operator", str(CHART), "--namespace",
                                                       "cml-system", "--set", "watchNamespaces={cml-labs}")) if doc]

    def one(objects: list, kind: str, namespace: str) -> dict:
        [found] = [o for o in objects if o["kind"] == kind and o["metadata"].get("namespace", "") == namespace
                   and not o["metadata"]["name"].endswith("leader-election")]
        return found

    assert one(rendered, "ClusterRole", "")["rules"] == one(built, "ClusterRole", "")["rules"]
    assert one(rendered, "Role", "cml-labs")["rules"] == one(built, "Role", "cml-labs")["rules"]
    [container] = one(built, "Deployment", "cml-system")["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--namespace") + 1] == "cml-labs"


def _operator_for(plane: ControlPlane, proxy_url: str, release: str, home: str, watched: str,
                  tmp_path: Path) -> OperatorProcess:
    """The release's operator as its Deployment would run it: its args, its ServiceAccount, its namespace."""
    deployment = _get(plane, "deployment", f"{release}-cml-operator", home)
    assert deployment is not None
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = list(container["args"][1:])  # without "run"
    for flag in ("--metrics-port", "--liveness-port", "--log-format"):  # the process picks its own ports
        index = args.index(flag)
        del args[index:index + 2]
    kubeconfig = plane.service_account_kubeconfig(f"{release}-cml-operator", home)
    process = OperatorProcess(kubeconfig, proxy_url, args=(*OperatorProcess.FAST_ARGS, *args),
                              env={"POD_NAMESPACE": home}, log_path=tmp_path / f"{release}.log")
    return process.start()


@pytest.mark.slow
def test_two_releases_side_by_side_and_one_uninstalled_leaves_the_other_working(
        helm, control_plane, namespaces, network, proxy, tmp_path):
    one, two = f"cml-one-{uuid.uuid4().hex[:4]}", f"cml-two-{uuid.uuid4().hex[:4]}"
    home_one, home_two = namespaces("home1"), namespaces("home2")
    labs_one, labs_two = namespaces("labs1"), namespaces("labs2")
    operators: list[OperatorProcess] = []
    try:
        for release, home, labs in ((one, home_one, labs_one), (two, home_two, labs_two)):
            # Admission policies on: no clash. The CRDs are shared (the session applied crds/ with kubectl;
            # with Helm, the first release installs them and keeps them, the second sets crds.install=false).
            installed = helm("install", release, str(CHART), "--namespace", home, "--wait=false",
                             "--set", f"watchNamespaces={{{labs}}}", "--set", "crds.install=false")
            assert "STATUS: deployed" in installed
        ids = []
        for release, home in ((one, home_one), (two, home_two)):
            [container] = _get(control_plane, "deployment", f"{release}-cml-operator",
                               home)["spec"]["template"]["spec"]["containers"]
            ids.append(container["args"][container["args"].index("--leader-election-id") + 1])
        assert ids[0] != ids[1], "leader election ids must differ"
        operators = [_operator_for(control_plane, proxy.url, one, home_one, labs_one, tmp_path),
                     _operator_for(control_plane, proxy.url, two, home_two, labs_two, tmp_path)]
        kube_one, kube_two = Kube(control_plane, labs_one), Kube(control_plane, labs_two)
        kube_one.apply(worker_manifest("w-one", network))
        kube_two.apply(worker_manifest("w-two", network))
        kube_one.wait_condition("w-one", "Ready", timeout=90)
        kube_two.wait_condition("w-two", "Ready", timeout=90)

        kube_one.delete("w-one")
        operators[0].stop()
        helm("uninstall", one, "--namespace", home_one, "--wait=false")
        wait_for(lambda: _get(control_plane, "clusterrole", f"{one}-cml-operator") is None, 30,
                 what="release one's ClusterRole to go")
        # Release two's cluster-scoped objects survive the other's uninstall.
        for kind, name in (("clusterrole", f"{two}-cml-operator"), ("clusterrolebinding", f"{two}-cml-operator"),
                           ("validatingadmissionpolicy", f"cmlworkers.cml.dev-immutable-once-launched-{two}"),
                           ("validatingadmissionpolicybinding",
                            f"cmlworkers.cml.dev-immutable-once-launched-{two}")):
            assert _get(control_plane, kind, name) is not None, (kind, name)
        # ... and its operator still acts: a spec change is applied and the worker stays Ready.
        before = proxy.count("CreateTags")
        kube_two.patch_spec("w-two", {"tags": {"after-uninstall": "yes"}})
        wait_for(lambda: proxy.count("CreateTags") > before, 60, what="release two applying a tag change")
        kube_two.wait_condition("w-two", "Ready", timeout=60)
        # Kopf tries to list namespaces once when given --namespace (it then uses the names as given):
        # the only 403 a namespaced install answers, on purpose (docs/accounts.md).
        refused = [line for line in operators[1].logs().splitlines()
                   if "Forbidden" in line and 'resource "namespaces"' not in line]
        assert refused == []
    finally:
        for process, labs in zip(operators, (labs_one, labs_two)):
            if process.running:  # let it release its workers' finalizers first
                Kube(control_plane, labs).run("delete", "cmlworker", "--all", "--wait=true", "--timeout=30s",
                                              check=False)
                process.stop()
        for release, home in ((one, home_one), (two, home_two)):
            helm("uninstall", release, "--namespace", home, "--wait=false", check=False)
