"""``EC2Gateway``: the operator's async door to EC2.

Each method runs one ``EC2Client`` call in a worker thread (boto3 blocks; Kopf's
event loop must not), after taking a token from the region's rate limiter, and
for mutating calls inside the region's concurrency bound. Handlers and the
observers use only this narrow interface, so tests can count and fake it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from ..ec2.client import EC2Client, MetadataOptions, RootVolume
from ..ec2.exceptions import IntegrationException
from ..ec2.models import CMLWorkerInstanceDto, ImageInfo, InstanceStatusChecks
from .ratelimit import EC2RateLimiter

T = TypeVar("T")


class EC2Api(Protocol):
    """The calls the operator makes, async."""

    async def describe_instances(self, region: str, ids: Sequence[str]) -> dict[str, CMLWorkerInstanceDto]: ...
    async def status_checks(self, region: str, ids: Sequence[str]) -> dict[str, InstanceStatusChecks]: ...
    async def find_by_tag_values(self, region: str, key: str,
                                 values: Sequence[str]) -> dict[str, list[CMLWorkerInstanceDto]]: ...
    async def find_by_client_token(self, region: str, client_token: str) -> list[CMLWorkerInstanceDto]: ...
    async def describe_image(self, region: str, ami_id: str,
                             owners: Sequence[str] | None = None) -> ImageInfo: ...
    async def resolve_ami(self, region: str, name_or_pattern: str,
                          owners: Sequence[str] | None = None) -> ImageInfo: ...
    async def describe_key_pair(self, region: str, key_name: str) -> str: ...
    async def find_images(self, region: str, owners: Sequence[str], name_pattern: str) -> list[ImageInfo]: ...
    async def find_instances(self, region: str, *, image_ids: Sequence[str], states: Sequence[str],
                             tags: Mapping[str, str] | None = None) -> list[CMLWorkerInstanceDto]: ...
    async def instance_type_offered(self, region: str, instance_type: str, availability_zone: str) -> bool: ...
    async def instance_type_architectures(self, region: str, instance_type: str) -> tuple[str, ...]: ...
    async def create_instance(self, region: str, **params: Any) -> CMLWorkerInstanceDto: ...
    async def start_instance(self, region: str, instance_id: str) -> bool: ...
    async def stop_instance(self, region: str, instance_id: str) -> bool: ...
    async def terminate_instance(self, region: str, instance_id: str) -> bool: ...
    async def modify_instance_type(self, region: str, instance_id: str, instance_type: str) -> bool: ...
    async def modify_security_groups(self, region: str, instance_id: str, group_ids: Sequence[str]) -> bool: ...
    async def set_detailed_monitoring(self, region: str, instance_id: str, enabled: bool) -> bool: ...
    async def modify_metadata_options(self, region: str, instance_id: str, options: MetadataOptions) -> bool: ...
    async def add_tags(self, region: str, instance_id: str, tags: Mapping[str, str]) -> bool: ...
    async def remove_tags(self, region: str, instance_id: str, keys: Iterable[str]) -> bool: ...


class EC2Gateway:
    def __init__(self, client: EC2Client, limiter: EC2RateLimiter, *, threads: int = 16,
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.client = client
        self.limiter = limiter
        # Accounts' gateways share the operator's pool: --ec2-threads bounds the threads of all of them.
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ec2")
        self._closed = False

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def close(self) -> None:
        self._closed = True
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:  # a handler still running while the operator stops
            raise IntegrationException("the operator is shutting down", code="ShuttingDown")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args, **kwargs))

    async def _read(self, region: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        await self.limiter.reading(region)
        return await self._in_thread(call, region, *args, **kwargs)

    async def _mutate(self, region: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self.limiter.mutating(region):
            return await self._in_thread(call, region, *args, **kwargs)

    # reads
    async def describe_instances(self, region: str, ids: Sequence[str]) -> dict[str, CMLWorkerInstanceDto]:
        return await self._read(region, self.client.describe_instances, list(ids))

    async def status_checks(self, region: str, ids: Sequence[str]) -> dict[str, InstanceStatusChecks]:
        return await self._read(region, self.client.get_instance_status_checks_batch, list(ids))

    async def find_by_tag_values(self, region: str, key: str,
                                 values: Sequence[str]) -> dict[str, list[CMLWorkerInstanceDto]]:
        return await self._read(region, self.client.find_instances_by_tag_values, key, list(values))

    async def find_by_client_token(self, region: str, client_token: str) -> list[CMLWorkerInstanceDto]:
        return await self._read(region, self.client.find_instances_by_client_token, client_token)

    async def describe_image(self, region: str, ami_id: str, owners: Sequence[str] | None = None) -> ImageInfo:
        return await self._read(region, self.client.describe_image, ami_id, owners)

    async def resolve_ami(self, region: str, name_or_pattern: str,
                          owners: Sequence[str] | None = None) -> ImageInfo:
        return await self._read(region, self.client.resolve_ami, name_or_pattern, owners)

    async def describe_key_pair(self, region: str, key_name: str) -> str:
        return await self._read(region, self.client.describe_key_pair, key_name)

    async def find_images(self, region: str, owners: Sequence[str], name_pattern: str) -> list[ImageInfo]:
        return await self._read(region, self.client.find_images, list(owners), name_pattern)

    async def find_instances(self, region: str, *, image_ids: Sequence[str], states: Sequence[str],
                             tags: Mapping[str, str] | None = None) -> list[CMLWorkerInstanceDto]:
        return await self._read(region, self.client.find_instances, image_ids=list(image_ids), states=list(states),
                                tags=dict(tags or {}))

    async def instance_type_offered(self, region: str, instance_type: str, availability_zone: str) -> bool:
        return await self._read(region, self.client.instance_type_offered, instance_type, availability_zone)

    async def instance_type_architectures(self, region: str, instance_type: str) -> tuple[str, ...]:
        return await self._read(region, self.client.instance_type_architectures, instance_type)

    # writes
    async def create_instance(self, region: str, **params: Any) -> CMLWorkerInstanceDto:
        return await self._mutate(region, self.client.create_instance, **params)

    async def start_instance(self, region: str, instance_id: str) -> bool:
        return await self._mutate(region, self.client.start_instance, instance_id)

    async def stop_instance(self, region: str, instance_id: str) -> bool:
        return await self._mutate(region, self.client.stop_instance, instance_id)

    async def terminate_instance(self, region: str, instance_id: str) -> bool:
        return await self._mutate(region, self.client.terminate_instance, instance_id)

    async def modify_instance_type(self, region: str, instance_id: str, instance_type: str) -> bool:
        return await self._mutate(region, self.client.modify_instance_type, instance_id, instance_type)

    async def modify_security_groups(self, region: str, instance_id: str, group_ids: Sequence[str]) -> bool:
        return await self._mutate(region, self.client.modify_security_groups, instance_id, list(group_ids))

    async def set_detailed_monitoring(self, region: str, instance_id: str, enabled: bool) -> bool:
        return await self._mutate(region, self.client.set_detailed_monitoring, instance_id, enabled)

    async def modify_metadata_options(self, region: str, instance_id: str, options: MetadataOptions) -> bool:
        return await self._mutate(region, self.client.modify_metadata_options, instance_id, options)

    async def add_tags(self, region: str, instance_id: str, tags: Mapping[str, str]) -> bool:
        return await self._mutate(region, self.client.add_tags, instance_id, dict(tags))

    async def remove_tags(self, region: str, instance_id: str, keys: Iterable[str]) -> bool:
        return await self._mutate(region, self.client.remove_tags, instance_id, list(keys))


__all__ = ["EC2Api", "EC2Gateway", "MetadataOptions", "RootVolume"]
