"""The CML controller's exception family, beside the EC2 one under the seed's ``IntegrationException``.

    IntegrationException (base, from ec2.exceptions)
    └── CMLException (anything that went wrong talking to a CML controller)
        ├── CMLUnavailableException     connection refused, timeout, 5xx, not ready yet: temporary
        ├── CMLAuthenticationException  401/403 after one re-authentication, missing Secret: permanent
        ├── CMLLicensingException       licensing calls failed: temporary; a refused token: permanent
        └── CMLCertificateException     the certificate differs from the pin or fails the CA: permanent

``code`` says what happened (an HTTP status like ``HTTP503``, or ``ConnectionError``,
``Timeout``, ``NotReady``, ``CertificateChanged``, ``TokenRefused``...), ``operation``
the API path. Messages never hold the password, the bearer token or a licence token.
``errors.cml_error`` builds them from HTTP statuses and transport errors.
"""

from __future__ import annotations

from ..ec2.exceptions import IntegrationException

__all__ = [
    "CMLException",
    "CMLUnavailableException",
    "CMLAuthenticationException",
    "CMLLicensingException",
    "CMLCertificateException",
]


class CMLException(IntegrationException):
    """Base of every failure reported by (or on the way to) a CML controller."""


class CMLUnavailableException(CMLException):
    """The controller does not answer, answers 5xx, or says it is not ready (still booting)."""


class CMLAuthenticationException(CMLException):
    """The credentials were refused (or the Secret holding them is missing)."""

    default_retryable = False


class CMLLicensingException(CMLException):
    """Registering or releasing the licence failed; ``retryable`` False when the token was refused."""


class CMLCertificateException(CMLException):
    """The controller's certificate is not the pinned one, or does not verify against the given CA."""

    default_retryable = False
