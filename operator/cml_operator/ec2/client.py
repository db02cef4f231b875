"""``EC2Client``: every boto3 call the operator makes, and the only place that makes them.

Synchronous on purpose: boto3 is blocking, so the operator calls these methods
from worker threads (``asyncio.to_thread`` / an executor), never on Kopf's event
loop. One boto3 client per region is built lazily and cached; boto3 clients are
thread-safe once built, building them is not, hence the lock.

Credentials and endpoint come from boto3's own chain (IRSA web identity, env,
shared config, instance profile; ``AWS_ENDPOINT_URL_EC2`` / ``AWS_ENDPOINT_URL``).
Every failure leaves this module as an ``IntegrationException`` subclass built by
``errors.parse_aws_error`` (``raise ... from exc`` keeps botocore's error as cause).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from .botodata import boto3_session
from .errors import needs_credential_refresh, parse_aws_error
from .exceptions import (
    EC2InstanceCreationException,
    EC2InstanceNotFoundException,
    EC2InvalidParameterException,
    EC2StatusCheckException,
    EC2TagOperationException,
    IntegrationException,
)
from .fence import MutationFence, is_mutating
from .models import CMLWorkerInstanceDto, ImageInfo, InstanceStatusChecks
from .tags import validate_tags

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: EC2's own ceilings for one request.
DESCRIBE_INSTANCES_MAX_IDS = 500
DESCRIBE_STATUS_MAX_IDS = 100
FILTER_MAX_VALUES = 200

#: Instance ids named in an InvalidInstanceID.NotFound message.
_NOT_FOUND_IDS = re.compile(r"i-[0-9a-f]+")

#: Called once per HTTP attempt (retries included): (operation, region, outcome code or "ok").
CallObserver = Callable[[str, str, str], None]


@dataclass(frozen=True)
class EC2ClientSettings:
    """Network behaviour of the boto3 clients (seconds)."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # "standard" retries throttling, transient 5xx and network errors with capped
    # exponential backoff and jitter, bounded by a retry quota so an outage cannot
    # turn into a retry storm. "adaptive" would add a blocking client-side rate
    # limiter inside worker threads; the operator limits its own rate (observe/ratelimit),
    # so hidden sleeps there would only hide where time goes. "legacy" retries fewer errors.
    retry_mode: str = "standard"
    max_attempts: int = 3
    max_pool_connections: int = 32
    #: Appended to botocore's User-Agent, so EC2 (and CloudTrail's userAgent) can tell replicas apart:
    #: ``cml-operator/<version> (<holder identity>)`` once the runtime is built.
    user_agent: str = "cml-operator"

    def botocore_config(self) -> Config:
        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            # total_max_attempts counts the first try; botocore's max_attempts would count retries only.
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            max_pool_connections=self.max_pool_connections,
            user_agent_extra=self.user_agent,
        )


@dataclass(frozen=True)
class RootVolume:
    """The root EBS volume at launch; None fields keep the AMI's own value."""

    size_gib: int | None
    volume_type: str | None = "gp3"
    encrypted: bool = True
    kms_key_id: str | None = None  # None: the account's default EBS key (aws/ebs)


@dataclass(frozen=True)
class MetadataOptions:
    """Instance metadata service (IMDS): tokens required (IMDSv2 only) and the PUT hop limit."""

    http_tokens: str = "required"
    hop_limit: int = 1

    def api(self) -> dict[str, Any]:
        return {"HttpTokens": self.http_tokens, "HttpPutResponseHopLimit": self.hop_limit, "HttpEndpoint": "enabled"}


