"""Batcher: single-key requests collected over a window and answered by one executor call.

The executor is a small recorder (Karpenter's batcher tests count calls the same
way): it remembers the keys of every call and answers from a table. Every test runs
on virtual time (``virtual_time_test``): windows pass without real sleeping, and
delays are asserted exactly, not within a margin a loaded machine might miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

from cml_operator.fleet.batcher import Batcher, BatchSettings

from .asyncrun import virtual_time_test

pytestmark = pytest.mark.timeout(10)




class RecordingExecutor:
    """Answers ``value-<key>`` for every key (or what ``answer`` says) and records each call's keys."""

    def __init__(self, answer: Callable[[list], Mapping] | None = None) -> None:
        self.calls: list[list] = []
        self.started = asyncio.Event()
        self.gate: asyncio.Event | None = None  # set: calls wait for it before answering
        self._answer = answer or (lambda keys: {k: f"value-{k}" for k in keys})

    async def __call__(self, keys: list) -> Mapping:
        self.calls.append(list(keys))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return self._answer(keys)


def make(executor, *, idle=0.02, max_wait=0.2, max_items=500, missing=lambda k: f"missing-{k}", on_batch=None):
    return Batcher(executor, missing, BatchSettings(idle=idle, max_wait=max_wait, max_items=max_items),
                   name="test", on_batch=on_batch)


def now() -> float:
    return asyncio.get_running_loop().time()


