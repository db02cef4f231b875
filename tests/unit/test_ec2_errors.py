"""Every mapped AWS error code, sent as EC2's real XML error response and parsed by botocore.

The fault proxy (no upstream) answers each call with the configured error, so the
whole path runs for real: HTTP status, XML body, botocore's parser, ClientError,
``parse_aws_error``, the exception's class and attributes.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

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
from cml_operator.reconcile.policy import Kind, classify
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


SLOW = "slow recheck"  # permanent, rechecked on --slow-recheck (600 s by default)
SPEC = "spec change"  # permanent, retried only when the spec changes
PERMANENT, TEMPORARY = Kind.PERMANENT, Kind.TEMPORARY

#: A hard-coded copy of docs/errors.md's table, one row per code: (code, class, retryable, kind,
#: reason, retry). Deliberately not derived from ERROR_TABLE or POLICY: a code that vanishes from
#: the table, or changes its class, kind or reason, fails here. Temporary rows give (base, cap) s.
_INVALID = (EC2InvalidParameterException, False, PERMANENT, "InvalidParameter", SPEC)
_DEPENDENCY = (EC2InvalidParameterException, False, PERMANENT, "InvalidParameter", SLOW)
_QUOTA = (EC2QuotaExceededException, False, PERMANENT, "QuotaExceeded", SLOW)
_CAPACITY = (EC2QuotaExceededException, True, TEMPORARY, "InsufficientCapacity", (60, 900))
_THROTTLED = (EC2QuotaExceededException, True, TEMPORARY, "Throttled", (5, 300))
_AUTH = (EC2AuthenticationException, False, PERMANENT, "AuthenticationFailed", SLOW)
_NOT_FOUND = (EC2InstanceNotFoundException, False, PERMANENT, "InstanceNotFound", SPEC)
_IDEMPOTENCY = (EC2InstanceCreationException, True, TEMPORARY, "InstanceCreationFailed", (1, 10))
_CREATION = (EC2InstanceCreationException, True, TEMPORARY, "InstanceCreationFailed", (15, 600))
_NOT_PERMITTED = (EC2InstanceOperationException, False, PERMANENT, "OperationNotPermitted", SLOW)
_WRONG_STATE = (EC2InstanceOperationException, True, TEMPORARY, "InstanceOperationFailed", (10, 120))
_TAG_BUSY = (EC2TagOperationException, True, TEMPORARY, "TagOperationFailed", (10, 300))
_TAG_LIMIT = (EC2TagOperationException, False, PERMANENT, "TagOperationFailed", SPEC)

DOCUMENTED: dict[str, tuple] = {
    **dict.fromkeys([
        "InvalidParameterValue", "InvalidParameter", "InvalidParameterCombination", "MissingParameter",
        "UnknownParameter", "ValidationError", "Unsupported", "UnsupportedOperation", "UnsupportedTenancy",
        "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable", "InvalidGroupId.Malformed",
        "InvalidSecurityGroupId.Malformed", "InvalidSubnetID.Malformed", "InvalidSubnet", "InvalidKeyPair.Format",
        "InvalidInstanceID", "InvalidInstanceID.Malformed", "InvalidInstanceType",
        "InvalidIamInstanceProfileArn.Malformed", "InvalidBlockDeviceMapping", "InvalidUserData.Malformed",
        "InvalidInstanceAttributeValue", "InvalidTagKey.Malformed", "VolumeTypeNotAvailableInZone",
        "UnknownVolumeType", "EncryptedVolumesNotSupported", "BootForVolumeTypeUnsupported", "NonEBSInstance",
        "SecurityGroupsPerInstanceLimitExceeded", "SecurityGroupsPerInterfaceLimitExceeded",
    ], _INVALID),
    **dict.fromkeys([
        "InvalidAMIID.NotFound", "InvalidAMIName.NotFound", "InvalidGroup.NotFound",
        "InvalidSecurityGroupID.NotFound", "InvalidSubnetID.NotFound", "InvalidSubnetId.NotFound",
        "InvalidKeyPair.NotFound", "InvalidSnapshot.NotFound",
    ], _DEPENDENCY),
    **dict.fromkeys([
        "InstanceLimitExceeded", "VcpuLimitExceeded", "VolumeLimitExceeded", "MaxIOPSLimitExceeded",
        "VolumeIOPSLimit", "ResourceLimitExceeded", "PendingVerification",
    ], _QUOTA),
    **dict.fromkeys([
        "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
        "InsufficientAddressCapacity", "InsufficientVolumeCapacity", "InsufficientReservedInstanceCapacity",
        "InsufficientCapacityOnHost",
    ], _CAPACITY),
    **dict.fromkeys([
        "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
    ], _THROTTLED),
    **dict.fromkeys([
        "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure", "ExpiredToken",
        "ExpiredTokenException", "InvalidClientTokenId", "RequestExpired", "SignatureDoesNotMatch",
        "UnrecognizedClientException", "OptInRequired", "Blocked",
    ], _AUTH),
    "InvalidInstanceID.NotFound": _NOT_FOUND,
    "IdempotentParameterMismatch": _IDEMPOTENCY,
    "IdempotentInstanceTerminated": _IDEMPOTENCY,
    "InsufficientFreeAddressesInSubnet": _CREATION,
    "OperationNotPermitted": _NOT_PERMITTED,
    "IncorrectInstanceState": _WRONG_STATE,
    "IncorrectState": _WRONG_STATE,
    "ConcurrentTagAccess": _TAG_BUSY,
    "TagLimitExceeded": _TAG_LIMIT,
}
PERMISSION_DENIED = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException")


class _Fixed(random.Random):
    """An rng whose ``random()`` is pinned, to read a backoff's floor (0) and ceiling (just under 1)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize("code", sorted(DOCUMENTED))
