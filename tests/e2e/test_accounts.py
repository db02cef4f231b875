"""CMLAccounts end to end: one operator, several AWS accounts (moto keeps an assumed role's account apart).

Each account is a role in its own moto account (111111111111, 222222222222): an instance
launched there is seen only with that account's credentials, which the tests use as the
ground truth. STS goes through the fault proxy like EC2, so refusals can be injected there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml

from tests.e2e.conftest import REGION, Kube, instances_of, worker_manifest
from tests.support.faultproxy import FaultRule
from tests.support.motoserver import MotoServer, own_image
from tests.support.processes import FAKE_AWS_ENV, wait_for

ACCOUNT_A, ACCOUNT_B = "111111111111", "222222222222"


def assumed(moto: MotoServer, account: str, service: str = "ec2") -> Any:
    """A boto3 client of ``service`` acting in ``account`` (straight to moto: the ground truth)."""
    base = dict(region_name=REGION, endpoint_url=moto.url, aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    creds = boto3.client("sts", **base).assume_role(RoleArn=f"arn:aws:iam::{account}:role/cml-test",
                                                    RoleSessionName="cml-e2e-ground-truth")["Credentials"]
    return boto3.client(service, **{**base, "aws_access_key_id": creds["AccessKeyId"],
                                    "aws_secret_access_key": creds["SecretAccessKey"],
                                    "aws_session_token": creds["SessionToken"]})


def network_in(ec2: Any) -> dict[str, str]:
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.create_security_group(GroupName=f"cml-e2e-{uuid.uuid4().hex[:6]}", Description="e2e",
                                      VpcId=subnet["VpcId"])["GroupId"]
    return {"subnet": subnet["SubnetId"], "sg": group, **own_image(ec2, subnet["SubnetId"])}


class Accounts:
    """CMLAccounts of one test (cluster-scoped: named per test, deleted afterwards)."""

    def __init__(self, kube: Kube, tag: str) -> None:
        self.kube = kube
        self.tag = tag
        self.names: list[str] = []

    def name(self, short: str) -> str:
        return f"{short}-{self.tag}"

    def apply(self, short: str, account: str, selects: str, **spec: Any) -> str:
        name = self.name(short)
        body = {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLAccount", "metadata": {"name": name},
                "spec": {"roleArn": f"arn:aws:iam::{account}:role/cml-operator-target", "externalId": "cml-e2e",
                         "namespaceSelector": {"matchLabels": {"cml-e2e-team": selects}}, **spec}}
        self.kube.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        self.names.append(name)
        return name

    def get(self, name: str) -> dict:
        return json.loads(self.kube.plane.kubectl("get", "cmlaccount", name, "-o", "json").stdout)

    def condition(self, name: str, kind: str) -> dict | None:
        return next((c for c in self.get(name).get("status", {}).get("conditions", []) if c["type"] == kind), None)

    def delete_all(self) -> None:
        for name in self.names:
            self.kube.plane.kubectl("delete", "cmlaccount", name, "--wait=false", check=False)


@pytest.fixture
def accounts(kube: Kube) -> Iterator[Accounts]:
    registry = Accounts(kube, uuid.uuid4().hex[:6])
    yield registry
    registry.delete_all()


def label(kube: Kube, namespace: str, team: str) -> None:
    kube.plane.kubectl("label", "namespace", namespace, f"cml-e2e-team={team}", "--overwrite")


@pytest.fixture
def second_namespace(kube: Kube) -> Iterator[str]:
    name = f"{kube.namespace[:50]}-b"
    kube.plane.kubectl("create", "namespace", name)
    yield name
    kube.plane.kubectl("delete", "cmlworker", "--all", "-n", name, "--wait=true", "--timeout=30s", check=False)
    kube.plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def orphan_gauge(metrics: str, account: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith("cml_orphan_instances{") and f'account="{account}"' in line and REGION in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_two_namespaces_launch_into_two_accounts_with_one_operator_and_never_cross(
        kube, moto, proxy, accounts, second_namespace, operator_factory):
    team_a, team_b = f"a-{accounts.tag}", f"b-{accounts.tag}"
    label(kube, kube.namespace, team_a)
    label(kube, second_namespace, team_b)
    third = f"{kube.namespace[:50]}-c"  # watched, but no account selects it
    kube.plane.kubectl("create", "namespace", third)
    ec2_a, ec2_b, ec2_own = assumed(moto, ACCOUNT_A), assumed(moto, ACCOUNT_B), boto3.client(
        "ec2", region_name=REGION, endpoint_url=moto.url, aws_access_key_id="testing",
        aws_secret_access_key="testing")
    net_a, net_b = network_in(ec2_a), network_in(ec2_b)
    name_a = accounts.apply("team-a", ACCOUNT_A, team_a)
    name_b = accounts.apply("team-b", ACCOUNT_B, team_b)
    # Team A may adopt (--adoption-namespaces), so naming B's instance meets the account boundary, not the flag.
    operator = operator_factory("--namespace", second_namespace, "--namespace", third, "--require-account",
                                "--adoption-namespaces", kube.namespace)
    try:
        kube.apply(worker_manifest("w-a", net_a))
        Kube(kube.plane, second_namespace).apply(worker_manifest("w-b", net_b))
        Kube(kube.plane, third).apply(worker_manifest("w-c", net_a))
        kube_b, kube_c = Kube(kube.plane, second_namespace), Kube(kube.plane, third)
        kube.wait_condition("w-a", "Ready", timeout=90)
        kube_b.wait_condition("w-b", "Ready", timeout=90)

        # Each worker says which account it is in, and its instance lives there and nowhere else.
        a, b = kube.get("w-a"), kube_b.get("w-b")
        assert a["status"]["account"] == {"name": name_a, "id": ACCOUNT_A}
        assert b["status"]["account"] == {"name": name_b, "id": ACCOUNT_B}
        uid_a, uid_b = a["metadata"]["uid"], b["metadata"]["uid"]
        assert [i["InstanceId"] for i in instances_of(ec2_a, uid_a)] == [a["status"]["instanceId"]]
        assert [i["InstanceId"] for i in instances_of(ec2_b, uid_b)] == [b["status"]["instanceId"]]
        for other, uid in ((ec2_b, uid_a), (ec2_own, uid_a), (ec2_a, uid_b), (ec2_own, uid_b)):
            assert instances_of(other, uid, include_gone=True) == []
        for name in (name_a, name_b):
            assert accounts.condition(name, "Ready")["status"] == "True"
        assert accounts.get(name_a)["status"]["accountId"] == ACCOUNT_A

        # An unselected namespace is refused (--require-account), with no instance anywhere.
        c = kube_c.wait_condition("w-c", "Stalled", reason="AccountNotAllowed", timeout=60)
        assert third in c["message"]
        # Naming an account that does not select the namespace is refused too.
        kube.apply(worker_manifest("w-a-wants-b", net_b, accountRef={"name": name_b}))
        refused = kube.wait_condition("w-a-wants-b", "Stalled", reason="AccountNotAllowed", timeout=60)
        assert name_b in refused["message"] and kube.namespace in refused["message"]
        uid_c, uid_refused = kube_c.get("w-c")["metadata"]["uid"], kube.get("w-a-wants-b")["metadata"]["uid"]
        for client in (ec2_a, ec2_b, ec2_own):
            assert instances_of(client, uid_c, include_gone=True) == []
            assert instances_of(client, uid_refused, include_gone=True) == []

        # Team A cannot reach team B's instance by naming it: in A's account it does not exist.
        b_instance = b["status"]["instanceId"]
        kube.apply(worker_manifest("w-a-steals", net_a, instanceId=b_instance, amiId=None,
                                   subnetId=None))
        kube.wait_condition("w-a-steals", "Stalled", reason="InstanceNotFound", timeout=60)
        [still] = instances_of(ec2_b, uid_b)
        assert still["InstanceId"] == b_instance and still["State"]["Name"] == "running"
        tags = {t["Key"]: t["Value"] for t in still["Tags"]}
        assert tags["cml.dev/worker-uid"] == uid_b

        # Orphans are found per account: an instance in B tagged for this cluster whose worker is gone.
        cluster_id = kube.plane.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}").stdout
        ec2_b.run_instances(ImageId=net_b["ami"], MinCount=1, MaxCount=1, SubnetId=net_b["subnet"],
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                {"Key": "cml.dev/worker-uid", "Value": str(uuid.uuid4())},
                                {"Key": "cml.dev/worker", "Value": f"{second_namespace}/gone"},
                                {"Key": "cml.dev/cluster", "Value": cluster_id},
                                {"Key": "cml.dev/managed-by", "Value": "cml-operator"}]}])
        wait_for(lambda: orphan_gauge(operator.metrics(), ACCOUNT_B) == 1, 60,
                 what="one orphan reported in account B")
        assert orphan_gauge(operator.metrics(), ACCOUNT_A) == 0
        assert 'account="%s"' % ACCOUNT_A in operator.metrics()  # EC2 calls are counted per account
    finally:
        kube.plane.kubectl("delete", "cmlworker", "--all", "-n", third, "--wait=false", check=False)
        kube.plane.kubectl("delete", "namespace", third, "--wait=false", check=False)

    # Deleting terminates each instance in its own account.
    kube.delete("w-a")
    kube_b.delete("w-b")
    assert instances_of(ec2_a, uid_a) == [] and instances_of(ec2_b, uid_b) == []


def test_a_role_that_cannot_be_assumed_stalls_the_worker_without_any_ec2_call(
        kube, moto, proxy, accounts, operator_factory):
    team = f"a-{accounts.tag}"
    label(kube, kube.namespace, team)
    net = network_in(assumed(moto, ACCOUNT_A))
    proxy.set_faults(FaultRule("AccessDenied", action="AssumeRole", status=403,
                               message="User is not authorized to perform: sts:AssumeRole"))
    proxy.reset_counts()
    name = accounts.apply("denied", ACCOUNT_A, team)
    operator_factory()
    kube.apply(worker_manifest("w-denied", net))
    stalled = kube.wait_condition("w-denied", "Stalled", reason="AssumeRoleFailed", timeout=60)
    assert "AccessDenied" in stalled["message"]
    wait_for(lambda: (accounts.condition(name, "Stalled") or {}).get("reason") == "AssumeRoleFailed", 60,
             what="the CMLAccount Stalled AssumeRoleFailed")
    calls = proxy.calls()
    assert calls.get("AssumeRole"), calls
    assert {action for action in calls if action != "AssumeRole"} == set(), calls
    assert "account" not in kube.get("w-denied").get("status", {})


@pytest.mark.slow
def test_credentials_are_renewed_before_they_expire(kube, moto, proxy, accounts, operator_factory):
    team = f"a-{accounts.tag}"
    label(kube, kube.namespace, team)
    net = network_in(assumed(moto, ACCOUNT_A))
    # A 900 s session renewed 885 s before it ends: every 15 s, so the test sees several renewals.
    name = accounts.apply("short", ACCOUNT_A, team, sessionDurationSeconds=900)
    operator = operator_factory("--credential-refresh-margin", "885")
    kube.apply(worker_manifest("w-short", net))
    kube.wait_condition("w-short", "Ready", timeout=90)
    first = accounts.get(name)["status"]["sessionExpiration"]
    renewed_before = proxy.count("AssumeRole", "200")
    wait_for(lambda: proxy.count("AssumeRole", "200") >= renewed_before + 2, 90, what="two renewals")
    wait_for(lambda: accounts.get(name)["status"]["sessionExpiration"] > first, 60,
             what="status.sessionExpiration to move on")
    # EC2 keeps answering with the renewed sessions: the worker stays Ready and a change still applies.
    before_tags = proxy.count("CreateTags", "200")
    kube.patch_spec("w-short", {"tags": {"renewed": "yes"}})
    wait_for(lambda: proxy.count("CreateTags", "200") > before_tags, 60, what="the tag change applied")
    assert kube.condition("w-short", "Ready")["status"] == "True"
    assert "ExpiredToken" not in operator.logs()
