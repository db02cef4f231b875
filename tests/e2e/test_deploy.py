"""deploy/ against the real API server: it applies, its RBAC is enough and no more, and the IAM policy fits the client.

The base is applied for real (the Deployment never gets pods: the controller manager
runs no deployment controller and there are no nodes). The operator then runs as a local process with a TokenRequest token
of the deployed ServiceAccount, watching all namespaces as the Deployment does, so
every API call it makes is authorized by deploy/rbac.yaml alone.

Cluster-scoped objects made here (ClusterRoles, ClusterRoleBindings, the peering
CRD and object, namespace cml-system) are deleted when the module ends, without
waiting for the namespace controller to remove the namespace.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cml_operator.reconcile.ownership import MANAGED_BY, TAG_CLUSTER, TAG_MANAGED_BY, TAG_UID
from tests.cluster.controlplane import ControlPlane
from tests.support.processes import OperatorProcess, wait_for

from .conftest import instances_of, state_of, worker_manifest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PEERING = DEPLOY / "peering"
EC2_CLIENT = REPO / "operator" / "cml_operator" / "ec2" / "client.py"
IAM_POLICY = DEPLOY / "iam-policy.json"
IAM_ADOPTION_POLICY = DEPLOY / "iam-policy-adoption.json"
SYSTEM_NAMESPACE = "cml-system"
ACCOUNT = "cml-operator"
SA_USER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{ACCOUNT}"
PEERING_NAME = "cml-operator"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def system_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """cml-system exists (a server-side dry run cannot create objects in a namespace it only pretends to make)."""
    control_plane.kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    yield SYSTEM_NAMESPACE
    # Everything the module applied: the base, and the peering component if a test added it.
    control_plane.kubectl("delete", "clusterkopfpeering", PEERING_NAME, "--ignore-not-found", "--wait=false",
                          check=False)
    control_plane.kubectl("delete", "-f", str(PEERING / "rbac.yaml"), "-f", str(PEERING / "crds.yaml"),
                          "--ignore-not-found", "--wait=false", check=False)
    control_plane.kubectl("delete", "-k", str(DEPLOY), "--ignore-not-found", "--wait=false", check=False)
    control_plane.kubectl("delete", "-f", str(DEPLOY / "namespace.yaml"), "--ignore-not-found", "--wait=false",
                          check=False)


@pytest.fixture(scope="module")
def deployed(control_plane: ControlPlane, system_namespace: str) -> str:
    """`kubectl apply -k deploy/` for real; returns its output."""
    applied = control_plane.kubectl("apply", "-k", str(DEPLOY))
    assert "PodSecurity" not in applied.stderr, applied.stderr
    return applied.stdout


@pytest.fixture(scope="module")
def sa_kubeconfig(control_plane: ControlPlane, deployed: str) -> Path:
    """A kubeconfig acting as the deployed ServiceAccount (TokenRequest), subject to RBAC."""
    return control_plane.service_account_kubeconfig(ACCOUNT, SYSTEM_NAMESPACE)


def can_i(plane: ControlPlane, verb: str, resource: str, *extra: str) -> bool:
    """`kubectl auth can-i` for the operator's ServiceAccount, asked by the admin."""
    proc = plane.kubectl("auth", "can-i", verb, resource, f"--as={SA_USER}", *extra, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource} {extra}: {proc.stdout!r} {proc.stderr!r}"
    return answer == "yes"


def forbidden_lines(log: str) -> list[str]:
    """Operator log records (JSON) that report a 403: RBAC refused something.

    A namespace being deleted also answers 403 to creating objects in it (events
    for workers left by other tests); that is not about RBAC and is left out.
    """
    found = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            text = line  # a traceback or a line from before logging was configured
        else:
            text = " ".join(str(record.get(key, "")) for key in ("message", "exc_info"))
        if re.search(r"forbidden|\b403\b|not enough permissions", text, re.IGNORECASE) \
                and "being terminated" not in text:
            found.append(line[:500])
    return found


