"""Cached, de-duplicated reads of things many workers share: images, key pairs, instance types.

A thousand workers created from one manifest template would otherwise ask
DescribeImages a thousand times for the same AMI. Concurrent askers share one
in-flight call ("single flight"); answers are kept for ``ttl`` seconds (an AMI id
never changes meaning; a name pattern may start matching a newer image, hence the
TTL). Failures are not cached: the next attempt asks EC2 again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from ..ec2.models import ImageInfo
from .gateway import EC2Api


class SingleFlightCache:
    def __init__(self, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        cached = self._values.get(key)
        if cached is not None and self._clock() - cached[0] <= self._ttl:
            return cached[1]
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(load())
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(future)

    def _settle(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._values[key] = (self._clock(), done.result())


class SharedLookups:
    """Images and key pairs, per region, through one cache."""

    def __init__(self, ec2: EC2Api, ttl: float = 300.0) -> None:
        self._ec2 = ec2
        self._cache = SingleFlightCache(ttl)

    async def image(self, region: str, ami_id: str, owners: Sequence[str] = ()) -> ImageInfo:
        key = ("image", region, ami_id, tuple(owners))
        return await self._cache.get(key, lambda: self._ec2.describe_image(region, ami_id, list(owners) or None))

    async def image_by_name(self, region: str, pattern: str, owners: Sequence[str] = ()) -> ImageInfo:
        key = ("image-name", region, pattern, tuple(owners))
        return await self._cache.get(key, lambda: self._ec2.resolve_ami(region, pattern, list(owners) or None))

    async def type_offered(self, region: str, instance_type: str, availability_zone: str) -> bool:
        return await self._cache.get(("offered", region, instance_type, availability_zone),
                                     lambda: self._ec2.instance_type_offered(region, instance_type, availability_zone))

    async def type_architectures(self, region: str, instance_type: str) -> tuple[str, ...]:
        return await self._cache.get(("arch", region, instance_type),
                                     lambda: self._ec2.instance_type_architectures(region, instance_type))

    async def key_pair(self, region: str, key_name: str) -> str:
        return await self._cache.get(("key", region, key_name),
                                     lambda: self._ec2.describe_key_pair(region, key_name))
