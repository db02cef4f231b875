"""Exception -> temporary or permanent, delay, condition reason: the only place that decides.

``POLICY`` is read top to bottom; the first row whose class (and, where given,
retryability, AWS code or a word of the message) matches decides. Handlers hold no if-chains on codes:
they ask ``classify`` and raise ``kopf.TemporaryError`` / ``kopf.PermanentError``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from ..accounts.exceptions import AccountRefusedException, AssumeRoleException
from ..cml.exceptions import (
    CMLAuthenticationException,
    CMLCertificateException,
    CMLException,
    CMLLicensingException,
    CMLUnavailableException,
)
from ..ec2.exceptions import (
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
from . import reasons


class Kind(enum.Enum):
    TEMPORARY = "temporary"  # clears by itself: retry with the delay
    PERMANENT = "permanent"  # needs a change outside the operator: Stalled


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base * 2**retry`` plus up to ``jitter`` of it at random, then capped.

    The cap applies after the jitter, so no delay ever exceeds ``cap``; the first
    delay is ``base`` at least.
    """

    base: float
    cap: float
    jitter: float = 0.2

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        raw = self.base * (2 ** max(0, min(retry, 30)))
        return min(self.cap, raw + raw * self.jitter * (rng or random).random())


@dataclass(frozen=True)
class Rule:
    exception: type[IntegrationException]
    kind: Kind
    reason: str
    backoff: Backoff | None = None  # temporary: when to retry
    slow_recheck: bool = False  # permanent: retry on the slow interval anyway (cure lies outside the spec)
    retryable: bool | None = None  # match only exceptions with this retryability
    codes: frozenset[str] | None = None  # match only these AWS codes
    message_contains: str | None = None  # match only when the message names this (e.g. a parameter)

    def matches(self, error: IntegrationException) -> bool:
        return (isinstance(error, self.exception)
                and (self.retryable is None or error.retryable is self.retryable)
                and (self.codes is None or error.code in self.codes)
                and (self.message_contains is None or self.message_contains in str(error)))


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str
    delay: float | None  # seconds until the next attempt; None = only when the spec changes

    @property
    def temporary(self) -> bool:
        return self.kind is Kind.TEMPORARY


CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
    "InsufficientAddressCapacity", "InsufficientVolumeCapacity", "InsufficientReservedInstanceCapacity",
    "InsufficientCapacityOnHost",
})
#: Invalid because something the spec names does not exist *yet*: EC2 and IAM are eventually
#: consistent, and GitOps creates the group and the worker in one sync. Rechecked slowly.
DEPENDENCY_CODES = frozenset({
    "InvalidAMIID.NotFound", "InvalidAMIName.NotFound", "InvalidGroup.NotFound",
    "InvalidSecurityGroupID.NotFound", "InvalidSubnetID.NotFound", "InvalidSubnetId.NotFound",
    "InvalidKeyPair.NotFound", "InvalidSnapshot.NotFound",
    # spec.userDataSecretRef: the Secret (or its key) does not exist yet, or its content is too large
    "UserDataSecret.NotFound", "UserDataSecret.TooLarge",
})
#: RunInstances refused the ClientToken: the pass looks for the instance by uid tag, and if none
#: lives, the next launch uses a new token (creationAttempt + 1).
IDEMPOTENCY_CODES = frozenset({"IdempotentParameterMismatch", "IdempotentInstanceTerminated"})
#: Termination or stop protection (DisableApiTermination / DisableApiStop), or a stop the instance cannot do.
NOT_PERMITTED_CODES = frozenset({"OperationNotPermitted"})

SLOW = True  # readability of the table below: permanent, but rechecked on the slow interval

