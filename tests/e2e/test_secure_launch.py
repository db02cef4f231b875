"""Launches are secure by default: IMDSv2 only with one hop, encrypted root volumes; IMDS options kept in sync.

moto records MetadataOptions and the root volume's Encrypted flag and KMS key, so what
EC2 was asked for is read back from moto itself (DescribeInstances, DescribeVolumes).
"""

from __future__ import annotations

import pytest

from tests.support.processes import wait_for

from .conftest import worker_manifest

pytestmark = pytest.mark.e2e


def raw_instance(aws, instance_id: str) -> dict:
    return aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def root_volume(aws, instance_id: str) -> dict:
    volume_id = raw_instance(aws, instance_id)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    return aws.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


def imds(aws, instance_id: str) -> tuple[str, int]:
    options = raw_instance(aws, instance_id)["MetadataOptions"]
    return options["HttpTokens"], options["HttpPutResponseHopLimit"]


def test_a_default_worker_requires_imdsv2_and_encrypts_its_root_volume(kube, network, aws, proxy, operator):
    kube.apply(worker_manifest("secure", network))
    kube.wait_condition("secure", "Ready")
    instance_id = kube.get("secure")["status"]["instanceId"]

    assert imds(aws, instance_id) == ("required", 1)
    volume = root_volume(aws, instance_id)
    assert volume["Encrypted"] is True
    image = aws.describe_images(ImageIds=[network["ami"]])["Images"][0]
    assert volume["Size"] == image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]  # the AMI's own size

    # IMDS options are kept in sync: a spec change is applied, and so is a change made outside.
    kube.patch_spec("secure", {"metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 2}})
    wait_for(lambda: imds(aws, instance_id) == ("optional", 2), 30, what="the new IMDS options on the instance")
    aws.modify_instance_metadata_options(InstanceId=instance_id, HttpTokens="required", HttpPutResponseHopLimit=1)
    wait_for(lambda: imds(aws, instance_id) == ("optional", 2), 30, what="IMDS drift to be corrected")
    assert proxy.count("ModifyInstanceMetadataOptions") == 2
    kube.wait_condition("secure", "Ready")


def test_a_customer_managed_key_encrypts_the_root_volume(kube, network, aws, operator):
    key = "arn:aws:kms:us-east-1:123456789012:key/0f8e7a5c-1111-2222-3333-444455556666"
    kube.apply(worker_manifest("kms", network, rootVolume={"sizeGiB": 20, "kmsKeyId": key}))
    kube.wait_condition("kms", "Ready")

    volume = root_volume(aws, kube.get("kms")["status"]["instanceId"])
    assert volume["Encrypted"] is True and volume["KmsKeyId"] == key and volume["Size"] == 20


def test_a_kms_key_without_encryption_is_refused_at_apply_naming_the_field(kube, network):
    result = kube.apply(worker_manifest("nokms", network, rootVolume={"sizeGiB": 20, "encrypted": False,
                                                                      "kmsKeyId": "alias/cml"}), check=False)
    assert result.returncode != 0
    assert "spec.rootVolume.kmsKeyId" in result.stderr
