"""What the operator reads from a CML controller, as small typed values parsed defensively.

Shapes follow CML's REST API (``/api/v0/``) as virl2-client reads it; fields the
operator does not use are ignored, and a missing field never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Lab states in which a lab counts as in use (CML's own words).
ACTIVE_LAB_STATES = frozenset({"STARTED", "QUEUED", "BOOTED"})
#: Registration and authorization statuses that make a licence valid.
REGISTERED = frozenset({"COMPLETED", "REGISTERED"})
AUTHORIZED = frozenset({"IN_COMPLIANCE", "AUTHORIZED"})
REGISTRATION_PENDING = frozenset({"IN_PROGRESS", "PENDING"})
REGISTRATION_FAILED = frozenset({"FAILED", "RETRY_FAILED", "EXPIRED"})


@dataclass(frozen=True)
class SystemInfo:
    version: str
    ready: bool

    @classmethod
    def parse(cls, raw: Any) -> SystemInfo:
        raw = raw if isinstance(raw, Mapping) else {}
        return cls(version=str(raw.get("version") or ""), ready=raw.get("ready") is True)


@dataclass(frozen=True)
class LabCounts:
    total: int
    running: int
    #: Every lab came with a ``state`` string: the counts can be trusted for the activity rule.
    known: bool = True

    @classmethod
    def from_tiles(cls, raw: Any) -> LabCounts:
        """From ``populate_lab_tiles``: ``{lab_tiles: {id: {state, ...}}}`` (a bare map before CML 2.1)."""
        tiles = raw.get("lab_tiles", raw) if isinstance(raw, Mapping) else {}
        states = [t.get("state") for t in tiles.values() if isinstance(t, Mapping)] if isinstance(tiles, Mapping) else []
        known = (isinstance(raw, Mapping) and isinstance(tiles, Mapping) and len(states) == len(tiles)
                 and all(isinstance(state, str) for state in states))
        return cls(total=len(states), running=sum(1 for s in states if s in ACTIVE_LAB_STATES), known=known)


@dataclass(frozen=True)
class SystemStats:
    running_nodes: int
    cpu_percent: float | None
    memory_percent: float | None
    #: At least one compute, each with an integer ``stats.dominfo.running_nodes``: the node count is real.
    known: bool = True

    @classmethod
    def parse(cls, raw: Any) -> SystemStats:
        raw = raw if isinstance(raw, Mapping) else {}
        every = raw.get("all") if isinstance(raw.get("all"), Mapping) else {}
        cpu = every.get("cpu") if isinstance(every.get("cpu"), Mapping) else {}
        memory = every.get("memory") if isinstance(every.get("memory"), Mapping) else {}
        running = 0
        computes = raw.get("computes") if isinstance(raw.get("computes"), Mapping) else {}
        known = bool(computes)
        for compute in computes.values():
            stats = compute.get("stats") if isinstance(compute, Mapping) else None
            dominfo = stats.get("dominfo") if isinstance(stats, Mapping) else None
            count = dominfo.get("running_nodes") if isinstance(dominfo, Mapping) else None
            known = known and _is_int(count)
            running += _int(count)
        total, used = _number(memory.get("total")), _number(memory.get("used"))
        memory_percent = round(100.0 * used / total, 1) if total and used is not None else None
        cpu_percent = _number(cpu.get("percent"))
        return cls(running_nodes=running, cpu_percent=round(cpu_percent, 1) if cpu_percent is not None else None,
                   memory_percent=memory_percent, known=known)


@dataclass(frozen=True)
class LicenseStatus:
    registration: str
    authorization: str

    @classmethod
    def parse(cls, raw: Any) -> LicenseStatus:
        raw = raw if isinstance(raw, Mapping) else {}
        registration = raw.get("registration") if isinstance(raw.get("registration"), Mapping) else {}
        authorization = raw.get("authorization") if isinstance(raw.get("authorization"), Mapping) else {}
        return cls(registration=str(registration.get("status") or "UNKNOWN"),
                   authorization=str(authorization.get("status") or "UNKNOWN"))

    @property
    def registered(self) -> bool:
        return self.registration in REGISTERED

    @property
    def valid(self) -> bool:
        return self.registered and self.authorization in AUTHORIZED

    @property
    def pending(self) -> bool:
        return self.registration in REGISTRATION_PENDING

    @property
    def failed(self) -> bool:
        return self.registration in REGISTRATION_FAILED


@dataclass(frozen=True)
class Snapshot:
    """One look at a ready controller: what the activity rule and status need."""

    labs: LabCounts
    stats: SystemStats
    license: LicenseStatus | None = None

    @property
    def active(self) -> bool:
        return self.labs.running > 0 or self.stats.running_nodes > 0

    @property
    def activity_known(self) -> bool:
        """Both replies had the fields the activity rule reads, in the shape it reads them."""
        return self.labs.known and self.stats.known


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> int:
    return value if _is_int(value) else 0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
