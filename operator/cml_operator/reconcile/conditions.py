"""The only writer of ``status.conditions``: Ready, Reconciling, Stalled (kstatus conventions).

Invariant: exactly one of three health states holds, and the conditions say it:

    health        Ready   Reconciling   Stalled
    READY         True    False         False
    RECONCILING   False   True          False
    STALLED       False   False         True

``lastTransitionTime`` moves only when a condition's status flips, so Flux,
Argo CD and ``kubectl wait`` see stable conditions between transitions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import reasons

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED)


class HealthState(enum.Enum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


@dataclass(frozen=True)
class Health:
    """Where the worker stands, in one reason and one message for people."""

    state: HealthState
    reason: str
    message: str

    @classmethod
    def ready(cls, reason: str, message: str) -> Health:
        return cls(HealthState.READY, reason, message)

    @classmethod
    def reconciling(cls, reason: str, message: str) -> Health:
        return cls(HealthState.RECONCILING, reason, message)

    @classmethod
    def stalled(cls, reason: str, message: str) -> Health:
        return cls(HealthState.STALLED, reason, message)


def now_rfc3339(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str | None) -> datetime | None:
    """A timestamp we (or EC2) wrote, as an aware datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def build_conditions(
    previous: Iterable[Mapping[str, Any]] | None,
    health: Health,
    generation: int,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The three conditions for ``health``, keeping transition times that did not flip."""
    before = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    stamp = now_rfc3339(now)
    wanted = _wanted(health)
    conditions = []
    for kind in CONDITION_TYPES:
        status, reason, message = wanted[kind]
        old = before.get(kind) or {}
        changed = old.get("status") != status or not old.get("lastTransitionTime")
        conditions.append({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": stamp if changed else old["lastTransitionTime"],
            "observedGeneration": generation,
        })
    return conditions


def _wanted(health: Health) -> dict[str, tuple[str, str, str]]:
    is_ready = health.state is HealthState.READY
    is_reconciling = health.state is HealthState.RECONCILING
    is_stalled = health.state is HealthState.STALLED
    return {
        # Ready always carries the reason that explains it, so `kubectl get` shows why it is not ready.
        READY: (_status(is_ready), health.reason, health.message),
        RECONCILING: (
            _status(is_reconciling),
            health.reason if is_reconciling else reasons.NOT_RECONCILING,
            health.message if is_reconciling else "",
        ),
        STALLED: (
            _status(is_stalled),
            health.reason if is_stalled else reasons.NOT_STALLED,
            health.message if is_stalled else "",
        ),
    }


def _status(flag: bool) -> str:
    return "True" if flag else "False"


def condition(conditions: Iterable[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind``, if present."""
    for item in conditions or ():
        if isinstance(item, Mapping) and item.get("type") == kind:
            return item
    return None


def health_of(conditions: Iterable[Mapping[str, Any]] | None) -> Health | None:
    """Read back the health the conditions express (None if they are missing or inconsistent)."""
    flags = {kind: condition(conditions, kind) for kind in CONDITION_TYPES}
    if any(c is None for c in flags.values()):
        return None
    for kind, state in ((STALLED, HealthState.STALLED), (RECONCILING, HealthState.RECONCILING),
                        (READY, HealthState.READY)):
        item = flags[kind]
        if item and item.get("status") == "True":
            return Health(state, str(item.get("reason", "")), str(item.get("message", "")))
    return None


def not_ready_for(conditions: Iterable[Mapping[str, Any]] | None, now: datetime) -> float | None:
    """Seconds since Ready last turned False, read from the conditions before this pass (None: unknown).

    What `cml_worker_ready_seconds` observes when a worker becomes Ready: a launch or a start,
    timed from the first status (Ready=False, Provisioning) or from the stop that came before.
    """
    ready = condition(conditions, READY)
    if ready is None or ready.get("status") != "False":
        return None
    since = parse_rfc3339(ready.get("lastTransitionTime"))
    return max(0.0, (now - since).total_seconds()) if since else None
