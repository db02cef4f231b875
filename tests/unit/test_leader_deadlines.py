"""The leader's deadlines under a slow API server, in virtual time (no real sleeps).

The review's case: the Lease GET answers after 4.9 s, the PUT then hangs until the client's own
5 s timeout. Before, one renewal attempt had no overall bound, so the leader learnt it had lost
only 18.9 s after its last renewal, while a standby may take the Lease 15 s after it.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from cml_operator.ec2.fence import MutationFence, NotLeadingException
from cml_operator.leader import LeaderElectionSettings, LeaderElector, LeaseRecord, drain

from .asyncrun import async_test, virtual_time_test
from .test_leader import FakeClient, FakeLeaseStore

SETTINGS = LeaderElectionSettings(enabled=True, namespace="ns")  # 15 s lease, 10 s deadline, 2 s retry


@dataclass
class SlowClient(FakeClient):
    """The in-memory Lease behind an API server that answers GET after ``get_delay`` s and PUT after
    ``put_delay`` s; a delay past ``timeout`` ends in the client's own timeout, as aiohttp's would."""

    get_delay: float = 0.0
    put_delay: float = 0.0
    timeout: float = 5.0

    async def _wait(self, delay: float) -> None:
        await asyncio.sleep(min(delay, self.timeout))
        if delay > self.timeout:
            raise asyncio.TimeoutError()

    async def get(self) -> LeaseRecord | None:
        await self._wait(self.get_delay)
        return await super().get()

    async def update(self, record: LeaseRecord, spec: dict) -> LeaseRecord:
        await self._wait(self.put_delay)
        return await super().update(record, spec)


def _leader(store: FakeLeaseStore, identity: str = "a_1") -> tuple[LeaderElector, SlowClient]:
    loop = asyncio.get_running_loop()
    client = SlowClient(store)
    elector = LeaderElector(SETTINGS, identity, client, monotonic=loop.time)  # type: ignore[arg-type]
    return elector, client


@virtual_time_test
async def test_a_slow_get_and_a_hanging_put_end_leadership_by_the_renew_deadline() -> None:
    store = FakeLeaseStore()
    leader, client = _leader(store)
    await leader.acquire()
    renewed = leader.last_renewed
    assert renewed is not None and leader.fence is not None
    client.get_delay, client.put_delay = 4.9, 60.0  # reads crawl, writes never come back

    await leader.keep()
    lost_at = asyncio.get_running_loop().time()
    assert lost_at <= renewed + SETTINGS.renew_deadline, f"led {lost_at - renewed:.1f}s after the last renewal"
    with pytest.raises(NotLeadingException):
        with leader.fence.admit("StopInstances"):
            pass
    # the margin: a standby counts the lease duration from no earlier than the renewal was sent
    assert renewed + SETTINGS.lease_duration - lost_at >= SETTINGS.lease_duration - SETTINGS.renew_deadline


@virtual_time_test
async def test_the_fence_closes_at_the_deadline_even_while_an_attempt_is_still_waiting() -> None:
    store = FakeLeaseStore()
    leader, client = _leader(store)
    await leader.acquire()
    assert leader.fence is not None and leader.last_renewed is not None
    client.get_delay = 4.0  # every read slow, but under the client's timeout
    client.put_delay = 4.0
    keeping = asyncio.create_task(leader.keep())
    loop = asyncio.get_running_loop()
    # renewals of 8 s each start 2 s after the previous one ended: the first lands, then the deadline
    # (10 s after the renewal was *sent*) passes mid-attempt
    await asyncio.sleep(SETTINGS.renew_deadline - 0.5)
    leader.fence.check_send("RunInstances")  # still leading here
    await keeping
    assert loop.time() <= leader.renew_deadline() + 1e-9
    with pytest.raises(NotLeadingException):
        leader.fence.check_send("RunInstances")


@virtual_time_test
async def test_seeing_another_holder_stops_the_leader_at_once() -> None:
    store = FakeLeaseStore()
    leader, _ = _leader(store)
    await leader.acquire()
    assert leader.fence is not None
    store.body = {"metadata": {"resourceVersion": "99"},  # taken by hand or by a replica with a skewed view
                  "spec": {"holderIdentity": "b_2", "leaseDurationSeconds": 15, "renewTime": "t"}}
    store.version = 99
    began = asyncio.get_running_loop().time()
    await leader.keep()
    assert asyncio.get_running_loop().time() - began == SETTINGS.retry_period  # the first look, not the deadline
    with pytest.raises(NotLeadingException) as refused:
        leader.fence.check_send("TerminateInstances")
    assert "b_2 holds the Lease" in str(refused.value)


@virtual_time_test
async def test_a_renewal_moves_the_fence_to_sent_plus_the_renew_deadline() -> None:
    store = FakeLeaseStore()
    leader, client = _leader(store)
    client.get_delay = client.put_delay = 1.0
    loop = asyncio.get_running_loop()
    sent = loop.time()
    assert await leader.try_within(SETTINGS.renew_deadline)
    assert leader.fence is not None
    assert leader.fence.open_for() == pytest.approx(sent + SETTINGS.renew_deadline - loop.time())


def test_a_standby_fence_refuses_mutating_calls_and_an_open_one_counts_them() -> None:
    clock = [0.0]
    fence = MutationFence.closed(clock=lambda: clock[0])
    with pytest.raises(NotLeadingException):
        with fence.admit("RunInstances"):
            pass
    fence.extend(10.0)
    with fence.admit("RunInstances"):
        assert fence.in_flight == 1
        clock[0] = 10.0
        with pytest.raises(NotLeadingException):  # a botocore retry after the deadline
            fence.check_send("RunInstances")
    assert fence.in_flight == 0


@async_test
async def test_stopping_drains_the_calls_in_flight_before_it_may_release() -> None:
    fence = MutationFence()
    entered, finish = threading.Event(), threading.Event()

    def slow_call() -> None:
        with fence.admit("StopInstances"):
            entered.set()
            finish.wait(5)

    caller = threading.Thread(target=slow_call)
    caller.start()
    entered.wait(5)
    keeping = asyncio.create_task(asyncio.Event().wait())  # renewals go on while draining
    draining = asyncio.create_task(drain(fence, 5.0, keeping))
    await asyncio.sleep(0.05)
    assert not draining.done(), "drained while a mutating call was still in flight"
    with pytest.raises(NotLeadingException):  # nothing new starts while draining
        with fence.admit("RunInstances"):
            pass
    finish.set()
    assert await draining is True
    keeping.cancel()
    caller.join()


@virtual_time_test
async def test_a_standby_that_saw_another_holder_may_mutate_once_it_takes_over() -> None:
    store = FakeLeaseStore()
    first, _ = _leader(store, "a_1")
    standby, _ = _leader(store, "b_2")
    await first.acquire()
    assert not await standby.try_within(SETTINGS.renew_deadline)  # sees a_1: its fence stays closed
    assert standby.fence is not None
    with pytest.raises(NotLeadingException):
        standby.fence.check_send("RunInstances")
    await asyncio.sleep(SETTINGS.lease_duration)  # a_1 never renews
    assert await standby.try_within(SETTINGS.renew_deadline)
    with standby.fence.admit("RunInstances"):
        pass
