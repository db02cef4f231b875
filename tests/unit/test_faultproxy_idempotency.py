"""The fault proxy keeps RunInstances idempotent by ClientToken, as EC2 does and moto does not.

EC2Client -> fault proxy -> moto's threaded HTTP server, all in this process. The
ground truth is moto's own instance list, read straight from moto.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from cml_operator.ec2 import EC2Client, EC2ClientSettings
from tests.support.faultproxy import FaultProxyServer, FaultRule, FaultState, start_accepted_xml
from tests.support.motoserver import amazon_image

REGION = "us-east-1"


@dataclass
class Stack:
    proxy: FaultProxyServer
    moto: Any  # boto3 EC2 client straight to moto
    via_proxy: Any  # boto3 EC2 client through the proxy, no retries
    network: dict[str, str]
    uid: str = ""  # each test launches with its own uid tag; moto's state is shared by the module

    def client(self, attempts: int = 3) -> EC2Client:
        return EC2Client(EC2ClientSettings(max_attempts=attempts), endpoint_url=self.proxy.url)

    def instances(self) -> list[str]:
        found = self.moto.describe_instances(Filters=[{"Name": "tag:cml.dev/worker-uid", "Values": [self.uid]}])
        return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]

    def launch(self, client: EC2Client, token: str, instance_type: str = "t3.micro") -> str:
        return client.create_instance(
            REGION, ami_id=self.network["ami"], instance_type=instance_type, subnet_id=self.network["subnet"],
            security_group_ids=[], client_token=f"{self.uid}-{token}", tags={"cml.dev/worker-uid": self.uid},
        ).aws_instance_id

    def outcomes(self, action: str = "RunInstances") -> dict[str, int]:
        return self.proxy.state.snapshot()["calls"].get(action, {})


@pytest.fixture(scope="module")
def servers() -> Iterator[Stack]:
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    proxy = FaultProxyServer(0, f"http://{host}:{port}", seed=7)
    proxy.start_in_thread()
    fake = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # module scope: no aws_env yet
    direct = boto3.client("ec2", region_name=REGION, endpoint_url=f"http://{host}:{port}", **fake)
    via_proxy = boto3.client("ec2", region_name=REGION, endpoint_url=proxy.url, **fake,
                             config=EC2ClientSettings(max_attempts=1).botocore_config())
    network = {"subnet": direct.describe_subnets()["Subnets"][0]["SubnetId"],
               "ami": amazon_image(direct)["ImageId"]}
    yield Stack(proxy, direct, via_proxy, network)
    proxy.shutdown()
    proxy.server_close()
    moto.stop()


@pytest.fixture
def stack(servers: Stack, request: pytest.FixtureRequest) -> Stack:
    """The module's servers with no rules, counters, log or remembered tokens, and a uid of its own."""
    servers.proxy.state.set_rules([])
    servers.proxy.state.reset_counts()
    servers.proxy.tokens.clear()
    servers.uid = f"uid-{uuid.uuid4().hex[:12]}"
    return servers


def test_a_repeated_token_gets_the_original_reservation_and_no_second_instance(stack):
    first = stack.launch(stack.client(1), "tok-1")
    again = stack.launch(stack.client(1), "tok-1")

    assert again == first
    assert stack.instances() == [first]
    assert stack.outcomes() == {"200": 1, "replayed": 1}


def test_a_new_token_is_a_new_launch(stack):
    # The memory keys on the token alone: a token that changes between retries means two instances.
    assert stack.launch(stack.client(1), "tok-1") != stack.launch(stack.client(1), "tok-2")
    assert len(stack.instances()) == 2


def test_the_same_token_with_other_parameters_is_an_idempotent_parameter_mismatch(stack):
    stack.launch(stack.client(1), "tok-1", instance_type="t3.micro")
    with pytest.raises(ClientError) as caught:
        stack.via_proxy.run_instances(ImageId=stack.network["ami"], InstanceType="t3.large", MinCount=1,
                                      MaxCount=1, SubnetId=stack.network["subnet"],
                                      ClientToken=f"{stack.uid}-tok-1")

    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(stack.instances()) == 1


@pytest.mark.parametrize("effect", ["forward_then_error", "forward_then_drop"])
def test_botocores_own_retry_after_a_lost_reply_reuses_the_token(stack, effect):
    # moto launches, the reply is lost (a 500, or the connection drops); botocore retries on its own.
    stack.proxy.state.set_rules([FaultRule(code="InternalError", action="RunInstances", effect=effect, times=1)])

    launched = stack.launch(stack.client(3), "tok-lost")

    assert stack.instances() == [launched]  # exactly one, and it is the one the caller was told
    assert stack.outcomes() == {f"200+fault:{effect}": 1, "replayed": 1}


