"""The policy table: every exception (and code, where it matters) -> kind, delay, reason."""

from __future__ import annotations

import random

import pytest

from cml_operator.ec2.errors import parse_aws_error
from cml_operator.ec2.exceptions import (
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
from cml_operator.reconcile import reasons
from cml_operator.reconcile.policy import Backoff, Decision, Kind, classify

from botocore.exceptions import ClientError


def error_for(code: str, operation: str = "RunInstances") -> IntegrationException:
    return parse_aws_error(ClientError({"Error": {"Code": code, "Message": "m"}}, operation), operation)


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        ("InvalidParameterValue", Kind.PERMANENT, reasons.INVALID_PARAMETER),
        ("InvalidAMIID.NotFound", Kind.PERMANENT, reasons.INVALID_PARAMETER),
        ("InvalidSubnetID.NotFound", Kind.PERMANENT, reasons.INVALID_PARAMETER),
        ("InvalidKeyPair.NotFound", Kind.PERMANENT, reasons.INVALID_PARAMETER),
        ("InstanceLimitExceeded", Kind.PERMANENT, reasons.QUOTA_EXCEEDED),
        ("VcpuLimitExceeded", Kind.PERMANENT, reasons.QUOTA_EXCEEDED),
        ("InsufficientInstanceCapacity", Kind.TEMPORARY, reasons.INSUFFICIENT_CAPACITY),
        ("RequestLimitExceeded", Kind.TEMPORARY, reasons.THROTTLED),
        ("Throttling", Kind.TEMPORARY, reasons.THROTTLED),
        ("UnauthorizedOperation", Kind.PERMANENT, reasons.AUTHENTICATION_FAILED),
        ("AuthFailure", Kind.PERMANENT, reasons.AUTHENTICATION_FAILED),
        ("InvalidInstanceID.NotFound", Kind.PERMANENT, reasons.INSTANCE_NOT_FOUND),
        ("IncorrectInstanceState", Kind.TEMPORARY, reasons.INSTANCE_OPERATION_FAILED),
        ("OperationNotPermitted", Kind.PERMANENT, reasons.OPERATION_NOT_PERMITTED),
        ("Unsupported", Kind.PERMANENT, reasons.INVALID_PARAMETER),
        ("UnsupportedOperation", Kind.PERMANENT, reasons.INVALID_PARAMETER),
        ("IdempotentParameterMismatch", Kind.TEMPORARY, reasons.INSTANCE_CREATION_FAILED),
        ("ConcurrentTagAccess", Kind.TEMPORARY, reasons.TAG_OPERATION_FAILED),
        ("TagLimitExceeded", Kind.PERMANENT, reasons.TAG_OPERATION_FAILED),
        ("InternalError", Kind.TEMPORARY, reasons.INSTANCE_CREATION_FAILED),
        ("SomethingUnknown", Kind.TEMPORARY, reasons.INTEGRATION_ERROR),
    ],
)
def test_design_table_rows(code, kind, reason):
    decision = classify(error_for(code))
    assert (decision.kind, decision.reason) == (kind, reason)


#: A hard-coded copy of the temporary rows of docs/errors.md: reason, first delay (base), cap (s).
DOCUMENTED_BACKOFF = [
    (EC2QuotaExceededException("x", code="InsufficientInstanceCapacity", retryable=True),
     reasons.INSUFFICIENT_CAPACITY, 60, 900),
    (EC2QuotaExceededException("x", code="RequestLimitExceeded", retryable=True), reasons.THROTTLED, 5, 300),
    (EC2InstanceCreationException("x", code="IdempotentParameterMismatch"), reasons.INSTANCE_CREATION_FAILED, 1, 10),
    (EC2InstanceCreationException("x", code="InternalError"), reasons.INSTANCE_CREATION_FAILED, 15, 600),
    (EC2InstanceOperationException("x", code="IncorrectInstanceState"), reasons.INSTANCE_OPERATION_FAILED, 10, 120),
    (EC2TagOperationException("x", code="ConcurrentTagAccess"), reasons.TAG_OPERATION_FAILED, 10, 300),
    (EC2StatusCheckException("x"), reasons.STATUS_CHECKS_PENDING, 15, 60),
    (IntegrationException("x"), reasons.INTEGRATION_ERROR, 10, 300),
]


class _Pinned(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("error", "reason", "base", "cap"), DOCUMENTED_BACKOFF,
                         ids=[row[1] + "-" + str(row[0].code) for row in DOCUMENTED_BACKOFF])
def test_every_temporary_row_starts_at_its_base_and_never_exceeds_its_cap(error, reason, base, cap):
    assert classify(error, retry=0, rng=_Pinned(0.0)) == Decision(Kind.TEMPORARY, reason, base)
    # The cap applies after the jitter: the largest jitter at every retry stays within it.
    worst = [classify(error, retry=n, rng=_Pinned(0.999999)).delay for n in range(40)]
    assert max(worst) == cap
    assert worst[-1] == cap


def test_jitter_no_longer_pushes_throttling_past_five_minutes():
    error = EC2QuotaExceededException("x", code="RequestLimitExceeded", retryable=True)
    rng = random.Random(7)
    assert max(classify(error, retry=n, rng=rng).delay for n in range(12) for _ in range(50)) <= 300


@pytest.mark.parametrize("code", ["InvalidSecurityGroupID.NotFound", "InvalidSubnetID.NotFound",
                                  "InvalidAMIID.NotFound", "InvalidKeyPair.NotFound", "InvalidSnapshot.NotFound"])
def test_a_dependency_that_may_still_appear_is_rechecked_slowly(code):
    assert classify(error_for(code), slow_recheck_seconds=600) == Decision(Kind.PERMANENT,
                                                                           reasons.INVALID_PARAMETER, 600)


