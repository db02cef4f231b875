"""A worker's pass bound to its account (passes/account.py) against moto in process, STS included.

moto keeps an assumed role's account apart, so where an instance was launched is read back with
that account's own credentials.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import boto3
import pytest

from cml_operator.passes import reconcile_pass
from cml_operator.reconcile.account import AccountSpec
from cml_operator.reconcile.conditions import HealthState
from cml_operator.reconcile.worker import WorkerRef
from cml_operator.runtime import Runtime, build_runtime
from cml_operator.settings import OperatorSettings
from tests.support.motoserver import own_image

REGION = "us-east-1"
TARGET = "222222222222"
REF = WorkerRef(uid="5f0c2a1e-0000-4000-8000-0000000000bb", namespace="lab", name="w1")
TEAM_A = AccountSpec.from_body({"metadata": {"name": "team-a"}, "spec": {
    "roleArn": f"arn:aws:iam::{TARGET}:role/cml", "externalId": "ext-id",
    "namespaceSelector": {"matchLabels": {"team": "a"}}}})

pytestmark = pytest.mark.timeout(240)


def in_account(account: str) -> Any:
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/truth", RoleSessionName="truth")["Credentials"]
    return boto3.client("ec2", region_name=REGION, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])


def spec_in(ec2: Any) -> dict[str, Any]:
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.create_security_group(GroupName="cml", Description="cml", VpcId=subnet["VpcId"])["GroupId"]
    image = own_image(ec2, subnet["SubnetId"])
    return {"region": REGION, "amiId": image["ami"], "subnetId": subnet["SubnetId"], "securityGroupIds": [group],
            "instanceType": "m5.large"}


def instances(ec2: Any) -> list[str]:
    return [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def run(body, labels: dict[str, str], accounts: list[AccountSpec], **settings: Any):
    async def main():
        runtime = build_runtime(replace(OperatorSettings(), **settings))
        assert runtime.accounts is not None
        runtime.accounts.replace_all(accounts, float("inf"))  # as the watch would have it; no API server here
        runtime.namespace_labels[REF.namespace] = (float("inf"), labels)
        try:
            return await body(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


def test_a_worker_launches_in_the_account_that_selects_its_namespace_and_says_so(moto_ec2):
    target = in_account(TARGET)
    spec = spec_in(target)

    async def body(runtime: Runtime):
        return await reconcile_pass(runtime, REF, spec, None, max_age=0)

    result = run(body, {"team": "a"}, [TEAM_A])
    assert result.health.state is not HealthState.STALLED, result.health
    assert result.status["account"] == {"name": "team-a", "id": TARGET}
    assert instances(target) == [result.status["instanceId"]]
    assert instances(moto_ec2) == []  # nothing in the operator's own account


def test_an_unselected_namespace_with_require_account_is_refused_before_any_ec2_call(moto_ec2, network):
    spec = {"region": REGION, "amiId": network["ami"], "subnetId": network["subnet"],
            "securityGroupIds": [network["sg"]], "instanceType": "m5.large"}
    calls: list[str] = []

    async def body(runtime: Runtime):
        runtime.metrics.ec2_call = lambda operation, *_: calls.append(operation)  # every EC2 attempt
        return await reconcile_pass(runtime, REF, spec, None, max_age=0)

    result = run(body, {"team": "c"}, [TEAM_A], require_account=True)
    assert result.health.state is HealthState.STALLED and result.health.reason == "AccountNotAllowed"
    assert calls == [] and instances(moto_ec2) == []
    assert "account" not in result.status


def test_a_worker_launched_with_the_operator_identity_stays_there_when_an_account_appears(moto_ec2, network):
    own = {"region": REGION, "amiId": network["ami"], "subnetId": network["subnet"],
           "securityGroupIds": [network["sg"]], "instanceType": "m5.large"}

    async def body(runtime: Runtime):
        first = await reconcile_pass(runtime, REF, own, None, max_age=0)
        runtime.accounts.replace_all([TEAM_A], float("inf"))  # an account now selects the namespace
        second = await reconcile_pass(runtime, REF, own, first.status, max_age=0)
        return first, second

    first, second = run(body, {"team": "a"}, [])
    assert "account" not in first.status and "account" not in second.status
    assert second.status["instanceId"] == first.status["instanceId"]
    assert instances(moto_ec2) == [first.status["instanceId"]]
