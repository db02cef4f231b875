"""TokenBucket and EC2RateLimiter: burst, steady rate, throttling back-off and recovery, concurrency.

The bucket's arithmetic runs against a hand-driven clock; what waits (``acquire``,
the concurrency bound) runs on virtual time (``virtual_time_test``) with the event
loop's clock injected into the buckets: no real sleeping anywhere.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from cml_operator.fleet.ratelimit import EC2RateLimiter, RateLimitSettings, TokenBucket, kind_of

from .asyncrun import virtual_time_test

pytestmark = pytest.mark.timeout(10)




class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bucket(rate=2.0, burst=5, *, min_rate_fraction=0.05, recovery_seconds=60.0):
    clock = FakeClock()
    return TokenBucket(rate, burst, min_rate_fraction=min_rate_fraction,
                       recovery_seconds=recovery_seconds, clock=clock), clock


# ---------------------------------------------------------------- burst and steady rate


def test_a_full_bucket_lets_the_burst_through_without_waiting():
    b, _ = bucket(rate=2.0, burst=5)
    assert [b.reserve() for _ in range(5)] == [0.0] * 5


def test_after_the_burst_each_call_waits_one_more_token_interval():
    b, _ = bucket(rate=2.0, burst=5)
    for _ in range(5):
        b.reserve()

    # Reservations go into debt: the 6th waits 1/rate, the 7th 2/rate, ...
    assert [b.reserve() for _ in range(3)] == pytest.approx([0.5, 1.0, 1.5])


def test_callers_that_wait_their_turn_run_at_the_steady_rate():
    b, clock = bucket(rate=4.0, burst=3)
    start = clock.now
    granted: list[float] = []
    for _ in range(3 + 40):
        wait = b.reserve()
        clock.advance(wait)  # the caller sleeps what it was told, then makes its call
        granted.append(clock.now - start)

    assert granted[:3] == [0.0, 0.0, 0.0]  # the burst
    gaps = [later - earlier for earlier, later in zip(granted[3:], granted[4:])]
    assert gaps == pytest.approx([0.25] * len(gaps))  # then exactly `rate` calls per second
    assert granted[-1] == pytest.approx(40 / 4.0)


def test_idle_time_refills_tokens_but_never_beyond_the_burst():
    b, clock = bucket(rate=2.0, burst=5)
    for _ in range(5):
        b.reserve()
    clock.advance(1.0)
    assert [b.reserve() for _ in range(2)] == [0.0, 0.0]  # 1 s at 2/s bought two tokens
    assert b.reserve() == pytest.approx(0.5)

    clock.advance(3600)
    assert [b.reserve() for _ in range(5)] == [0.0] * 5
    assert b.reserve() == pytest.approx(0.5)


def test_a_clock_going_backwards_adds_no_tokens():
    b, clock = bucket(rate=2.0, burst=1)
    b.reserve()
    clock.advance(-10)
    assert b.reserve() == pytest.approx(0.5)


@virtual_time_test
async def test_acquire_sleeps_for_the_reserved_wait():
    loop = asyncio.get_running_loop()
    b = TokenBucket(rate=20.0, burst=1, clock=loop.time)  # the second token is 50 ms away
    started = loop.time()
    await b.acquire()
    assert loop.time() == started
    await b.acquire()
    assert loop.time() - started == pytest.approx(0.05)
    await b.acquire()
    assert loop.time() - started == pytest.approx(0.10)


# ---------------------------------------------------------------- throttling


def test_penalize_halves_the_rate():
    b, _ = bucket(rate=2.0)
    b.penalize()
    assert b.rate == pytest.approx(1.0)
    b.penalize()
    assert b.rate == pytest.approx(0.5)
    assert b.configured_rate == 2.0


def test_penalize_drops_the_saved_up_burst():
    b, _ = bucket(rate=2.0, burst=5)
    b.penalize()
    # No free tokens left, and the next one comes at the halved rate.
    assert b.reserve() == pytest.approx(1 / 1.0)


def test_penalize_keeps_existing_debt():
    b, _ = bucket(rate=2.0, burst=1)
    b.reserve()
    b.reserve()  # one token in debt
    b.penalize()
    assert b.reserve() == pytest.approx(2 / 1.0)


def test_repeated_throttling_never_goes_below_the_floor():
    b, _ = bucket(rate=2.0, min_rate_fraction=0.05)
    for _ in range(20):
        b.penalize()
    assert b.rate == pytest.approx(0.1)
    # The floor also bounds the wait: one token at 0.1/s.
    assert b.reserve() == pytest.approx(10.0)


def test_the_rate_recovers_linearly_and_stops_at_the_configured_rate():
    b, clock = bucket(rate=2.0, recovery_seconds=60.0)
    b.penalize()
    halved = b.rate
    assert halved == pytest.approx(1.0)

    samples = []
    for _ in range(4):
        clock.advance(5.0)
        samples.append(b.rate)
    steps = [later - earlier for earlier, later in zip([halved, *samples], samples)]
    assert all(step > 0 for step in steps)
    assert steps == pytest.approx([steps[0]] * 4)  # linear

    clock.advance(60.0)  # well past any recovery
    assert b.rate == pytest.approx(2.0)
    clock.advance(600.0)
    assert b.rate == 2.0  # and never above the configured rate


def test_the_rate_climbs_back_from_the_floor_given_time():
    b, clock = bucket(rate=2.0, min_rate_fraction=0.05, recovery_seconds=60.0)
    for _ in range(20):
        b.penalize()
    clock.advance(15.0)
    assert 0.1 < b.rate < 2.0
    clock.advance(600.0)
    assert b.rate == pytest.approx(2.0)


def test_climbing_back_from_one_halving_takes_recovery_seconds():
    b, clock = bucket(rate=2.0, recovery_seconds=60.0)
    b.penalize()
    clock.advance(30.0)  # half of recovery_seconds: half way back from 1.0 to 2.0
    assert b.rate == pytest.approx(1.5)
    clock.advance(30.0)
    assert b.rate == pytest.approx(2.0)


def test_tokens_refill_at_the_reduced_rate_after_throttling():
    b, clock = bucket(rate=2.0, burst=5, recovery_seconds=1e9)  # recovery too slow to matter
    b.penalize()  # 1 token/s, no tokens
    clock.advance(2.0)
    assert [b.reserve() for _ in range(2)] == [0.0, 0.0]
    assert b.reserve() == pytest.approx(1.0)


def test_the_bucket_is_safe_to_use_from_several_threads():
    b, _ = bucket(rate=1.0, burst=4000)  # frozen clock: exactly 4000 free tokens
    waits: list[float] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        mine = [b.reserve() for _ in range(n)]
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=take, args=(1000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert waits.count(0.0) == 4000
    assert b.reserve() == pytest.approx(1.0)  # not one token handed out twice


# ---------------------------------------------------------------- EC2RateLimiter


def limiter_on_loop_time(settings: RateLimitSettings) -> EC2RateLimiter:
    """A limiter whose buckets read the (virtual) event loop's clock."""
    return EC2RateLimiter(settings, clock=asyncio.get_running_loop().time)


