"""STS AssumeRole: the only place the operator calls STS, and where its errors are translated.

Synchronous (boto3 blocks): callers run it in a worker thread. The STS endpoint comes from
boto3's own chain (``AWS_ENDPOINT_URL_STS`` / ``AWS_ENDPOINT_URL``), so tests and ``make dev``
route it to the same stand-in as EC2. The account id comes from the assumed role's ARN in
AssumeRole's answer: no second call (GetCallerIdentity) is needed.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from ..ec2.botodata import boto3_session
from .exceptions import AssumeRoleException

#: STS codes that no retry can cure: the trust policy, the ARN, the ExternalId, a disabled region.
PERMANENT_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "ValidationError", "MalformedPolicyDocument",
    "PackedPolicyTooLarge", "RegionDisabledException", "InvalidParameterValue", "InvalidClientTokenId",
})
_ACCOUNT_IN_ARN = re.compile(r"^arn:aws[a-z-]*:(?:sts|iam)::(\d{12}):")

#: Called once per AssumeRole attempt: (account id from the role ARN, outcome code or "ok").
CallObserver = Callable[[str, str], None]


@dataclass(frozen=True)
class RoleRequest:
    """What AssumeRole is asked (the ExternalId is a secret of sorts: never in repr or messages)."""

    role_arn: str
    session_name: str
    duration_seconds: int = 3600
    external_id: str | None = field(default=None, repr=False)
    source_identity: str | None = None


@dataclass(frozen=True)
class SessionCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    account_id: str

    def botocore_metadata(self) -> dict[str, str]:
        """The shape botocore's RefreshableCredentials reads."""
        return {"access_key": self.access_key_id, "secret_key": self.secret_access_key,
                "token": self.session_token, "expiry_time": self.expiration.isoformat()}


def account_of(arn: str) -> str:
    """The 12-digit account id in an IAM or STS ARN ('' when it holds none)."""
    match = _ACCOUNT_IN_ARN.match(arn)
    return match.group(1) if match else ""


class STSClient:
    """AssumeRole with the operator's own identity (the standard boto3 chain: IRSA, env, profile)."""

    def __init__(self, config: Config | None = None, *,
                 session_factory: Callable[[], boto3.session.Session] = boto3_session,
                 call_observer: CallObserver | None = None) -> None:
        self._config = config or Config(connect_timeout=5, read_timeout=30,
                                        retries={"mode": "standard", "total_max_attempts": 3},
                                        user_agent_extra="cml-operator")
        self._session_factory = session_factory
        self._call_observer = call_observer
        self._lock = threading.Lock()
        self._client: Any = None

    def _sts(self) -> Any:
        with self._lock:
            if self._client is None:
                session = self._session_factory()
                region = session.region_name or os.environ.get("AWS_REGION") or "us-east-1"
                # Regional endpoints: a role assumed in the operator's region does not depend on us-east-1.
                self._client = session.client("sts", region_name=region, config=self._config)
            return self._client

    def assume_role(self, request: RoleRequest) -> SessionCredentials:
        params: dict[str, Any] = {"RoleArn": request.role_arn, "RoleSessionName": request.session_name,
                                  "DurationSeconds": request.duration_seconds}
        if request.external_id:
            params["ExternalId"] = request.external_id
        if request.source_identity:
            params["SourceIdentity"] = request.source_identity
        account = account_of(request.role_arn)
        try:
            answer = self._sts().assume_role(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "Unknown")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            self._observe(account, code)
            retryable = code not in PERMANENT_CODES and (status >= 500 or status == 429 or status == 0
                                                         or "Throttl" in code or code == "IDPCommunicationError")
            raise AssumeRoleException(
                f"AssumeRole {request.role_arn} failed: {code}: {_shorten(str(error.get('Message') or ''))}",
                code=code, operation="AssumeRole", retryable=retryable,
                request_id=exc.response.get("ResponseMetadata", {}).get("RequestId")) from exc
        except ParamValidationError as exc:
            self._observe(account, "ValidationError")
            raise AssumeRoleException(f"AssumeRole {request.role_arn} refused before sending: {_shorten(str(exc))}",
                                      code="ValidationError", operation="AssumeRole", retryable=False) from exc
        except BotoCoreError as exc:  # network, timeouts, no credentials of our own
            self._observe(account, type(exc).__name__)
            raise AssumeRoleException(f"AssumeRole {request.role_arn} failed: {_shorten(str(exc))}",
                                      code=type(exc).__name__, operation="AssumeRole", retryable=True) from exc
        self._observe(account, "ok")
        raw = answer["Credentials"]
        assumed_arn = str(answer.get("AssumedRoleUser", {}).get("Arn") or "")
        return SessionCredentials(raw["AccessKeyId"], raw["SecretAccessKey"], raw["SessionToken"],
                                  raw["Expiration"], account_of(assumed_arn) or account)

    def _observe(self, account: str, outcome: str) -> None:
        if self._call_observer is not None:
            self._call_observer(account, outcome)


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
