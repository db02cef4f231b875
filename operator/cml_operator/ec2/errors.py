"""Translate botocore failures into the hierarchy of ``exceptions``: one table, one function.

``parse_aws_error`` is the only place that knows AWS error codes. It reads the
code from a ``ClientError`` (botocore already parsed EC2's XML error body), looks
it up in ``ERROR_TABLE`` and builds the exception with everything a caller or
the reconcile policy needs. Codes that belong to no row fall back by the kind of
failure: server-side (5xx) errors become the exception of the operation's family
(RunInstances -> creation, StartInstances -> operation, ...), anything else
becomes a plain ``IntegrationException`` that names the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    TokenRetrievalError,
)
from botocore.parsers import ResponseParserError

from .exceptions import (
    EC2AuthenticationException,
    EC2InstanceCreationException,
    EC2InstanceNotFoundException,
    EC2InstanceOperationException,
    EC2InvalidParameterException,
    EC2QuotaExceededException,
    EC2StatusCheckException,
    EC2TagOperationException,
    IntegrationException,
)


@dataclass(frozen=True)
class ErrorRule:
    """What one AWS error code means to us."""

    exception: type[IntegrationException]
    retryable: bool


_AUTH = ErrorRule(EC2AuthenticationException, retryable=False)
_NOT_FOUND = ErrorRule(EC2InstanceNotFoundException, retryable=False)
_INVALID = ErrorRule(EC2InvalidParameterException, retryable=False)
_QUOTA = ErrorRule(EC2QuotaExceededException, retryable=False)
_CAPACITY = ErrorRule(EC2QuotaExceededException, retryable=True)
_THROTTLED = ErrorRule(EC2QuotaExceededException, retryable=True)
_WRONG_STATE = ErrorRule(EC2InstanceOperationException, retryable=True)
_CREATION = ErrorRule(EC2InstanceCreationException, retryable=True)
_TAG_LIMIT = ErrorRule(EC2TagOperationException, retryable=False)

#: AWS error code -> rule. The seed's codes first, then the ones DESIGN.md adds.
ERROR_TABLE: dict[str, ErrorRule] = {
    # credentials and permissions
    "UnauthorizedOperation": _AUTH,
    "InvalidClientTokenId": _AUTH,
    "SignatureDoesNotMatch": _AUTH,
    "AccessDenied": _AUTH,
    "AccessDeniedException": _AUTH,
    "AuthFailure": _AUTH,
    "ExpiredToken": _AUTH,
    "ExpiredTokenException": _AUTH,
    "RequestExpired": _AUTH,
    "UnrecognizedClientException": _AUTH,
    "OptInRequired": _AUTH,
    "Blocked": _AUTH,
    # the instance is gone
    "InvalidInstanceID.NotFound": _NOT_FOUND,
    # limits: account quotas do not clear by themselves ...
    "InstanceLimitExceeded": _QUOTA,
    "VcpuLimitExceeded": _QUOTA,
    "VolumeLimitExceeded": _QUOTA,
    # ... capacity and request rate do
    "InsufficientInstanceCapacity": _CAPACITY,
    "InsufficientHostCapacity": _CAPACITY,
    "InsufficientCapacity": _CAPACITY,
    "RequestLimitExceeded": _THROTTLED,
    "Throttling": _THROTTLED,
    "ThrottlingException": _THROTTLED,
    "RequestThrottled": _THROTTLED,
    "TooManyRequestsException": _THROTTLED,
    # parameters EC2 will never accept as sent
    "InvalidParameterValue": _INVALID,
    "InvalidParameter": _INVALID,
    "InvalidParameterCombination": _INVALID,
    "MissingParameter": _INVALID,
    "UnknownParameter": _INVALID,
    "ValidationError": _INVALID,
    "InvalidAMIID.NotFound": _INVALID,
    "InvalidAMIID.Malformed": _INVALID,
    "InvalidAMIID.Unavailable": _INVALID,
    "InvalidAMIName.NotFound": _INVALID,
    "InvalidGroup.NotFound": _INVALID,
    "InvalidGroupId.Malformed": _INVALID,
    "InvalidSubnetID.NotFound": _INVALID,
    "InvalidSubnetID.Malformed": _INVALID,
    "InvalidKeyPair.NotFound": _INVALID,
    "InvalidKeyPair.Format": _INVALID,
    "InvalidInstanceID.Malformed": _INVALID,
    "InvalidInstanceType": _INVALID,
    "InvalidBlockDeviceMapping": _INVALID,
    "InvalidUserData.Malformed": _INVALID,
    "InvalidInstanceAttributeValue": _INVALID,
    # instance in the wrong state for the operation
    "IncorrectInstanceState": _WRONG_STATE,
    "IncorrectState": _WRONG_STATE,
    "UnsupportedOperation": _WRONG_STATE,
    "OperationNotPermitted": _WRONG_STATE,
    # creation-only failures that may clear (another AZ/IP frees up)
    "InsufficientFreeAddressesInSubnet": _CREATION,
    "Unsupported": _CREATION,
    # tags: the per-resource limit does not clear by retrying
    "TagLimitExceeded": _TAG_LIMIT,
}

#: Codes AWS uses for its own (5xx) failures; always worth a retry.
SERVER_ERROR_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "ServerInternal"}
)

#: Operation (AWS API name or our client method) -> the exception of its family,
#: used for server-side failures that carry no more specific code.
_OPERATION_FAMILY: dict[str, type[IntegrationException]] = {
    **dict.fromkeys(("RunInstances", "create_instance"), EC2InstanceCreationException),
    **dict.fromkeys(
        (
            "StartInstances", "StopInstances", "TerminateInstances", "ModifyInstanceAttribute",
            "MonitorInstances", "UnmonitorInstances",
            "start_instance", "stop_instance", "terminate_instance", "modify_instance_type",
        ),
        EC2InstanceOperationException,
    ),
    **dict.fromkeys(
        ("CreateTags", "DeleteTags", "DescribeTags", "add_tags", "remove_tags", "get_tags"),
        EC2TagOperationException,
    ),
    **dict.fromkeys(
        ("DescribeInstanceStatus", "get_instance_status_checks", "get_instance_status_checks_batch"),
        EC2StatusCheckException,
    ),
}

# A garbled body (a proxy's HTML error page) is a transport failure as well.
_NETWORK_ERRORS = (
    ConnectTimeoutError, ReadTimeoutError, EndpointConnectionError, ConnectionClosedError, ResponseParserError,
)
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, TokenRetrievalError)


def parse_aws_error(
    error: BaseException,
    operation: str,
    region: str | None = None,
    instance_id: str | None = None,
) -> IntegrationException:
    """Return (not raise) the exception that ``error`` means for ``operation``."""
    context = {"operation": operation, "region": region, "instance_id": instance_id}
    if isinstance(error, IntegrationException):
        return error
    if isinstance(error, ClientError):
        return _from_client_error(error, **context)
    if isinstance(error, _CREDENTIAL_ERRORS):
        name = type(error).__name__
        return EC2AuthenticationException(
            _message(operation, name, "AWS credentials are missing or could not be loaded", instance_id),
            code=name, retryable=False, **context,
        )
    if isinstance(error, _NETWORK_ERRORS):
        name = type(error).__name__
        return IntegrationException(
            _message(operation, name, f"network failure talking to EC2: {_shorten(str(error))}", instance_id),
            code=name, retryable=True, **context,
        )
    if isinstance(error, BotoCoreError):
        name = type(error).__name__
        return IntegrationException(
            _message(operation, name, str(error), instance_id), code=name, retryable=True, **context
        )
    name = type(error).__name__
    return IntegrationException(
        _message(operation, name, str(error), instance_id), code=name, retryable=True, **context
    )


def _from_client_error(
    error: ClientError, *, operation: str, region: str | None, instance_id: str | None
) -> IntegrationException:
    details = error.response.get("Error", {}) or {}
    metadata = error.response.get("ResponseMetadata", {}) or {}
    code = str(details.get("Code") or "Unknown")
    aws_message = str(details.get("Message") or "").strip()
    status = int(metadata.get("HTTPStatusCode") or 0)
    request_id = metadata.get("RequestId") or error.response.get("RequestID")
    context = {
        "code": code, "operation": operation, "region": region,
        "instance_id": instance_id, "request_id": request_id,
    }

    rule = ERROR_TABLE.get(code)
    if rule is not None:
        return rule.exception(_message(operation, code, aws_message, instance_id), retryable=rule.retryable, **context)
    if code in SERVER_ERROR_CODES or status >= 500:
        family = _OPERATION_FAMILY.get(operation) or _OPERATION_FAMILY.get(error.operation_name, IntegrationException)
        return family(_message(operation, code, aws_message, instance_id), retryable=True, **context)
    # The seed's fallback: an unknown code is a generic integration failure that names it.
    aws_message = _ACCESS_KEY_ID.sub("<access-key-id>", aws_message)
    return IntegrationException(
        f"AWS error [{code}] in {operation}: {aws_message}".rstrip(": "), retryable=True, **context
    )


def _shorten(text: str, limit: int = 300) -> str:
    """One line, bounded: a garbled body (an HTML error page) must not flood conditions and events."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def _message(operation: str, code: str, aws_message: str, instance_id: str | None) -> str:
    subject = f" (instance {instance_id})" if instance_id else ""
    text = f"{operation} failed{subject} [{code}]"
    # AWS messages carry no secrets, but some echo the access key id; keep it out of events.
    aws_message = _ACCESS_KEY_ID.sub("<access-key-id>", aws_message)
    return f"{text}: {aws_message}" if aws_message else text