def fast_settings(**overrides) -> RateLimitSettings:
    """Buckets too large to make anyone wait, so only the concurrency bound shows."""
    values = dict(mutating_rate=10_000.0, mutating_burst=10_000, read_rate=10_000.0, read_burst=10_000,
                  mutating_concurrency=3)
    values.update(overrides)
    return RateLimitSettings(**values)


@virtual_time_test
async def test_mutating_calls_never_exceed_the_concurrency_bound():
    limiter = limiter_on_loop_time(fast_settings(mutating_concurrency=3))
    in_flight = 0
    most = 0

    async def call() -> None:
        nonlocal in_flight, most
        async with limiter.mutating("us-east-1"):
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(call() for _ in range(12)))

    assert most == 3
    assert loop.time() - started == pytest.approx(0.04)  # 12 calls, 3 at a time: 4 rounds of 10 ms


@virtual_time_test
async def test_the_concurrency_bound_is_per_region():
    limiter = limiter_on_loop_time(fast_settings(mutating_concurrency=2))
    in_flight = {"us-east-1": 0, "eu-west-1": 0}
    most = {"us-east-1": 0, "eu-west-1": 0}
    most_total = 0

    async def call(region: str) -> None:
        nonlocal most_total
        async with limiter.mutating(region):
            in_flight[region] += 1
            most[region] = max(most[region], in_flight[region])
            most_total = max(most_total, sum(in_flight.values()))
            await asyncio.sleep(0.01)
            in_flight[region] -= 1

    await asyncio.gather(*(call(r) for r in ("us-east-1", "eu-west-1") for _ in range(6)))

    assert most == {"us-east-1": 2, "eu-west-1": 2}
    assert most_total == 4


