"""EC2Client against moto in process: every method's happy path, not-found and wrong-state cases.

moto never answers "wrong state" (it even starts a terminated instance), so those
cases go through the fault proxy in front of moto's threaded HTTP server: the
client then parses EC2's real XML error response.
"""

from __future__ import annotations

import pytest

from cml_operator.ec2 import (
    EC2Client,
    EC2ClientSettings,
    EC2InstanceNotFoundException,
    EC2InstanceOperationException,
    EC2InvalidParameterException,
    EC2StatusCheckException,
    EC2TagOperationException,
    MetadataOptions,
    RootVolume,
)
from tests.support.faultproxy import FaultProxyServer, FaultRule
from tests.support.motoserver import amazon_image

from .conftest import REGION

MISSING = "i-0123456789abcdef0"


def launch(client: EC2Client, network: dict[str, str], token: str = "tok-1", **overrides):
    params = dict(
        ami_id=network["ami"], instance_type="m5zn.metal", subnet_id=network["subnet"],
        security_group_ids=[network["sg"]], client_token=token,
        tags={"Name": "worker-a", "cml.dev/worker-uid": token},
    )
    params.update(overrides)
    return client.create_instance(REGION, **params)


def test_create_instance_returns_dto_with_tags_and_placement(client, network, moto_ec2):
    dto = launch(client, network, key_name=None, user_data="#!/bin/sh\necho hi\n",
                 root_volume=RootVolume(64, "gp3"), iam_instance_profile=None, ami_name=network["ami_name"])

    assert dto.aws_instance_id.startswith("i-")
    assert dto.aws_region == REGION
    assert dto.instance_name == "worker-a"
    assert dto.ami_id == network["ami"] and dto.ami_name == network["ami_name"]
    assert dto.instance_type == "m5zn.metal"
    assert dto.security_group_ids == [network["sg"]]
    assert dto.subnet_id == network["subnet"]
    assert dto.instance_state in ("pending", "running")
    assert dto.private_ip
    assert dto.tags["cml.dev/worker-uid"] == "tok-1"
    raw = moto_ec2.describe_instances(InstanceIds=[dto.aws_instance_id])["Reservations"][0]["Instances"][0]
    assert raw["Monitoring"]["State"] == "enabled"
    volume_id = raw["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    volume = moto_ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["Size"] == 64 and volume["VolumeType"] == "gp3"
    user_data = moto_ec2.describe_instance_attribute(InstanceId=dto.aws_instance_id, Attribute="userData")
    assert user_data["UserData"]["Value"]  # stored (base64) by EC2


def _root_volume(moto_ec2, instance_id: str) -> dict:
    raw = moto_ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return moto_ec2.describe_volumes(VolumeIds=[raw["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]])["Volumes"][0]


def test_create_instance_sends_imds_options_and_an_encrypted_root_volume(client, network, moto_ec2):
    dto = launch(client, network, metadata_options=MetadataOptions("required", 1),
                 root_volume=RootVolume(32, "gp3", encrypted=True, kms_key_id="alias/cml-workers"))

    raw = moto_ec2.describe_instances(InstanceIds=[dto.aws_instance_id])["Reservations"][0]["Instances"][0]
    assert (raw["MetadataOptions"]["HttpTokens"], raw["MetadataOptions"]["HttpPutResponseHopLimit"]) == ("required", 1)
    assert (dto.metadata_http_tokens, dto.metadata_hop_limit) == ("required", 1)
    volume = _root_volume(moto_ec2, dto.aws_instance_id)
    assert volume["Encrypted"] is True and volume["KmsKeyId"] == "alias/cml-workers" and volume["Size"] == 32


def test_without_a_size_the_root_volume_keeps_the_ami_size_and_is_still_encrypted(client, network, moto_ec2):
    image = client.describe_image(REGION, network["ami"])
    assert image.root_volume_size and image.architecture

    dto = launch(client, network, root_volume=RootVolume(image.root_volume_size, None, encrypted=True),
                 root_device_name=image.root_device_name)

    volume = _root_volume(moto_ec2, dto.aws_instance_id)
    assert volume["Encrypted"] is True and volume["Size"] == image.root_volume_size


def test_metadata_options_can_be_changed_on_a_running_instance(client, network, moto_ec2):
    dto = launch(client, network, metadata_options=MetadataOptions())

    assert client.modify_metadata_options(REGION, dto.aws_instance_id, MetadataOptions("optional", 2)) is True

    after = client.describe_instance(REGION, dto.aws_instance_id)
    assert (after.metadata_http_tokens, after.metadata_hop_limit) == ("optional", 2)


def test_instance_type_checks_read_offerings_and_architectures(client, network, moto_ec2):
    dto = launch(client, network)

    assert client.instance_type_offered(REGION, "m5.large", dto.availability_zone) is True
    assert client.instance_type_offered(REGION, "zz9.bogus", dto.availability_zone) is False
    assert client.instance_type_architectures(REGION, "m6g.large") == ("arm64",)
    assert dto.architecture == "x86_64"
    with pytest.raises(EC2InvalidParameterException):
        client.instance_type_architectures(REGION, "zz9.bogus")


def test_create_instance_with_unknown_subnet_is_invalid_parameter(client, network):
    with pytest.raises(EC2InvalidParameterException) as caught:
        launch(client, network, subnet_id="subnet-12345678")
    assert caught.value.code == "InvalidSubnetID.NotFound"
    assert caught.value.retryable is False
    assert caught.value.operation == "RunInstances" and caught.value.region == REGION


def test_create_instance_with_unknown_security_group_is_invalid_parameter(client, network):
    with pytest.raises(EC2InvalidParameterException) as caught:
        launch(client, network, security_group_ids=["sg-12345678"])
    assert caught.value.code == "InvalidGroup.NotFound"


def test_create_instance_refuses_bad_tags_before_calling_aws(client, network, moto_ec2):
    with pytest.raises(EC2InvalidParameterException, match="aws:secret"):
        launch(client, network, tags={"aws:secret": "x"})
    assert moto_ec2.describe_instances()["Reservations"] == []


def test_start_stop_terminate_move_the_instance_through_its_states(client, network, moto_ec2):
    instance_id = launch(client, network).aws_instance_id

    assert client.stop_instance(REGION, instance_id) is True
    assert client.describe_instance(REGION, instance_id).instance_state == "stopped"
    assert client.modify_instance_type(REGION, instance_id, "m5.large") is True
    assert client.start_instance(REGION, instance_id) is True
    running = client.describe_instance(REGION, instance_id)
    assert running.instance_state == "running" and running.instance_type == "m5.large"
    assert client.terminate_instance(REGION, instance_id) is True
    assert client.describe_instance(REGION, instance_id).instance_state == "terminated"


@pytest.mark.parametrize("method", ["start_instance", "stop_instance", "terminate_instance"])
def test_operations_on_a_missing_instance_raise_not_found(client, moto_ec2, method):
    with pytest.raises(EC2InstanceNotFoundException) as caught:
        getattr(client, method)(REGION, MISSING)
    assert caught.value.code == "InvalidInstanceID.NotFound"
    assert caught.value.instance_id == MISSING
    assert caught.value.region == REGION


def test_describe_instance_of_missing_id_raises_not_found(client, moto_ec2):
    with pytest.raises(EC2InstanceNotFoundException):
        client.describe_instance(REGION, MISSING)


def test_describe_instances_answers_the_others_when_one_id_is_unknown(client, network):
    first = launch(client, network, "tok-1").aws_instance_id
    second = launch(client, network, "tok-2").aws_instance_id

    found = client.describe_instances(REGION, [first, MISSING, second, "i-0fffffffffffffff1"])

    assert set(found) == {first, second}


def test_describe_instances_chunks_at_500_ids(client, network, monkeypatch):
    instance_id = launch(client, network).aws_instance_id
    sizes: list[int] = []
    real_call = client._call

    def counting_call(region, operation, instance_id=None, **params):
        sizes.append(len(params.get("InstanceIds", [])))
        return real_call(region, operation, instance_id, **params)

    monkeypatch.setattr(client, "_call", counting_call)
    ids = [instance_id] + [f"i-{n:017x}" for n in range(1, 700)]
    found = client.describe_instances(REGION, ids)
    assert set(found) == {instance_id}
    assert sizes[0] == 500 and max(sizes) <= 500


def test_find_instances_by_tag_and_by_many_values(client, network):
    first = launch(client, network, "uid-1").aws_instance_id
    second = launch(client, network, "uid-2").aws_instance_id

    assert [d.aws_instance_id for d in client.find_instances_by_tag(REGION, "cml.dev/worker-uid", "uid-1")] == [first]
    grouped = client.find_instances_by_tag_values(REGION, "cml.dev/worker-uid", ["uid-1", "uid-2", "uid-3"])
    assert {k: [d.aws_instance_id for d in v] for k, v in grouped.items()} == {"uid-1": [first], "uid-2": [second]}
    assert client.find_instances_by_tag(REGION, "cml.dev/worker-uid", "nobody") == []


def test_status_checks_of_a_running_instance(client, network):
    instance_id = launch(client, network).aws_instance_id

    checks = client.get_instance_status_checks(REGION, instance_id)

    assert (checks.system, checks.instance, checks.all_ok) == ("ok", "ok", True)
    assert client.get_instance_status_checks_batch(REGION, [instance_id, MISSING]) == {instance_id: checks}


def test_status_checks_of_a_stopped_instance_are_not_available(client, network):
    instance_id = launch(client, network).aws_instance_id
    client.stop_instance(REGION, instance_id)

    with pytest.raises(EC2StatusCheckException) as caught:
        client.get_instance_status_checks(REGION, instance_id)
    assert caught.value.retryable is True and caught.value.instance_id == instance_id


def test_tags_are_added_read_and_removed(client, network):
    instance_id = launch(client, network).aws_instance_id

    assert client.add_tags(REGION, instance_id, {"team": "netops", "env": "lab"}) is True
    assert client.get_tags(REGION, instance_id)["team"] == "netops"
    assert client.remove_tags(REGION, instance_id, ["team"]) is True
    tags = client.get_tags(REGION, instance_id)
    assert "team" not in tags and tags["env"] == "lab"


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({f"k{i}": "v" for i in range(51)}, "51 tags"),
        ({"x" * 129: "v"}, "x" * 129),
        ({"ok": "v" * 257}, "'ok'"),
        ({"AWS:owner": "me"}, "AWS:owner"),
    ],
)
def test_add_tags_refuses_what_ec2_would_reject_and_names_the_key(client, network, tags, named):
    instance_id = launch(client, network).aws_instance_id
    with pytest.raises(EC2TagOperationException) as caught:
        client.add_tags(REGION, instance_id, tags)
    assert named in str(caught.value)
    assert caught.value.retryable is False


def test_describe_and_resolve_ami(client, moto_ec2, network):
    assert client.describe_image(REGION, network["ami"]).image_id == network["ami"]
    subnet = network["subnet"]
    base = moto_ec2.run_instances(ImageId=network["ami"], MinCount=1, MaxCount=1, SubnetId=subnet)
    base_id = base["Instances"][0]["InstanceId"]
    older = moto_ec2.create_image(InstanceId=base_id, Name="cml-2.8.0-a")["ImageId"]
    newer = moto_ec2.create_image(InstanceId=base_id, Name="cml-2.8.1-b")["ImageId"]

    resolved = client.resolve_ami(REGION, "cml-2.8.*")

    assert resolved.image_id in (older, newer)
    # moto stamps both images within the same second; the tie breaks on id, newest otherwise
    assert resolved.name and resolved.name.startswith("cml-2.8.")
    with pytest.raises(EC2InvalidParameterException) as caught:
        client.resolve_ami(REGION, "no-such-image-*")
    assert caught.value.code == "InvalidAMIName.NotFound" and "amiName" in str(caught.value)
    with pytest.raises(EC2InvalidParameterException) as missing:
        client.describe_image(REGION, "ami-12345678")
    assert missing.value.code == "InvalidAMIID.NotFound"


def test_image_owners_are_checked_by_ec2_for_ids_and_names(client, moto_ec2, network):
    """spec.amiOwners: an image of an owner outside the list is refused, naming the list and the owner."""
    amazon = amazon_image(moto_ec2)
    base = moto_ec2.run_instances(ImageId=amazon["ImageId"], MinCount=1, MaxCount=1, SubnetId=network["subnet"])
    own = moto_ec2.create_image(InstanceId=base["Instances"][0]["InstanceId"], Name="cml-own-1")["ImageId"]

    assert client.describe_image(REGION, own, ["self"]).image_id == own
    with pytest.raises(EC2InvalidParameterException) as refused:
        client.describe_image(REGION, amazon["ImageId"], ["self"])
    assert refused.value.code == "ImageOwnerNotAllowed" and refused.value.retryable is False
    assert "spec.amiOwners" in str(refused.value) and amazon["OwnerId"] in str(refused.value)
    assert client.describe_image(REGION, amazon["ImageId"], ["amazon"]).image_id == amazon["ImageId"]

    assert client.resolve_ami(REGION, "cml-own-*", ["self"]).image_id == own
    with pytest.raises(EC2InvalidParameterException) as by_name:
        client.resolve_ami(REGION, amazon["Name"], ["self"])  # exists, but only as amazon's
    assert by_name.value.code == "ImageOwnerNotAllowed" and "(amazon)" in str(by_name.value)
    with pytest.raises(EC2InvalidParameterException) as missing:
        client.resolve_ami(REGION, "no-such-*", ["self"])
    assert missing.value.code == "InvalidAMIName.NotFound"


# ---------------------------------------------------------------- through HTTP: wrong state


@pytest.fixture
def proxied_client():
    """EC2Client -> fault proxy -> moto's threaded HTTP server (both in this process)."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    proxy = FaultProxyServer(0, f"http://{host}:{port}")
    proxy.start_in_thread()
    client = EC2Client(EC2ClientSettings(max_attempts=1), endpoint_url=proxy.url)
    yield client, proxy
    proxy.shutdown()
    proxy.server_close()
    moto.stop()


def _launch_via(client: EC2Client) -> str:
    import boto3

    raw = boto3.client("ec2", region_name=REGION, endpoint_url=client._endpoint_url)
    subnet = raw.describe_subnets()["Subnets"][0]["SubnetId"]
    image = amazon_image(raw)["ImageId"]
    return client.create_instance(
        REGION, ami_id=image, instance_type="t3.micro", subnet_id=subnet, security_group_ids=[],
        client_token="t", tags={"cml.dev/worker-uid": "t"},
    ).aws_instance_id


@pytest.mark.parametrize(
    ("method", "action", "args"),
    [
        ("start_instance", "StartInstances", ()),
        ("stop_instance", "StopInstances", ()),
        ("terminate_instance", "TerminateInstances", ()),
        ("modify_instance_type", "ModifyInstanceAttribute", ("m5.large",)),
    ],
)
def test_operations_in_the_wrong_state_raise_operation_exception(proxied_client, method, action, args):
    client, proxy = proxied_client
    instance_id = _launch_via(client)
    proxy.state.set_rules([FaultRule(code="IncorrectInstanceState", action=action,
                                     message=f"The instance '{instance_id}' is not in a state from which it can be changed")])

    with pytest.raises(EC2InstanceOperationException) as caught:
        getattr(client, method)(REGION, instance_id, *args)

    assert caught.value.code == "IncorrectInstanceState"
    assert caught.value.retryable is True
    assert caught.value.instance_id == instance_id
    assert caught.value.request_id  # parsed from the XML body


def test_tag_call_failure_raises_tag_exception(proxied_client):
    client, proxy = proxied_client
    instance_id = _launch_via(client)
    proxy.state.set_rules([FaultRule(code="TagLimitExceeded", action="CreateTags")])

    with pytest.raises(EC2TagOperationException) as caught:
        client.add_tags(REGION, instance_id, {"a": "b"})
    assert caught.value.retryable is False


def test_describe_instances_follows_next_token_when_ec2_pages_an_id_list(proxied_client):
    """moto pages DescribeInstances at 100 reservations even for an id list; nothing may go missing."""
    import boto3

    client, proxy = proxied_client
    raw = boto3.client("ec2", region_name=REGION, endpoint_url=client._endpoint_url)
    subnet = raw.describe_subnets()["Subnets"][0]["SubnetId"]
    image = amazon_image(raw)["ImageId"]
    ids = [raw.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]["InstanceId"]
           for _ in range(150)]  # one reservation each

    found = client.describe_instances(REGION, ids)

    assert set(found) == set(ids)
    assert proxy.state.snapshot()["calls"]["DescribeInstances"]["200"] == 2  # really paged: 100 + 50
    assert set(client.get_instance_status_checks_batch(REGION, ids)) == set(ids)
