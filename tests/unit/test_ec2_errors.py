"""Every mapped AWS error code, sent as EC2's real XML error response and parsed by botocore.

The fault proxy (no upstream) answers each call with the configured error, so the
whole path runs for real: HTTP status, XML body, botocore's parser, ClientError,
``parse_aws_error``, the exception's class and attributes.
"""

from __future__ import annotations

import socket

import pytest

from cml_operator.ec2 import (
    EC2AuthenticationException,
    EC2Client,
    EC2ClientSettings,
    EC2Exception,
    EC2InstanceCreationException,
    EC2InstanceNotFoundException,
    EC2InstanceOperationException,
    EC2InvalidParameterException,
    EC2QuotaExceededException,
    EC2StatusCheckException,
    EC2TagOperationException,
    IntegrationException,
    parse_aws_error,
)
from cml_operator.ec2 import exceptions as exceptions_module
from cml_operator.ec2.errors import ERROR_TABLE
from tests.support.faultproxy import FaultProxyServer, FaultRule

REGION = "eu-west-1"
INSTANCE = "i-0123456789abcdef0"


@pytest.fixture(scope="module")
def proxy():
    server = FaultProxyServer(0, upstream=None)
    server.start_in_thread()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(proxy) -> EC2Client:
    proxy.state.set_rules([])
    proxy.state.reset_counts()
    # One attempt: botocore's own retries are exercised separately below.
    return EC2Client(EC2ClientSettings(max_attempts=1), endpoint_url=proxy.url)


#: (code, class, retryable) for each row DESIGN.md names, and each extra row of the table.
EXPECTED = [
    ("InvalidParameterValue", EC2InvalidParameterException, False),
    ("InvalidParameter", EC2InvalidParameterException, False),
    ("InvalidParameterCombination", EC2InvalidParameterException, False),
    ("InvalidAMIID.NotFound", EC2InvalidParameterException, False),
    ("InvalidAMIID.Malformed", EC2InvalidParameterException, False),
    ("InvalidGroup.NotFound", EC2InvalidParameterException, False),
    ("InvalidSubnetID.NotFound", EC2InvalidParameterException, False),
    ("InvalidKeyPair.NotFound", EC2InvalidParameterException, False),
    ("InstanceLimitExceeded", EC2QuotaExceededException, False),
    ("VcpuLimitExceeded", EC2QuotaExceededException, False),
    ("InsufficientInstanceCapacity", EC2QuotaExceededException, True),
    ("RequestLimitExceeded", EC2QuotaExceededException, True),
    ("Throttling", EC2QuotaExceededException, True),
    ("UnauthorizedOperation", EC2AuthenticationException, False),
    ("InvalidClientTokenId", EC2AuthenticationException, False),
    ("SignatureDoesNotMatch", EC2AuthenticationException, False),
    ("AccessDenied", EC2AuthenticationException, False),
    ("AuthFailure", EC2AuthenticationException, False),
    ("ExpiredToken", EC2AuthenticationException, False),
    ("InvalidInstanceID.NotFound", EC2InstanceNotFoundException, False),
    ("IncorrectInstanceState", EC2InstanceOperationException, True),
    ("TagLimitExceeded", EC2TagOperationException, False),
]
EXPECTED += [
    (code, rule.exception, rule.retryable)
    for code, rule in ERROR_TABLE.items()
    if code not in {row[0] for row in EXPECTED}
]


@pytest.mark.parametrize(("code", "cls", "retryable"), EXPECTED, ids=[row[0] for row in EXPECTED])
def test_every_mapped_code_becomes_its_exception(client, proxy, code, cls, retryable):
    proxy.state.set_rules([FaultRule(code=code, message=f"AWS says {code}")])

    with pytest.raises(cls) as caught:
        client.stop_instance(REGION, INSTANCE)

    error = caught.value
    assert type(error) is cls
    assert error.code == code
    assert error.retryable is retryable
    assert error.operation == "StopInstances"
    assert error.region == REGION
    assert error.instance_id == INSTANCE
    assert error.request_id and len(error.request_id) == 36
    assert "StopInstances" in str(error) and code in str(error) and f"AWS says {code}" in str(error)
    assert isinstance(error, IntegrationException) and isinstance(error, EC2Exception)


@pytest.mark.parametrize(
    ("call", "operation", "cls"),
    [
        (lambda c: c.create_instance(REGION, ami_id="ami-12345678", instance_type="m5.large",
                                     subnet_id="subnet-1", security_group_ids=[], client_token="t", tags={}),
         "RunInstances", EC2InstanceCreationException),
        (lambda c: c.start_instance(REGION, INSTANCE), "StartInstances", EC2InstanceOperationException),
        (lambda c: c.terminate_instance(REGION, INSTANCE), "TerminateInstances", EC2InstanceOperationException),
        (lambda c: c.add_tags(REGION, INSTANCE, {"a": "b"}), "CreateTags", EC2TagOperationException),
        (lambda c: c.get_instance_status_checks(REGION, INSTANCE), "DescribeInstanceStatus",
         EC2StatusCheckException),
        (lambda c: c.describe_instances(REGION, [INSTANCE]), "DescribeInstances", IntegrationException),
    ],
)
@pytest.mark.parametrize("server_code", ["InternalError", "Unavailable"])
def test_server_errors_become_the_exception_of_the_operation_family(client, proxy, call, operation, cls, server_code):
    proxy.state.set_rules([FaultRule(code=server_code)])

    with pytest.raises(cls) as caught:
        call(client)

    assert type(caught.value) is cls
    assert caught.value.retryable is True and caught.value.code == server_code
    assert caught.value.operation == operation