#: Read top to bottom; the first matching row decides. One row per line, so rows are easy to add.
POLICY: tuple[Rule, ...] = (
    # invalid input: fix the spec; a dependency that may still appear is rechecked slowly
    Rule(EC2InvalidParameterException, Kind.PERMANENT, reasons.INVALID_PARAMETER, slow_recheck=SLOW,
         codes=DEPENDENCY_CODES),
    # an instance profile IAM has not propagated yet: EC2 says InvalidParameterValue naming iamInstanceProfile
    Rule(EC2InvalidParameterException, Kind.PERMANENT, reasons.INVALID_PARAMETER, slow_recheck=SLOW,
         codes=frozenset({"InvalidParameterValue"}), message_contains="iamInstanceProfile"),
    Rule(EC2InvalidParameterException, Kind.PERMANENT, reasons.INVALID_PARAMETER),
    # limits: capacity and request rate clear by themselves, account quotas do not
    Rule(EC2QuotaExceededException, Kind.TEMPORARY, reasons.INSUFFICIENT_CAPACITY, Backoff(base=60, cap=900),
         codes=CAPACITY_CODES),
    Rule(EC2QuotaExceededException, Kind.TEMPORARY, reasons.THROTTLED, Backoff(base=5, cap=300, jitter=1.0),
         retryable=True),
    Rule(EC2QuotaExceededException, Kind.PERMANENT, reasons.QUOTA_EXCEEDED, slow_recheck=SLOW),
    # credentials (the client refreshed them once first) and permissions (never refreshed)
    Rule(EC2AuthenticationException, Kind.PERMANENT, reasons.AUTHENTICATION_FAILED, slow_recheck=SLOW),
    # callers that know better (deletion: success; a launched instance: recreate) decide first
    Rule(EC2InstanceNotFoundException, Kind.PERMANENT, reasons.INSTANCE_NOT_FOUND),
    Rule(EC2InstanceCreationException, Kind.TEMPORARY, reasons.INSTANCE_CREATION_FAILED, Backoff(base=1, cap=10),
         codes=IDEMPOTENCY_CODES),
    Rule(EC2InstanceCreationException, Kind.TEMPORARY, reasons.INSTANCE_CREATION_FAILED, Backoff(base=15, cap=600)),
    Rule(EC2InstanceOperationException, Kind.PERMANENT, reasons.OPERATION_NOT_PERMITTED, slow_recheck=SLOW,
         codes=NOT_PERMITTED_CODES),
    Rule(EC2InstanceOperationException, Kind.TEMPORARY, reasons.INSTANCE_OPERATION_FAILED, Backoff(base=10, cap=120)),
    Rule(EC2TagOperationException, Kind.PERMANENT, reasons.TAG_OPERATION_FAILED, retryable=False),
    Rule(EC2TagOperationException, Kind.TEMPORARY, reasons.TAG_OPERATION_FAILED, Backoff(base=10, cap=300)),
    Rule(EC2StatusCheckException, Kind.TEMPORARY, reasons.STATUS_CHECKS_PENDING, Backoff(base=15, cap=60)),
    # CML controllers (spec.cml). The boot timeout turns CMLStarting into CMLUnreachable (reconcile/cml.py).
    Rule(CMLCertificateException, Kind.PERMANENT, reasons.CML_CERTIFICATE_CHANGED),
    Rule(CMLAuthenticationException, Kind.PERMANENT, reasons.CML_AUTHENTICATION_FAILED, slow_recheck=True),
    Rule(CMLLicensingException, Kind.PERMANENT, reasons.LICENSE_INVALID, retryable=False),
    Rule(CMLLicensingException, Kind.TEMPORARY, reasons.LICENSE_RELEASING, Backoff(base=10, cap=60),
         codes=frozenset({"DeregistrationFailed"})),
    Rule(CMLLicensingException, Kind.TEMPORARY, reasons.LICENSE_REGISTERING, Backoff(base=30, cap=300)),
    Rule(CMLUnavailableException, Kind.TEMPORARY, reasons.CML_STARTING, Backoff(base=15, cap=60)),
    Rule(CMLException, Kind.TEMPORARY, reasons.CML_UNREACHABLE, Backoff(base=15, cap=300)),
    # accounts (CMLAccount): refused by the administrator's selectors, or STS refused the role. The cure lies
    # outside the spec (a selector, a namespace label, a trust policy): rechecked slowly.
    Rule(AccountRefusedException, Kind.PERMANENT, reasons.ACCOUNT_AMBIGUOUS, slow_recheck=SLOW,
         codes=frozenset({reasons.ACCOUNT_AMBIGUOUS})),
    Rule(AccountRefusedException, Kind.PERMANENT, reasons.ASSUME_ROLE_FAILED, slow_recheck=SLOW,
         codes=frozenset({reasons.ASSUME_ROLE_FAILED})),
    Rule(AccountRefusedException, Kind.PERMANENT, reasons.ACCOUNT_NOT_ALLOWED, slow_recheck=SLOW),
    Rule(AssumeRoleException, Kind.PERMANENT, reasons.ASSUME_ROLE_FAILED, slow_recheck=SLOW, retryable=False),
    Rule(AssumeRoleException, Kind.TEMPORARY, reasons.ASSUME_ROLE_FAILED, Backoff(base=10, cap=300)),
    # Kubernetes RBAC forbids reading the spec.userDataSecretRef Secret: a permission, like IAM's
    Rule(IntegrationException, Kind.PERMANENT, reasons.AUTHENTICATION_FAILED, slow_recheck=SLOW,
         codes=frozenset({"UserDataSecret.Forbidden"})),
    Rule(IntegrationException, Kind.TEMPORARY, reasons.INTEGRATION_ERROR, Backoff(base=10, cap=300)),
)


def rule_for(error: IntegrationException) -> Rule:
    for rule in POLICY:
        if rule.matches(error):
            return rule
    raise AssertionError(f"POLICY has no row for {error!r}")  # IntegrationException is the last row


def classify(
    error: IntegrationException,
    *,
    retry: int = 0,
    slow_recheck_seconds: float = 600.0,
    rng: random.Random | None = None,
) -> Decision:
    """What to do about ``error`` on the ``retry``-th consecutive failure (0 = first)."""
    rule = rule_for(error)
    if rule.kind is Kind.TEMPORARY:
        assert rule.backoff is not None
        return Decision(rule.kind, rule.reason, rule.backoff.delay(retry, rng))
    return Decision(rule.kind, rule.reason, slow_recheck_seconds if rule.slow_recheck else None)
