"""Leave ``metadata.managedFields`` out of the objects Kopf keeps.

Kopf holds the latest body of every object it watches (a timer is called with it), and the
API server sends each object with ``metadata.managedFields``: server-side apply's record of
which manager owns which field. For a CMLWorker that record (three managers: the creator,
Kopf's patches, our status writes) is more than half of the body: about 17 of 29 KiB as
Python objects, 17 MiB of the operator's memory at 1,000 workers (docs/scale.md). Neither
Kopf nor the operator reads it, and Kopf has no setting to drop it, so the watch stream Kopf
reads (the listing and the events that follow, one iterator) is wrapped here to drop it as
each object arrives. Writes are unaffected: Kopf and the operator send patches, never whole
objects, so the API server keeps its records.

``install()`` replaces ``kopf._cogs.clients.watching.infinite_watch``, the one function
Kopf's watcher calls (``kopf._core.reactor.queueing``). Kopf is pinned; a Kopf that no
longer has it fails ``tests/unit/test_watchtrim.py`` instead of silently keeping the fields.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

_INSTALLED = "_cml_operator_trims_managed_fields"


def trim(raw_event: Any) -> Any:
    """The event with its object's ``metadata.managedFields`` removed (in place; other events as they are)."""
    if isinstance(raw_event, dict):
        body = raw_event.get("object")
        metadata = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(metadata, dict):
            metadata.pop("managedFields", None)
    return raw_event


def trimmed(watch: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """``watch`` (an async generator function of raw events) yielding trimmed events."""

    async def trimming_watch(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with contextlib.aclosing(watch(*args, **kwargs)) as events:  # closed with this one
            async for raw_event in events:
                yield trim(raw_event)

    setattr(trimming_watch, _INSTALLED, True)
    return trimming_watch


def install() -> None:
    """Wrap Kopf's watch stream once per process."""
    from kopf._cogs.clients import watching

    if not getattr(watching.infinite_watch, _INSTALLED, False):
        watching.infinite_watch = trimmed(watching.infinite_watch)


__all__ = ["install", "trim", "trimmed"]