def test_an_instance_profile_iam_has_not_propagated_is_rechecked_slowly():
    error = parse_aws_error(ClientError({"Error": {
        "Code": "InvalidParameterValue",
        "Message": "Value (cml-worker) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"}},
        "RunInstances"), "RunInstances")
    assert classify(error, slow_recheck_seconds=600).delay == 600
    other = error_for("InvalidParameterValue")
    assert classify(other, slow_recheck_seconds=600).delay is None


@pytest.mark.parametrize(("error", "reason"), [
    (EC2InvalidParameterException("x", code="UserDataSecret.NotFound"), reasons.INVALID_PARAMETER),
    (EC2InvalidParameterException("x", code="UserDataSecret.TooLarge"), reasons.INVALID_PARAMETER),
    (IntegrationException("x", code="UserDataSecret.Forbidden"), reasons.AUTHENTICATION_FAILED),
])
def test_a_user_data_secret_that_cannot_be_read_yet_is_rechecked_slowly(error, reason):
    assert classify(error, slow_recheck_seconds=600) == Decision(Kind.PERMANENT, reason, 600)


def test_termination_protection_stalls_operation_not_permitted_with_the_slow_recheck():
    decision = classify(error_for("OperationNotPermitted", "TerminateInstances"), slow_recheck_seconds=600)
    assert decision == Decision(Kind.PERMANENT, reasons.OPERATION_NOT_PERMITTED, 600)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (EC2InstanceCreationException("x"), reasons.INSTANCE_CREATION_FAILED),
        (EC2InstanceOperationException("x"), reasons.INSTANCE_OPERATION_FAILED),
        (EC2TagOperationException("x"), reasons.TAG_OPERATION_FAILED),
        (EC2StatusCheckException("x"), reasons.STATUS_CHECKS_PENDING),
        (IntegrationException("x"), reasons.INTEGRATION_ERROR),
    ],
)
def test_temporary_exceptions_retry_after_a_positive_delay(error, reason):
    decision = classify(error)
    assert decision.temporary and decision.reason == reason and decision.delay and decision.delay > 0


def test_invalid_parameters_wait_for_a_spec_change():
    assert classify(EC2InvalidParameterException("x")).delay is None


@pytest.mark.parametrize("error", [EC2AuthenticationException("x"),
                                   EC2QuotaExceededException("x", code="InstanceLimitExceeded")])
def test_credentials_and_quota_are_rechecked_slowly(error):
    decision = classify(error, slow_recheck_seconds=600)
    assert decision.kind is Kind.PERMANENT and decision.delay == 600


def test_capacity_backs_off_from_sixty_seconds():
    error = EC2QuotaExceededException("x", code="InsufficientInstanceCapacity", retryable=True)
    rng = random.Random(1)
    delays = [classify(error, retry=n, rng=rng).delay for n in range(5)]
    assert 60 <= delays[0] <= 72
    assert delays == sorted(delays)
    assert delays[-1] <= 900


def test_throttling_backoff_is_jittered():
    error = EC2QuotaExceededException("x", code="RequestLimitExceeded", retryable=True)
    delays = {round(classify(error, retry=2, rng=random.Random(seed)).delay, 3) for seed in range(10)}
    assert len(delays) > 5


def test_backoff_grows_exponentially_and_caps():
    backoff = Backoff(base=10, cap=100, jitter=0)
    assert [backoff.delay(n) for n in range(6)] == [10, 20, 40, 80, 100, 100]
    assert backoff.delay(10_000) == 100


def test_not_found_is_permanent_for_the_policy_and_callers_special_case_it():
    assert classify(EC2InstanceNotFoundException("x")).kind is Kind.PERMANENT


# ---------------------------------------------------------------- CML rows

from cml_operator.cml.errors import cml_http_error, cml_transport_error  # noqa: E402
from cml_operator.cml.exceptions import CMLCertificateException, CMLLicensingException  # noqa: E402


@pytest.mark.parametrize(
    ("error", "kind", "reason", "slow"),
    [
        (cml_http_error(503, "system_information"), Kind.TEMPORARY, reasons.CML_STARTING, False),
        (cml_http_error(500, "populate_lab_tiles"), Kind.TEMPORARY, reasons.CML_STARTING, False),
        (cml_transport_error(TimeoutError(), "system_stats"), Kind.TEMPORARY, reasons.CML_STARTING, False),
        (cml_transport_error(ConnectionRefusedError(), "system_stats"), Kind.TEMPORARY, reasons.CML_STARTING, False),
        (cml_http_error(403, "authenticate"), Kind.PERMANENT, reasons.CML_AUTHENTICATION_FAILED, True),
        (cml_http_error(401, "labs"), Kind.PERMANENT, reasons.CML_AUTHENTICATION_FAILED, True),
        (cml_http_error(400, "licensing/registration"), Kind.PERMANENT, reasons.LICENSE_INVALID, False),
        (cml_http_error(503, "licensing/registration"), Kind.TEMPORARY, reasons.LICENSE_REGISTERING, False),
        (CMLLicensingException("x", code="DeregistrationFailed"), Kind.TEMPORARY, reasons.LICENSE_RELEASING, False),
        (CMLCertificateException("x", code="CertificateChanged"), Kind.PERMANENT, reasons.CML_CERTIFICATE_CHANGED,
         False),
        (cml_http_error(404, "labs"), Kind.TEMPORARY, reasons.CML_UNREACHABLE, False),
    ],
)
def test_cml_rows(error, kind, reason, slow):
    decision = classify(error, slow_recheck_seconds=600)
    assert (decision.kind, decision.reason) == (kind, reason)
    if kind is Kind.PERMANENT:
        assert decision.delay == (600 if slow else None)