async def settle(rounds: int = 5) -> None:
    """Let ready tasks run without letting any timer window pass."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- windows


@virtual_time_test
async def test_requests_within_the_window_share_one_call():
    executor = RecordingExecutor()
    batcher = make(executor)

    results = await asyncio.gather(*(batcher.get(f"k{i}") for i in range(10)))

    assert executor.calls == [[f"k{i}" for i in range(10)]]
    assert results == [f"value-k{i}" for i in range(10)]


@virtual_time_test
async def test_a_lone_request_is_sent_once_the_window_is_idle():
    executor = RecordingExecutor()
    batcher = make(executor, idle=0.03, max_wait=0.5)

    started = now()
    assert await batcher.get("a") == "value-a"
    elapsed = now() - started

    assert executor.calls == [["a"]]
    assert elapsed == pytest.approx(0.03)  # after the idle window, long before max_wait


@virtual_time_test
async def test_requests_after_a_batch_was_sent_go_to_the_next_batch():
    executor = RecordingExecutor()
    batcher = make(executor)

    assert await batcher.get("a") == "value-a"
    assert await batcher.get("b") == "value-b"

    assert executor.calls == [["a"], ["b"]]


@virtual_time_test
async def test_max_items_flushes_immediately_and_the_rest_go_to_the_next_batch():
    executor = RecordingExecutor()
    batcher = make(executor, idle=0.05, max_wait=0.5, max_items=3)

    waiters = [asyncio.create_task(batcher.get(i)) for i in range(7)]
    await settle()
    # The two full batches went out without waiting for any window; the 7th key waits for `idle`.
    assert executor.calls == [[0, 1, 2], [3, 4, 5]]
    assert all(w.done() for w in waiters[:6])
    assert not waiters[6].done()

    assert await asyncio.gather(*waiters) == [f"value-{i}" for i in range(7)]
    assert executor.calls == [[0, 1, 2], [3, 4, 5], [6]]


@virtual_time_test
async def test_max_items_flush_needs_no_timer_at_all():
    executor = RecordingExecutor()
    batcher = make(executor, idle=30, max_wait=30, max_items=4)  # a timer-sent batch would hang the test

    results = await asyncio.gather(*(batcher.get(i) for i in range(8)))

    assert results == [f"value-{i}" for i in range(8)]
    assert executor.calls == [[0, 1, 2, 3], [4, 5, 6, 7]]


@virtual_time_test
async def test_max_wait_bounds_the_delay_under_a_steady_trickle():
    # A key every 30 ms never lets a 50 ms idle window close; only max_wait sends batches.
    executor = RecordingExecutor()
    batcher = make(executor, idle=0.05, max_wait=0.1)
    latencies: list[float] = []

    async def timed_get(key: int) -> str:
        started = now()
        value = await batcher.get(key)
        latencies.append(now() - started)
        return value

    waiters = []
    for i in range(25):  # 0.75 s of trickle
        waiters.append(asyncio.create_task(timed_get(i)))
        await asyncio.sleep(0.03)
    results = await asyncio.gather(*waiters)

    assert results == [f"value-{i}" for i in range(25)]
    # max_wait sends the 4 keys that arrived in its 0.1 s; the last key goes once the trickle stops
    # (idle). Without the bound it would all be one batch, sent at the end.
    assert executor.calls == [[*range(start, start + 4)] for start in range(0, 24, 4)] + [[24]]
    assert max(latencies) == pytest.approx(0.1)  # the first key of each batch waited max_wait, no more


# ---------------------------------------------------------------- answers and failures


@virtual_time_test
async def test_a_per_key_exception_reaches_only_that_waiter():
    boom = KeyError("b is broken")
    executor = RecordingExecutor(lambda keys: {"a": 1, "b": boom, "c": 3})
    batcher = make(executor)

    results = await asyncio.gather(batcher.get("a"), batcher.get("b"), batcher.get("c"), return_exceptions=True)

    assert results == [1, boom, 3]
    assert executor.calls == [["a", "b", "c"]]


@virtual_time_test
async def test_an_executor_exception_reaches_every_waiter_of_the_batch():
    class Outage(RuntimeError):
        pass

    def fail(keys):
        raise Outage("EC2 is down")

    executor = RecordingExecutor(fail)
    batcher = make(executor)

    results = await asyncio.gather(*(batcher.get(k) for k in "abc"), return_exceptions=True)

    assert len(results) == 3
    assert all(isinstance(r, Outage) for r in results)
    assert executor.calls == [["a", "b", "c"]]


@virtual_time_test
async def test_a_failed_batch_does_not_break_the_next_one():
    answers = iter([RuntimeError("first batch fails"), None])

    def flaky(keys):
        outcome = next(answers)
        if outcome is not None:
            raise outcome
        return {k: k.upper() for k in keys}

    batcher = make(RecordingExecutor(flaky))

    with pytest.raises(RuntimeError, match="first batch fails"):
        await batcher.get("a")
    assert await batcher.get("b") == "B"


@virtual_time_test
async def test_missing_keys_get_the_missing_answer():
    executor = RecordingExecutor(lambda keys: {"a": "found"})
    batcher = make(executor, missing=lambda key: f"nothing for {key}")

    assert await asyncio.gather(batcher.get("a"), batcher.get("b")) == ["found", "nothing for b"]


@virtual_time_test
async def test_a_missing_answer_that_is_an_exception_is_raised_to_that_waiter():
    executor = RecordingExecutor(lambda keys: {"a": "found"})
    batcher = make(executor, missing=lambda key: LookupError(key))

    results = await asyncio.gather(batcher.get("a"), batcher.get("gone"), return_exceptions=True)

    assert results[0] == "found"
    assert isinstance(results[1], LookupError) and results[1].args == ("gone",)


@virtual_time_test
async def test_duplicate_keys_share_one_slot_and_every_waiter_is_answered():
    executor = RecordingExecutor()
    batcher = make(executor)

    results = await asyncio.gather(batcher.get("a"), batcher.get("b"), batcher.get("a"), batcher.get("a"))

    assert executor.calls == [["a", "b"]]
    assert results == ["value-a", "value-b", "value-a", "value-a"]


@virtual_time_test
async def test_duplicate_keys_do_not_count_towards_max_items():
    executor = RecordingExecutor()
    batcher = make(executor, idle=0.05, max_items=2)

    waiters = [asyncio.create_task(batcher.get(k)) for k in ("a", "a", "a")]
    await settle()
    assert executor.calls == []  # one distinct key: the window is still open

    assert await asyncio.gather(*waiters) == ["value-a"] * 3
    assert executor.calls == [["a"]]


@virtual_time_test
async def test_keys_reach_the_executor_in_arrival_order():
    executor = RecordingExecutor()
    batcher = make(executor)
    order = [7, 3, 9, 1, 8, 2, 3, 5]  # 3 twice: it keeps its first place

    await asyncio.gather(*(batcher.get(k) for k in order))

    assert executor.calls == [[7, 3, 9, 1, 8, 2, 5]]


# ---------------------------------------------------------------- cancellation and close


@virtual_time_test
async def test_a_cancelled_waiter_does_not_stop_the_others_while_the_batch_is_in_flight():
    executor = RecordingExecutor()
    executor.gate = asyncio.Event()
    batcher = make(executor)

    first_a = asyncio.create_task(batcher.get("a"))
    second_a = asyncio.create_task(batcher.get("a"))
    b = asyncio.create_task(batcher.get("b"))
    await executor.started.wait()  # the batch is in flight
    first_a.cancel()
    await settle()
    executor.gate.set()

    assert await second_a == "value-a"
    assert await b == "value-b"
    with pytest.raises(asyncio.CancelledError):
        await first_a
    assert executor.calls == [["a", "b"]]


@virtual_time_test
async def test_a_waiter_cancelled_during_the_window_does_not_stop_the_batch():
    executor = RecordingExecutor()
    batcher = make(executor, idle=0.03)

    opener = asyncio.create_task(batcher.get("a"))  # its get() opened the window
    await settle()
    other = asyncio.create_task(batcher.get("b"))
    await settle()
    opener.cancel()

    assert await other == "value-b"
    assert opener.cancelled()
    assert executor.calls == [["a", "b"]]  # the abandoned key is still asked; its answer is dropped


@virtual_time_test
async def test_close_cancels_pending_requests_and_awaits_in_flight_batches():
    executor = RecordingExecutor()
    executor.gate = asyncio.Event()
    batcher = make(executor, idle=0.03, max_wait=0.03, max_items=2)

    in_flight = [asyncio.create_task(batcher.get(k)) for k in ("a", "b")]  # max_items: sent at once
    pending = asyncio.create_task(batcher.get("c"))  # waits for its window
    await executor.started.wait()

    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.01)
    assert pending.cancelled()
    assert not closing.done(), "close() must wait for the batch already sent"

    executor.gate.set()
    await closing
    assert [t.result() for t in in_flight] == ["value-a", "value-b"]

    await asyncio.sleep(0.08)  # well past c's window: it was never sent
    assert executor.calls == [["a", "b"]]


@virtual_time_test
async def test_close_with_nothing_pending_returns_at_once():
    batcher = make(RecordingExecutor())
    await asyncio.wait_for(batcher.close(), timeout=0.1)


# ---------------------------------------------------------------- hook


@virtual_time_test
async def test_the_batch_size_hook_hears_every_batch():
    sizes: list[int] = []
    batcher = make(RecordingExecutor(), max_items=3, on_batch=sizes.append)

    await asyncio.gather(*(batcher.get(i) for i in range(7)))
    await batcher.get("late")

    assert sizes == [3, 3, 1, 1]


@virtual_time_test
async def test_a_failing_batch_size_hook_does_not_leave_waiters_hanging():
    def broken_hook(size: int) -> None:
        raise ValueError("metrics backend rejected the sample")

    batcher = make(RecordingExecutor(), on_batch=broken_hook)

    # Either outcome is acceptable (the value, or the hook's error); hanging is not.
    done, _ = await asyncio.wait([asyncio.create_task(batcher.get("a"))], timeout=0.3)
    assert done, "waiter never answered"
