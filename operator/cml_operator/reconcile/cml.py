"""Pure decisions for CML-aware workers: readiness, the activity clock, idle stop, wake, licence steps.

No I/O. ``passes/cml.py`` asks these functions what to do and carries it out.

* Readiness: Ready only when EC2 says the instance is ready AND the controller
  says ``ready: true`` AND the credentials work (AND, with a licence, it is valid).
* Activity: a worker is active while any lab is STARTED, QUEUED or BOOTED or any
  node runs. The idle clock counts only idleness the operator watched: it starts at a
  successful look that found no activity, and starts again when two successful looks are
  more than 2 look intervals apart (operator down, controller unreachable) or a look failed.
  A reply without the fields the rule reads (or in another shape) is "activity unknown":
  never idle.
* Idle stop holds the worker stopped until woken (annotation ``cml.dev/wake`` set to
  a new value, or any spec change); ``desiredState: Stopped`` always wins.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

from ..cml.models import LicenseStatus, Snapshot, SystemInfo
from . import reasons
from .cml_spec import CMLSpec, LicenseSpec
from .conditions import Health, HealthState, now_rfc3339, parse_rfc3339
from .policy import Decision, Kind

WAKE_ANNOTATION = "cml.dev/wake"
RESET_PIN_ANNOTATION = "cml.dev/reset-certificate-pin"


# ---------------------------------------------------------------- status.cml


@dataclass(frozen=True)
class CMLStatus:
    """``status.cml``: what users read, plus the bookkeeping that must survive a restart."""

    endpoint: str | None = None
    version: str | None = None
    ready: bool = False
    labs_total: int | None = None
    labs_running: int | None = None
    running_nodes: int | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    last_activity_time: str | None = None
    idle_since: str | None = None
    idle_stopped_at: str | None = None
    license_registration: str | None = None
    license_authorization: str | None = None
    certificate_sha256: str | None = None
    checked_at: str | None = None
    # bookkeeping
    certificate_instance_id: str | None = None  # the instance the pin belongs to (a new instance, a new pin)
    certificate_pin_reset: str | None = None  # the cml.dev/reset-certificate-pin value last honoured
    wake: str | None = None  # the cml.dev/wake value last honoured
    idle_stopped_generation: int | None = None  # a spec change after this wakes the worker
    starting_since: str | None = None  # waiting for CML on this instance start since (boot timeout)
    license_requested: bool = False  # this operator sent the registration (a failure then means the token)
    looked_at: str | None = None  # the last successful look (the idle clock needs looks close together)
    activity_unknown: bool = False  # the last successful look could not tell activity (warned once)

    @classmethod
    def from_dict(cls, raw: Any) -> CMLStatus:
        raw = raw if isinstance(raw, Mapping) else {}
        labs = raw.get("labs") if isinstance(raw.get("labs"), Mapping) else {}
        lic = raw.get("license") if isinstance(raw.get("license"), Mapping) else {}
        return cls(
            endpoint=raw.get("endpoint"), version=raw.get("version"), ready=raw.get("ready") is True,
            labs_total=labs.get("total"), labs_running=labs.get("running"), running_nodes=raw.get("runningNodes"),
            cpu_percent=raw.get("cpuPercent"), memory_percent=raw.get("memoryPercent"),
            last_activity_time=raw.get("lastActivityTime"), idle_since=raw.get("idleSince"),
            idle_stopped_at=raw.get("idleStoppedAt"), license_registration=lic.get("registration"),
            license_authorization=lic.get("authorization"), certificate_sha256=raw.get("certificateSHA256"),
            checked_at=raw.get("checkedAt"), certificate_instance_id=raw.get("certificateInstanceId"),
            certificate_pin_reset=raw.get("certificatePinReset"), wake=raw.get("wake"),
            idle_stopped_generation=raw.get("idleStoppedGeneration"), starting_since=raw.get("startingSince"),
            license_requested=raw.get("licenseRequested") is True,
            looked_at=raw.get("lookedAt"), activity_unknown=raw.get("activityUnknown") is True,
        )

    def to_dict(self) -> dict[str, Any]:
        """Only fields with a value: a merge patch nulls the ones that went away (``status_patch``)."""
        d = asdict(self)
        out: dict[str, Any] = {
            "endpoint": d["endpoint"], "version": d["version"], "ready": d["ready"],
            "runningNodes": d["running_nodes"], "cpuPercent": d["cpu_percent"], "memoryPercent": d["memory_percent"],
            "lastActivityTime": d["last_activity_time"], "idleSince": d["idle_since"],
            "idleStoppedAt": d["idle_stopped_at"], "certificateSHA256": d["certificate_sha256"],
            "checkedAt": d["checked_at"], "certificateInstanceId": d["certificate_instance_id"],
            "certificatePinReset": d["certificate_pin_reset"], "wake": d["wake"],
            "idleStoppedGeneration": d["idle_stopped_generation"], "startingSince": d["starting_since"],
            "licenseRequested": d["license_requested"] or None,
            "lookedAt": d["looked_at"], "activityUnknown": d["activity_unknown"] or None,
        }
        if self.labs_total is not None:
            out["labs"] = {"total": self.labs_total, "running": self.labs_running or 0}
        if self.license_registration is not None:
            out["license"] = {"registration": self.license_registration,
                              "authorization": self.license_authorization or "UNKNOWN"}
        return {key: value for key, value in out.items() if value is not None}


# ---------------------------------------------------------------- times


parse_time = parse_rfc3339  # one reader of timestamps, in conditions.py


# ---------------------------------------------------------------- endpoint and pin


def endpoint_for(spec: CMLSpec, public_ip: str | None, private_ip: str | None) -> str | None:
    """The controller's URL: spec.cml.endpoint, else https://<IP>/ (None: no address yet)."""
    if spec.endpoint:
        return spec.endpoint
    address = private_ip if spec.address_type == "Private" else public_ip
    return f"https://{address}/" if address else None


