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
_NOT_PERMITTED = ErrorRule(EC2InstanceOperationException, retryable=False)
_CREATION = ErrorRule(EC2InstanceCreationException, retryable=True)
_TAG_BUSY = ErrorRule(EC2TagOperationException, retryable=True)
_TAG_LIMIT = ErrorRule(EC2TagOperationException, retryable=False)

#: Credential errors: a refreshed session (rotated IRSA / instance-profile keys) may cure them.
CREDENTIAL_CODES = frozenset({
    "AuthFailure", "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "RequestExpired",
    "SignatureDoesNotMatch", "UnrecognizedClientException",
})
#: Permission denied: the credentials are fine, the IAM policy says no. A refresh cannot cure it.
PERMISSION_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})

#: AWS error code -> rule. Every code AWS documents for the calls the operator makes
#: (RunInstances, Start/Stop/TerminateInstances, ModifyInstanceAttribute, Create/DeleteTags,
#: DescribeInstances/InstanceStatus/Images/KeyPairs/InstanceTypes/InstanceTypeOfferings), by family.
#: Whether a code is retried, and how, is ``reconcile/policy.py``'s decision, not this table's.
ERROR_TABLE: dict[str, ErrorRule] = {
    # credentials (refreshed once) and permissions (never refreshed)
    **dict.fromkeys(sorted(CREDENTIAL_CODES), _AUTH),
    **dict.fromkeys(sorted(PERMISSION_CODES), _AUTH),
    "OptInRequired": _AUTH,
    "Blocked": _AUTH,
    # the instance is gone
    "InvalidInstanceID.NotFound": _NOT_FOUND,
    # account quotas and limits: they do not clear by themselves ...
    "InstanceLimitExceeded": _QUOTA,
    "VcpuLimitExceeded": _QUOTA,
    "VolumeLimitExceeded": _QUOTA,
    "MaxIOPSLimitExceeded": _QUOTA,
    "VolumeIOPSLimit": _QUOTA,
    "ResourceLimitExceeded": _QUOTA,
    "PendingVerification": _QUOTA,
    # ... capacity and request rate do
    "InsufficientInstanceCapacity": _CAPACITY,
    "InsufficientHostCapacity": _CAPACITY,
    "InsufficientCapacity": _CAPACITY,
    "InsufficientAddressCapacity": _CAPACITY,
    "InsufficientVolumeCapacity": _CAPACITY,
    "InsufficientReservedInstanceCapacity": _CAPACITY,
    "InsufficientCapacityOnHost": _CAPACITY,
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
    "Unsupported": _INVALID,
    "UnsupportedOperation": _INVALID,
    "UnsupportedTenancy": _INVALID,
    "InvalidAMIID.Malformed": _INVALID,
    "InvalidAMIID.Unavailable": _INVALID,
    "InvalidGroupId.Malformed": _INVALID,
    "InvalidSecurityGroupId.Malformed": _INVALID,
    "InvalidSubnetID.Malformed": _INVALID,
    "InvalidSubnet": _INVALID,
    "InvalidKeyPair.Format": _INVALID,
    "InvalidInstanceID": _INVALID,
    "InvalidInstanceID.Malformed": _INVALID,
    "InvalidInstanceType": _INVALID,
    "InvalidIamInstanceProfileArn.Malformed": _INVALID,
    "InvalidBlockDeviceMapping": _INVALID,
    "InvalidUserData.Malformed": _INVALID,
    "InvalidInstanceAttributeValue": _INVALID,
    "InvalidTagKey.Malformed": _INVALID,
    "VolumeTypeNotAvailableInZone": _INVALID,
    "UnknownVolumeType": _INVALID,
    "EncryptedVolumesNotSupported": _INVALID,
    "BootForVolumeTypeUnsupported": _INVALID,
    "NonEBSInstance": _INVALID,
    "SecurityGroupsPerInstanceLimitExceeded": _INVALID,
    "SecurityGroupsPerInterfaceLimitExceeded": _INVALID,
    # ... of which these name a dependency that may yet appear (EC2 and IAM are eventually consistent)
    "InvalidAMIID.NotFound": _INVALID,
    "InvalidAMIName.NotFound": _INVALID,
    "InvalidGroup.NotFound": _INVALID,
    "InvalidSecurityGroupID.NotFound": _INVALID,
    "InvalidSubnetID.NotFound": _INVALID,
    "InvalidSubnetId.NotFound": _INVALID,
    "InvalidKeyPair.NotFound": _INVALID,
    "InvalidSnapshot.NotFound": _INVALID,
    # instance in the wrong state for the operation
    "IncorrectInstanceState": _WRONG_STATE,
    "IncorrectState": _WRONG_STATE,
    # termination or stop protection, or a stop this instance cannot do
    "OperationNotPermitted": _NOT_PERMITTED,
    # RunInstances: the token was used before with other parameters, or its instance is gone
    "IdempotentParameterMismatch": _CREATION,
    "IdempotentInstanceTerminated": _CREATION,
    # creation-only failures that may clear (addresses free up)
    "InsufficientFreeAddressesInSubnet": _CREATION,
    # tags: a concurrent writer clears; the per-resource limit does not
    "ConcurrentTagAccess": _TAG_BUSY,
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
            "MonitorInstances", "UnmonitorInstances", "ModifyInstanceMetadataOptions",
            "start_instance", "stop_instance", "terminate_instance", "modify_instance_type",
            "modify_metadata_options",
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
_CREDENTIAL_ERROR_NAMES = frozenset(cls.__name__ for cls in _CREDENTIAL_ERRORS)


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
    if rule is not None and code in PERMISSION_CODES:
        action = f"ec2:{error.operation_name or operation}"
        why = (f"permission denied: the operator's IAM identity may not call {action} "
               f"(add it to its policy, see deploy/iam-policy.json); AWS says: {_shorten(aws_message, 200)}")
        return rule.exception(_message(operation, code, why, instance_id), retryable=rule.retryable, **context)
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


def needs_credential_refresh(error: IntegrationException) -> bool:
    """True for errors a reloaded credential chain may cure (expired or rotated keys, none loaded).

    A permission denied (UnauthorizedOperation, AccessDenied) is the IAM policy speaking:
    throwing away every cached client and session would not change its answer.
    """
    return isinstance(error, EC2AuthenticationException) and (
        error.code in CREDENTIAL_CODES or error.code in _CREDENTIAL_ERROR_NAMES)


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