@pytest.mark.parametrize("effect", ["forward_then_error", "forward_then_drop"])
def test_without_a_retry_the_caller_fails_although_ec2_acted(stack, effect):
    stack.proxy.state.set_rules([FaultRule(code="InternalError", action="RunInstances", effect=effect, times=1)])
    with pytest.raises(Exception):  # noqa: B017 - an EC2 error or a connection error, per effect
        stack.launch(stack.client(1), "tok-once")
    assert len(stack.instances()) == 1  # the fault came after moto acted


def test_an_empty_answer_hides_only_the_calls_it_matches(stack):
    launched = stack.launch(stack.client(1), "tok-1")
    stack.proxy.state.set_rules([FaultRule(code="", action="DescribeInstances", effect="empty",
                                           param_value="tag:cml.dev/worker-uid")])

    by_tag = stack.via_proxy.describe_instances(Filters=[{"Name": "tag:cml.dev/worker-uid",
                                                          "Values": [stack.uid]}])
    by_id = stack.via_proxy.describe_instances(InstanceIds=[launched])

    assert by_tag["Reservations"] == []  # EC2 not listing a new instance yet
    assert [i["InstanceId"] for r in by_id["Reservations"] for i in r["Instances"]] == [launched]


def test_an_answered_start_is_accepted_for_that_instance_only_and_never_reaches_moto(stack):
    held, other = stack.launch(stack.client(1), "tok-1"), stack.launch(stack.client(1), "tok-2")
    stack.moto.stop_instances(InstanceIds=[held, other])
    stack.proxy.state.set_rules([FaultRule(code="", action="StartInstances", effect="answer", param_value=held,
                                           body=start_accepted_xml(held))])

    answer = stack.via_proxy.start_instances(InstanceIds=[held])
    stack.via_proxy.start_instances(InstanceIds=[other])

    assert answer["StartingInstances"][0]["CurrentState"]["Name"] == "pending"  # botocore parsed it
    states = {i["InstanceId"]: i["State"]["Name"] for r in stack.moto.describe_instances(
        InstanceIds=[held, other])["Reservations"] for i in r["Instances"]}
    assert states == {held: "stopped", other: "running"}
    assert stack.outcomes("StartInstances") == {"fault:answer": 1, "200": 1}


def test_an_unknown_effect_is_refused():
    with pytest.raises(ValueError, match="unknown fault effect"):
        FaultRule(code="X", effect="explode").matches("RunInstances")


def test_the_call_log_names_each_calls_filters(stack):
    stack.via_proxy.describe_instances(Filters=[{"Name": "tag:cml.dev/managed-by", "Values": ["cml-operator"]}])
    stack.via_proxy.describe_instances()

    log, logged = stack.proxy.state.call_log()
    assert [(action, outcome, filters) for _, action, outcome, filters, _ in log] == [
        ("DescribeInstances", "200", ["tag:cml.dev/managed-by"]), ("DescribeInstances", "200", [])]
    assert logged == 2
    assert [entry[1:4] for entry in stack.proxy.state.call_log(since=1)[0]] == [("DescribeInstances", "200", [])]


def test_the_same_seed_makes_the_same_random_choices():
    def picks(seed: int) -> list[str]:
        state = FaultState(seed)
        state.set_rules([FaultRule(code="", probability=0.5, codes=["A", "B", "C"])])
        return [getattr(state.pick_fault("RunInstances"), "code", "-") for _ in range(40)]

    assert picks(11) == picks(11)
    assert picks(11) != picks(12)
    assert FaultState(11).seed == 11 and isinstance(FaultState().seed, int)


def test_the_client_token_filter_finds_the_instance_a_token_launched_even_without_its_tags(stack):
    # moto ignores the filter; the proxy answers it from its token memory, as EC2 does from its own.
    client = stack.client(1)
    launched = stack.launch(client, "tok-1")
    stack.launch(client, "tok-2")  # another instance of the same worker: not this token's
    stack.moto.delete_tags(Resources=[launched])  # EC2's filter does not need the tags

    found = client.find_instances_by_client_token(REGION, f"{stack.uid}-tok-1")

    assert [dto.aws_instance_id for dto in found] == [launched]
    assert client.find_instances_by_client_token(REGION, f"{stack.uid}-never-used") == []


def test_other_filters_of_the_call_stay_as_they_were():
    from tests.support.clienttoken_filter import NO_INSTANCE, rewrite_client_token_filter

    body = ("Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.1=running"
            "&Filter.2.Name=client-token&Filter.2.Value.1=a&Filter.2.Value.2=b").encode()
    rewritten = rewrite_client_token_filter(body, {"a": ["i-1"], "b": []}.get)

    assert rewritten == ("Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.1=running"
                         "&Filter.2.Name=instance-id&Filter.2.Value.1=i-1").encode()
    assert rewrite_client_token_filter(b"Action=DescribeInstances&Filter.1.Name=tag%3Ax", dict().get) is None
    assert NO_INSTANCE.encode() in rewrite_client_token_filter(
        b"Action=DescribeInstances&Filter.1.Name=client-token&Filter.1.Value.1=z", lambda token: [])