@virtual_time_test
async def test_an_error_inside_a_mutating_call_releases_its_slot():
    limiter = limiter_on_loop_time(fast_settings(mutating_concurrency=1))

    with pytest.raises(RuntimeError):
        async with limiter.mutating("us-east-1"):
            raise RuntimeError("RunInstances failed")

    await asyncio.wait_for(limiter.mutating("us-east-1").__aenter__(), timeout=0.1)


@virtual_time_test
async def test_mutating_calls_spend_the_regions_mutating_tokens_only():
    limiter = limiter_on_loop_time(RateLimitSettings(mutating_rate=2.0, mutating_burst=2, read_rate=20.0,
                                                     read_burst=5))
    for _ in range(2):
        async with limiter.mutating("us-east-1"):
            pass

    assert limiter.bucket("us-east-1", "mutating").reserve() == pytest.approx(0.5)  # burst spent
    assert limiter.bucket("us-east-1", "read").reserve() == 0.0
    assert limiter.bucket("eu-west-1", "mutating").reserve() == 0.0


@virtual_time_test
async def test_reads_spend_the_regions_read_tokens_only():
    limiter = limiter_on_loop_time(RateLimitSettings(mutating_rate=2.0, mutating_burst=2, read_rate=2.0,
                                                     read_burst=3))
    for _ in range(3):
        await limiter.reading("us-east-1")

    assert limiter.bucket("us-east-1", "read").reserve() == pytest.approx(0.5)
    assert limiter.bucket("us-east-1", "mutating").reserve() == 0.0
    assert limiter.bucket("eu-west-1", "read").reserve() == 0.0


def test_buckets_are_made_once_per_region_and_kind_from_the_settings():
    settings = RateLimitSettings(mutating_rate=3.0, mutating_burst=7, read_rate=30.0, read_burst=70)
    limiter = EC2RateLimiter(settings)

    read = limiter.bucket("us-east-1", "read")
    mutating = limiter.bucket("us-east-1", "mutating")

    assert limiter.bucket("us-east-1", "read") is read
    assert limiter.bucket("eu-west-1", "read") is not read
    assert mutating is not read
    assert (read.configured_rate, mutating.configured_rate) == (30.0, 3.0)


@pytest.mark.parametrize(("operation", "kind"), [
    ("DescribeInstances", "read"),
    ("DescribeInstanceStatus", "read"),
    ("GetConsoleOutput", "read"),
    ("ListImagesInRecycleBin", "read"),
    ("RunInstances", "mutating"),
    ("StartInstances", "mutating"),
    ("TerminateInstances", "mutating"),
    ("ModifyInstanceAttribute", "mutating"),
    ("CreateTags", "mutating"),
    ("DeleteTags", "mutating"),
])
def test_kind_of_reads_describe_get_and_list_as_reads_and_the_rest_as_mutating(operation, kind):
    assert kind_of(operation) == kind


def test_a_throttled_read_slows_only_that_regions_read_bucket():
    limiter = EC2RateLimiter(RateLimitSettings(read_rate=20.0, mutating_rate=2.0, recovery_seconds=3600),
                             clock=FakeClock())

    limiter.throttled("us-east-1", "DescribeInstances")

    assert limiter.bucket("us-east-1", "read").rate == pytest.approx(10.0)
    assert limiter.bucket("us-east-1", "mutating").rate == pytest.approx(2.0)
    assert limiter.bucket("eu-west-1", "read").rate == pytest.approx(20.0)


def test_a_throttled_mutation_slows_only_that_regions_mutating_bucket():
    limiter = EC2RateLimiter(RateLimitSettings(read_rate=20.0, mutating_rate=2.0, recovery_seconds=3600),
                             clock=FakeClock())

    limiter.throttled("us-east-1", "RunInstances")

    assert limiter.bucket("us-east-1", "mutating").rate == pytest.approx(1.0)
    assert limiter.bucket("us-east-1", "read").rate == pytest.approx(20.0)


def test_throttled_may_be_reported_from_another_thread():
    limiter = EC2RateLimiter(RateLimitSettings(read_rate=20.0, recovery_seconds=3600), clock=FakeClock())
    worker = threading.Thread(target=limiter.throttled, args=("us-east-1", "DescribeInstances"))
    worker.start()
    worker.join()
    assert limiter.bucket("us-east-1", "read").rate == pytest.approx(10.0)
