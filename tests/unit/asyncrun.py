"""Async test bodies in a fresh event loop (pytest-asyncio is not a dependency).

``async_test`` runs on real time. ``virtual_time_test`` runs on an event loop whose
clock is virtual: when every task is waiting for a timer, the clock jumps to the
next timer at once instead of sleeping. ``asyncio.sleep``, ``asyncio.wait_for``
timeouts and ``loop.time()`` all follow it, so timing logic is tested exactly and
instantly, never by real sleeps on a loaded machine. Code under test that keeps its
own clock gets ``loop.time`` injected (``TokenBucket(clock=...)``,
``RegionObserver(clock=...)``). Only for code that does not wait on threads or
sockets: while a thread works, the virtual clock would race ahead.
"""

from __future__ import annotations

import asyncio
import functools
import selectors

#: Virtual seconds a virtual-time test may take before it counts as hung.
VIRTUAL_TIMEOUT = 3600.0


#: Real seconds an ``async_test`` may take before it counts as hung: a guard against hangs, not a
#: performance bound, so it leaves room for a loaded machine (these tests take well under a second alone).
HANG_TIMEOUT = 30.0


def async_test(fn):
    """A hang fails after ``HANG_TIMEOUT`` s instead of blocking the suite."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout=HANG_TIMEOUT))

    return wrapper


class _VirtualSelector(selectors.DefaultSelector):
    """Never blocks while a timer is pending: it advances the loop's virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None):
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer at all: only I/O or another thread can wake the loop
            return super().select(None)
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, starting at 0."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def virtual_time_test(fn):
    """Run ``fn`` on a ``VirtualTimeLoop``; more than an hour of virtual time fails it as hung."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            return runner.run(asyncio.wait_for(fn(*args, **kwargs), timeout=VIRTUAL_TIMEOUT))

    return wrapper
