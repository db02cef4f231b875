"""The fault proxy's strict EC2 world, in process: EC2's clock (a fake one here) and IAM on the operator's key.

Each test names the EC2 behaviour moto lacks; with the model off (TimingConfig()) every one of them
would read moto's instant answer instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from tests.support.ec2iam import OPERATOR_ACCESS_KEY, IamConfig
from tests.support.ec2timing import TimingConfig
from tests.support.faultproxy import FaultProxyServer
from tests.support.motoserver import own_image

REGION = "us-east-1"
CLUSTER = "c1"
TIMING = TimingConfig(pending=10, stopping=10, shutting_down=10, initializing=10, not_found=5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def world(moto_url: str) -> Iterator[tuple[FaultProxyServer, FakeClock]]:
    proxy = FaultProxyServer(0, moto_url, 1, TIMING, IamConfig((OPERATOR_ACCESS_KEY,), cluster_id=CLUSTER))
    clock = FakeClock()
    proxy.timing.clock = clock
    proxy.start_in_thread()
    yield proxy, clock
    proxy.shutdown()
    proxy.server_close()


def _client(url: str, key: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=url, aws_access_key_id=key,
                        aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))


@pytest.fixture
def clients(world, moto_url) -> tuple[Any, Any, dict[str, str]]:
    proxy, _ = world
    user, operator = _client(proxy.url, "testing"), _client(proxy.url, OPERATOR_ACCESS_KEY)
    subnet = user.describe_subnets()["Subnets"][0]["SubnetId"]
    return user, operator, {"subnet": subnet, **own_image(_client(moto_url, "testing"), subnet)}


def _tags(*pairs: tuple[str, str]) -> list[dict]:
    return [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in pairs]}]


MANAGED = _tags(("cml.dev/managed-by", "cml-operator"), ("cml.dev/cluster", CLUSTER), ("cml.dev/worker-uid", "u"))


def _launch(operator, net, token: str = "", tags=MANAGED) -> dict:
    extra = {"ClientToken": token} if token else {}
    return operator.run_instances(ImageId=net["ami"], MinCount=1, MaxCount=1, SubnetId=net["subnet"],
                                  TagSpecifications=tags, **extra)["Instances"][0]


def _code(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response["Error"]["Code"]


def _state(client, instance_id: str) -> str:
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def _checks(client, instance_id: str) -> str:
    found = client.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
    return found[0]["InstanceStatus"]["Status"] if found else "unlisted"


def test_a_launched_instance_is_unknown_then_pending_then_running_with_checks_initializing(world, clients):
    _, clock = world
    user, operator, net = clients
    instance = _launch(operator, net)
    assert instance["State"]["Name"] == "pending"
    assert _code(user.describe_instances, InstanceIds=[instance["InstanceId"]]) == "InvalidInstanceID.NotFound"
    clock.now += 5
    assert _state(user, instance["InstanceId"]) == "pending" and _checks(user, instance["InstanceId"]) == "unlisted"
    clock.now += 5
    assert _state(user, instance["InstanceId"]) == "running"
    assert _checks(user, instance["InstanceId"]) == "initializing"
    clock.now += 10
    assert _checks(user, instance["InstanceId"]) == "ok"


def test_stop_and_terminate_pass_through_stopping_and_shutting_down(world, clients):
    _, clock = world
    user, operator, net = clients
    instance_id = _launch(operator, net)["InstanceId"]
    clock.now += 30
    assert operator.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]["CurrentState"]["Name"] \
        == "stopping"
    status = user.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)["InstanceStatuses"]
    assert _state(user, instance_id) == status[0]["InstanceState"]["Name"] == "stopping"  # the two agree
    assert _code(operator.start_instances, InstanceIds=[instance_id]) == "IncorrectInstanceState"
    clock.now += 10
    assert _state(user, instance_id) == "stopped"
    terminated = operator.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"][0]
    assert (terminated["PreviousState"]["Name"], terminated["CurrentState"]["Name"]) == ("stopped", "shutting-down")
    clock.now += 10
    assert _state(user, instance_id) == "terminated"


def test_stopping_a_pending_instance_is_an_incorrect_state(world, clients):
    _, clock = world
    _, operator, net = clients
    instance_id = _launch(operator, net)["InstanceId"]
    assert _code(operator.stop_instances, InstanceIds=[instance_id]) == "IncorrectInstanceState"
    clock.now += 10
    assert operator.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]["CurrentState"]["Name"] \
        == "stopping"


def test_a_client_token_replay_answers_the_state_now_and_idempotent_instance_terminated_once_gone(world, clients):
    _, clock = world
    _, operator, net = clients
    first = _launch(operator, net, token="tok-replay")
    clock.now += 30
    again = _launch(operator, net, token="tok-replay")
    assert again["InstanceId"] == first["InstanceId"] and again["State"]["Name"] == "running"
    operator.terminate_instances(InstanceIds=[first["InstanceId"]])
    assert _code(_launch, operator, net, "tok-replay") == "IdempotentInstanceTerminated"


def test_monitoring_is_switched_by_monitor_and_unmonitor_instances(world, clients):
    user, operator, net = clients
    instance_id = _launch(operator, net)["InstanceId"]
    monitoring = lambda: user.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "Monitoring"]["State"]  # noqa: E731
    world[1].now += 10
    assert operator.monitor_instances(InstanceIds=[instance_id])["InstanceMonitorings"][0]["Monitoring"]["State"] \
        == "pending"
    assert monitoring() == "enabled"
    user.unmonitor_instances(InstanceIds=[instance_id])
    assert monitoring() == "disabled"


def test_iam_denies_the_operator_a_launch_without_its_tags_and_anything_on_an_instance_without_managed_by(
        world, clients):
    proxy, clock = world
    user, operator, net = clients
    code = _code(_launch, operator, net, "", _tags(("cml.dev/managed-by", "cml-operator"), ("cml.dev/cluster", CLUSTER)))
    assert code == "UnauthorizedOperation"  # no cml.dev/worker-uid tag: the Null condition
    assert _code(_launch, operator, net, "", _tags(("cml.dev/managed-by", "cml-operator"),
                                                  ("cml.dev/cluster", "other"), ("cml.dev/worker-uid", "u"))) \
        == "UnauthorizedOperation"
    instance_id = _launch(operator, net)["InstanceId"]
    clock.now += 30
    operator.create_tags(Resources=[instance_id], Tags=[{"Key": "team", "Value": "a"}])  # managed: allowed
    user.delete_tags(Resources=[instance_id], Tags=[{"Key": "cml.dev/managed-by"}])  # the user is unrestricted
    for call in (lambda: operator.create_tags(Resources=[instance_id], Tags=[{"Key": "cml.dev/managed-by",
                                                                              "Value": "cml-operator"}]),
                 lambda: operator.stop_instances(InstanceIds=[instance_id]),
                 lambda: operator.terminate_instances(InstanceIds=[instance_id])):
        assert _code(call) == "UnauthorizedOperation"
    user.create_tags(Resources=[instance_id], Tags=[{"Key": "cml.dev/managed-by", "Value": "cml-operator"}])
    operator.terminate_instances(InstanceIds=[instance_id])
    assert proxy.state.snapshot()["calls"]["TerminateInstances"] == {"denied:UnauthorizedOperation": 1, "200": 1}


def test_iam_denies_launching_an_image_of_another_owner(world, clients):
    _, operator, net = clients
    code = _code(operator.run_instances, ImageId=net["amazon_ami"], MinCount=1, MaxCount=1, SubnetId=net["subnet"],
                 TagSpecifications=MANAGED)
    assert code == "UnauthorizedOperation"


def test_the_kind_double_is_one_switch_away(world, clients):
    proxy, _ = world
    _, operator, net = clients
    proxy.timing.configure(TimingConfig())
    proxy.iam.configure(IamConfig())
    instance = _launch(operator, net, "", _tags(("Name", "anything")))  # no managed tags: IAM is off
    assert _state(operator, instance["InstanceId"]) == "running"
    operator.stop_instances(InstanceIds=[instance["InstanceId"]])
    assert _state(operator, instance["InstanceId"]) == "stopped"
