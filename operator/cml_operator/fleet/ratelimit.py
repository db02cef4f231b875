"""Client-side rate limits for EC2: a token bucket per region and class of call.

EC2 throttles per account and region with token buckets of its own (mutating
calls refill at a few per second, reads at about twenty). Staying under them
keeps the whole account healthy, not just this operator. When EC2 answers with
throttling anyway (another tool shares the account), the bucket halves its rate
and creeps back to the configured rate over ``recovery_seconds``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimitSettings:
    mutating_rate: float = 2.0  # calls per second, per region
    mutating_burst: int = 5
    read_rate: float = 20.0
    read_burst: int = 100
    mutating_concurrency: int = 4  # RunInstances/Start/Stop/Terminate/Modify in flight, per region
    min_rate_fraction: float = 0.05  # throttling never slows a bucket below this share of its rate
    recovery_seconds: float = 60.0  # time to climb back from a halving


class TokenBucket:
    """Thread-safe token bucket whose rate halves on throttling and recovers linearly."""

    def __init__(self, rate: float, burst: int, *, min_rate_fraction: float = 0.05,
                 recovery_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.configured_rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._floor = rate * min_rate_fraction
        # From a halving (rate/2) back to rate in recovery_seconds.
        self._recovery_per_second = rate / (2 * max(recovery_seconds, 1e-9))
        self._rate = rate
        self._clock = clock
        self._updated = clock()
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        with self._lock:
            self._advance(self._clock())
            return self._rate

    def _advance(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._rate = min(self.configured_rate, self._rate + elapsed * self._recovery_per_second)

    def reserve(self) -> float:
        """Take a token now (possibly going into debt); return seconds to wait before using it."""
        with self._lock:
            self._advance(self._clock())
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def penalize(self) -> None:
        """EC2 throttled us: halve the rate (down to the floor) and drop saved-up burst."""
        with self._lock:
            self._advance(self._clock())
            self._rate = max(self._floor, self._rate / 2)
            self._tokens = min(self._tokens, 0.0)

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


class EC2RateLimiter:
    """Buckets and a concurrency bound per region; ``mutating`` and ``reading`` wrap each call."""

    def __init__(self, settings: RateLimitSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or RateLimitSettings()
        self._clock = clock  # the buckets' clock; it must agree with the event loop's (asyncio.sleep waits)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._lock = threading.Lock()

    def bucket(self, region: str, kind: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get((region, kind))
            if bucket is None:
                s = self.settings
                rate, burst = (s.mutating_rate, s.mutating_burst) if kind == "mutating" else (s.read_rate, s.read_burst)
                bucket = TokenBucket(rate, burst, min_rate_fraction=s.min_rate_fraction,
                                     recovery_seconds=s.recovery_seconds, clock=self._clock)
                self._buckets[(region, kind)] = bucket
            return bucket

    @asynccontextmanager
    async def mutating(self, region: str) -> AsyncIterator[None]:
        semaphore = self._semaphores.get(region)
        if semaphore is None:
            semaphore = self._semaphores[region] = asyncio.Semaphore(self.settings.mutating_concurrency)
        async with semaphore:
            await self.bucket(region, "mutating").acquire()
            yield

    async def reading(self, region: str) -> None:
        await self.bucket(region, "read").acquire()

    def throttled(self, region: str, operation: str) -> None:
        """Called (from any thread) when EC2 answered ``operation`` with throttling."""
        self.bucket(region, kind_of(operation)).penalize()


_READ_PREFIXES = ("Describe", "Get", "List")


def kind_of(operation: str) -> str:
    return "read" if operation.startswith(_READ_PREFIXES) else "mutating"
