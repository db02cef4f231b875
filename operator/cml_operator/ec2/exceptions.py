"""The EC2 client's exception hierarchy, exactly as the seed specification names it.

    IntegrationException (base: anything that went wrong talking to a provider)
    └── EC2Exception (AWS EC2 base)
        ├── EC2AuthenticationException     credentials invalid, expired or not allowed
        ├── EC2InstanceNotFoundException   InvalidInstanceID.NotFound
        ├── EC2InstanceCreationException   RunInstances failed otherwise
        ├── EC2InstanceOperationException  start / stop / terminate / modify failed
        ├── EC2TagOperationException       tag add / remove / get failed
        ├── EC2StatusCheckException        status checks not available (yet)
        ├── EC2QuotaExceededException      limits, capacity and request-rate throttling
        └── EC2InvalidParameterException   a parameter AWS will never accept

Every exception carries the AWS error ``code``, the ``operation`` that failed,
``region``, ``instance_id``, AWS's ``request_id`` and ``retryable``. Whether a
failure is temporary is decided from the code, not the class: the seed files
throttling under ``EC2QuotaExceededException`` but throttling clears by itself.
Messages hold the operation, the code and AWS's message; never credentials.

This module holds the classes only; ``errors.parse_aws_error`` builds them.
"""

from __future__ import annotations

__all__ = [
    "IntegrationException",
    "EC2Exception",
    "EC2AuthenticationException",
    "EC2InstanceNotFoundException",
    "EC2InstanceCreationException",
    "EC2InstanceOperationException",
    "EC2TagOperationException",
    "EC2StatusCheckException",
    "EC2QuotaExceededException",
    "EC2InvalidParameterException",
]


class IntegrationException(Exception):
    """Base of every provider failure; ``except IntegrationException`` catches them all."""

    #: Used when the raiser does not say; subclasses state their usual nature.
    default_retryable: bool = True

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        operation: str | None = None,
        region: str | None = None,
        instance_id: str | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.operation = operation
        self.region = region
        self.instance_id = instance_id
        self.request_id = request_id
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
            f"operation={self.operation!r}, region={self.region!r}, "
            f"instance_id={self.instance_id!r}, retryable={self.retryable!r})"
        )

    def __reduce__(self):  # keep the attributes when pickled (multiprocessing, logging queues)
        return (_rebuild, (type(self), self.message, self._attributes()))

    def _attributes(self) -> dict[str, object]:
        return {
            "code": self.code,
            "operation": self.operation,
            "region": self.region,
            "instance_id": self.instance_id,
            "request_id": self.request_id,
            "retryable": self.retryable,
        }


def _rebuild(cls: type[IntegrationException], message: str, attributes: dict) -> IntegrationException:
    return cls(message, **attributes)


class EC2Exception(IntegrationException):
    """Base of every failure reported by (or on the way to) Amazon EC2."""


class EC2AuthenticationException(EC2Exception):
    """Credentials are missing, invalid or expired, or lack a permission."""

    default_retryable = False


class EC2InstanceNotFoundException(EC2Exception):
    """The instance id does not exist (never did, or was terminated long ago)."""

    default_retryable = False


class EC2InstanceCreationException(EC2Exception):
    """RunInstances failed for a reason other than parameters, quota or credentials."""


class EC2InstanceOperationException(EC2Exception):
    """Start, stop, terminate or modify failed, typically a wrong instance state."""


class EC2TagOperationException(EC2Exception):
    """Adding, removing or reading tags failed."""


class EC2StatusCheckException(EC2Exception):
    """Instance status checks cannot be read (yet)."""


class EC2QuotaExceededException(EC2Exception):
    """A limit was hit: account quota (permanent), capacity or request rate (temporary)."""

    default_retryable = False


class EC2InvalidParameterException(EC2Exception):
    """A parameter EC2 will not accept; retrying the same request cannot succeed."""

    default_retryable = False
