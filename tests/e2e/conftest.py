"""End-to-end fixtures: the real API server, moto_server behind the fault proxy, the operator as a process.

Each test gets a fresh namespace and its own operator process watching only that
namespace, so tests cannot see each other's workers. moto is reset per test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import config
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.rest import ApiException

from tests.bench.measure import resync_passes
from tests.cluster.controlplane import ControlPlane
from tests.conftest import CRDS_DIR
from tests.support.ec2iam import DEFAULT_POLICIES, REPO
from tests.support.motoserver import MotoServer, own_image
from tests.support.processes import FAKE_AWS_ENV, FaultProxyProcess, OperatorProcess, guarded_by, wait_for

REGION = "us-east-1"
#: The strict EC2 world every e2e test runs in (docs/reliability.md): EC2's clock ("off" makes it moto's
#: instant world again) and IAM on the operator's key ("0" turns it off). Set to check that a test
#: fails against the kind double.
EC2_TIMING = os.environ.get("CML_EC2_TIMING", "test")
EC2_IAM = os.environ.get("CML_EC2_IAM", "1") not in ("0", "false", "no", "off")
#: The policies an e2e operator gets: the base policy and the adoption policy, which an install that lets
#: workers name an instance (spec.instanceId) or discover instances attaches (docs/install.md); a test
#: of the base policy alone passes iam_policies=DEFAULT_POLICIES.
E2E_POLICIES = (*DEFAULT_POLICIES, "deploy/iam-policy-adoption.json")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def ec2_proxy(moto_server: MotoServer) -> Iterator[FaultProxyProcess]:
    proxy = FaultProxyProcess(moto_server.url).start()
    proxy.set_timing(EC2_TIMING)
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(ec2_proxy: FaultProxyProcess, moto: MotoServer) -> Iterator[FaultProxyProcess]:
    """The fault proxy with no faults, zeroed counters and no remembered tokens (moto itself reset too)."""
    ec2_proxy.clear_faults()
    ec2_proxy.reset_counts()
    ec2_proxy.clear_tokens()
    ec2_proxy.reset_timing()
    ec2_proxy.set_timing(EC2_TIMING)
    ec2_proxy.set_iam("", access_keys=())  # the operator_factory turns it on with the operator's cluster id
    yield ec2_proxy
    ec2_proxy.clear_faults()


@pytest.fixture
def aws(moto: MotoServer) -> Any:
    """A boto3 EC2 client straight to moto: the ground truth, bypassing the proxy's counters."""
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto.url,
                        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def network(aws: Any) -> dict[str, str]:
    subnet = aws.describe_subnets()["Subnets"][0]
    group = aws.create_security_group(GroupName="cml-e2e", Description="e2e", VpcId=subnet["VpcId"])["GroupId"]
    # spec.amiOwners defaults to [self]: the tests launch an image of moto's own account.
    return {"subnet": subnet["SubnetId"], "sg": group, **own_image(aws, subnet["SubnetId"])}


