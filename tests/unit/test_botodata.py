"""ec2/botodata.py: one botocore loader per process, EC2's model and the endpoints lean, nothing callable lost."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.model import Shape

from cml_operator.ec2 import botodata
from cml_operator.ec2.regions import known_regions

REPO = Path(__file__).resolve().parents[2]
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "a", "aws_secret_access_key": "b"}


def full_client() -> Any:
    return boto3.session.Session().client("ec2", **CREDENTIALS)


def lean_client() -> Any:
    return botodata.boto3_session().client("ec2", **CREDENTIALS)


def test_the_operations_kept_are_the_ec2_actions_of_the_shipped_policy():
    policy = json.loads((REPO / "deploy" / "iam-policy.json").read_text())
    actions = {action for statement in policy["Statement"]
               for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])}
    assert botodata.EC2_OPERATIONS == {a.split(":", 1)[1] for a in actions if a.startswith("ec2:")}


def test_every_operation_the_client_names_is_kept():
    source = (REPO / "operator" / "cml_operator" / "ec2" / "client.py").read_text()
    all_operations = set(full_client().meta.service_model.operation_names)
    named = set(re.findall(r'"([A-Z][A-Za-z]+)"', source)) & all_operations
    assert len(named) >= 15, named  # the scan found the client's calls
    assert named <= botodata.EC2_OPERATIONS, named - botodata.EC2_OPERATIONS
    assert set(lean_client().meta.service_model.operation_names) == botodata.EC2_OPERATIONS


def _tree(shape: Shape | None, seen: set[str] | None = None) -> Any:
    """A shape as plain data: name, type, serialization and metadata, members recursively."""
    if shape is None:
        return None
    seen = set() if seen is None else seen
    node: dict[str, Any] = {"name": shape.name, "type": shape.type_name, "serialization": shape.serialization,
                            "metadata": {k: v for k, v in shape.metadata.items() if k != "documentation"}}
    if shape.name in seen:  # recursive shapes: the name is enough the second time
        return node
    seen = seen | {shape.name}
    if shape.type_name == "structure":
        node["members"] = {name: _tree(member, seen) for name, member in shape.members.items()}
    elif shape.type_name == "list":
        node["member"] = _tree(shape.member, seen)
    elif shape.type_name == "map":
        node["key"], node["value"] = _tree(shape.key, seen), _tree(shape.value, seen)
    return node


def test_each_kept_operation_reads_and_writes_exactly_the_shapes_of_the_full_model():
    full, lean = full_client().meta.service_model, lean_client().meta.service_model
    assert lean.metadata == full.metadata and lean.api_version == full.api_version
    for name in botodata.EC2_OPERATIONS:
        want, got = full.operation_model(name), lean.operation_model(name)
        assert _tree(got.input_shape) == _tree(want.input_shape), name
        assert _tree(got.output_shape) == _tree(want.output_shape), name
        assert got.http == want.http, name


def test_every_session_shares_one_loader_and_one_model():
    first, second = lean_client(), lean_client()
    assert first.meta.service_model._service_description is second.meta.service_model._service_description
    loader = botodata.shared_loader()
    paths = list(loader.search_paths)
    for _ in range(3):
        botodata.boto3_session()
    assert loader.search_paths == paths  # boto3 adds its data directory once, not once per session
    # One copy of the endpoints too: each session's resolver reads the same data.
    resolvers = [botodata.botocore_session()._get_internal_component("endpoint_resolver") for _ in range(2)]
    assert resolvers[0]._endpoint_data is resolvers[1]._endpoint_data
    assert first.meta.service_model._service_description is lean_client().meta.service_model._service_description


def test_the_endpoints_keep_every_region_of_ec2():
    session = botocore.session.get_session()  # botocore's own, full data
    regions = {region for partition in session.get_available_partitions()
               for region in session.get_available_regions("ec2", partition_name=partition)}
    assert len(regions) > 30 and known_regions() == frozenset(regions)


def test_a_lean_client_sends_the_same_request_as_a_full_one():
    requests = []
    for client in (full_client(), lean_client()):
        client.meta.events.register("before-send", lambda request, **_: requests.append(request.body) or _sent())
        client.run_instances(ImageId="ami-12345678", InstanceType="m5.large", MinCount=1, MaxCount=1,
                             ClientToken="t", TagSpecifications=[{"ResourceType": "instance",
                                                                  "Tags": [{"Key": "k", "Value": "v"}]}],
                             MetadataOptions={"HttpTokens": "required"},
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 64}}])
    assert requests[0] == requests[1] and "Action=RunInstances" in str(requests[0])


def _sent() -> Any:
    from botocore.awsrequest import AWSResponse

    class _Raw:
        def stream(self, **_: Any):
            yield b"<RunInstancesResponse><reservationId>r-1</reservationId></RunInstancesResponse>"

    return AWSResponse("https://ec2.us-east-1.amazonaws.com/", 200, {}, _Raw())