def test_an_unknown_code_is_a_plain_integration_exception_naming_the_code(client, proxy):
    proxy.state.set_rules([FaultRule(code="SomethingNew.Weird", message="new failure")])

    with pytest.raises(IntegrationException) as caught:
        client.stop_instance(REGION, INSTANCE)

    assert type(caught.value) is IntegrationException
    assert "SomethingNew.Weird" in str(caught.value) and caught.value.code == "SomethingNew.Weird"


def test_botocore_retries_throttling_before_giving_up(proxy):
    proxy.state.set_rules([FaultRule(code="RequestLimitExceeded", action="StopInstances", times=2)])
    proxy.state.reset_counts()
    client = EC2Client(EC2ClientSettings(max_attempts=3), endpoint_url=proxy.url)

    # Third attempt reaches the proxy's missing upstream (502): all three attempts were made.
    with pytest.raises(IntegrationException):
        client.stop_instance(REGION, INSTANCE)

    calls = proxy.state.snapshot()["calls"]["StopInstances"]
    assert calls == {"fault:RequestLimitExceeded": 2, "no-upstream": 1}  # 3 attempts in all


def test_an_auth_failure_refreshes_credentials_once_then_raises(client, proxy):
    proxy.state.set_rules([FaultRule(code="AuthFailure")])

    with pytest.raises(EC2AuthenticationException):
        client.start_instance(REGION, INSTANCE)

    assert proxy.state.snapshot()["calls"]["StartInstances"] == {"fault:AuthFailure": 2}


def test_an_auth_failure_cured_by_the_refresh_is_not_raised(client, proxy):
    proxy.state.set_rules([FaultRule(code="ExpiredToken", times=1), FaultRule(code="IncorrectInstanceState")])

    # The retry after the refresh gets past the auth failure (and hits the next rule).
    with pytest.raises(EC2InstanceOperationException):
        client.start_instance(REGION, INSTANCE)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_failure_is_a_retryable_integration_exception():
    client = EC2Client(EC2ClientSettings(max_attempts=1, connect_timeout=1),
                       endpoint_url=f"http://127.0.0.1:{_closed_port()}")

    with pytest.raises(IntegrationException) as caught:
        client.describe_instances(REGION, [INSTANCE])

    assert type(caught.value) is IntegrationException
    assert caught.value.retryable is True and caught.value.code == "EndpointConnectionError"


def test_read_timeout_is_a_retryable_integration_exception(proxy):
    proxy.state.set_rules([FaultRule(code="InternalError", delay=2.0)])
    client = EC2Client(EC2ClientSettings(max_attempts=1, read_timeout=0.5), endpoint_url=proxy.url)

    with pytest.raises(IntegrationException) as caught:
        client.describe_instances(REGION, [INSTANCE])

    assert caught.value.code == "ReadTimeoutError" and caught.value.retryable is True


def test_missing_credentials_are_an_authentication_exception(monkeypatch, proxy, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    client = EC2Client(EC2ClientSettings(max_attempts=1), endpoint_url=proxy.url)

    with pytest.raises(EC2AuthenticationException) as caught:
        client.describe_instances(REGION, [INSTANCE])

    assert caught.value.code == "NoCredentialsError" and caught.value.retryable is False


def test_messages_never_carry_the_access_key_id(client, proxy):
    proxy.state.set_rules([FaultRule(code="AuthFailure", message="key AKIAABCDEFGHIJKLMNOP is not valid")])

    with pytest.raises(EC2AuthenticationException) as caught:
        client.stop_instance(REGION, INSTANCE)

    assert "AKIAABCDEFGHIJKLMNOP" not in str(caught.value)


def test_client_parse_aws_error_delegates_to_the_table():
    from botocore.exceptions import ClientError

    error = ClientError({"Error": {"Code": "VcpuLimitExceeded", "Message": "m"}}, "RunInstances")
    parsed = EC2Client()._parse_aws_error(error, "create_instance")
    assert type(parsed) is EC2QuotaExceededException
    assert type(parse_aws_error(error, "create_instance")) is EC2QuotaExceededException


def test_star_import_exposes_the_ten_names():
    namespace: dict = {}
    exec("from cml_operator.ec2.exceptions import *", namespace)
    names = {n for n in namespace if not n.startswith("__")}
    assert names == {
        "IntegrationException", "EC2Exception", "EC2AuthenticationException", "EC2InstanceNotFoundException",
        "EC2InstanceCreationException", "EC2InstanceOperationException", "EC2TagOperationException",
        "EC2StatusCheckException", "EC2QuotaExceededException", "EC2InvalidParameterException",
    }
    assert set(exceptions_module.__all__) == names


def test_the_hierarchy_is_the_seeds():
    for name in exceptions_module.__all__:
        cls = getattr(exceptions_module, name)
        assert issubclass(cls, IntegrationException)
        if name not in ("IntegrationException", "EC2Exception"):
            assert cls.__bases__ == (EC2Exception,)
    assert EC2Exception.__bases__ == (IntegrationException,)


def test_exceptions_survive_pickling_with_their_attributes():
    import pickle

    error = EC2QuotaExceededException("m", code="RequestLimitExceeded", operation="RunInstances",
                                      region=REGION, instance_id=None, request_id="r", retryable=True)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.retryable, copy.request_id, str(copy)) == ("RequestLimitExceeded", True, "r", "m")
