"""The policy table: every exception (and code, where it matters) -> kind, delay, reason."""

from __future__ import annotations

import random

import pytest

from cml_operator.ec2.errors import ERROR_TABLE, parse_aws_error
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
from cml_operator.reconcile.policy import Backoff, Kind, classify

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
        ("TagLimitExceeded", Kind.PERMANENT, reasons.TAG_OPERATION_FAILED),
        ("InternalError", Kind.TEMPORARY, reasons.INSTANCE_CREATION_FAILED),
        ("SomethingUnknown", Kind.TEMPORARY, reasons.INTEGRATION_ERROR),
    ],
)
def test_design_table_rows(code, kind, reason):
    decision = classify(error_for(code))
    assert (decision.kind, decision.reason) == (kind, reason)


def test_every_code_in_the_error_table_has_a_decision():
    for code in ERROR_TABLE:
        decision = classify(error_for(code))
        assert decision.reason, code


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
    assert delays[-1] <= 900 * 1.2


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
