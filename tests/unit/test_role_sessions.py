"""accounts/: AssumeRole through moto, error translation, and renewal before expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto import mock_aws

from cml_operator.accounts.exceptions import AssumeRoleException
from cml_operator.accounts.sessions import RoleSession, session_name
from cml_operator.accounts.sts import RoleRequest, SessionCredentials, STSClient, account_of
from cml_operator.reconcile import reasons
from cml_operator.reconcile.policy import Kind, classify


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield


def test_assume_role_returns_the_target_accounts_credentials(aws):
    calls = []
    sts = STSClient(call_observer=lambda account, outcome: calls.append((account, outcome)))
    creds = sts.assume_role(RoleRequest("arn:aws:iam::222222222222:role/cml", "cml-operator-ops", 900, "ext-id"))
    assert creds.account_id == "222222222222"
    assert calls == [("222222222222", "ok")]
    ec2 = boto3.client("ec2", aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
                       aws_session_token=creds.session_token, region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    assert boto3.client("ec2").describe_instances()["Reservations"] == []  # not in the operator's own account


class _FakeSTS:
    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.now = 1_000_000.0

    def assume_role(self, request: RoleRequest) -> SessionCredentials:
        self.calls += 1
        expiry = datetime.fromtimestamp(self.now + self.lifetime, timezone.utc)
        return SessionCredentials(f"AKIA{self.calls}", "secret", "token", expiry, "222222222222")


def test_a_session_is_reused_until_the_margin_then_renewed_before_it_ends():
    fake = _FakeSTS(900)
    session = RoleSession(fake, RoleRequest("arn:aws:iam::222222222222:role/cml", "s", 900), margin=300,
                          clock=lambda: fake.now)
    renewed = []
    session.on_renewed = renewed.append
    first = session.credentials()
    fake.now += 599  # 301 s left: still good
    assert session.credentials() is first and fake.calls == 1
    fake.now += 2  # 299 s left: within the margin, renewed while the old one still works
    second = session.credentials()
    assert fake.calls == 2 and second.access_key_id == "AKIA2"
    assert [c.access_key_id for c in renewed] == ["AKIA1", "AKIA2"]


def test_a_margin_longer_than_the_session_still_uses_each_session_for_ten_seconds():
    fake = _FakeSTS(900)
    session = RoleSession(fake, RoleRequest("arn:aws:iam::1:role/x", "s", 900), margin=5000, clock=lambda: fake.now)
    session.credentials()
    fake.now += 9
    session.credentials()
    assert fake.calls == 1
    fake.now += 2
    session.credentials()
    assert fake.calls == 2


def test_a_changed_request_assumes_anew():
    fake = _FakeSTS(3600)
    session = RoleSession(fake, RoleRequest("arn:aws:iam::1:role/x", "s", 3600, "old"), clock=lambda: fake.now)
    session.credentials()
    session.update_request(RoleRequest("arn:aws:iam::1:role/x", "s", 3600, "new"))
    session.credentials()
    assert fake.calls == 2


def test_the_boto3_session_renews_through_the_same_cache():
    fake = _FakeSTS(900)
    session = RoleSession(fake, RoleRequest("arn:aws:iam::1:role/x", "s", 900), margin=300)
    fake.now = datetime.now(timezone.utc).timestamp()
    frozen = session.boto3_session().get_credentials().get_frozen_credentials()
    assert frozen.access_key == "AKIA1" and fake.calls == 1


@pytest.mark.parametrize("code, status, kind", [
    ("AccessDenied", 403, Kind.PERMANENT),
    ("ValidationError", 400, Kind.PERMANENT),
    ("Throttling", 400, Kind.TEMPORARY),
    ("InternalFailure", 500, Kind.TEMPORARY),
])
def test_sts_errors_are_permanent_or_temporary_by_code(code, status, kind):
    from botocore.exceptions import ClientError

    class _Raising:
        def assume_role(self, **_):
            raise ClientError({"Error": {"Code": code, "Message": "m"},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, "AssumeRole")

    sts = STSClient()
    sts._client = _Raising()  # noqa: SLF001 - the boto3 client is the one thing replaced
    with pytest.raises(AssumeRoleException) as raised:
        sts.assume_role(RoleRequest("arn:aws:iam::1:role/x", "s"))
    decision = classify(raised.value)
    assert decision.kind is kind and decision.reason == reasons.ASSUME_ROLE_FAILED


def test_session_names_and_account_ids():
    assert session_name("cml-system") == "cml-operator-cml-system"
    assert len(session_name("x" * 100)) == 64
    assert account_of("arn:aws:iam::123456789012:role/a/b") == "123456789012"
    assert account_of("arn:aws:sts::222222222222:assumed-role/cml/s") == "222222222222"
    assert account_of("nonsense") == ""


def test_credentials_never_show_secrets_in_repr():
    creds = SessionCredentials("AKIA", "SECRET", "TOKEN", datetime.now(timezone.utc) + timedelta(hours=1), "1")
    assert "SECRET" not in repr(creds) and "TOKEN" not in repr(creds)
    assert "ext" not in repr(RoleRequest("arn", "s", external_id="ext-secret-value"))