class EC2Client:
    """The seed's EC2 client: typed results, the seed's exceptions, one cached client per region."""

    def __init__(
        self,
        settings: EC2ClientSettings | None = None,
        *,
        endpoint_url: str | None = None,
        session_factory: Callable[[], boto3.session.Session] = boto3_session,
        call_observer: CallObserver | None = None,
        fence: MutationFence | None = None,
    ) -> None:
        self._settings = settings or EC2ClientSettings()
        #: Mutating calls pass it (always open without leader election); see fence.py.
        self.fence = fence or MutationFence()
        self._endpoint_url = endpoint_url
        self._session_factory = session_factory
        self._call_observer = call_observer
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._clients: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def refresh_credentials(self) -> None:
        """Forget cached clients and session so the next call reloads the credential chain."""
        with self._lock:
            self._clients.clear()
            self._session = None

    def _client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                if self._session is None:
                    self._session = self._session_factory()
                client = self._session.client(
                    "ec2",
                    region_name=region,
                    endpoint_url=self._endpoint_url,
                    config=self._settings.botocore_config(),
                )
                if self._call_observer is not None:
                    client.meta.events.register("response-received.ec2.*", self._observe_response(region))
                client.meta.events.register("before-send.ec2.*", self._check_fence(region))
                self._clients[region] = client
            return client

    def _observe_response(self, region: str) -> Callable[..., None]:
        observer = self._call_observer
        assert observer is not None

        def on_response(event_name: str, response_dict: Mapping | None, parsed_response: Mapping | None,
                        exception: BaseException | None, **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            if exception is not None:
                outcome = type(exception).__name__
            else:
                error = (parsed_response or {}).get("Error") or {}
                outcome = error.get("Code") or "ok"
            observer(operation, region, outcome)

        return on_response

    def _check_fence(self, region: str) -> Callable[..., None]:
        """Every HTTP attempt of a mutating call, botocore's retries included, asks the fence first."""
        fence = self.fence

        def before_send(event_name: str, **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            if is_mutating(operation):
                fence.check_send(operation, region)

        return before_send

    def _parse_aws_error(self, error: BaseException, operation: str) -> IntegrationException:
        """The seed's helper; the table lives in ``errors.parse_aws_error``."""
        return parse_aws_error(error, operation)

    def _call(self, region: str, operation: str, instance_id: str | None = None, **params: Any) -> dict:
        """Call one EC2 API action; translate failures; refresh credentials once on a credential error."""
        if is_mutating(operation):
            with self.fence.admit(operation, region):  # counted in flight, so a stopping leader drains it
                return self._send(region, operation, instance_id, **params)
        return self._send(region, operation, instance_id, **params)

    def _send(self, region: str, operation: str, instance_id: str | None = None, **params: Any) -> dict:
        method = _snake(operation)
        for attempt in (1, 2):
            try:
                return getattr(self._client(region), method)(**params)
            except (ClientError, BotoCoreError, ResponseParserError) as exc:
                error = parse_aws_error(exc, operation, region=region, instance_id=instance_id)
                if attempt == 1 and needs_credential_refresh(error):
                    self.refresh_credentials()  # rotated IRSA / instance-profile credentials
                    continue
                raise error from exc
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ instances

    def create_instance(
        self,
        region: str,
        *,
        ami_id: str,
        instance_type: str,
        subnet_id: str,
        security_group_ids: Sequence[str],
        client_token: str,
        tags: Mapping[str, str],
        key_name: str | None = None,
        iam_instance_profile: str | None = None,
        user_data: str | None = None,
        root_volume: RootVolume | None = None,
        root_device_name: str | None = None,
        detailed_monitoring: bool = True,
        ami_name: str | None = None,
        metadata_options: MetadataOptions | None = None,
    ) -> CMLWorkerInstanceDto:
        """Launch one instance, tagged at creation, idempotent per ``client_token``.

        Raises:
            EC2InvalidParameterException: Invalid AMI, subnet, security group, key, tags, etc.
            EC2InstanceCreationException: Instance creation failed.
            EC2QuotaExceededException: Instance limit reached, no capacity, or throttled.
            EC2AuthenticationException: Invalid credentials.
        """
        validate_tags(tags, error=EC2InvalidParameterException, operation="RunInstances", region=region)
        params: dict[str, Any] = {
            "ImageId": ami_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": subnet_id,
            "ClientToken": client_token,
            "Monitoring": {"Enabled": detailed_monitoring},
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": _tag_list(tags)} for kind in ("instance", "volume")
            ],
        }
        if security_group_ids:
            params["SecurityGroupIds"] = list(security_group_ids)
        if key_name:
            params["KeyName"] = key_name
        if iam_instance_profile:
            key = "Arn" if iam_instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {key: iam_instance_profile}
        if user_data:
            params["UserData"] = user_data  # boto3 base64-encodes it
        if metadata_options is not None:
            params["MetadataOptions"] = metadata_options.api()
        if root_volume is not None:
            device = root_device_name or self.describe_image(region, ami_id).root_device_name or "/dev/sda1"
            params["BlockDeviceMappings"] = [{"DeviceName": device, "Ebs": _ebs(root_volume)}]

        response = self._call(region, "RunInstances", **params)
        instances = response.get("Instances") or []
        if not instances:
            raise EC2InstanceCreationException(
                "RunInstances returned no instance", operation="RunInstances", region=region, code="NoInstance"
            )
        return CMLWorkerInstanceDto.from_api(region, instances[0], ami_name=ami_name)

    def start_instance(self, region: str, instance_id: str) -> bool:
        """Start a stopped instance; True when EC2 accepted the request.

        Raises:
            EC2InstanceNotFoundException: Instance not found.
            EC2InstanceOperationException: Start operation failed (e.g. wrong state).
            EC2AuthenticationException: Invalid credentials.
        """
        self._call(region, "StartInstances", instance_id, InstanceIds=[instance_id])
        return True

    def stop_instance(self, region: str, instance_id: str) -> bool:
        """Stop a running instance; True when EC2 accepted the request.

        Raises:
            EC2InstanceNotFoundException: Instance not found.
            EC2InstanceOperationException: Stop operation failed (e.g. wrong state).
            EC2AuthenticationException: Invalid credentials.
        """
        self._call(region, "StopInstances", instance_id, InstanceIds=[instance_id])
        return True

    def terminate_instance(self, region: str, instance_id: str) -> bool:
        """Terminate an instance; True when EC2 accepted the request.

        Raises:
            EC2InstanceNotFoundException: Instance not found (callers deleting treat this as done).
            EC2InstanceOperationException: Terminate operation failed (e.g. termination protection).
            EC2AuthenticationException: Invalid credentials.
        """
        self._call(region, "TerminateInstances", instance_id, InstanceIds=[instance_id])
        return True

    def modify_instance_type(self, region: str, instance_id: str, instance_type: str) -> bool:
        """Change the type of a stopped instance.

        Raises:
            EC2InstanceNotFoundException: Instance not found.
            EC2InstanceOperationException: The instance is not stopped.
            EC2InvalidParameterException: The type does not exist or is not allowed for this instance.
            EC2AuthenticationException: Invalid credentials.
        """
        self._call(
            region, "ModifyInstanceAttribute", instance_id,
            InstanceId=instance_id, InstanceType={"Value": instance_type},
        )
        return True

    def modify_security_groups(self, region: str, instance_id: str, group_ids: Sequence[str]) -> bool:
        """Replace the security groups of an instance (running or stopped).

        Raises:
            EC2InstanceNotFoundException: Instance not found.
            EC2InvalidParameterException: A group does not exist or belongs to another VPC.
            EC2AuthenticationException: Invalid credentials.
        """
        self._call(region, "ModifyInstanceAttribute", instance_id, InstanceId=instance_id, Groups=list(group_ids))
        return True

    def modify_metadata_options(self, region: str, instance_id: str, options: MetadataOptions) -> bool:
        """Set the instance metadata options (IMDSv2 tokens, hop limit) of a running or stopped instance.

        Raises:
            EC2InstanceNotFoundException: Instance not found.
            EC2InvalidParameterException: A value EC2 does not accept.
            EC2AuthenticationException: Invalid credentials or no permission.
        """
        self._call(region, "ModifyInstanceMetadataOptions", instance_id, InstanceId=instance_id,
                   HttpTokens=options.http_tokens, HttpPutResponseHopLimit=options.hop_limit,
                   HttpEndpoint="enabled")
        return True

    def set_detailed_monitoring(self, region: str, instance_id: str, enabled: bool) -> bool:
        """Switch CloudWatch detailed monitoring on or off.

        Raises:
            EC2InstanceNotFoundException: Instance not found.
            EC2InstanceOperationException: The call failed.
            EC2AuthenticationException: Invalid credentials.
        """
        operation = "MonitorInstances" if enabled else "UnmonitorInstances"
        self._call(region, operation, instance_id, InstanceIds=[instance_id])
        return True

    def describe_instance(self, region: str, instance_id: str) -> CMLWorkerInstanceDto:
        """One instance.

        Raises:
            EC2InstanceNotFoundException: Instance not found.
            EC2AuthenticationException: Invalid credentials.
        """
        found = self.describe_instances(region, [instance_id])
        if instance_id not in found:
            raise EC2InstanceNotFoundException(
                f"DescribeInstances failed (instance {instance_id}) [InvalidInstanceID.NotFound]: "
                "the instance does not exist",
                code="InvalidInstanceID.NotFound", operation="DescribeInstances",
                region=region, instance_id=instance_id,
            )
        return found[instance_id]

    def describe_instances(self, region: str, instance_ids: Iterable[str]) -> dict[str, CMLWorkerInstanceDto]:
        """Instances by id, 500 ids a call; ids EC2 does not know are absent from the result.

        EC2 fails a whole request when one id is unknown, so such a call is retried
        without the ids its error names: one bad id never hides the others.

        Raises:
            EC2AuthenticationException: Invalid credentials.
            EC2QuotaExceededException: Throttled.
            IntegrationException: Anything else.
        """
        found: dict[str, CMLWorkerInstanceDto] = {}
        for chunk in _chunks(_unique(instance_ids), DESCRIBE_INSTANCES_MAX_IDS):
            response = self._call_dropping_unknown(
                region, "DescribeInstances", chunk,
                lambda ids: self._call_all_pages(region, "DescribeInstances", InstanceIds=ids),
            )
            for reservation in response.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    dto = CMLWorkerInstanceDto.from_api(region, raw)
                    found[dto.aws_instance_id] = dto
        return found

    def find_instances_by_tag(self, region: str, key: str, value: str) -> list[CMLWorkerInstanceDto]:
        """Instances (in any state, terminated included) carrying tag ``key=value``.

        Raises:
            EC2AuthenticationException: Invalid credentials.
            IntegrationException: Anything else.
        """
        return self.find_instances_by_tag_values(region, key, [value]).get(value, [])

    def find_instances_by_tag_values(
        self, region: str, key: str, values: Iterable[str]
    ) -> dict[str, list[CMLWorkerInstanceDto]]:
        """Instances tagged ``key`` with any of ``values``, grouped by value; one call per 200 values.

        Raises:
            EC2AuthenticationException: Invalid credentials.
            IntegrationException: Anything else.
        """
        grouped: dict[str, list[CMLWorkerInstanceDto]] = {}
        for chunk in _chunks(_unique(values), FILTER_MAX_VALUES):
            response = self._call_all_pages(region, "DescribeInstances",
                                            Filters=[{"Name": f"tag:{key}", "Values": chunk}], MaxResults=1000)
            for reservation in response.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    dto = CMLWorkerInstanceDto.from_api(region, raw)
                    grouped.setdefault(dto.tags.get(key, ""), []).append(dto)
        return grouped

    def find_instances_by_client_token(self, region: str, client_token: str) -> list[CMLWorkerInstanceDto]:
        """Instances (in any state) a RunInstances with ``client_token`` launched: EC2's ``client-token``
        filter, which finds them even before their tags are listed or after someone removed them.

        Raises:
            EC2AuthenticationException: Invalid credentials.
            IntegrationException: Anything else.
        """
        response = self._call_all_pages(region, "DescribeInstances",
                                        Filters=[{"Name": "client-token", "Values": [client_token]}], MaxResults=1000)
        return [CMLWorkerInstanceDto.from_api(region, raw)
                for reservation in response.get("Reservations", []) for raw in reservation.get("Instances", [])]

    def find_instances(self, region: str, *, image_ids: Iterable[str], states: Sequence[str],
                       tags: Mapping[str, str] | None = None) -> list[CMLWorkerInstanceDto]:
        """Instances launched from any of ``image_ids``, in one of ``states``, carrying every tag in ``tags``.

        One call (all pages) per 200 image ids; none when ``image_ids`` is empty.

        Raises:
            EC2AuthenticationException: Invalid credentials.
            IntegrationException: Anything else.
        """
        found: dict[str, CMLWorkerInstanceDto] = {}
        tag_filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in sorted((tags or {}).items())]
        for chunk in _chunks(_unique(image_ids), FILTER_MAX_VALUES):
            filters = [{"Name": "image-id", "Values": chunk},
                       {"Name": "instance-state-name", "Values": list(states)}, *tag_filters]
            response = self._call_all_pages(region, "DescribeInstances", Filters=filters, MaxResults=1000)
            for reservation in response.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    dto = CMLWorkerInstanceDto.from_api(region, raw)
                    found[dto.aws_instance_id] = dto
        return list(found.values())

    # ------------------------------------------------------------------ status checks

    def get_instance_status_checks(self, region: str, instance_id: str) -> InstanceStatusChecks:
        """System and instance status checks of one running instance.

        Raises:
            EC2StatusCheckException: Status checks not available yet (instance not running or just launched).
            EC2InstanceNotFoundException: Instance not found.
            EC2AuthenticationException: Invalid credentials.
        """
        checks = self.get_instance_status_checks_batch(region, [instance_id])
        if instance_id not in checks:
            raise EC2StatusCheckException(
                f"DescribeInstanceStatus (instance {instance_id}): status checks are not available yet",
                code="StatusNotAvailable", operation="DescribeInstanceStatus",
                region=region, instance_id=instance_id,
            )
        return checks[instance_id]

    def get_instance_status_checks_batch(
        self, region: str, instance_ids: Iterable[str]
    ) -> dict[str, InstanceStatusChecks]:
        """Status checks of running instances, 100 ids a call; others are absent from the result.

        Raises:
            EC2StatusCheckException: EC2 failed to answer (server side).
            EC2AuthenticationException: Invalid credentials.
        """
        result: dict[str, InstanceStatusChecks] = {}
        for chunk in _chunks(_unique(instance_ids), DESCRIBE_STATUS_MAX_IDS):
            response = self._call_dropping_unknown(
                region, "DescribeInstanceStatus", chunk,
                lambda ids: self._call_all_pages(region, "DescribeInstanceStatus", InstanceIds=ids),
            )
            for item in response.get("InstanceStatuses", []):
                result[item["InstanceId"]] = InstanceStatusChecks(
                    instance_id=item["InstanceId"],
                    system=(item.get("SystemStatus") or {}).get("Status", "insufficient-data"),
                    instance=(item.get("InstanceStatus") or {}).get("Status", "insufficient-data"),
                    instance_state=(item.get("InstanceState") or {}).get("Name", "running"),
                )
        return result

    def _call_all_pages(self, region: str, operation: str, instance_id: str | None = None, **params: Any) -> dict:
        """One logical call: follow NextToken and concatenate the list fields of every page.

        EC2 may page even calls that name their ids (moto pages DescribeInstances at 100
        reservations); stopping at the first page would report the rest as gone.
        """
        merged: dict[str, Any] = {}
        token: str | None = None
        while True:
            page = {**params, "NextToken": token} if token else params
            response = self._call(region, operation, instance_id, **page)
            for key, value in response.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
            token = response.get("NextToken")
            if not token:
                return merged

    def _call_dropping_unknown(
        self, region: str, operation: str, ids: list[str], call: Callable[[list[str]], dict]
    ) -> dict:
        """Run ``call(ids)``; on InvalidInstanceID.NotFound retry without the ids EC2 named.

        If the message names none we know (format changed), split the list in halves,
        so the cost stays logarithmic in the number of bad ids.
        """
        merged: dict[str, list] = {}
        pending = [ids]
        while pending:
            batch = pending.pop()
            if not batch:
                continue
            try:
                response = call(batch)
            except EC2InstanceNotFoundException as exc:
                named = set(_NOT_FOUND_IDS.findall(exc.message)) & set(batch)
                logger.info("%s: %d of %d ids unknown to EC2 (%s); asking again without them",
                            operation, len(named), len(batch), exc.message)
                if named:
                    pending.append([i for i in batch if i not in named])
                elif len(batch) > 1:
                    half = len(batch) // 2
                    pending.extend([batch[:half], batch[half:]])
                continue
            for key, value in response.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
        return merged

    # ------------------------------------------------------------------ tags

    def add_tags(self, region: str, instance_id: str, tags: Mapping[str, str]) -> bool:
        """Create or overwrite tags on an instance (and its volumes are left alone).

        Raises:
            EC2TagOperationException: Tag limit exceeded, invalid tag format, or the call failed.
            EC2InstanceNotFoundException: Instance not found.
            EC2AuthenticationException: Invalid credentials.
        """
        if not tags:
            return True
        validate_tags(tags, error=EC2TagOperationException, operation="CreateTags",
                      region=region, instance_id=instance_id)
        self._call(region, "CreateTags", instance_id, Resources=[instance_id], Tags=_tag_list(tags))
        return True

    def remove_tags(self, region: str, instance_id: str, keys: Iterable[str]) -> bool:
        """Delete tags by key, whatever their value.

        Raises:
            EC2TagOperationException: The call failed.
            EC2InstanceNotFoundException: Instance not found.
            EC2AuthenticationException: Invalid credentials.
        """
        keys = sorted(set(keys))
        if not keys:
            return True
        self._call(region, "DeleteTags", instance_id, Resources=[instance_id], Tags=[{"Key": k} for k in keys])
        return True

    def get_tags(self, region: str, instance_id: str) -> dict[str, str]:
        """All tags of an instance.

        Raises:
            EC2TagOperationException: The call failed.
            EC2AuthenticationException: Invalid credentials.
        """
        response = self._call_all_pages(region, "DescribeTags", instance_id,
                                        Filters=[{"Name": "resource-id", "Values": [instance_id]}], MaxResults=1000)
        return {t["Key"]: t.get("Value", "") for t in response.get("Tags", [])}

    # ------------------------------------------------------------------ instance types

    def instance_type_offered(self, region: str, instance_type: str, availability_zone: str) -> bool:
        """Whether EC2 offers ``instance_type`` in ``availability_zone``.

        Raises:
            EC2AuthenticationException: Invalid credentials or no permission.
            IntegrationException: Anything else.
        """
        response = self._call_all_pages(
            region, "DescribeInstanceTypeOfferings", LocationType="availability-zone",
            Filters=[{"Name": "location", "Values": [availability_zone]},
                     {"Name": "instance-type", "Values": [instance_type]}],
        )
        return any(o.get("InstanceType") == instance_type for o in response.get("InstanceTypeOfferings", []))

    def instance_type_architectures(self, region: str, instance_type: str) -> tuple[str, ...]:
        """The CPU architectures ``instance_type`` supports (x86_64, arm64, ...).

        Raises:
            EC2InvalidParameterException: No such instance type (InvalidInstanceType).
            EC2AuthenticationException: Invalid credentials or no permission.
        """
        types = self._call(region, "DescribeInstanceTypes", InstanceTypes=[instance_type]).get("InstanceTypes") or []
        if not types:
            raise EC2InvalidParameterException(
                f"DescribeInstanceTypes failed [InvalidInstanceType]: the instance type '{instance_type}' does not exist",
                code="InvalidInstanceType", operation="DescribeInstanceTypes", region=region,
            )
        return tuple((types[0].get("ProcessorInfo") or {}).get("SupportedArchitectures") or ())

    # ------------------------------------------------------------------ images

    def describe_image(self, region: str, ami_id: str, owners: Sequence[str] | None = None) -> ImageInfo:
        """One AMI by id; with ``owners``, only if one of them owns it (EC2 resolves ``self``).

        The owner test is EC2's own (``Owners`` with an ``image-id`` filter), so ``self``
        means the caller's account without asking STS who that is.

        Raises:
            EC2InvalidParameterException: The AMI does not exist, is malformed, or its owner is not allowed
                (code ``ImageOwnerNotAllowed``, the message names ``spec.amiOwners`` and the owner).
            EC2AuthenticationException: Invalid credentials.
        """
        if owners:
            allowed = self._call(region, "DescribeImages", Owners=list(owners),
                                 Filters=[{"Name": "image-id", "Values": [ami_id]}]).get("Images") or []
            if allowed:
                return _image(allowed[0])
        images = self._call(region, "DescribeImages", ImageIds=[ami_id]).get("Images") or []
        if not images:
            raise EC2InvalidParameterException(
                f"DescribeImages failed [InvalidAMIID.NotFound]: the image id '{ami_id}' does not exist",
                code="InvalidAMIID.NotFound", operation="DescribeImages", region=region,
            )
        if owners:
            raise _owner_not_allowed(region, f"image {ami_id}", images[0], owners)
        return _image(images[0])

    def describe_key_pair(self, region: str, key_name: str) -> str:
        """The id of an EC2 key pair, by name.

        Raises:
            EC2InvalidParameterException: No key pair has this name.
            EC2AuthenticationException: Invalid credentials.
        """
        pairs = self._call(region, "DescribeKeyPairs", KeyNames=[key_name]).get("KeyPairs") or []
        if not pairs:
            raise EC2InvalidParameterException(
                f"DescribeKeyPairs failed [InvalidKeyPair.NotFound]: the key pair '{key_name}' does not exist",
                code="InvalidKeyPair.NotFound", operation="DescribeKeyPairs", region=region,
            )
        return pairs[0].get("KeyPairId", "")

    def find_images(self, region: str, owners: Sequence[str], name_pattern: str) -> list[ImageInfo]:
        """Available AMIs of ``owners`` (account ids, ``self``, ``amazon``, ...) whose name matches ``name_pattern``.

        Raises:
            EC2AuthenticationException: Invalid credentials.
            IntegrationException: Anything else.
        """
        response = self._call_all_pages(
            region, "DescribeImages", Owners=list(owners),
            Filters=[{"Name": "name", "Values": [name_pattern]}, {"Name": "state", "Values": ["available"]}],
        )
        return [_image(raw) for raw in response.get("Images") or []]

    def resolve_ami(self, region: str, name_or_pattern: str, owners: Sequence[str] | None = None) -> ImageInfo:
        """The newest AMI whose name matches (EC2 filter syntax: ``*`` and ``?`` wildcards) among ``owners``' images.

        Passing ``Owners`` is what defeats name confusion ("whoAMI"): anyone can publish
        a public image with a matching name, and the newest one would otherwise win.

        Raises:
            EC2InvalidParameterException: No image matches (``ImageOwnerNotAllowed`` when only images of
                owners outside ``owners`` match).
            EC2AuthenticationException: Invalid credentials.
        """
        filters = [{"Name": "name", "Values": [name_or_pattern]}, {"Name": "state", "Values": ["available"]}]
        params: dict[str, Any] = {"Filters": filters}
        if owners:
            params["Owners"] = list(owners)
        images = self._call(region, "DescribeImages", **params).get("Images") or []
        if not images and owners:
            others = self._call(region, "DescribeImages", Filters=filters).get("Images") or []
            if others:
                newest = max(others, key=lambda image: (image.get("CreationDate") or "", image["ImageId"]))
                raise _owner_not_allowed(region, f"the newest image matching amiName '{name_or_pattern}' "
                                         f"({newest['ImageId']})", newest, owners)
        if not images:
            raise EC2InvalidParameterException(
                f"DescribeImages failed [InvalidAMIName.NotFound]: no available image matches amiName "
                f"'{name_or_pattern}'",
                code="InvalidAMIName.NotFound", operation="DescribeImages", region=region,
            )
        newest = max(images, key=lambda image: (image.get("CreationDate") or "", image["ImageId"]))
        return _image(newest)


