"""``CMLWorker.spec`` as a typed value, checked again defensively.

The CRD schema rejects bad input at ``kubectl apply``; this parser exists because
an operator must never crash on an object that slipped past an older or edited
CRD. Whatever it refuses becomes ``Stalled/InvalidParameter`` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..ec2.regions import is_known_region
from ..ec2.tags import tag_problems
from .cml_spec import CMLSpec, CMLSpecError, parse_cml_spec

DEFAULT_INSTANCE_TYPE = "m5zn.metal"
MAX_USER_TAGS = 40
RESERVED_TAG_PREFIX = "cml.dev/"
_PATTERNS = {
    "region": re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$"),
    "instanceType": re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$"),
    "amiId": re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "subnetId": re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "securityGroupIds": re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "instanceId": re.compile(r"^i-([0-9a-f]{8}|[0-9a-f]{17})$"),
}
ROOT_VOLUME_TYPES = ("gp3", "gp2", "io1", "io2")
HTTP_TOKENS = ("required", "optional")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
#: A key id (uuid or multi-Region mrk-...), a key ARN, an alias name or an alias ARN.
_KMS_KEY = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[A-Za-z0-9-]{1,64}|alias/[A-Za-z0-9/_-]{1,250}))$")
DESIRED_STATES = ("Running", "Stopped")
#: spec.amiOwners default: only images of the account the operator runs as.
DEFAULT_AMI_OWNERS = ("self",)
MAX_AMI_OWNERS = 10
_AMI_OWNER = re.compile(r"^(self|amazon|aws-marketplace|[0-9]{12})$")
DELETION_POLICIES = ("Delete", "Retain")
DEFAULT_HTTP_TOKENS = "required"
DEFAULT_HOP_LIMIT = 1


class SpecError(ValueError):
    """The spec cannot be acted on; ``field`` is its path, e.g. ``spec.amiId``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class RootVolumeSpec:
    size_gib: int
    volume_type: str = "gp3"
    encrypted: bool = True
    kms_key_id: str | None = None


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the worker's own namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class MetadataOptionsSpec:
    """IMDS settings as stated; ``None``: not stated. Unstated fields of a launched instance take the
    secure defaults (IMDSv2 only, one hop: no container reaches it); an adopted one keeps its own."""

    http_tokens: str | None = None
    hop_limit: int | None = None

    def wanted(self, adopted: bool) -> tuple[str | None, int | None]:
        """The (httpTokens, hop limit) to enforce; ``None`` for a field left as the instance has it."""
        if adopted:
            return self.http_tokens, self.hop_limit
        return self.http_tokens or DEFAULT_HTTP_TOKENS, self.hop_limit or DEFAULT_HOP_LIMIT


@dataclass(frozen=True)
class WorkerSpec:
    """The spec as written: ``None`` means "not stated" (an adopted instance keeps its own value)."""

    region: str
    subnet_id: str | None = None
    instance_type: str | None = None
    ami_id: str | None = None
    ami_name: str | None = None
    ami_owners: tuple[str, ...] = DEFAULT_AMI_OWNERS
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    iam_instance_profile: str | None = None
    root_volume: RootVolumeSpec | None = None
    user_data: str | None = None
    detailed_monitoring: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)
    desired_state: str = "Running"
    #: As stated; None: unstated (see ``effective_deletion_policy``).
    deletion_policy: str | None = None
    instance_id: str | None = None
    cml: CMLSpec | None = None  # spec.cml: CML-aware readiness, idle stop, licensing
    metadata_options: MetadataOptionsSpec = MetadataOptionsSpec()
    user_data_secret: SecretKeyRef | None = None
    account_ref: str | None = None  # spec.accountRef.name: the CMLAccount to launch in (reconcile/account.py)

    @property
    def root_encrypted(self) -> bool:
        """Root volumes are encrypted unless spec.rootVolume.encrypted says false."""
        return self.root_volume.encrypted if self.root_volume else True

    @property
    def effective_deletion_policy(self) -> str:
        return effective_deletion_policy(self.deletion_policy, self.instance_id)

    @property
    def wants_running(self) -> bool:
        return self.desired_state == "Running"

    @property
    def wanted_type(self) -> str | None:
        """The type to enforce: the stated one; unstated, m5zn.metal for launches and the instance's own when adopted."""
        if self.instance_type is not None:
            return self.instance_type
        return None if self.instance_id else DEFAULT_INSTANCE_TYPE

    @property
    def wanted_monitoring(self) -> bool | None:
        if self.detailed_monitoring is not None:
            return self.detailed_monitoring
        return None if self.instance_id else True