def run_operator(sa_kubeconfig: Path, proxy_url: str, log_path: Path, env: dict[str, str] | None = None
                 ) -> OperatorProcess:
    """The operator as the Deployment runs it (all namespaces, JSON logs), with the ServiceAccount's token."""
    process = OperatorProcess(sa_kubeconfig, proxy_url, namespaces=[],
                              args=(*OperatorProcess.FAST_ARGS, "--log-format", "json"),
                              env=env or {}, log_path=log_path)
    return process.start()


# --------------------------------------------------------------------------- a. it applies


def test_the_base_passes_a_server_side_dry_run(control_plane, system_namespace):
    # The negative control: this API server does warn about pods below the namespace's Pod Security level.
    bad = control_plane.kubectl("create", "deployment", "psa-probe", "--image=example.invalid/x", "-n",
                                system_namespace, "--dry-run=server", "-o", "name")
    assert "would violate PodSecurity" in bad.stderr

    dry = control_plane.kubectl("apply", "-k", str(DEPLOY), "--dry-run=server")

    lines = dry.stdout.splitlines()
    for kind_name in ("namespace/cml-system", "serviceaccount/cml-operator",
                      "clusterrole.rbac.authorization.k8s.io/cml-operator",
                      "clusterrolebinding.rbac.authorization.k8s.io/cml-operator",
                      "role.rbac.authorization.k8s.io/cml-operator-leader-election",
                      "rolebinding.rbac.authorization.k8s.io/cml-operator-leader-election",
                      "poddisruptionbudget.policy/cml-operator",
                      "deployment.apps/cml-operator", "service/cml-operator-metrics"):
        assert any(line.startswith(kind_name + " ") and "(server dry run)" in line for line in lines), dry.stdout
    assert "PodSecurity" not in dry.stderr, dry.stderr  # the operator pod meets "restricted"
    assert "Warning" not in dry.stderr, dry.stderr


def test_the_base_applies_for_real_with_the_operator_bound_to_its_role(control_plane, deployed):
    assert "deployment.apps/cml-operator" in deployed
    deployment = json.loads(control_plane.kubectl("get", "deployment", "cml-operator", "-n", SYSTEM_NAMESPACE,
                                                  "-o", "json").stdout)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "--log-format", "json", "--all-namespaces"]
    # two replicas with leader election, and a budget that keeps one through drains
    assert deployment["spec"]["replicas"] == 2
    # An empty value is left out of what the API server returns (omitempty): no valueFrom means "".
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] if "valueFrom" in e else e.get("value", "")
           for e in container["env"]}
    assert env["CML_LEADER_ELECTION"] == "true"
    assert env["CML_ADOPTION_NAMESPACES"] == ""  # no namespace may adopt or import until an administrator says so
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == ("metadata.name", "metadata.namespace")
    budget = json.loads(control_plane.kubectl("get", "pdb", "cml-operator", "-n", SYSTEM_NAMESPACE,
                                              "-o", "json").stdout)
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == ACCOUNT
    binding = json.loads(control_plane.kubectl("get", "clusterrolebinding", "cml-operator", "-o", "json").stdout)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": SYSTEM_NAMESPACE}]