def pin_for(status: CMLStatus, instance_id: str, reset_value: str | None) -> tuple[str | None, CMLStatus]:
    """The pin to enforce, and the status without a pin a new instance or a reset annotation voided."""
    if reset_value is not None and reset_value != status.certificate_pin_reset:
        return None, replace(status, certificate_sha256=None, certificate_instance_id=None,
                             certificate_pin_reset=reset_value)
    if status.certificate_instance_id != instance_id:
        return None, replace(status, certificate_sha256=None, certificate_instance_id=None)
    return status.certificate_sha256, status


# ---------------------------------------------------------------- idle stop and wake


@dataclass(frozen=True)
class Gate:
    """Before EC2 decides: should the worker be held stopped (idle-stopped, not woken)?"""

    hold: bool
    status: CMLStatus
    woken: bool = False


def gate(spec: CMLSpec | None, status: CMLStatus, wants_running: bool, annotations: Mapping[str, str],
         generation: int, now: datetime) -> Gate:
    wake = annotations.get(WAKE_ANNOTATION)
    new_wake = wake is not None and wake != status.wake
    if spec is None:
        return Gate(False, status)
    if status.idle_stopped_at is None:
        if new_wake:  # a wake on a running worker restarts its idle clock
            return Gate(False, replace(status, wake=wake, last_activity_time=now_rfc3339(now), idle_since=None))
        return Gate(False, status)
    if not wants_running:  # desiredState: Stopped wins; the idle stop is over
        return Gate(False, replace(status, idle_stopped_at=None, idle_stopped_generation=None,
                                   wake=wake if new_wake else status.wake))
    spec_changed = status.idle_stopped_generation is not None and generation != status.idle_stopped_generation
    if new_wake or spec_changed or spec.idle_after_minutes is None:
        woken = replace(status, idle_stopped_at=None, idle_stopped_generation=None, idle_since=None,
                        last_activity_time=now_rfc3339(now), wake=wake if new_wake else status.wake)
        return Gate(False, woken, woken=True)
    return Gate(True, status)


#: Two successful looks further apart than this many look intervals restart the idle clock.
LOOK_GAP_INTERVALS = 2


def track_activity(status: CMLStatus, snapshot: Snapshot, now: datetime, look_interval: float) -> CMLStatus:
    """Record one successful look: active -> lastActivityTime now; idle -> the idle clock runs on
    from idleSince, or starts now when it was not running or the previous look is too long ago."""
    looked = replace(status, looked_at=now_rfc3339(now))
    if snapshot.active:
        return replace(looked, last_activity_time=now_rfc3339(now), idle_since=None, activity_unknown=False)
    if not snapshot.activity_known:
        return replace(looked, idle_since=None, activity_unknown=True)
    previous = parse_time(status.looked_at)
    watched = previous is not None and (now - previous).total_seconds() <= LOOK_GAP_INTERVALS * look_interval
    since = status.idle_since if watched and status.idle_since and not status.activity_unknown else None
    return replace(looked, idle_since=since or now_rfc3339(now), activity_unknown=False)


