"""The EC2 reads discovery makes: images by owner and name pattern, instances by image, state and tags (moto)."""

from __future__ import annotations


def _run(moto_ec2, network, image_id: str, tags: dict[str, str] | None = None) -> str:
    spec = {"ImageId": image_id, "MinCount": 1, "MaxCount": 1, "InstanceType": "t3.micro",
            "SubnetId": network["subnet"]}
    if tags:
        spec["TagSpecifications"] = [{"ResourceType": "instance",
                                      "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return moto_ec2.run_instances(**spec)["Instances"][0]["InstanceId"]


def test_find_images_by_owner_and_name_pattern(client, moto_ec2, network):
    base = _run(moto_ec2, network, network["ami"])
    own_a = moto_ec2.create_image(InstanceId=base, Name="cml-2.8.0-a")["ImageId"]
    own_b = moto_ec2.create_image(InstanceId=base, Name="cml-2.9.0-b")["ImageId"]
    moto_ec2.create_image(InstanceId=base, Name="ubuntu-22")

    found = client.find_images("us-east-1", ["self"], "cml-2*")  # (the fixture's own image is cml-test-image)
    assert {image.image_id for image in found} == {own_a, own_b}
    assert client.find_images("us-east-1", ["self"], "cml-2.9*")[0].name == "cml-2.9.0-b"
    # Public images of other owners never match an allow-list of self.
    public = moto_ec2.describe_images(ImageIds=[network["amazon_ami"]])["Images"][0]["Name"]
    assert client.find_images("us-east-1", ["self"], public) == []
    assert client.find_images("us-east-1", ["self"], "nothing-*") == []


def test_find_instances_by_image_state_and_tags(client, moto_ec2, network):
    base = _run(moto_ec2, network, network["ami"])
    image = moto_ec2.create_image(InstanceId=base, Name="cml-x")["ImageId"]
    lab = _run(moto_ec2, network, image, {"env": "lab"})
    other = _run(moto_ec2, network, image, {"env": "prod"})
    stopped = _run(moto_ec2, network, image, {"env": "lab"})
    moto_ec2.stop_instances(InstanceIds=[stopped])
    gone = _run(moto_ec2, network, image, {"env": "lab"})
    moto_ec2.terminate_instances(InstanceIds=[gone])

    live = ["pending", "running", "stopping", "stopped"]
    found = client.find_instances("us-east-1", image_ids=[image], states=live)
    assert {dto.aws_instance_id for dto in found} == {lab, other, stopped}
    found = client.find_instances("us-east-1", image_ids=[image], states=live, tags={"env": "lab"})
    assert {dto.aws_instance_id for dto in found} == {lab, stopped}
    assert client.find_instances("us-east-1", image_ids=[], states=live) == []
    assert base not in {dto.aws_instance_id for dto in client.find_instances(
        "us-east-1", image_ids=[image, network["ami"]], states=["running"], tags={"env": "lab"})}
