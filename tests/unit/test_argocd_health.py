"""deploy/argocd/health.lua, run by Lua 5.1 (Argo CD's dialect, gopher-lua), on objects of every state.

The same verdicts as kstatus (docs/conditions.md): Current -> Healthy, InProgress -> Progressing,
Failed -> Degraded. tests/e2e/test_health_checks.py runs it and kstatus on objects the operator wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "deploy" / "argocd"
HEALTH_LUA = (ARGOCD / "health.lua").read_text()


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the check as Argo CD does: the object in the global ``obj``, a table {status, message} back."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(HEALTH_LUA)
    return {"status": result["status"], "message": result["message"]}


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({key: _to_lua(lua, item) for key, item in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, item) for item in value])  # a Lua sequence, 1-based
    return value


def worker(generation: int = 2, observed: int | None = 2, conditions: dict[str, tuple[str, str]] | None = None,
           deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "w", "generation": generation}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-25T17:00:00Z"
    status: dict[str, Any] = {"conditions": [
        {"type": kind, "status": value, "reason": reason, "message": f"{kind} says {reason}"}
        for kind, (value, reason) in (conditions or {}).items()]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker", "metadata": metadata, "status": status}


READY = {"Ready": ("True", "InstanceReady"), "Reconciling": ("False", "InstanceReady"),
         "Stalled": ("False", "InstanceReady")}
IN_PROGRESS = {"Ready": ("False", "InsufficientCapacity"), "Reconciling": ("True", "InsufficientCapacity"),
               "Stalled": ("False", "InsufficientCapacity")}
STALLED = {"Ready": ("False", "InvalidParameter"), "Reconciling": ("False", "InvalidParameter"),
           "Stalled": ("True", "InvalidParameter")}


@pytest.mark.parametrize(("obj", "status", "in_message"), [
    (worker(conditions=READY), "Healthy", "InstanceReady"),
    (worker(conditions=IN_PROGRESS), "Progressing", "InsufficientCapacity"),
    (worker(conditions=STALLED), "Degraded", "InvalidParameter"),
    (worker(observed=1, conditions=READY), "Progressing", "generation 2"),   # the operator has not seen the spec
    (worker(observed=None), "Progressing", "generation 2"),                  # no status yet
    ({"metadata": {"name": "w", "generation": 1}}, "Progressing", "generation 1"),
    (worker(conditions=READY, deleting=True), "Progressing", "deleted"),
], ids=["ready", "in-progress", "stalled", "old-generation", "no-observed-generation", "no-status", "deleting"])
def test_health(obj: dict[str, Any], status: str, in_message: str) -> None:
    health = argocd_health(obj)
    assert health["status"] == status
    assert in_message in health["message"]


def test_the_config_map_patch_carries_health_lua_for_both_kinds() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert patch["data"] == {f"resource.customizations.health.cml.dev_{kind}": HEALTH_LUA
                             for kind in ("CMLWorker", "CMLWorkerPool")}


def test_json_objects_from_kubectl_work_too() -> None:
    """Objects arrive as kubectl prints them (JSON): round-trip one to be sure nothing depends on Python types."""
    obj = json.loads(json.dumps(worker(conditions=STALLED)))
    assert argocd_health(obj)["status"] == "Degraded"