def test_the_irsa_patch_builds_into_an_overlay(control_plane, tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "irsa-patch.yaml").write_text((DEPLOY / "irsa-patch.yaml").read_text())
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(DEPLOY, overlay)], "patches": [{"path": "irsa-patch.yaml"}]}))

    built = list(yaml.safe_load_all(control_plane.kubectl("kustomize", str(overlay)).stdout))

    [account] = [o for o in built if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert account["automountServiceAccountToken"] is True


# --------------------------------------------------------------------------- b. the RBAC is enough


def test_the_operator_runs_on_the_deployed_rbac_alone(control_plane, sa_kubeconfig, kube, network, aws, proxy,
                                                      tmp_path):
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa_kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == SA_USER

    # As the Deployment runs it: with leader election, its Lease in the operator's namespace.
    operator = run_operator(sa_kubeconfig, proxy.url, tmp_path / "operator.log",
                            env={"CML_LEADER_ELECTION": "true", "POD_NAMESPACE": SYSTEM_NAMESPACE,
                                 "POD_NAME": "cml-operator-test-pod",
                                 # the discovery below scans (its reads are what this test checks) only
                                 # where an administrator allowed imports
                                 "CML_ADOPTION_NAMESPACES": kube.namespace})
    try:
        lease = wait_for(lambda: json.loads(control_plane.kubectl(
            "get", "lease", "cml-operator", "-n", SYSTEM_NAMESPACE, "-o", "json", check=False).stdout or "{}"),
            30, what="the operator's Lease")
        assert lease["spec"]["holderIdentity"] == f"cml-operator-test-pod_{operator.pid}"
        kube.apply(worker_manifest("deployed-1", network, tags={"team": "netops"}))
        waited = kube.run("wait", "--for=condition=Ready", "cmlworker/deployed-1", "--timeout=45s", check=False)
        assert "condition met" in waited.stdout, f"{waited.stderr}\n{operator.logs()[-4000:]}"

        worker = kube.get("deployed-1")
        assert worker["metadata"]["finalizers"] == ["cml.dev/finalizer"]  # patch on cmlworkers
        status = worker["status"]  # patch on cmlworkers/status
        [instance] = instances_of(aws, worker["metadata"]["uid"])
        assert status["instanceId"] == instance["InstanceId"] and status["phase"] == "Running"
        assert status["observedGeneration"] == worker["metadata"]["generation"]
        # create on events (posted in the background, so they may trail the condition by a moment)
        wait_for(lambda: {"InstanceCreated", "Ready"} <= set(kube.event_reasons("deployed-1")), 15,
                 what="the InstanceCreated and Ready events")

        kube.delete("deployed-1")  # the finalizer comes off only once the operator has terminated the instance

        assert not kube.exists("deployed-1")
        assert state_of(aws, instance["InstanceId"]) in ("shutting-down", "terminated")
        wait_for(lambda: "Terminating" in kube.event_reasons("deployed-1"), 15, what="the Terminating event")

        # A pool: list/create/delete on cmlworkers, patch on cmlworkerpools and their status.
        pool = {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerPool", "metadata": {"name": "deployed-pool"},
                "spec": {"replicas": 1, "template": {"spec": worker_manifest("x", network)["spec"]}}}
        kube.apply(pool)
        waited = kube.run("wait", "--for=condition=Ready", "cmlworkerpool/deployed-pool", "--timeout=45s",
                          check=False)
        assert "condition met" in waited.stdout, f"{waited.stderr}\n{operator.logs()[-4000:]}"
        kube.run("delete", "cmlworkerpool", "deployed-pool", "--wait=true", "--timeout=45s")
        wait_for(lambda: not kube.run("get", "cmlworkers", "-l", "cml.dev/pool=deployed-pool", "-o", "name"
                                      ).stdout.strip(), 45, what="the pool's worker deleted")

        # A discovery scan: DescribeImages, list cmlworkers in all namespaces, patch its status.
        discovery = {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerDiscovery",
                     "metadata": {"name": "deployed-scan"},
                     "spec": {"region": "us-east-1", "amiNamePattern": "no-such-image-*"}}
        kube.apply(discovery)
        waited = kube.run("wait", "--for=condition=Ready", "cmlworkerdiscovery/deployed-scan", "--timeout=45s",
                          check=False)
        assert "condition met" in waited.stdout, f"{waited.stderr}\n{operator.logs()[-4000:]}"
        kube.run("delete", "cmlworkerdiscovery", "deployed-scan", "--wait=true", "--timeout=45s")
    finally:
        kube.run("delete", "cmlworkerdiscovery", "--all", "--wait=true", "--timeout=30s", check=False)
        kube.run("delete", "cmlworkerpool", "--all", "--wait=true", "--timeout=30s", check=False)
        kube.run("delete", "cmlworker", "--all", "--wait=true", "--timeout=30s", check=False)
        operator.stop()

    log = operator.logs()
    assert "starting: watching all namespaces" in log
    assert "released the Lease" in log  # get + update on its Lease
    assert forbidden_lines(log) == []


# --------------------------------------------------------------------------- c. and no more


ALLOWED = [
    ("list", "cmlworkers.cml.dev", "--all-namespaces"),
    ("watch", "cmlworkers.cml.dev", "--all-namespaces"),
    ("patch", "cmlworkers.cml.dev", "-n", "default"),
    ("patch", "cmlworkers.cml.dev", "--subresource=status", "-n", "default"),
    ("create", "cmlworkers.cml.dev", "-n", "default"),  # pools make their children
    ("delete", "cmlworkers.cml.dev", "-n", "default"),  # and remove them
    ("list", "cmlworkerpools.cml.dev", "--all-namespaces"),
    ("watch", "cmlworkerpools.cml.dev", "--all-namespaces"),
    ("patch", "cmlworkerpools.cml.dev", "-n", "default"),
    ("patch", "cmlworkerpools.cml.dev", "--subresource=status", "-n", "default"),
    ("update", "cmlworkerpools.cml.dev", "--subresource=finalizers", "-n", "default"),
    ("list", "cmlworkerdiscoveries.cml.dev", "--all-namespaces"),
    ("watch", "cmlworkerdiscoveries.cml.dev", "--all-namespaces"),
    ("patch", "cmlworkerdiscoveries.cml.dev", "-n", "default"),
    ("patch", "cmlworkerdiscoveries.cml.dev", "--subresource=status", "-n", "default"),
    ("create", "events", "-n", "default"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "secrets", "-n", "default"),  # only the Secrets spec.cml names, one by one
    ("get", "namespaces/kube-system"),  # the default --cluster-id: kube-system's uid (docs/ownership.md)
    ("get", "namespaces/default"),  # a namespace's labels select CMLAccounts (docs/accounts.md)
    ("list", "cmlaccounts.cml.dev"),
    ("watch", "cmlaccounts.cml.dev"),
    ("patch", "cmlaccounts.cml.dev", "--subresource=status"),
    ("create", "leases.coordination.k8s.io", "-n", SYSTEM_NAMESPACE),
    ("get", "leases.coordination.k8s.io/cml-operator", "-n", SYSTEM_NAMESPACE),
    ("update", "leases.coordination.k8s.io/cml-operator", "-n", SYSTEM_NAMESPACE),
]
FORBIDDEN = [
    ("list", "secrets", "--all-namespaces"),
    ("watch", "secrets", "--all-namespaces"),
    ("list", "pods", "--all-namespaces"),
    ("create", "configmaps", "-n", "default"),
    ("update", "cmlworkers.cml.dev", "-n", "default"),
    ("deletecollection", "cmlworkers.cml.dev", "-n", "default"),
    ("get", "cmlworkerpools.cml.dev", "-n", "default"),
    ("create", "cmlworkerpools.cml.dev", "-n", "default"),
    ("update", "cmlworkerpools.cml.dev", "-n", "default"),
    ("delete", "cmlworkerpools.cml.dev", "-n", "default"),
    ("update", "cmlworkerpools.cml.dev", "--subresource=status", "-n", "default"),
    ("patch", "cmlworkerpools.cml.dev", "--subresource=scale", "-n", "default"),
    ("get", "cmlworkerdiscoveries.cml.dev", "-n", "default"),
    ("create", "cmlworkerdiscoveries.cml.dev", "-n", "default"),
    ("delete", "cmlworkerdiscoveries.cml.dev", "-n", "default"),
    ("update", "cmlworkerdiscoveries.cml.dev", "--subresource=status", "-n", "default"),
    ("get", "cmlworkers.cml.dev", "-n", "default"),  # Kopf only lists and watches
    ("update", "cmlworkers.cml.dev", "--subresource=status", "-n", "default"),
    ("patch", "events", "-n", "default"),
    ("create", "events.events.k8s.io", "-n", "default"),
    ("list", "namespaces"),
    ("watch", "namespaces"),  # namespaces only by name, only get
    ("create", "cmlaccounts.cml.dev"),  # administrators own accounts
    ("delete", "cmlaccounts.cml.dev"),
    ("update", "cmlaccounts.cml.dev"),
    ("patch", "namespaces/kube-system"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts", "-n", SYSTEM_NAMESPACE),
    ("create", "serviceaccounts/token", "-n", SYSTEM_NAMESPACE),
    ("create", "leases.coordination.k8s.io", "-n", "default"),
    ("update", "leases.coordination.k8s.io/someone-else", "-n", SYSTEM_NAMESPACE),
    ("delete", "leases.coordination.k8s.io/cml-operator", "-n", SYSTEM_NAMESPACE),
    ("list", "leases.coordination.k8s.io", "-n", SYSTEM_NAMESPACE),
    ("patch", "deployments.apps", "-n", SYSTEM_NAMESPACE),
]


def _cases(table: list[tuple[str, ...]]) -> list:
    return [pytest.param(verb, resource, tuple(extra), id=" ".join((verb, resource, *extra)))
            for verb, resource, *extra in table]


@pytest.mark.parametrize("verb, resource, extra", _cases(ALLOWED))
def test_the_service_account_may_do_what_the_operator_needs(control_plane, deployed, verb, resource, extra):
    assert can_i(control_plane, verb, resource, *extra)


@pytest.mark.parametrize("verb, resource, extra", _cases(FORBIDDEN))
def test_the_service_account_may_not_do_anything_else(control_plane, deployed, verb, resource, extra):
    assert not can_i(control_plane, verb, resource, *extra)


def test_requests_outside_the_role_get_403_with_the_service_account_token(control_plane, sa_kubeconfig, namespace):
    # The operator creates and deletes CMLWorkers (pools, discovery) but never pools themselves:
    # users own those. A pool is the probe for "delete/create a custom resource it may not".
    def pool(name: str) -> str:
        return yaml.safe_dump({"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerPool",
                               "metadata": {"name": name, "namespace": namespace},
                               "spec": {"replicas": 0, "template": {"spec": {
                                   "region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-0123abcd"}}}})

    # Something to try to read and delete (no operator runs here: no finalizer holds it).
    control_plane.kubectl("create", "configmap", "probe", "-n", namespace)
    control_plane.kubectl("apply", "-f", "-", input=pool("target"))
    attempts = {
        "list secrets": ("get", "secrets", "--all-namespaces"),
        "list pods": ("get", "pods", "-n", namespace),
        "get configmap": ("get", "configmap", "probe", "-n", namespace),
        "create configmap": ("create", "configmap", "sneaky", "-n", namespace),
        "delete a cmlworkerpool": ("delete", "cmlworkerpool", "target", "-n", namespace, "--wait=false"),
        "create a cmlworkerpool": ("create", "-f", "-"),
    }
    for what, args in attempts.items():
        proc = control_plane.kubectl(*args, input=pool("sneaky") if args[0] == "create" and args[1] == "-f"
                                     else None, check=False, kubeconfig=sa_kubeconfig)
        assert proc.returncode != 0, f"{what} was allowed: {proc.stdout}"
        assert "Forbidden" in proc.stderr or "forbidden" in proc.stderr, f"{what}: {proc.stderr}"
        assert SA_USER in proc.stderr, f"{what}: {proc.stderr}"

    # ...while what the role grants works with the same token, and nothing above had an effect.
    listed = control_plane.kubectl("get", "cmlworkerpools", "-n", namespace, "-o", "name", kubeconfig=sa_kubeconfig)
    assert listed.stdout.split() == ["cmlworkerpool.cml.dev/target"]
    assert control_plane.kubectl("get", "configmap", "sneaky", "-n", namespace, "--ignore-not-found",
                                 "-o", "name").stdout == ""


# --------------------------------------------------------------------------- peering component


@pytest.fixture
def peering_overlay(control_plane: ControlPlane, deployed: str, tmp_path: Path) -> Path:
    """An overlay of the base plus deploy/peering, applied for real (its CRD first, as deploy/README.md says)."""
    overlay = tmp_path / "peering-overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(DEPLOY, overlay)], "components": [os.path.relpath(PEERING, overlay)]}))
    control_plane.kubectl("apply", "--server-side", "-f", str(PEERING / "crds.yaml"))
    control_plane.wait_established(["customresourcedefinition.apiextensions.k8s.io/clusterkopfpeerings.kopf.dev"])
    control_plane.kubectl("apply", "-k", str(overlay))
    return overlay


def test_the_peering_component_turns_peering_on_with_its_own_rbac(control_plane, peering_overlay, sa_kubeconfig,
                                                                  kube, network, proxy, tmp_path):
    built = list(yaml.safe_load_all(control_plane.kubectl("kustomize", str(peering_overlay)).stdout))
    [deployment] = [o for o in built if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CML_PEERING"] == PEERING_NAME
    assert env["CML_LEADER_ELECTION"] == "false"  # the two exclude each other
    assert not [o for o in built if o["kind"] == "PodDisruptionBudget"]  # it would block drains of one replica
    assert can_i(control_plane, "patch", f"clusterkopfpeerings.kopf.dev/{PEERING_NAME}")
    assert not can_i(control_plane, "patch", "clusterkopfpeerings.kopf.dev/someone-else")
    assert not can_i(control_plane, "delete", f"clusterkopfpeerings.kopf.dev/{PEERING_NAME}")

    def peers() -> dict:
        raw = control_plane.kubectl("get", "clusterkopfpeering", PEERING_NAME, "-o", "json").stdout
        return json.loads(raw).get("status") or {}

    operator = run_operator(sa_kubeconfig, proxy.url, tmp_path / "operator.log", env={"CML_PEERING": PEERING_NAME})
    try:
        wait_for(peers, 30, what="the operator's keep-alive in the ClusterKopfPeering")
        kube.apply(worker_manifest("peered-1", network))
        kube.wait_condition("peered-1", "Ready")
        kube.delete("peered-1")
    finally:
        kube.run("delete", "cmlworker", "--all", "--wait=true", "--timeout=30s", check=False)
        operator.stop()

    log = operator.logs()
    assert f"peering '{PEERING_NAME}'" in log
    assert forbidden_lines(log) == []
    wait_for(lambda: not peers(), 15, what="the operator to remove its keep-alive on exit")


# --------------------------------------------------------------------------- d. IAM policy <-> EC2 client


def _self_calls(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, ast.Call]]:
    """(method name, call) for every ``self.method(...)`` call inside ``function`` (lambdas included)."""
    return [(node.func.attr, node) for node in ast.walk(function)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"]


def _argument(call: ast.Call, method: ast.FunctionDef | ast.AsyncFunctionDef, parameter: str) -> ast.expr | None:
    """The expression a call passes for ``parameter`` of ``method`` (positionally or by keyword)."""
    names = [a.arg for a in method.args.args][1:]  # without self
    index = names.index(parameter)
    if index < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == parameter), None)


def ec2_actions_called(path: Path = EC2_CLIENT) -> set[str]:
    """Every EC2 action the client passes to ``self._call(region, ACTION, ...)``, read from its syntax tree.

    The action may be a string literal; a local variable (every string literal
    assigned to it in the function counts: ``op = "A" if x else "B"``); or a
    parameter of a method that forwards it to ``self._call`` (such as a paging
    helper), in which case the callers of that method are read the same way.
    Anything else fails the test, so a new indirection cannot slip past it.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    [client] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EC2Client"]
    methods = {n.name: n for n in client.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    # Methods whose parameter names the EC2 action that reaches self._call: {method: parameter}.
    forwarders = {"_call": "operation"}
    assert [a.arg for a in methods["_call"].args.args][:3] == ["self", "region", "operation"]
    changed = True
    while changed:
        changed = False
        for name, method in methods.items():
            if name in forwarders:
                continue
            parameters = {a.arg for a in method.args.args}
            for callee, call in _self_calls(method):
                if callee in forwarders:
                    action = _argument(call, methods[callee], forwarders[callee])
                    if isinstance(action, ast.Name) and action.id in parameters:
                        forwarders[name] = action.id
                        changed = True

    actions: set[str] = set()
    for name, method in methods.items():
        for callee, call in _self_calls(method):
            if callee not in forwarders:
                continue
            where = f"{name}, line {call.lineno}"
            action = _argument(call, methods[callee], forwarders[callee])
            if isinstance(action, ast.Constant) and isinstance(action.value, str):
                actions.add(action.value)
            elif isinstance(action, ast.Name) and forwarders.get(name) == action.id:
                continue  # forwarded: its callers name the action
            elif isinstance(action, ast.Name):
                assigned = [
                    constant.value
                    for assign in ast.walk(method) if isinstance(assign, ast.Assign)
                    if any(isinstance(t, ast.Name) and t.id == action.id for t in assign.targets)
                    for constant in ast.walk(assign.value)
                    if isinstance(constant, ast.Constant) and isinstance(constant.value, str)
                ]
                assert assigned, f"{where}: cannot tell which EC2 action {action.id!r} names"
                actions.update(assigned)
            else:
                raise AssertionError(f"{where}: the EC2 action passed to {callee} is not a literal: "
                                     f"{ast.dump(action) if action else None}")
    return actions


def _statements(path: Path) -> list[dict]:
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    assert statements and all(s["Effect"] == "Allow" for s in statements)
    return statements


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _resources(statement: dict) -> list[str]:
    resource = statement["Resource"]
    return [resource] if isinstance(resource, str) else list(resource)


def test_the_ec2_client_is_read_from_its_source():
    called = ec2_actions_called()
    # The reader finds literals, the Monitor/Unmonitor choice made through a variable,
    # and actions passed through helpers that forward them (DescribeInstanceStatus pages).
    assert {"RunInstances", "DescribeInstances", "DescribeInstanceStatus", "CreateTags", "MonitorInstances",
            "UnmonitorInstances"} <= called
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", action) for action in called), called


def test_the_reader_follows_forwarding_helpers_and_refuses_what_it_cannot_resolve(tmp_path):
    source = tmp_path / "client.py"
    source.write_text(
        "class EC2Client:\n"
        "    def _call(self, region, operation, instance_id=None, **params): ...\n"
        "    def _pages(self, region, op, **params): return self._call(region, op, **params)\n"
        "    def _outer(self, region, what): return self._pages(region, what)\n"
        "    def a(self, r): self._outer(r, 'DescribeA')\n"
        "    def b(self, r): self._pages(r, op='DescribeB')\n"
        "    def c(self, r, on): name = 'C1' if on else 'C2'; self._call(r, name)\n")
    assert ec2_actions_called(source) == {"DescribeA", "DescribeB", "C1", "C2"}

    source.write_text(source.read_text() + "    def d(self, r): self._call(r, pick())\n")
    with pytest.raises(AssertionError, match="not a literal"):
        ec2_actions_called(source)


def test_the_iam_policy_allows_exactly_the_ec2_actions_the_client_calls():
    called = {f"ec2:{action}" for action in ec2_actions_called()}
    statements = _statements(IAM_POLICY)
    allowed = {a for s in statements for a in _actions(s)}
    ec2_allowed = {a for a in allowed if a.startswith("ec2:")}

    assert not called - ec2_allowed, f"the client calls actions the policy does not allow: {sorted(called - ec2_allowed)}"
    assert not ec2_allowed - called, f"the policy allows actions the client never calls: {sorted(ec2_allowed - called)}"
    assert allowed - ec2_allowed == {"iam:PassRole"}
    assert not any("*" in a for a in allowed)
    adoption = {a for s in _statements(IAM_ADOPTION_POLICY) for a in _actions(s)}
    assert adoption <= called and adoption == {"ec2:CreateTags"}


def test_the_iam_policy_scopes_every_change_to_instances_the_operator_manages():
    # Changes only on instances tagged as managed by this operator *in this cluster* (issue 10).
    managed = {f"ec2:ResourceTag/{TAG_MANAGED_BY}": MANAGED_BY, f"ec2:ResourceTag/{TAG_CLUSTER}": "CLUSTER_ID"}
    statements = _statements(IAM_POLICY)
    for statement in statements:
        actions, resources = _actions(statement), _resources(statement)
        conditions = statement.get("Condition", {})
        if all(a.startswith("ec2:Describe") for a in actions):
            assert resources == ["*"]  # Describe* cannot be scoped to resources
        elif actions == ["ec2:RunInstances"] and any(":instance/" in r for r in resources):
            assert conditions["StringEquals"] == {f"aws:RequestTag/{TAG_MANAGED_BY}": MANAGED_BY,
                                                  f"aws:RequestTag/{TAG_CLUSTER}": "CLUSTER_ID"}
            assert conditions["Null"] == {f"aws:RequestTag/{TAG_UID}": "false"}
            assert sorted(r.split(":")[-1] for r in resources) == ["instance/*", "volume/*"]
        elif actions == ["ec2:RunInstances"] and any(":image/" in r for r in resources):
            # Image trust: only images the operator's own account owns (widen with "amazon" or account ids).
            assert resources == ["arn:aws:ec2:*::image/*"]
            assert conditions == {"StringEquals": {"ec2:Owner": ["${aws:PrincipalAccount}"]}}
        elif actions == ["ec2:RunInstances"]:
            assert not conditions
            assert not any(":instance/" in r or ":volume/" in r or ":image/" in r for r in resources)
        elif actions == ["ec2:CreateTags"] and "ec2:CreateAction" in conditions.get("StringEquals", {}):
            assert conditions == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
        elif actions == ["ec2:ModifyInstanceAttribute"] and resources == ["arn:aws:ec2:*:*:security-group/*"]:
            # The groups a security-group change names; the instance itself needs the managed-tag statement.
            assert not conditions
        elif actions == ["iam:PassRole"]:
            assert resources and all(r.startswith("arn:aws:iam::") and ":role/" in r for r in resources)
            assert conditions == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
        else:
            assert resources == ["arn:aws:ec2:*:*:instance/*"], statement
            assert conditions == {"StringEquals": managed}, statement
    mutating = {a for s in statements for a in _actions(s) if not a.startswith("ec2:Describe")}
    assert {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:DeleteTags", "iam:PassRole"} <= mutating


def test_the_kms_policy_lets_ec2_use_a_customer_key_for_root_volumes_and_nothing_more():
    statements = _statements(IAM_POLICY.parent / "iam-policy-kms.json")
    actions = {a for s in statements for a in _actions(s)}
    assert actions == {"kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt", "kms:DescribeKey"}
    for statement in statements:
        conditions = statement.get("Condition", {})
        assert conditions.get("StringLike") == {"kms:ViaService": "ec2.*.amazonaws.com"}
        if "kms:CreateGrant" in _actions(statement):
            assert conditions.get("Bool") == {"kms:GrantIsForAWSResource": "true"}
