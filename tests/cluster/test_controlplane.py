"""The test control plane is a real Kubernetes API server, not a fake.

Each test checks behaviour that only the genuine kube-apiserver + etcd give:
version, watches, CRD schema and CEL validation, optimistic concurrency,
finalizers, RBAC with TokenRequest tokens, events, and process hygiene.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.cluster.controlplane import (
    ControlPlane,
    ControlPlaneConfig,
    ControlPlaneError,
    KubectlError,
    has_controller_manager,
    pid_alive,
    wait_until,
)
from tests.support.motoserver import MotoServer, amazon_image

# Tests using a cluster fixture get the `cluster` marker from tests/conftest.py.

#: The version tests/cluster/build.sh pins; the version matrix (make test-k8s) runs another
#: kube-apiserver with the same kubectl and says which in CML_K8S_VERSION.
KUBECTL_VERSION = "v1.37.2"
K8S_VERSION = os.environ.get("CML_K8S_VERSION") or KUBECTL_VERSION

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.cml.dev
spec:
  group: test.cml.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              limit: {type: integer}
            x-kubernetes-validations:
            - rule: "!has(self.limit) || self.size <= self.limit"
              message: size must not exceed limit
"""


def widget(name: str, namespace: str, **spec: object) -> str:
    metadata = {"name": name, "namespace": namespace}
    return yaml.safe_dump({"apiVersion": "test.cml.dev/v1", "kind": "Widget", "metadata": metadata, "spec": spec})


def configmap(name: str, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data or None)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def widget_crd(control_plane: ControlPlane) -> Iterator[str]:
    names = control_plane.apply(WIDGET_CRD)
    control_plane.wait_established(names)
    yield names[0]
    control_plane.kubectl("delete", names[0], "--wait=false", check=False)


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


def test_server_is_kube_apiserver_of_the_pinned_version(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION
    assert versions["clientVersion"]["gitVersion"] == KUBECTL_VERSION
    assert control_plane.startup_seconds is not None and control_plane.startup_seconds < 60


def test_configmap_create_get_and_watch(core: client.CoreV1Api, namespace: str) -> None:
    name = unique("cm")
    # Watching from the list's resourceVersion sees every later change, however
    # long the watch takes to connect: no race with the writes below.
    since = core.list_namespaced_config_map(namespace).metadata.resource_version
    events: queue.Queue[tuple[str, dict[str, str] | None]] = queue.Queue()
    watcher = watch.Watch()

    def stream() -> None:
        for event in watcher.stream(core.list_namespaced_config_map, namespace, resource_version=since,
                                    field_selector=f"metadata.name={name}", timeout_seconds=30):
            events.put((event["type"], event["object"].data))
            if event["type"] == "MODIFIED":
                return

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()

    core.create_namespaced_config_map(namespace, configmap(name, k="1"))
    assert core.read_namespaced_config_map(name, namespace).data == {"k": "1"}
    core.patch_namespaced_config_map(name, namespace, {"data": {"k": "2"}})

    seen = []
    deadline = time.monotonic() + 30
    while ("MODIFIED", {"k": "2"}) not in seen and time.monotonic() < deadline:
        try:
            seen.append(events.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            break
    watcher.stop()
    assert seen == [("ADDED", {"k": "1"}), ("MODIFIED", {"k": "2"})]


def test_crd_is_established_and_served(control_plane: ControlPlane, widget_crd: str, namespace: str) -> None:
    status = control_plane.kubectl(
        "get", widget_crd, "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
    ).stdout
    assert status == "True"
    control_plane.kubectl("apply", "-f", "-", input=widget("ok", namespace, size=3, limit=5))
    got = json.loads(control_plane.kubectl("get", "widgets.test.cml.dev", "ok", "-n", namespace, "-o", "json").stdout)
    assert got["spec"] == {"size": 3, "limit": 5}


def test_crd_schema_rejects_invalid_field(control_plane: ControlPlane, widget_crd: str, namespace: str) -> None:
    result = control_plane.kubectl("apply", "-f", "-", input=widget("small", namespace, size=0), check=False)
    assert result.returncode != 0
    assert "spec.size" in result.stderr
    assert "greater than or equal to 1" in result.stderr
    missing = control_plane.kubectl("get", "widgets.test.cml.dev", "small", "-n", namespace, check=False)
    assert "NotFound" in missing.stderr


def test_crd_cel_rule_rejects_object(control_plane: ControlPlane, widget_crd: str, namespace: str) -> None:
    result = control_plane.kubectl("apply", "-f", "-", input=widget("big", namespace, size=7, limit=3), check=False)
    assert result.returncode != 0
    assert "size must not exceed limit" in result.stderr


def test_stale_resource_version_update_conflicts(core: client.CoreV1Api, namespace: str) -> None:
    name = unique("cm")
    created = core.create_namespaced_config_map(namespace, configmap(name, v="0"))
    stale = created.metadata.resource_version
    current = core.read_namespaced_config_map(name, namespace)
    current.data = {"v": "1"}
    core.replace_namespaced_config_map(name, namespace, current)

    outdated = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, resource_version=stale), data={"v": "stale"})
    with pytest.raises(ApiException) as error:
        core.replace_namespaced_config_map(name, namespace, outdated)
    assert error.value.status == 409
    assert core.read_namespaced_config_map(name, namespace).data == {"v": "1"}


