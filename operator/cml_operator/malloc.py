"""Bound glibc's malloc arenas before any thread starts.

glibc gives each new thread an arena of its own, up to 8 per core, and an arena
keeps the memory its peak needed. The EC2 worker threads parse DescribeInstances
pages of 1000 instances, so every new arena grew by about 11 MB and kept it: at 1000
workers the operator's RSS climbed from 254 to 383 MiB over 26 resyncs before it
settled (``make bench``, docs/scale.md). Two arenas keep it at 215-228 MiB within 8
resyncs. The Python side holds the GIL, so sharing two arenas costs the threads next
to nothing. ``mallopt(M_ARENA_MAX)`` is what ``MALLOC_ARENA_MAX`` sets, done here so
that every way of running the operator gets it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)

#: glibc's malloc.h: ``#define M_ARENA_MAX -8``.
M_ARENA_MAX = -8


def arenas_to_set(setting: int, environ: Mapping[str, str]) -> int:
    """The cap to set: none where the user set ``MALLOC_ARENA_MAX`` (glibc already applied theirs)."""
    return 0 if environ.get("MALLOC_ARENA_MAX") else setting


def limit_arenas(arenas: int) -> bool:
    """Cap malloc arenas at ``arenas`` (0: leave glibc's default); False where libc has no mallopt."""
    if arenas <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to bound
        logger.debug("no mallopt in %s: malloc arenas left as they are", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_ARENA_MAX, arenas) == 1
