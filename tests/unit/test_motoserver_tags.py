"""moto_server's tag lookup by index (tests/support/motoserver.py) answers what moto's own scan answers."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from moto.ec2.models.core import TaggedEC2Resource

from tests.support.motoserver import index_tag_lookups


def scanning(resource) -> list[dict[str, str]]:
    """moto's own answer: the scan of every tag (what TaggedEC2Resource.get_tags asks)."""
    return resource.ec2_backend.describe_tags(filters={"resource-id": [resource.id]})


@pytest.fixture
def indexed_lookups():
    before = TaggedEC2Resource.get_tags
    index_tag_lookups()
    yield
    TaggedEC2Resource.get_tags = before


def test_every_resource_gets_the_same_tags_as_moto_s_scan(indexed_lookups):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        ids = [i["InstanceId"] for i in ec2.run_instances(
            ImageId=image, MinCount=12, MaxCount=12, SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "cml.dev/cluster", "Value": "c1"}]}],
        )["Instances"]]
        for n, instance_id in enumerate(ids):
            ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "n", "Value": str(n)}, {"Key": "*", "Value": "?"}])
        ec2.create_tags(Resources=[vpc, subnet], Tags=[{"Key": "Name", "Value": "net"}])

        from moto.backends import get_backend
        backend = get_backend("ec2")["123456789012"]["us-east-1"]
        resources = [backend.get_instance(i) for i in ids] + [backend.vpcs[vpc], backend.get_subnet(subnet)]
        for resource in resources:
            assert resource.get_tags() == scanning(resource), resource.id
            assert resource.get_tags(), resource.id  # every one is tagged: the comparison is not of two empties

        # The filters that read tags still select exactly what they should.
        found = ec2.describe_instances(Filters=[{"Name": "tag:n", "Values": ["3", "1*"]}])
        names = sorted(t["Value"] for r in found["Reservations"] for i in r["Instances"] for t in i["Tags"]
                       if t["Key"] == "n")
        assert names == ["1", "10", "11", "3"]
