"""``async_test``: run an async test body in a fresh event loop (pytest-asyncio is not a dependency)."""

from __future__ import annotations

import asyncio
import functools


def async_test(fn):
    """A hang fails after 3 s instead of blocking the suite."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout=3))

    return wrapper
