"""Account failures, as ``IntegrationException`` subclasses so the one policy table decides about them.

    IntegrationException
    └── AccountException
        ├── AssumeRoleException     STS refused or failed AssumeRole (``retryable`` says which)
        └── AccountRefusedException no account may be used here (code: AccountNotAllowed | AccountAmbiguous)
"""

from __future__ import annotations

from ..ec2.exceptions import IntegrationException


class AccountException(IntegrationException):
    """Base of the account failures."""


class AssumeRoleException(AccountException):
    """STS AssumeRole failed; ``code`` is STS's (AccessDenied, ValidationError, Throttling, ...)."""


class AccountRefusedException(AccountException):
    """The object may not use the account it asked for, or the account is ambiguous."""

    default_retryable = False
