"""Leader election decisions and the elector's moves, against an in-memory Lease with resourceVersions."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest

from cml_operator.leader import (
    LeaderElectionSettings,
    LeaderElector,
    LeaseConflict,
    LeaseRecord,
    claimed,
    may_acquire,
    released,
)
from tests.unit.asyncrun import virtual_time_test

NOW = datetime.datetime(2026, 11, 25, 17, 0, tzinfo=datetime.timezone.utc)
SETTINGS = LeaderElectionSettings(enabled=True, namespace="ns")


@pytest.mark.parametrize(("holder", "seen_for", "expected"), [
    ("", 0, True),                 # released or never held: take it at once
    ("me_1", 0, True),             # ours: renew
    ("other_2", 0, False),         # someone else's, just renewed
    ("other_2", 14.9, False),      # not yet expired by our own clock
    ("other_2", 15, True),         # unchanged for a whole lease duration: the holder is gone
])
def test_may_acquire(holder: str, seen_for: float, expected: bool) -> None:
    record = LeaseRecord(holder=holder, lease_duration_seconds=15)
    assert may_acquire(record, "me_1", seen_for, 15.0) is expected


def test_taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() -> None:
    taken = claimed(LeaseRecord(holder="old_1", transitions=3, acquire_time="t0"), "me_1", NOW, 15)
    assert taken["holderIdentity"] == "me_1" and taken["leaseTransitions"] == 4
    assert taken["acquireTime"] == taken["renewTime"] == "2026-11-25T17:00:00.000000Z"
    renewed = claimed(LeaseRecord(holder="me_1", transitions=4, acquire_time="t1"), "me_1", NOW, 15)
    assert renewed["acquireTime"] == "t1" and renewed["leaseTransitions"] == 4
    assert claimed(LeaseRecord(), "me_1", NOW, 15)["leaseTransitions"] == 0  # first holder ever


def test_releasing_empties_the_holder() -> None:
    spec = released(LeaseRecord(holder="me_1", transitions=2), NOW)
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1 and spec["leaseTransitions"] == 2


def test_settings_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        LeaderElectionSettings(lease_duration=10, renew_deadline=10, retry_period=2)


@dataclass
class FakeLeaseStore:
    """One Lease with resourceVersion checks, shared by several electors; can be made unreachable."""

    body: dict[str, Any] | None = None
    version: int = 0
    down: bool = False
    writes: list[str] = field(default_factory=list)

    def client(self) -> FakeClient:
        return FakeClient(self)


@dataclass
class FakeClient:
    store: FakeLeaseStore
    namespace: str = "ns"
    name: str = "cml-operator"

    def _check(self) -> None:
        if self.store.down:
            raise OSError("connection refused")

    def _save(self, spec: dict[str, Any]) -> LeaseRecord:
        self.store.version += 1
        self.store.body = {"metadata": {"resourceVersion": str(self.store.version)}, "spec": dict(spec)}
        self.store.writes.append(spec["holderIdentity"])
        return LeaseRecord.from_body(self.store.body)

    async def get(self) -> LeaseRecord | None:
        self._check()
        return LeaseRecord.from_body(self.store.body) if self.store.body else None

    async def create(self, spec: dict[str, Any]) -> LeaseRecord:
        self._check()
        if self.store.body is not None:
            raise LeaseConflict("exists")
        return self._save(spec)

    async def update(self, record: LeaseRecord, spec: dict[str, Any]) -> LeaseRecord:
        self._check()
        if record.resource_version != str(self.store.version):
            raise LeaseConflict("changed")
        return self._save(spec)

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _elector(store: FakeLeaseStore, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(SETTINGS, identity, store.client(), monotonic=clock)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_first_elector_creates_the_lease_and_the_second_stands_by() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = _elector(store, "a_1", clock), _elector(store, "b_2", clock)
    assert run(a.try_acquire_or_renew()) is True
    assert run(b.try_acquire_or_renew()) is False
    clock.now += 2
    assert run(a.try_acquire_or_renew()) is True  # renewal changes renewTime ...
    clock.now += 14
    assert run(b.try_acquire_or_renew()) is False  # ... so b's clock restarted when it saw the new term
    assert store.writes == ["a_1", "a_1"]


def test_a_standby_takes_over_only_after_a_lease_duration_without_renewal() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = _elector(store, "a_1", clock), _elector(store, "b_2", clock)
    run(a.try_acquire_or_renew())
    assert run(b.try_acquire_or_renew()) is False  # b starts watching this term now
    clock.now += 14.9
    assert run(b.try_acquire_or_renew()) is False
    clock.now += 0.1
    assert run(b.try_acquire_or_renew()) is True
    assert LeaseRecord.from_body(store.body).transitions == 1
    clock.now += 1
    assert run(a.try_acquire_or_renew()) is False  # the old leader sees someone else's fresh term


def test_a_released_lease_is_taken_at_once() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = _elector(store, "a_1", clock), _elector(store, "b_2", clock)
    run(a.try_acquire_or_renew())
    assert run(b.try_acquire_or_renew()) is False
    run(a.release())
    assert run(b.try_acquire_or_renew()) is True
    assert store.writes == ["a_1", "", "b_2"]


def test_release_does_not_touch_a_lease_someone_else_holds() -> None:
    store, clock = FakeLeaseStore(), Clock()
    a, b = _elector(store, "a_1", clock), _elector(store, "b_2", clock)
    run(b.try_acquire_or_renew())
    run(a.release())
    assert store.writes == ["b_2"]


def test_a_leader_that_cannot_renew_gives_up_after_the_renew_deadline_before_the_lease_expires() -> None:
    store = FakeLeaseStore()
    fast = LeaderElectionSettings(enabled=True, namespace="ns", lease_duration=0.6, renew_deadline=0.4,
                                  retry_period=0.05)

    @virtual_time_test  # exact deadlines, whatever the machine's load: the loop's clock is virtual
    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        elector = LeaderElector(fast, "a_1", store.client(), monotonic=loop.time)  # type: ignore[arg-type]
        await elector.acquire()
        store.down = True
        began = loop.time()
        await asyncio.wait_for(elector.keep(), timeout=5)
        return loop.time() - began, elector.expires_in()

    gave_up_after, left = scenario()
    # At the first renewal attempt at or past the renew deadline, before the lease duration.
    assert fast.renew_deadline <= gave_up_after < fast.renew_deadline + fast.retry_period + 1e-9, gave_up_after
    assert gave_up_after < fast.lease_duration and left > 0, "the leader must give up while its lease still holds"