def test_finalizer_holds_deletion_until_removed(core: client.CoreV1Api, namespace: str) -> None:
    name = unique("cm")
    meta = client.V1ObjectMeta(name=name, finalizers=["test.cml.dev/hold"])
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=meta))
    core.delete_namespaced_config_map(name, namespace)

    held = core.read_namespaced_config_map(name, namespace)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["test.cml.dev/hold"]

    core.patch_namespaced_config_map(name, namespace, {"metadata": {"finalizers": None}})

    def gone() -> bool:
        try:
            core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=15, what=f"configmap {name} to be deleted")


def test_rbac_forbids_service_account_without_permissions(control_plane: ControlPlane, namespace: str) -> None:
    sa_kubeconfig = control_plane.service_account_kubeconfig("nobody", namespace, create=True)
    whoami = control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa_kubeconfig)
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:nobody"

    denied = control_plane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=sa_kubeconfig, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and 'cannot list resource "configmaps"' in denied.stderr

    # The same token is let in once a Role allows it: the denial came from RBAC.
    control_plane.kubectl("create", "role", "read-cm", "--verb=list", "--resource=configmaps", "-n", namespace)
    control_plane.kubectl("create", "rolebinding", "read-cm", "--role=read-cm",
                          f"--serviceaccount={namespace}:nobody", "-n", namespace)

    def allowed() -> bool:
        result = control_plane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=sa_kubeconfig, check=False)
        return result.returncode == 0

    wait_until(allowed, timeout=15, what="the RoleBinding to take effect")


def test_event_about_configmap_is_listed(control_plane: ControlPlane, core: client.CoreV1Api, namespace: str) -> None:
    name = unique("cm")
    cm = core.create_namespaced_config_map(namespace, configmap(name))
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.tested", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": namespace, "uid": cm.metadata.uid,
        },
        "reason": "Tested",
        "message": "checked by the control-plane tests",
        "type": "Normal",
        "source": {"component": "cml-tests"},
        "count": 1,
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(event))
    selector = f"involvedObject.name={name}"
    listed = control_plane.kubectl("get", "events", "-n", namespace, "--field-selector", selector).stdout
    assert "Tested" in listed and "checked by the control-plane tests" in listed and f"configmap/{name}" in listed


def test_restart_apiserver_keeps_data(control_plane: ControlPlane, namespace: str) -> None:
    name = unique("cm")
    control_plane.kubectl("create", "configmap", name, "-n", namespace, "--from-literal=survives=yes")
    etcd_pid, apiserver_pid = control_plane.etcd.pid, control_plane.apiserver.pid
    port = control_plane.apiserver_port

    seconds = control_plane.restart_apiserver()

    assert not pid_alive(apiserver_pid)
    assert control_plane.apiserver.pid != apiserver_pid and control_plane.etcd.pid == etcd_pid
    assert control_plane.apiserver_port == port and seconds == control_plane.restart_seconds
    got = control_plane.kubectl("get", "configmap", name, "-n", namespace, "-o", "jsonpath={.data.survives}").stdout
    assert got == "yes"


def test_pods_are_admitted_without_waiting_for_the_default_service_account(control_plane: ControlPlane,
                                                                         namespace: str) -> None:
    """The controller manager makes "default" ServiceAccounts a moment late: the admission plugin is off."""
    control_plane.kubectl("run", "idle", "-n", namespace, "--image=example.invalid/idle", "--restart=Never")
    phase = control_plane.kubectl("get", "pod", "idle", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Pending"  # and stays so: there are no nodes


def test_stop_leaves_no_processes_and_no_directory(control_plane_bin_dir: Path) -> None:
    """A separate, short-lived control plane (RBAC off): stop() cleans up everything, twice."""
    with_manager = has_controller_manager(control_plane_bin_dir)
    plane = ControlPlane(ControlPlaneConfig(rbac=False, bin_dir=control_plane_bin_dir, controller_manager=with_manager))
    with plane:
        pids, directory = plane.pids, plane.dir
        assert len(pids) == (3 if with_manager else 2) and all(pid_alive(pid) for pid in pids)
        assert directory is not None and (directory / "etcd").is_dir()
        # AlwaysAllow: a ServiceAccount with no roles may list configmaps.
        sa = plane.service_account_kubeconfig("anyone", "default", create=True)
        plane.kubectl("get", "configmaps", kubeconfig=sa)
    assert not any(pid_alive(pid) for pid in pids)
    assert not directory.exists()
    plane.stop()  # idempotent
    assert not any(pid_alive(pid) for pid in pids)


def test_failed_start_reports_log_tail_and_cleans_up(control_plane_bin_dir: Path) -> None:
    config = ControlPlaneConfig(extra_apiserver_args=("--no-such-flag",), bin_dir=control_plane_bin_dir)
    plane = ControlPlane(config)
    with pytest.raises(ControlPlaneError, match="unknown flag: --no-such-flag"):
        plane.start()
    assert plane.dir is None and plane.pids
    assert not any(pid_alive(pid) for pid in plane.pids)


def test_kubectl_error_includes_stderr(control_plane: ControlPlane) -> None:
    with pytest.raises(KubectlError, match="NotFound"):
        control_plane.kubectl("get", "configmap", "does-not-exist", "-n", "default")


def test_moto_server_serves_ec2_resets_and_stops() -> None:
    """The EC2 stand-in the end-to-end tests use: a real HTTP server in its own process."""
    with MotoServer() as moto:
        ec2 = boto3.client("ec2", endpoint_url=moto.url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        image = amazon_image(ec2)["ImageId"]
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
        assert len(ec2.describe_instances()["Reservations"]) == 1
        moto.reset()
        assert ec2.describe_instances()["Reservations"] == []
        pid, directory = moto.pid, moto.dir
        assert pid is not None and pid_alive(pid)
    assert not pid_alive(pid)
    assert directory is not None and not directory.exists()