def test_every_documented_code_becomes_its_exception_and_decision(client, proxy, code):
    cls, retryable, kind, reason, retry = DOCUMENTED[code]
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

    first = classify(error, retry=0, slow_recheck_seconds=600, rng=_Fixed(0.0))
    assert (first.kind, first.reason) == (kind, reason)
    if retry == SLOW:
        assert first.delay == 600
    elif retry == SPEC:
        assert first.delay is None
    else:
        base, cap = retry
        assert first.delay == base
        assert classify(error, retry=30, rng=_Fixed(0.999999)).delay == cap


def test_the_error_table_holds_exactly_the_documented_codes():
    assert set(ERROR_TABLE) == set(DOCUMENTED)


def test_docs_errors_md_names_every_code():
    text = (Path(__file__).parents[2] / "docs" / "errors.md").read_text()
    missing = [code for code in DOCUMENTED if f"`{code}`" not in text]
    assert missing == []


@pytest.mark.parametrize("code", PERMISSION_DENIED)
def test_a_permission_denied_names_the_missing_action_and_never_refreshes_credentials(client, proxy, code):
    proxy.state.set_rules([FaultRule(code=code, message="You are not authorized to perform this operation.")])

    with pytest.raises(EC2AuthenticationException) as caught:
        client.start_instance(REGION, INSTANCE)

    assert "ec2:StartInstances" in str(caught.value)
    assert proxy.state.snapshot()["calls"]["StartInstances"] == {f"fault:{code}": 1}  # no refresh, no retry


@pytest.mark.parametrize("code", ["AuthFailure", "ExpiredToken", "InvalidClientTokenId", "RequestExpired",
                                  "SignatureDoesNotMatch"])
def test_a_credential_error_refreshes_credentials_once(client, proxy, code):
    proxy.state.set_rules([FaultRule(code=code)])

    with pytest.raises(EC2AuthenticationException):
        client.start_instance(REGION, INSTANCE)

    assert proxy.state.snapshot()["calls"]["StartInstances"] == {f"fault:{code}": 2}


@pytest.mark.parametrize(("code", "status"), [("InsufficientInstanceCapacity", 500), ("InsufficientVolumeCapacity", 500),
                                               ("RequestLimitExceeded", 503), ("UnauthorizedOperation", 403),
                                               ("InvalidParameterValue", 400)])
def test_the_fault_proxy_answers_with_the_http_status_ec2_uses(proxy, code, status):
    from botocore.exceptions import ClientError

    proxy.state.set_rules([FaultRule(code=code)])
    raw = boto3.client("ec2", region_name=REGION, endpoint_url=proxy.url, aws_access_key_id="k",
                       aws_secret_access_key="s", config=Config(retries={"total_max_attempts": 1}))

    with pytest.raises(ClientError) as caught:
        raw.stop_instances(InstanceIds=[INSTANCE])

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_botocore_retries_capacity_errors_as_the_5xx_they_are(proxy):
    proxy.state.set_rules([FaultRule(code="InsufficientInstanceCapacity", action="RunInstances")])
    proxy.state.reset_counts()
    client = EC2Client(EC2ClientSettings(max_attempts=3), endpoint_url=proxy.url)

    with pytest.raises(EC2QuotaExceededException):
        client.create_instance(REGION, ami_id="ami-12345678", instance_type="m5.large", subnet_id="subnet-1",
                               security_group_ids=[], client_token="t", tags={})

    assert proxy.state.snapshot()["calls"]["RunInstances"] == {"fault:InsufficientInstanceCapacity": 3}


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
