"""watchtrim: Kopf's watch stream without metadata.managedFields, installed where Kopf's watcher reads it."""

from __future__ import annotations

import asyncio
import copy
import inspect

from kopf._cogs.clients import watching
from kopf._core.reactor import queueing

from cml_operator import watchtrim

BODY = {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker",
        "metadata": {"name": "w", "uid": "u", "resourceVersion": "7",
                     "managedFields": [{"manager": "kopf", "operation": "Update", "fieldsV1": {"f:status": {}}}]},
        "spec": {"region": "us-east-1"}, "status": {"phase": "Running"}}


def test_an_event_loses_its_managed_fields_and_nothing_else():
    event = {"type": "MODIFIED", "object": copy.deepcopy(BODY)}
    trimmed = watchtrim.trim(event)
    expected = copy.deepcopy(BODY)
    del expected["metadata"]["managedFields"]
    assert trimmed == {"type": "MODIFIED", "object": expected}


def test_what_is_not_an_object_event_passes_unchanged():
    assert watchtrim.trim(watching.Bookmark.LISTED) is watching.Bookmark.LISTED
    assert watchtrim.trim({"type": "ERROR", "object": {"code": 410}}) == {"type": "ERROR", "object": {"code": 410}}
    assert watchtrim.trim({"type": "ADDED", "object": {"metadata": None}}) == {"type": "ADDED",
                                                                               "object": {"metadata": None}}


def test_a_wrapped_watch_yields_every_event_trimmed_in_order():
    async def watch(**kwargs):
        assert kwargs == {"namespace": "ns"}
        yield {"type": None, "object": copy.deepcopy(BODY)}  # from the listing
        yield watching.Bookmark.LISTED
        yield {"type": "MODIFIED", "object": copy.deepcopy(BODY)}

    async def collect():
        return [event async for event in watchtrim.trimmed(watch)(namespace="ns")]

    events = asyncio.run(collect())
    assert events[1] is watching.Bookmark.LISTED
    assert [e["type"] for e in (events[0], events[2])] == [None, "MODIFIED"]
    assert all("managedFields" not in e["object"]["metadata"] for e in (events[0], events[2]))


def test_install_wraps_the_function_kopf_s_watcher_calls_once():
    original = watching.infinite_watch
    try:
        watchtrim.install()
        installed = watching.infinite_watch
        watchtrim.install()
        assert watching.infinite_watch is installed is not original
        # Kopf's watcher looks the function up on the module at each call: the wrapper is what it runs.
        assert "watching.infinite_watch(" in inspect.getsource(queueing.watcher)
    finally:
        watching.infinite_watch = original
