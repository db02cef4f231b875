"""Plain data the EC2 client returns: no boto3 types leak past ``ec2/``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

@dataclass(frozen=True)
class InstanceStatusChecks:
    """DescribeInstanceStatus for one instance: ok, impaired, initializing, insufficient-data, not-applicable."""

    instance_id: str
    system: str
    instance: str
    instance_state: str = "running"

    @property
    def all_ok(self) -> bool:
        return self.system == "ok" and self.instance == "ok"

    @property
    def impaired(self) -> bool:
        return "impaired" in (self.system, self.instance)


@dataclass(frozen=True)
class CMLWorkerInstanceDto:
    """One EC2 instance as the operator sees it (the seed's DTO, plus placement and launch time)."""

    aws_instance_id: str
    aws_region: str
    instance_name: str | None
    ami_id: str
    ami_name: str | None
    instance_type: str
    security_group_ids: list[str]
    subnet_id: str | None
    instance_state: str
    public_ip: str | None
    private_ip: str | None
    key_pair_name: str | None
    tags: dict[str, str] = field(default_factory=dict)
    instance_status_check: str | None = None
    ec2_system_status_check: str | None = None
    availability_zone: str | None = None
    launch_time: str | None = None
    iam_instance_profile_arn: str | None = None
    monitoring: str | None = None  # enabled, disabled, pending, disabling
    client_token: str | None = None  # the RunInstances ClientToken it was launched with
    architecture: str | None = None  # x86_64, arm64, ... (the AMI's)
    metadata_http_tokens: str | None = None  # required (IMDSv2 only) or optional
    metadata_hop_limit: int | None = None
    #: Why EC2 moved it to its current state, e.g. "Server.InsufficientInstanceCapacity: ..." (StateReason).
    state_reason: str | None = None

    @classmethod
    def from_api(cls, region: str, raw: dict[str, Any], ami_name: str | None = None) -> CMLWorkerInstanceDto:
        """Build from one element of DescribeInstances' ``Reservations[].Instances[]``."""
        tags = {t["Key"]: t.get("Value", "") for t in raw.get("Tags", []) or []}
        launch = raw.get("LaunchTime")
        return cls(
            aws_instance_id=raw["InstanceId"],
            aws_region=region,
            instance_name=tags.get("Name"),
            ami_id=raw.get("ImageId", ""),
            ami_name=ami_name,
            instance_type=raw.get("InstanceType", ""),
            security_group_ids=[g["GroupId"] for g in raw.get("SecurityGroups", []) or []],
            subnet_id=raw.get("SubnetId"),
            instance_state=(raw.get("State") or {}).get("Name", "pending"),
            public_ip=raw.get("PublicIpAddress"),
            private_ip=raw.get("PrivateIpAddress"),
            key_pair_name=raw.get("KeyName"),
            tags=tags,
            availability_zone=(raw.get("Placement") or {}).get("AvailabilityZone"),
            launch_time=launch.isoformat() if hasattr(launch, "isoformat") else launch,
            iam_instance_profile_arn=(raw.get("IamInstanceProfile") or {}).get("Arn"),
            monitoring=(raw.get("Monitoring") or {}).get("State"),
            client_token=raw.get("ClientToken") or None,
            architecture=raw.get("Architecture"),
            metadata_http_tokens=(raw.get("MetadataOptions") or {}).get("HttpTokens"),
            metadata_hop_limit=(raw.get("MetadataOptions") or {}).get("HttpPutResponseHopLimit"),
            state_reason=_state_reason(raw.get("StateReason")),
        )

    def with_status_checks(self, checks: InstanceStatusChecks | None) -> CMLWorkerInstanceDto:
        if checks is None:
            return self
        return replace(self, instance_status_check=checks.instance, ec2_system_status_check=checks.system)


def _state_reason(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    code, message = raw.get("Code") or "", raw.get("Message") or ""
    if message.startswith(code):
        return message or None
    return f"{code}: {message}" if code and message else (code or message or None)


@dataclass(frozen=True)
class ImageInfo:
    """The parts of an AMI that creation needs."""

    image_id: str
    name: str | None
    root_device_name: str | None
    creation_date: str | None = None
    root_volume_size: int | None = None  # GiB of the root device's snapshot
    architecture: str | None = None
    owner_id: str | None = None
    owner_alias: str | None = None  # amazon, aws-marketplace, or None
