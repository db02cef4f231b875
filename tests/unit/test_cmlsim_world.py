"""The CML simulator lives on its instance: it answers only while EC2 says ``running``.

Each test launches an instance tagged as the operator tags a worker's, in the
session's moto_server, and drives the simulator's controller through the states a
real one goes through: boot after every start, refused connections while stopped,
a new controller for a replacement, sessions that expire, connections kept open.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3
import pytest

from cml_operator.cml.client import CMLClient, Credentials, Trust
from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME, CMLSimProcess
from tests.support.motoserver import MotoServer, own_image
from tests.support.processes import FAKE_AWS_ENV, wait_for

GOOD = Credentials(DEFAULT_USERNAME, DEFAULT_PASSWORD)
_NO_VERIFY = ssl.create_default_context()
_NO_VERIFY.check_hostname, _NO_VERIFY.verify_mode = False, ssl.CERT_NONE


@pytest.fixture
def ec2(moto: MotoServer) -> Any:
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.url,
                        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def sim(moto: MotoServer) -> Iterator[CMLSimProcess]:
    process = CMLSimProcess(ec2_endpoint=moto.url, boot_seconds=1.5, poll_seconds=0.2).start()
    yield process
    process.stop()


def launch(ec2: Any, worker: str) -> str:
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    image = own_image(ec2, subnet)["ami"]
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "cml.dev/worker", "Value": f"ns-a/{worker}"}]}]
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=subnet,
                             TagSpecifications=tags)["Instances"][0]["InstanceId"]


def system_information(endpoint: str) -> dict[str, Any]:
    import json

    with urllib.request.urlopen(endpoint + "api/v0/system_information", context=_NO_VERIFY, timeout=5) as answer:
        return json.loads(answer.read())


def refused(endpoint: str) -> bool:
    try:
        system_information(endpoint)
    except urllib.error.URLError as error:
        return isinstance(error.reason, ConnectionRefusedError)
    return False


def test_a_controller_answers_only_while_its_instance_runs_and_boots_after_every_start(sim, ec2):
    endpoint = sim.endpoint("w1")
    assert refused(endpoint)  # no instance yet: nobody listens
    instance = launch(ec2, "w1")
    wait_for(lambda: not refused(endpoint), 30, what="the controller to listen")
    assert system_information(endpoint)["ready"] is False  # booting
    wait_for(lambda: system_information(endpoint)["ready"], 30, what="the boot to end")
    assert sim.worker("w1")["instance_id"] == instance and sim.worker("w1")["starts"] == 1

    ec2.stop_instances(InstanceIds=[instance])
    wait_for(lambda: refused(endpoint), 30, what="the stopped controller to refuse connections")
    assert sim.worker("w1")["running"] is False

    ec2.start_instances(InstanceIds=[instance])
    wait_for(lambda: not refused(endpoint), 30, what="the started controller to listen")
    assert system_information(endpoint)["ready"] is False  # it boots again after every start
    assert sim.worker("w1")["starts"] == 2


def test_a_replacement_instance_is_a_new_controller_without_the_old_licence(sim, ec2):
    endpoint = sim.endpoint("w2")
    first = launch(ec2, "w2")
    wait_for(lambda: sim.worker("w2")["ready"], 30, what="the first controller")
    sim.configure("w2", license={"registration": "COMPLETED", "authorization": "IN_COMPLIANCE"})
    ec2.terminate_instances(InstanceIds=[first])
    wait_for(lambda: refused(endpoint), 30, what="the terminated controller to refuse")

    second = launch(ec2, "w2")
    wait_for(lambda: sim.worker("w2")["instance_id"] == second and sim.worker("w2")["ready"], 30,
             what="the replacement's controller")
    assert sim.worker("w2")["license"]["registration"] == "NOT_REGISTERED"


def test_a_request_on_a_connection_kept_open_across_the_stop_is_cut_off(sim, ec2):
    """The licence release after a stop must fail even before the door closes: EC2 is asked per request."""
    endpoint = sim.endpoint("w3")
    instance = launch(ec2, "w3")
    wait_for(lambda: sim.worker("w3")["ready"], 30, what="the controller")
    sim.configure("w3", registration_seconds=0.0)

    async def scenario() -> str:
        async with aiohttp.ClientSession() as session:
            client = CMLClient(session, endpoint, Trust(), GOOD)
            await client.system_information()
            await client.register_license("token")
            await client.licensing()
            ec2.stop_instances(InstanceIds=[instance])  # the wrong order: stop first, release after
            try:
                await client.deregister_license()
            except Exception as error:  # noqa: BLE001 - the point: it fails
                return type(error).__name__
            return "answered"

    outcome = asyncio.run(scenario())
    assert outcome == "CMLUnavailableException", outcome
    view = sim.worker("w3")
    assert "DELETE licensing/deregistration" not in view["calls"]  # cut off on the open connection or refused
    assert view["license"]["registration"] == "COMPLETED"  # still held: the release never happened


def test_connections_stay_open_and_an_expired_token_is_answered_by_authenticating_again(moto, ec2):
    sim = CMLSimProcess(ec2_endpoint=moto.url, token_seconds=1.0, poll_seconds=0.2).start()
    try:
        endpoint = sim.endpoint("w4")
        launch(ec2, "w4")
        wait_for(lambda: sim.worker("w4")["ready"], 30, what="the controller")

        async def looks() -> None:
            async with aiohttp.ClientSession() as session:
                client = CMLClient(session, endpoint, Trust(), GOOD)
                await client.system_information()
                await client.system_stats()
                await client.lab_counts()
                await asyncio.sleep(1.2)  # the token expires
                await client.system_stats()  # 401, authenticate, again: no error reaches the caller

        asyncio.run(looks())
        view = sim.worker("w4")
        assert view["calls"]["POST authenticate"] == 2 and view["calls"]["GET system_stats"] == 3
        assert view["connections"] == 1  # one TLS connection for every request (the pin's bare handshake aside)
    finally:
        sim.stop()