class Kube:
    """kubectl against the test's namespace, with JSON results; reads over one kept-alive connection.

    What a user does (apply, patch, scale, delete, the printed tables) goes through kubectl.
    The reads tests poll (a worker, a pool, events) go through the admin ApiClient: a kubectl
    process per poll, five a second per waiting test, each with its own TLS handshake, was
    most of the CPU a parallel run spent (kubectl and kube-apiserver).
    """

    def __init__(self, plane: ControlPlane, namespace: str, api: ApiClient | None = None) -> None:
        self.plane = plane
        self.namespace = namespace
        self.api = api or config.new_client_from_config(config_file=str(plane.kubeconfig_path))
        #: Operators the test started (operator_factory adds them): waits end at once if one dies.
        self.operators: list[OperatorProcess] = []

    def check_operators(self) -> None:
        """Raise ProcessExited if an operator of this test exited without the test ending it."""
        for process in self.operators:
            process.check_alive()

    def run(self, *args: str, input: str | None = None, check: bool = True):
        return self.plane.kubectl(*args, "-n", self.namespace, input=input, check=check)

    def apply(self, manifest: dict | str, check: bool = True):
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.run("apply", "-f", "-", input=text, check=check)

    def read(self, plural: str, name: str | None = None, group: str = "cml.dev/v1alpha1", **query: str) -> dict:
        """GET a namespaced object (or the list, with ``labelSelector=``/``fieldSelector=``) as JSON."""
        prefix = "/api/v1" if group == "v1" else f"/apis/{group}"
        path = f"{prefix}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")
        response = self.api.call_api(path, "GET", query_params=list(query.items()), auth_settings=["BearerToken"],
                                     _preload_content=False, _return_http_data_only=True, _request_timeout=30)
        return json.loads(response.data)

    def get(self, name: str) -> dict:
        return self.read("cmlworkers", name)

    def exists(self, name: str) -> bool:
        try:
            self.read("cmlworkers", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_spec(self, name: str, spec: dict) -> None:
        self.run("patch", "cmlworker", name, "--type=merge", "-p", json.dumps({"spec": spec}))

    def condition(self, name: str, kind: str) -> dict | None:
        for item in self.get(name).get("status", {}).get("conditions", []):
            if item["type"] == kind:
                return item
        return None

    def wait_condition(self, name: str, kind: str, reason: str | None = None, status: str = "True",
                       timeout: float = 60) -> dict:
        def matches() -> dict | None:
            item = self.condition(name, kind)
            if item and item["status"] == status and (reason is None or item["reason"] == reason):
                return item
            return None

        try:
            return wait_for(matches, timeout, what=f"{name} {kind}={status} reason={reason}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; status now: {json.dumps(self.get(name).get('status'), indent=1)}") from exc

    def events(self, name: str) -> list[dict]:
        items = self.read("events", group="v1", fieldSelector=f"involvedObject.name={name}")["items"]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def event_reasons(self, name: str, type_: str | None = None) -> list[str]:
        return [e["reason"] for e in self.events(name) if type_ is None or e["type"] == type_]

    def wait_event(self, name: str, reason: str, type_: str | None = "Warning", count: int = 1,
                   timeout: float = 15) -> list[str]:
        """Wait until ``reason`` was posted ``count`` times; return the reasons then.

        Kopf posts a handler's events from a queue of its own, so one can land just after the
        status patch of the same pass: a test that saw the condition must wait for the event.
        """
        return wait_for(lambda: (found := self.event_reasons(name, type_)).count(reason) >= count and found,
                        timeout, what=f"{count} {type_ or ''} event(s) {reason} on {name}")

    def delete(self, name: str, wait: bool = True, timeout: str = "60s"):
        return self.run("delete", "cmlworker", name, f"--wait={str(wait).lower()}", f"--timeout={timeout}")


@pytest.fixture
def kube(control_plane: ControlPlane, namespace: str, api_client: ApiClient) -> Kube:
    return Kube(control_plane, namespace, api_client)


def namespaced_resources(crds_dir: Path = CRDS_DIR) -> list[tuple[str, str, str]]:
    """(group, storage version, plural) of every namespaced custom resource in crds/."""
    found = []
    for path in sorted(crds_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["scope"] == "Namespaced":
                version = next(v["name"] for v in doc["spec"]["versions"] if v.get("storage"))
                found.append((doc["spec"]["group"], version, doc["spec"]["names"]["plural"]))
    return found


def abandon(api_client: ApiClient, namespace: str) -> None:
    """Delete what a test left in its namespace at once, without an operator: strip the finalizers.

    The test is over and its operators are gone, so nothing here is checked any more; but an
    object left with a finalizer would keep its namespace Terminating, and one left without a
    deletion would be picked up by a later test's all-namespaces operator.
    """
    objects = CustomObjectsApi(api_client)
    for group, version, plural in namespaced_resources():
        try:
            items = objects.list_namespaced_custom_object(group, version, namespace, plural)["items"]
        except ApiException:
            continue  # not served (yet): nothing of it to delete
        for item in items:
            name = item["metadata"]["name"]
            try:
                if item["metadata"].get("finalizers"):
                    objects.patch_namespaced_custom_object(group, version, namespace, plural, name,
                                                           {"metadata": {"finalizers": None}})
                objects.delete_namespaced_custom_object(group, version, namespace, plural, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def operator_factory(control_plane: ControlPlane, api_client: ApiClient, proxy: FaultProxyProcess, namespace: str,
                     kube: Kube, request: pytest.FixtureRequest, tmp_path) -> Iterator[Any]:
    """Start operators watching the test's namespace; all are killed (and dumped on failure) afterwards.

    Teardown checks nothing, so it does not wait: the operators get SIGKILL (a test that checks
    how an operator stops stops it itself) and what the test left is deleted without them
    (``abandon``); moto is reset before the next test anyway.
    """
    started: list[OperatorProcess] = []

    def start(*extra_args: str, fast: bool = True, env: dict[str, str] | None = None,
              wait: bool = True, iam_policies: tuple[str, ...] = E2E_POLICIES,
              kubeconfig: Path | None = None) -> OperatorProcess:
        args = (*OperatorProcess.FAST_ARGS, *extra_args) if fast else extra_args
        if EC2_IAM:  # the policy as installed for this operator: CLUSTER_ID is its cluster id
            proxy.set_iam(operator_cluster_id(args, env or {}, control_plane), iam_policies)
        process = OperatorProcess(kubeconfig or control_plane.kubeconfig_path, proxy.url, namespaces=[namespace],
                                  args=args,
                                  env=env or {}, log_path=tmp_path / f"operator-{len(started)}.log")
        started.append(process)
        kube.operators.append(process)
        return process.start(wait=wait)

    with guarded_by(kube.check_operators):  # every wait_for of the test stops at an operator crash
        yield start
    for process in started:
        process.kill()
    abandon(api_client, namespace)
    failed = any(getattr(getattr(request.node, f"report_{when}", None), "failed", False)
                 for when in ("setup", "call"))
    if failed:
        for index, process in enumerate(started):
            print(f"\n----- operator {index} log (tail) -----\n{process.logs()[-6000:]}")


def policy_with_image_owners(directory: Path, *owners: str) -> str:
    """deploy/iam-policy.json with ``owners`` added to RunInstancesOnlyOwnImages' ec2:Owner, as docs/install.md
    tells an install whose workers name other owners in spec.amiOwners; returns the file's path."""
    policy = json.loads((REPO / DEFAULT_POLICIES[0]).read_text())
    for statement in policy["Statement"]:
        if statement.get("Sid") == "RunInstancesOnlyOwnImages":
            statement["Condition"]["StringEquals"]["ec2:Owner"] += list(owners)
    path = directory / "iam-policy-owners.json"
    path.write_text(json.dumps(policy))
    return str(path)


def operator_cluster_id(args: tuple[str, ...], env: dict[str, str], plane: ControlPlane) -> str:
    """--cluster-id, else $CML_CLUSTER_ID, else the operator's default: kube-system's uid (docs/ownership.md)."""
    if "--cluster-id" in args:
        return args[args.index("--cluster-id") + 1]
    if env.get("CML_CLUSTER_ID"):
        return env["CML_CLUSTER_ID"]
    return plane.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout.strip()


@pytest.fixture
def operator(operator_factory: Any) -> OperatorProcess:
    """One operator with the fast test intervals."""
    return operator_factory()


@pytest.fixture
def adopting_operator(operator_factory: Any, namespace: str) -> OperatorProcess:
    """One operator that lets the test's namespace adopt and import instances (--adoption-namespaces)."""
    return operator_factory("--adoption-namespaces", namespace)


def worker_manifest(name: str, network: dict[str, str], **spec: Any) -> dict:
    body = {"region": REGION, "amiId": network["ami"], "subnetId": network["subnet"],
            "securityGroupIds": [network["sg"]], "instanceType": "m5.large"}
    body.update(spec)
    body = {k: v for k, v in body.items() if v is not None}
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker", "metadata": {"name": name}, "spec": body}


def wait_resync_passes(proxy: FaultProxyProcess, count: int, timeout: float = 120) -> None:
    """Wait until the operator has begun ``count`` more resync passes (as the fault proxy saw them).

    ``count`` pass starts after now include ``count - 1`` whole passes: ``2`` means every
    cache was refreshed from EC2 at least once since the call. A state to wait for, where a
    fixed sleep would guess how long a pass takes on a loaded machine.
    """
    _, already = proxy.call_log()

    def begun() -> bool:
        calls, _ = proxy.call_log(since=already)
        _, passes = resync_passes(calls, min_gap=0.5)  # the pages of one pass come together
        return len(passes) >= count

    wait_for(begun, timeout, interval=0.5, what=f"{count} resync pass(es) at the fault proxy")


def instances_of(aws: Any, uid: str, include_gone: bool = False) -> list[dict]:
    """Instances carrying the worker's uid tag, as moto sees them."""
    reservations = aws.describe_instances(Filters=[{"Name": "tag:cml.dev/worker-uid", "Values": [uid]}])
    found = [i for r in reservations["Reservations"] for i in r["Instances"]]
    return found if include_gone else [i for i in found if i["State"]["Name"] not in ("shutting-down", "terminated")]


def tags_of(aws: Any, instance_id: str) -> dict[str, str]:
    raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def state_of(aws: Any, instance_id: str) -> str:
    raw = aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return raw["State"]["Name"]
