"""Shared lookups: concurrent askers share one EC2 call; answers expire; failures are not kept."""

from __future__ import annotations

import asyncio

import pytest

from cml_operator.fleet.lookups import SingleFlightCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_askers_share_one_call():
    calls = []

    async def load():
        calls.append(1)
        await asyncio.sleep(0.01)
        return "ami-info"

    async def scenario():
        cache = SingleFlightCache(ttl=60)
        return await asyncio.gather(*(cache.get("k", load) for _ in range(100)))

    assert asyncio.run(scenario()) == ["ami-info"] * 100
    assert len(calls) == 1


def test_answers_expire_after_the_ttl():
    clock, calls = Clock(), []

    async def load():
        calls.append(1)
        return len(calls)

    async def scenario():
        cache = SingleFlightCache(ttl=60, clock=clock)
        first = await cache.get("k", load)
        clock.now = 59
        cached = await cache.get("k", load)
        clock.now = 61
        fresh = await cache.get("k", load)
        return first, cached, fresh

    assert asyncio.run(scenario()) == (1, 1, 2)


def test_failures_are_not_cached():
    attempts = []

    async def load():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("throttled")
        return "ok"

    async def scenario():
        cache = SingleFlightCache(ttl=60)
        with pytest.raises(RuntimeError):
            await cache.get("k", load)
        return await cache.get("k", load)

    assert asyncio.run(scenario()) == "ok" and len(attempts) == 2
