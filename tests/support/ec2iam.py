"""IAM as EC2 enforces it, for the fault proxy: which (action, resource, context) a query-API call is.

Only calls signed with one of the configured access keys (the operator's) are evaluated, against
the configured policies (deploy/iam-policy.json and, where a test enables them, the adoption and
KMS policies) with ``CLUSTER_ID`` replaced as docs/install.md's sed does. The user's key in
.dev/env and the tests' own setup clients stay unrestricted.

How a call becomes requests (one per resource, all must be allowed, as EC2 authorizes them):

* instance actions (Start/Stop/Terminate/Monitor/Unmonitor/ModifyInstance*, Create/DeleteTags):
  the instance's ARN with ``ec2:ResourceTag/<key>`` from moto's tags *at that moment*, plus the
  request's ``aws:RequestTag/<key>`` and ``aws:TagKeys`` for the tag calls; a group named by
  ModifyInstanceAttribute is its own security-group request;
* RunInstances: the instance and volume (with the request's tags), the image (``ec2:Owner``
  from moto), the subnet, each security group, the key pair; and, when it tags on launch,
  ``ec2:CreateTags`` on the instance and volume with ``ec2:CreateAction=RunInstances``;
* anything else (Describe*): resource ``*``.

Not modelled: iam:PassRole for an instance profile, the KMS calls EC2 makes for an encrypted
volume, and SCPs / permission boundaries (docs/reliability.md lists it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ec2timing import instance_ids
from tests.support.iam import Decision, Policy, Request, evaluate_all

REPO = Path(__file__).resolve().parents[2]
#: moto's default account: every resource the tests make lives in it.
ACCOUNT = "123456789012"
#: The operator's dummy access key in tests (tests.support.processes gives it to the operator process).
OPERATOR_ACCESS_KEY = "AKIAOPERATOR00000001"
DEFAULT_POLICIES = ("deploy/iam-policy.json",)
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/")
INSTANCE_ACTIONS = frozenset({"StartInstances", "StopInstances", "TerminateInstances", "MonitorInstances",
                              "UnmonitorInstances", "ModifyInstanceAttribute", "ModifyInstanceMetadataOptions",
                              "CreateTags", "DeleteTags"})


@dataclass(frozen=True)
class IamConfig:
    """Whose calls are evaluated and against what; no access keys: IAM off."""

    access_keys: tuple[str, ...] = ()
    policies: tuple[str, ...] = DEFAULT_POLICIES  # paths relative to the repository
    cluster_id: str = ""

    def load(self) -> list[Policy]:
        return [Policy.load(REPO / path, {"CLUSTER_ID": self.cluster_id}) for path in self.policies]


_SERVICE = re.compile(r"Credential=[^/,\s]+/[^/]+/[^/]+/([^/]+)/")


def _service(authorization: str) -> str:
    """The signed-for service (ec2, sts, ...) of a SigV4 Authorization header; "" if unsigned."""
    match = _SERVICE.search(authorization or "")
    return match.group(1) if match else ""


def signer(authorization: str) -> tuple[str, str]:
    """(access key id, region) from a SigV4 Authorization header; ("", "us-east-1") if unsigned."""
    match = _CREDENTIAL.search(authorization or "")
    return (match.group(1), match.group(2)) if match else ("", "us-east-1")


@dataclass
class Lookups:
    """What IAM needs from moto at the moment of the call."""

    instance_tags: Callable[[str, list[str]], dict[str, dict[str, str]]]  # region, ids -> id -> tags
    image_owner: Callable[[str, str], str | None]  # region, image id -> owner id


@dataclass
class IamEnforcer:
    config: IamConfig = field(default_factory=IamConfig)
    _policies: list[Policy] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.configure(self.config)

    def configure(self, config: IamConfig) -> None:
        self.config = config
        self._policies = config.load() if config.access_keys else []

    def check(self, authorization: str, params: Mapping[str, str], lookups: Lookups) -> str | None:
        """None when allowed (or not the operator's key); else EC2's UnauthorizedOperation message."""
        key, region = signer(authorization)
        if key not in self.config.access_keys or _service(authorization) not in ("ec2", ""):
            return None  # STS (a CMLAccount's AssumeRole) is not EC2's to authorize
        action = params.get("Action", "")
        requests = self.requests(action, region, params, lookups)
        if requests is None:  # an instance moto does not know: moto answers NotFound, as EC2 would
            return None
        decision, denied = evaluate_all(self._policies, requests)
        if decision is Decision.ALLOW or denied is None:
            return None
        why = "an explicit deny in an identity-based policy" if decision is Decision.EXPLICIT_DENY else (
            f"no identity-based policy allows the {denied.action} action")
        return (f"You are not authorized to perform this operation. User: arn:aws:iam::{ACCOUNT}:user/cml-operator "
                f"is not authorized to perform: {denied.action} on resource: {denied.resource} because {why}. "
                "Encoded authorization failure message: (not modelled)")

    def requests(self, action: str, region: str, params: Mapping[str, str], lookups: Lookups
                 ) -> list[Request] | None:
        principal = {"aws:PrincipalAccount": [ACCOUNT]}
        name = f"ec2:{action}"
        if action == "RunInstances":
            return self._run_instances(region, params, lookups, principal)
        if action not in INSTANCE_ACTIONS:
            return [Request(name, "*", principal)]
        ids = instance_ids(params)
        tags = lookups.instance_tags(region, ids) if ids else {}
        if any(i not in tags for i in ids):
            return None
        request_tags = _request_tags(params) if action in ("CreateTags", "DeleteTags") else {}
        result = []
        for instance_id in ids:
            context = {**principal, **_resource_tags(tags[instance_id]), **_tag_context(request_tags)}
            result.append(Request(name, _arn(region, f"instance/{instance_id}"), context))
        for key, value in params.items():
            if action == "ModifyInstanceAttribute" and key.startswith("GroupId."):
                result.append(Request(name, _arn(region, f"security-group/{value}"), principal))
        return result

    def _run_instances(self, region: str, params: Mapping[str, str], lookups: Lookups,
                       principal: dict[str, list[str]]) -> list[Request]:
        name = "ec2:RunInstances"
        tags = _launch_tags(params)
        tagged = {**principal, **_tag_context(tags)}
        result = [Request(name, _arn(region, "instance/*"), tagged), Request(name, _arn(region, "volume/*"), tagged)]
        image = params.get("ImageId", "")
        owner = lookups.image_owner(region, image) if image else None
        image_context = {**principal, **({"ec2:Owner": [owner]} if owner else {})}
        result.append(Request(name, f"arn:aws:ec2:{region}::image/{image}", image_context))
        if params.get("SubnetId"):
            result.append(Request(name, _arn(region, f"subnet/{params['SubnetId']}"), principal))
        result.append(Request(name, _arn(region, "network-interface/*"), principal))
        for key, value in params.items():
            if key.startswith("SecurityGroupId."):
                result.append(Request(name, _arn(region, f"security-group/{value}"), principal))
        if params.get("KeyName"):
            result.append(Request(name, _arn(region, f"key-pair/{params['KeyName']}"), principal))
        if tags:
            on_launch = {**tagged, "ec2:CreateAction": ["RunInstances"]}
            result += [Request("ec2:CreateTags", _arn(region, "instance/*"), on_launch),
                       Request("ec2:CreateTags", _arn(region, "volume/*"), on_launch)]
        return result


def _arn(region: str, resource: str) -> str:
    return f"arn:aws:ec2:{region}:{ACCOUNT}:{resource}"


def _resource_tags(tags: Mapping[str, str]) -> dict[str, list[str]]:
    return {f"ec2:ResourceTag/{k}": [v] for k, v in tags.items()}


def _tag_context(tags: Mapping[str, str | None]) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {f"aws:RequestTag/{k}": [v] for k, v in tags.items() if v is not None}
    if tags:
        context["aws:TagKeys"] = list(tags)
    return context


def _request_tags(params: Mapping[str, str]) -> dict[str, str | None]:
    """Tag.N.Key / Tag.N.Value of Create/DeleteTags (a DeleteTags key may come without a value)."""
    keys = {k.split(".")[1]: v for k, v in params.items() if re.fullmatch(r"Tag\.\d+\.Key", k)}
    return {key: params.get(f"Tag.{n}.Value") for n, key in keys.items()}


def _launch_tags(params: Mapping[str, str]) -> dict[str, str]:
    """Every TagSpecification.N.Tag.M of RunInstances (the request's tags, whatever resource they are for)."""
    tags: dict[str, str] = {}
    for key, value in params.items():
        match = re.fullmatch(r"TagSpecification\.(\d+)\.Tag\.(\d+)\.Key", key)
        if match:
            tags[value] = params.get(f"TagSpecification.{match.group(1)}.Tag.{match.group(2)}.Value", "")
    return tags