def lost_sight(status: CMLStatus) -> CMLStatus:
    """A failed look: whatever happened meanwhile was not watched, so the idle clock stops."""
    return replace(status, idle_since=None)


def idle_stop_due(spec: CMLSpec, status: CMLStatus, now: datetime) -> float | None:
    """Minutes idle when the idle stop is due now, else None."""
    if spec.idle_after_minutes is None or status.idle_stopped_at is not None:
        return None
    since = parse_time(status.idle_since)
    if since is None:
        return None
    idle = (now - since).total_seconds() / 60.0
    return idle if idle >= spec.idle_after_minutes else None


# ---------------------------------------------------------------- licensing


class LicenseStep(enum.Enum):
    NONE = "none"  # no spec.cml.license
    VALID = "valid"
    REGISTER = "register"  # not registered: send the token
    WAIT = "wait"  # registration in progress
    INVALID = "invalid"  # the registration this operator sent failed: the token was refused


def license_step(spec: LicenseSpec | None, status: LicenseStatus | None, requested: bool) -> LicenseStep:
    if spec is None:
        return LicenseStep.NONE
    if status is None:
        return LicenseStep.WAIT
    if status.valid:
        return LicenseStep.VALID
    if status.pending or status.registered:
        return LicenseStep.WAIT  # registered, authorization still settling
    if status.failed and requested:
        return LicenseStep.INVALID
    return LicenseStep.REGISTER


def needs_release(spec: CMLSpec | None, status: CMLStatus) -> bool:
    """Deregister before an operator-made stop or terminate?"""
    if spec is None or spec.license is None or not spec.license.deregister_on_stop:
        return False
    return status.license_registration in ("COMPLETED", "REGISTERED", "IN_PROGRESS", "PENDING")


# ---------------------------------------------------------------- readiness


@dataclass(frozen=True)
class CheckOutcome:
    """One look at the controller: what it said, or the error that ended the look."""

    endpoint: str
    info: SystemInfo | None = None
    snapshot: Snapshot | None = None
    error_message: str | None = None
    decision: Decision | None = None


def cml_health(outcome: CheckOutcome, status: CMLStatus, step: LicenseStep, now: datetime,
               boot_timeout: float, *, was_ready: bool = False) -> Health:
    """The worker's health once EC2 says the instance is ready."""
    where = f"CML at {outcome.endpoint}"
    decision = outcome.decision
    if decision is not None and decision.kind is Kind.PERMANENT:
        return Health.stalled(decision.reason, outcome.error_message or decision.reason)
    if decision is not None and decision.reason not in (reasons.CML_STARTING,):
        return Health.reconciling(decision.reason, outcome.error_message or decision.reason)
    if decision is not None or outcome.snapshot is None:
        detail = outcome.error_message or "not ready yet"
        if was_ready:
            return Health.reconciling(reasons.CML_UNREACHABLE, f"{where} stopped answering: {detail}")
        since = parse_time(status.starting_since)
        if since is not None and (now - since).total_seconds() >= boot_timeout:
            minutes = int((now - since).total_seconds() // 60)
            return Health.reconciling(reasons.CML_UNREACHABLE,
                                      f"{where} has not answered ready for {minutes} min after the instance "
                                      f"became ready: {detail}")
        return Health.reconciling(reasons.CML_STARTING, f"Waiting for {where}: {detail}")
    version = outcome.info.version if outcome.info else "?"
    if step is LicenseStep.INVALID:
        return Health.stalled(reasons.LICENSE_INVALID,
                              f"{where} refused the licence token (registration failed); fix the token Secret")
    if step in (LicenseStep.REGISTER, LicenseStep.WAIT):
        return Health.reconciling(reasons.LICENSE_REGISTERING, f"{where} is registering its licence")
    return Health.ready(reasons.CML_READY, f"CML {version} at {outcome.endpoint} is ready")


def idle_stopped_health(status: CMLStatus, ec2_health: Health) -> Health:
    """While held stopped: Ready (IdleStopped) once stopping or stopped, else what EC2 says."""
    settled = ec2_health.state is HealthState.READY or ec2_health.reason == reasons.STOPPING
    if not settled:
        return ec2_health
    return Health.ready(reasons.IDLE_STOPPED, f"Stopped for inactivity at {status.idle_stopped_at}; "
                        f"set the annotation {WAKE_ANNOTATION} to a new value to start it")


def is_instance_ready(ec2_health: Health) -> bool:
    return ec2_health.state is HealthState.READY and ec2_health.reason == reasons.INSTANCE_READY


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
