"""Unit-test fixtures: dummy AWS credentials and moto's EC2 in process."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from cml_operator.ec2 import EC2Client, EC2ClientSettings
from tests.support.motoserver import own_image

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials moto accepts; no real endpoint, no instance metadata lookups."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto_ec2():
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


@pytest.fixture
def client(moto_ec2) -> EC2Client:
    return EC2Client(EC2ClientSettings(max_attempts=1))


@pytest.fixture
def network(moto_ec2) -> dict[str, str]:
    """A subnet, a security group and an AMI that exist in moto's default VPC."""
    subnet = moto_ec2.describe_subnets()["Subnets"][0]
    group = moto_ec2.create_security_group(GroupName="cml", Description="cml", VpcId=subnet["VpcId"])
    # spec.amiOwners defaults to [self]: an image of moto's own account, as the e2e tests use.
    return {"subnet": subnet["SubnetId"], "sg": group["GroupId"], **own_image(moto_ec2, subnet["SubnetId"])}
