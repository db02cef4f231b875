"""Launches are secure by default: IMDSv2 only with one hop, encrypted root volumes; IMDS options kept in sync;
user data from a Secret reaches EC2 and nothing else.

moto records MetadataOptions and the root volume's Encrypted flag and KMS key, so what
EC2 was asked for is read back from moto itself (DescribeInstances, DescribeVolumes).
"""

from __future__ import annotations

import base64
import json

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


SENTINEL = "#!/bin/sh\necho cml-user-data-sentinel-7f3a9c > /etc/motd\n"


def user_data_of(aws, instance_id: str) -> str:
    value = aws.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def test_user_data_from_a_secret_reaches_ec2_and_nothing_else(kube, network, aws, operator_factory):
    operator = operator_factory("--log-level", "DEBUG")
    kube.run("create", "secret", "generic", "boot", f"--from-literal=user-data={SENTINEL}")
    kube.apply(worker_manifest("fromsecret", network, userDataSecretRef={"name": "boot", "key": "user-data"}))
    kube.wait_condition("fromsecret", "Ready")
    worker = kube.get("fromsecret")

    assert user_data_of(aws, worker["status"]["instanceId"]) == SENTINEL
    marker = "cml-user-data-sentinel"
    assert marker not in json.dumps(worker)  # status, Kopf's progress and stored diff base, annotations
    assert marker not in json.dumps(kube.events("fromsecret"))
    assert marker not in operator.logs()
    assert base64.b64encode(SENTINEL.encode()).decode() not in operator.logs()


def test_a_user_data_secret_that_appears_later_is_picked_up_without_a_spec_change(kube, network, aws, operator):
    kube.apply(worker_manifest("later", network, userDataSecretRef={"name": "late", "key": "user-data"}))

    stalled = kube.wait_condition("later", "Stalled", reason="InvalidParameter")
    assert "spec.userDataSecretRef" in stalled["message"] and "late" in stalled["message"]

    kube.run("create", "secret", "generic", "late", f"--from-literal=user-data={SENTINEL}")
    kube.wait_condition("later", "Ready", timeout=40)  # the slow recheck (4 s in tests) finds it
    assert user_data_of(aws, kube.get("later")["status"]["instanceId"]) == SENTINEL


def test_inline_user_data_and_a_secret_ref_together_are_refused_at_apply(kube, network):
    result = kube.apply(worker_manifest("both", network, userData="x",
                                        userDataSecretRef={"name": "boot", "key": "user-data"}), check=False)
    assert result.returncode != 0
    assert "spec.userDataSecretRef" in result.stderr