# ---------------------------------------------------------------------- helpers

def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _ebs(volume: RootVolume) -> dict[str, Any]:
    ebs: dict[str, Any] = {"DeleteOnTermination": True, "Encrypted": volume.encrypted}
    if volume.encrypted and volume.kms_key_id:
        ebs["KmsKeyId"] = volume.kms_key_id
    if volume.size_gib is not None:
        ebs["VolumeSize"] = volume.size_gib
    if volume.volume_type is not None:
        ebs["VolumeType"] = volume.volume_type
    # Provisioned-IOPS types require Iops; take 3000 (gp3's baseline) within each type's per-GiB ratio.
    if volume.volume_type == "io1" and volume.size_gib:
        ebs["Iops"] = min(3000, 50 * volume.size_gib)
    elif volume.volume_type == "io2" and volume.size_gib:
        ebs["Iops"] = min(3000, 500 * volume.size_gib)
    return ebs


def _image(raw: Mapping[str, Any]) -> ImageInfo:
    root = raw.get("RootDeviceName")
    sizes = [m.get("Ebs", {}).get("VolumeSize") for m in raw.get("BlockDeviceMappings") or []
             if m.get("DeviceName") == root]
    return ImageInfo(
        image_id=raw["ImageId"], name=raw.get("Name"),
        root_device_name=root, creation_date=raw.get("CreationDate"),
        root_volume_size=sizes[0] if sizes and isinstance(sizes[0], int) else None,
        architecture=raw.get("Architecture"),
        owner_id=raw.get("OwnerId"), owner_alias=raw.get("ImageOwnerAlias"),
    )


def _owner_not_allowed(region: str, what: str, raw: Mapping[str, Any],
                       owners: Sequence[str]) -> EC2InvalidParameterException:
    owner = raw.get("OwnerId") or "unknown"
    alias = raw.get("ImageOwnerAlias")
    named = f"{owner} ({alias})" if alias else owner
    return EC2InvalidParameterException(
        f"DescribeImages refused [ImageOwnerNotAllowed]: {what} is owned by {named}, which spec.amiOwners "
        f"{list(owners)} does not allow; add that owner to spec.amiOwners only if you trust it",
        code="ImageOwnerNotAllowed", operation="DescribeImages", region=region, retryable=False,
    )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