def parse_spec(raw: Mapping[str, Any] | None) -> WorkerSpec:
    """Build a ``WorkerSpec`` or raise ``SpecError`` naming the first bad field."""
    raw = dict(raw or {})
    region = _string(raw, "region", required=True)
    assert region is not None
    if not is_known_region(region):
        raise SpecError("spec.region", f"{region!r} is not an AWS region this operator knows (botocore's "
                                       "partition data); check the spelling")
    instance_id = _string(raw, "instanceId")
    # Adopting (spec.instanceId): nothing is launched, so subnet and image are optional.
    subnet_id = _string(raw, "subnetId", required=instance_id is None)
    ami_id = _string(raw, "amiId")
    ami_name = _string(raw, "amiName")
    if ami_id is not None and ami_name is not None:
        raise SpecError("spec.amiId", "exactly one of spec.amiId and spec.amiName must be set")
    if instance_id is None and ami_id is None and ami_name is None:
        raise SpecError("spec.amiId", "exactly one of spec.amiId and spec.amiName must be set "
                                      "(unless spec.instanceId names an instance to adopt)")
    groups = raw.get("securityGroupIds") or []
    if not isinstance(groups, list) or len(groups) > 5:
        raise SpecError("spec.securityGroupIds", "must be a list of at most 5 security group ids")
    for group in groups:
        _check_pattern("securityGroupIds", group)
    user_data = _string(raw, "userData")
    if user_data is not None and len(user_data) > 16 * 1024:
        raise SpecError("spec.userData", "must be at most 16 KiB")
    desired_state = _string(raw, "desiredState") or "Running"
    if desired_state not in DESIRED_STATES:
        raise SpecError("spec.desiredState", f"must be one of {', '.join(DESIRED_STATES)}")
    deletion_policy = _string(raw, "deletionPolicy")
    if deletion_policy is not None and deletion_policy not in DELETION_POLICIES:
        raise SpecError("spec.deletionPolicy", f"must be one of {', '.join(DELETION_POLICIES)}")
    monitoring = raw.get("detailedMonitoring")
    if monitoring is not None and not isinstance(monitoring, bool):
        raise SpecError("spec.detailedMonitoring", "must be true or false")
    return WorkerSpec(
        region=region,
        subnet_id=subnet_id,
        instance_type=_string(raw, "instanceType"),
        ami_id=ami_id,
        ami_name=ami_name,
        ami_owners=_ami_owners(raw.get("amiOwners")),
        security_group_ids=tuple(groups),
        key_name=_string(raw, "keyName"),
        iam_instance_profile=_string(raw, "iamInstanceProfile"),
        root_volume=_root_volume(raw.get("rootVolume")),
        user_data=user_data,
        detailed_monitoring=monitoring,
        tags=_tags(raw.get("tags")),
        desired_state=desired_state,
        deletion_policy=deletion_policy,
        instance_id=instance_id,
        cml=_cml(raw.get("cml")),
        metadata_options=_metadata_options(raw.get("metadataOptions")),
        user_data_secret=_secret_ref(raw.get("userDataSecretRef"), user_data),
        account_ref=_account_ref(raw.get("accountRef")),
    )


def _account_ref(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise SpecError("spec.accountRef.name", "must name a CMLAccount")
    return raw["name"]


def effective_deletion_policy(stated: Any, instance_id: Any) -> str:
    """What deleting the worker does: the stated policy; unstated, Retain for an adopted or imported
    instance (the operator did not launch it, so it is not the operator's to end) and Delete for a launched one."""
    if stated in DELETION_POLICIES:
        return str(stated)
    return "Retain" if instance_id else "Delete"


def _cml(raw: Any) -> CMLSpec | None:
    try:
        return parse_cml_spec(raw)
    except CMLSpecError as error:
        raise SpecError(error.field, error.message) from error


def _string(raw: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise SpecError(f"spec.{key}", "is required")
        return None
    if not isinstance(value, str):
        raise SpecError(f"spec.{key}", "must be a string")
    if key in _PATTERNS:
        _check_pattern(key, value)
    return value


def _check_pattern(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _PATTERNS[key].match(value):
        raise SpecError(f"spec.{key}", f"{value!r} does not match {_PATTERNS[key].pattern}")


def _ami_owners(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_AMI_OWNERS
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_AMI_OWNERS:
        raise SpecError("spec.amiOwners", f"must be a list of 1 to {MAX_AMI_OWNERS} owners")
    for owner in raw:
        if not isinstance(owner, str) or not _AMI_OWNER.match(owner):
            raise SpecError("spec.amiOwners", f"{owner!r} is not self, amazon, aws-marketplace or a 12-digit "
                                              "account id")
    return tuple(dict.fromkeys(raw))


def _root_volume(raw: Any) -> RootVolumeSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecError("spec.rootVolume", "must be an object")
    size = raw.get("sizeGiB")
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 16384:
        raise SpecError("spec.rootVolume.sizeGiB", "must be an integer from 8 to 16384")
    volume_type = raw.get("type") or "gp3"
    if volume_type not in ROOT_VOLUME_TYPES:
        raise SpecError("spec.rootVolume.type", f"must be one of {', '.join(ROOT_VOLUME_TYPES)}")
    encrypted = raw.get("encrypted", True)
    if not isinstance(encrypted, bool):
        raise SpecError("spec.rootVolume.encrypted", "must be true or false")
    kms_key_id = raw.get("kmsKeyId") or None
    if kms_key_id is not None and (not isinstance(kms_key_id, str) or not _KMS_KEY.match(kms_key_id)):
        raise SpecError("spec.rootVolume.kmsKeyId", "must be a KMS key id, key ARN, alias name or alias ARN")
    if kms_key_id and not encrypted:
        raise SpecError("spec.rootVolume.kmsKeyId", "needs spec.rootVolume.encrypted: true")
    return RootVolumeSpec(size, volume_type, encrypted, kms_key_id)


def _secret_ref(raw: Any, user_data: str | None) -> SecretKeyRef | None:
    if raw is None:
        return None
    if user_data is not None:
        raise SpecError("spec.userDataSecretRef", "set either spec.userData or spec.userDataSecretRef, not both")
    if not isinstance(raw, Mapping):
        raise SpecError("spec.userDataSecretRef", "must be an object {name, key}")
    name, key = raw.get("name"), raw.get("key")
    if not isinstance(name, str) or not _SECRET_NAME.match(name):
        raise SpecError("spec.userDataSecretRef.name", "must be the name of a Secret in the worker's namespace")
    if not isinstance(key, str) or not _SECRET_KEY.match(key):
        raise SpecError("spec.userDataSecretRef.key", "must be a Secret data key ([-._a-zA-Z0-9]+)")
    return SecretKeyRef(name, key)


def _metadata_options(raw: Any) -> MetadataOptionsSpec:
    if raw is None:
        return MetadataOptionsSpec()
    if not isinstance(raw, Mapping):
        raise SpecError("spec.metadataOptions", "must be an object")
    tokens = raw.get("httpTokens") or None
    if tokens is not None and tokens not in HTTP_TOKENS:
        raise SpecError("spec.metadataOptions.httpTokens", f"must be one of {', '.join(HTTP_TOKENS)}")
    hops = raw.get("httpPutResponseHopLimit")
    if hops is not None and (not isinstance(hops, int) or isinstance(hops, bool) or not 1 <= hops <= 64):
        raise SpecError("spec.metadataOptions.httpPutResponseHopLimit", "must be an integer from 1 to 64")
    return MetadataOptionsSpec(tokens, hops)


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError("spec.tags", "must be a map of strings")
    if len(raw) > MAX_USER_TAGS:
        raise SpecError("spec.tags", f"at most {MAX_USER_TAGS} tags (the operator adds its own)")
    for key in raw:
        if isinstance(key, str) and key.startswith(RESERVED_TAG_PREFIX):
            raise SpecError(f"spec.tags[{key}]", f"keys starting with {RESERVED_TAG_PREFIX!r} are reserved")
    problems = tag_problems(raw)
    if problems:
        raise SpecError("spec.tags", problems[0])
    return dict(raw)
