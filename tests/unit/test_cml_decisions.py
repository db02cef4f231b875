"""reconcile/cml.py and cml_spec.py: readiness, the activity clock, idle stop, wake, pins and licence steps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cml_operator.cml.errors import cml_http_error
from cml_operator.cml.models import LabCounts, LicenseStatus, Snapshot, SystemInfo, SystemStats
from cml_operator.reconcile import reasons
from cml_operator.reconcile.cml import (
    RESET_PIN_ANNOTATION,
    WAKE_ANNOTATION,
    CheckOutcome,
    CMLStatus,
    LicenseStep,
    cml_health,
    endpoint_for,
    gate,
    idle_stop_due,
    idle_stopped_health,
    license_step,
    lost_sight,
    needs_release,
    pin_for,
    track_activity,
)
from cml_operator.reconcile.cml_spec import CMLSpec, LicenseSpec, SecretKeyRef, parse_cml_spec
from cml_operator.reconcile.conditions import Health, HealthState, now_rfc3339
from cml_operator.reconcile.policy import classify
from cml_operator.reconcile.spec import SpecError, parse_spec
from cml_operator.reconcile.status import status_patch

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
SPEC = CMLSpec(credentials_secret="login", idle_after_minutes=30)
LICENSED = CMLSpec(credentials_secret="login",
                   license=LicenseSpec(SecretKeyRef("token", "token"), deregister_on_stop=True))


def at(minutes: float) -> str:
    return now_rfc3339(NOW + timedelta(minutes=minutes))


def snapshot(running_labs: int = 0, nodes: int = 0, license: LicenseStatus | None = None) -> Snapshot:
    return Snapshot(LabCounts(running_labs + 1, running_labs), SystemStats(nodes, 5.0, 10.0), license)


# ---------------------------------------------------------------- spec.cml


def test_spec_cml_is_optional_and_parsed_with_defaults():
    assert parse_cml_spec(None) is None
    spec = parse_cml_spec({"credentialsSecretRef": {"name": "login"}, "tls": {"caSecretRef": {"name": "ca"}},
                           "license": {"tokenSecretRef": {"name": "t", "key": "token"}}})
    assert spec.endpoint is None and spec.address_type == "Public" and spec.ca == SecretKeyRef("ca", "ca.crt")
    assert spec.license == LicenseSpec(SecretKeyRef("t", "token"), True) and spec.idle_after_minutes is None


@pytest.mark.parametrize(("raw", "field"), [
    ({}, "spec.cml.credentialsSecretRef"),
    ({"credentialsSecretRef": {"name": "Bad_Name"}}, "spec.cml.credentialsSecretRef.name"),
    ({"credentialsSecretRef": {"name": "a"}, "endpoint": "http://10.0.0.1/"}, "spec.cml.endpoint"),
    ({"credentialsSecretRef": {"name": "a"}, "addressType": "Elastic"}, "spec.cml.addressType"),
    ({"credentialsSecretRef": {"name": "a"}, "idleStop": {"afterMinutes": 0}}, "spec.cml.idleStop.afterMinutes"),
    ({"credentialsSecretRef": {"name": "a"}, "idleStop": {"afterMinutes": 10081}}, "spec.cml.idleStop.afterMinutes"),
    ({"credentialsSecretRef": {"name": "a"}, "license": {"tokenSecretRef": {"name": "t"}}},
     "spec.cml.license.tokenSecretRef.key"),
    ({"credentialsSecretRef": {"name": "a"}, "license": {"tokenSecretRef": {"name": "t", "key": "k"},
                                                         "deregisterOnStop": "yes"}},
     "spec.cml.license.deregisterOnStop"),
])
def test_bad_spec_cml_names_the_field(raw, field):
    base = {"region": "us-east-1", "subnetId": "subnet-0123abcd", "amiId": "ami-12345678", "cml": raw}
    with pytest.raises(SpecError) as caught:
        parse_spec(base)
    assert caught.value.field == field


@pytest.mark.parametrize(("spec", "public", "private", "expected"), [
    (CMLSpec("l"), "3.3.3.3", "10.0.0.1", "https://3.3.3.3/"),
    (CMLSpec("l", address_type="Private"), "3.3.3.3", "10.0.0.1", "https://10.0.0.1/"),
    (CMLSpec("l", endpoint="https://cml.example:8443/cml-a/"), None, None, "https://cml.example:8443/cml-a/"),
    (CMLSpec("l"), None, "10.0.0.1", None),
])
def test_endpoint(spec, public, private, expected):
    assert endpoint_for(spec, public, private) == expected


# ---------------------------------------------------------------- readiness


def test_ready_needs_a_snapshot_and_a_valid_licence_when_one_is_asked_for():
    ok = CheckOutcome("https://e/", info=SystemInfo("2.10.0", True), snapshot=snapshot())
    assert cml_health(ok, CMLStatus(), LicenseStep.NONE, NOW, 1800).reason == reasons.CML_READY
    assert cml_health(ok, CMLStatus(), LicenseStep.VALID, NOW, 1800).state is HealthState.READY
    assert cml_health(ok, CMLStatus(), LicenseStep.WAIT, NOW, 1800).reason == reasons.LICENSE_REGISTERING
    invalid = cml_health(ok, CMLStatus(), LicenseStep.INVALID, NOW, 1800)
    assert (invalid.state, invalid.reason) == (HealthState.STALLED, reasons.LICENSE_INVALID)


@pytest.mark.parametrize(("starting_minutes_ago", "was_ready", "reason"), [
    (1, False, reasons.CML_STARTING),
    (29, False, reasons.CML_STARTING),
    (30, False, reasons.CML_UNREACHABLE),
    (1, True, reasons.CML_UNREACHABLE),  # a controller that answered before and stopped answering
])
def test_not_answering_is_starting_until_the_boot_timeout(starting_minutes_ago, was_ready, reason):
    error = cml_http_error(503, "system_information")
    outcome = CheckOutcome("https://e/", error_message=str(error), decision=classify(error))
    status = CMLStatus(starting_since=at(-starting_minutes_ago))
    health = cml_health(outcome, status, LicenseStep.NONE, NOW, 1800, was_ready=was_ready)
    assert (health.state, health.reason) == (HealthState.RECONCILING, reason)


def test_refused_credentials_stall():
    error = cml_http_error(403, "authenticate")
    outcome = CheckOutcome("https://e/", error_message=str(error), decision=classify(error))
    health = cml_health(outcome, CMLStatus(), LicenseStep.NONE, NOW, 1800)
    assert (health.state, health.reason) == (HealthState.STALLED, reasons.CML_AUTHENTICATION_FAILED)


# ---------------------------------------------------------------- activity and idle stop


INTERVAL = 60.0  # --cml-interval: seconds between looks


@pytest.mark.parametrize(("labs", "nodes", "active"), [(0, 0, False), (1, 0, True), (0, 3, True)])
def test_activity_is_a_running_lab_or_node(labs, nodes, active):
    watched = CMLStatus(last_activity_time=at(-90), looked_at=at(-1), idle_since=at(-30))
    status = track_activity(watched, snapshot(labs, nodes), NOW, INTERVAL)
    assert status.looked_at == at(0)
    if active:
        assert status.last_activity_time == at(0) and status.idle_since is None
    else:
        assert status.idle_since == at(-30) and status.last_activity_time == at(-90)  # the watched clock runs on


def test_the_idle_clock_starts_at_a_look_that_found_no_activity_never_at_the_last_activity_seen():
    # the operator was down for 90 minutes after the last activity it saw: that time was not watched
    back = track_activity(CMLStatus(last_activity_time=at(-90), looked_at=at(-90)), snapshot(), NOW, INTERVAL)
    assert back.idle_since == at(0)
    assert track_activity(CMLStatus(), snapshot(), NOW, INTERVAL).idle_since == at(0)  # first look ever


@pytest.mark.parametrize(("previous_look", "restarts"), [(-1, False), (-2, False), (-2.1, True), (-45, True)])
def test_two_looks_more_than_two_intervals_apart_restart_the_idle_clock(previous_look, restarts):
    status = CMLStatus(looked_at=at(previous_look), idle_since=at(-50))
    tracked = track_activity(status, snapshot(), NOW, INTERVAL)
    assert tracked.idle_since == (at(0) if restarts else at(-50))


def test_a_failed_look_stops_the_idle_clock():
    stopped = lost_sight(CMLStatus(looked_at=at(-1), idle_since=at(-50)))
    assert stopped.idle_since is None
    assert track_activity(stopped, snapshot(), NOW, INTERVAL).idle_since == at(0)


def test_activity_unknown_is_never_idle_and_restarts_the_clock_after():
    unknown = Snapshot(LabCounts(0, 0, known=False), SystemStats(0, 5.0, 10.0))
    status = track_activity(CMLStatus(looked_at=at(-1), idle_since=at(-50)), unknown, NOW, INTERVAL)
    assert status.activity_unknown and status.idle_since is None
    assert idle_stop_due(SPEC, status, NOW) is None
    later = NOW + timedelta(minutes=1)
    known = track_activity(status, snapshot(), later, INTERVAL)
    assert not known.activity_unknown and known.idle_since == now_rfc3339(later)
    assert "activityUnknown" in status.to_dict() and "activityUnknown" not in known.to_dict()


def test_a_running_lab_counts_even_when_the_node_counts_are_unknown():
    partly = Snapshot(LabCounts(1, 1), SystemStats(0, None, None, known=False))
    status = track_activity(CMLStatus(looked_at=at(-1)), partly, NOW, INTERVAL)
    assert status.last_activity_time == at(0) and not status.activity_unknown


@pytest.mark.parametrize("tiles", [
    None, [], "labs", {"lab_tiles": ["a"]}, {"lab_tiles": {"a": {"title": "no state"}}},
    {"lab_tiles": {"a": {"state": 3}}}, {"lab_tiles": {"a": "STARTED"}},
])
def test_lab_tiles_in_another_shape_are_unknown(tiles):
    assert LabCounts.from_tiles(tiles).known is False


def test_lab_tiles_in_the_documented_shape_are_known():
    assert LabCounts.from_tiles({"lab_tiles": {}}).known
    counts = LabCounts.from_tiles({"lab_tiles": {"a": {"state": "STARTED"}, "b": {"state": "STOPPED"}}})
    assert counts.known and (counts.total, counts.running) == (2, 1)


@pytest.mark.parametrize("stats", [
    None, {}, {"computes": {}}, {"computes": {"c": {"stats": {}}}},
    {"computes": {"c": {"stats": {"dominfo": {"running_nodes": "2"}}}}},
    {"computes": {"c": {"stats": {"dominfo": {"running_nodes": 2}}}, "d": {}}},
])
def test_system_stats_without_node_counts_are_unknown(stats):
    assert SystemStats.parse(stats).known is False


def test_system_stats_with_node_counts_are_known():
    parsed = SystemStats.parse({"computes": {"c": {"stats": {"dominfo": {"running_nodes": 0}}}}})
    assert parsed.known and parsed.running_nodes == 0


@pytest.mark.parametrize(("idle_minutes", "due"), [(29.9, False), (30, True), (120, True)])
def test_idle_stop_is_due_after_the_minutes(idle_minutes, due):
    status = CMLStatus(idle_since=at(-idle_minutes))
    assert (idle_stop_due(SPEC, status, NOW) is not None) is due


def test_idle_stop_needs_idle_stop_configured_and_not_already_stopped():
    assert idle_stop_due(CMLSpec("l"), CMLStatus(idle_since=at(-600)), NOW) is None
    assert idle_stop_due(SPEC, CMLStatus(idle_since=at(-600), idle_stopped_at=at(-5)), NOW) is None


# ---------------------------------------------------------------- the gate: held stopped, woken


def stopped(**more) -> CMLStatus:
    return CMLStatus(idle_stopped_at=at(-5), idle_stopped_generation=3, wake="w1", **more)


@pytest.mark.parametrize(("status", "wants_running", "annotations", "generation", "hold", "woken"), [
    (stopped(), True, {WAKE_ANNOTATION: "w1"}, 3, True, False),  # nothing new: stays stopped
    (stopped(), True, {}, 3, True, False),
    (stopped(), True, {WAKE_ANNOTATION: "w2"}, 3, False, True),  # a new wake value
    (stopped(), True, {WAKE_ANNOTATION: "w1"}, 4, False, True),  # any spec change
    (stopped(), False, {WAKE_ANNOTATION: "w2"}, 4, False, False),  # desiredState Stopped wins
    (CMLStatus(), True, {}, 1, False, False),
])
def test_gate(status, wants_running, annotations, generation, hold, woken):
    decision = gate(SPEC, status, wants_running, annotations, generation, NOW)
    assert (decision.hold, decision.woken) == (hold, woken)
    if woken:
        assert decision.status.idle_stopped_at is None and decision.status.last_activity_time == at(0)
    if not wants_running:
        assert decision.status.idle_stopped_at is None


def test_a_wake_on_a_running_worker_restarts_its_idle_clock():
    decision = gate(SPEC, CMLStatus(idle_since=at(-20), wake="old"), True, {WAKE_ANNOTATION: "new"}, 1, NOW)
    assert not decision.hold and decision.status.idle_since is None
    assert decision.status.last_activity_time == at(0) and decision.status.wake == "new"


def test_held_stopped_is_ready_idle_stopped_once_stopping():
    status = stopped()
    assert idle_stopped_health(status, Health.reconciling(reasons.STOPPING, "x")).reason == reasons.IDLE_STOPPED
    assert idle_stopped_health(status, Health.ready(reasons.INSTANCE_STOPPED, "x")).state is HealthState.READY
    pending = Health.reconciling(reasons.WAITING_FOR_TRANSITION, "x")
    assert idle_stopped_health(status, pending) is pending


# ---------------------------------------------------------------- certificate pin


def test_pin_is_kept_for_the_same_instance_and_dropped_for_a_new_one_or_a_reset():
    status = CMLStatus(certificate_sha256="ab" * 32, certificate_instance_id="i-1", certificate_pin_reset="1")
    assert pin_for(status, "i-1", "1")[0] == "ab" * 32
    assert pin_for(status, "i-2", "1")[0] is None
    pin, after = pin_for(status, "i-1", "2")
    assert pin is None and after.certificate_pin_reset == "2" and after.certificate_sha256 is None
    assert RESET_PIN_ANNOTATION == "cml.dev/reset-certificate-pin"


# ---------------------------------------------------------------- licensing


@pytest.mark.parametrize(("status", "requested", "step"), [
    (LicenseStatus("NOT_REGISTERED", "EVAL"), False, LicenseStep.REGISTER),
    (LicenseStatus("IN_PROGRESS", "EVAL"), True, LicenseStep.WAIT),
    (LicenseStatus("COMPLETED", "IN_COMPLIANCE"), True, LicenseStep.VALID),
    (LicenseStatus("REGISTERED", "AUTHORIZED"), False, LicenseStep.VALID),
    (LicenseStatus("COMPLETED", "EVAL"), True, LicenseStep.WAIT),
    (LicenseStatus("FAILED", "EVAL"), True, LicenseStep.INVALID),
    (LicenseStatus("FAILED", "EVAL"), False, LicenseStep.REGISTER),  # someone else's failure: try ours
])
def test_license_steps(status, requested, step):
    assert license_step(LICENSED.license, status, requested) is step


def test_no_license_spec_no_step_and_no_release():
    assert license_step(None, LicenseStatus("NOT_REGISTERED", "EVAL"), False) is LicenseStep.NONE
    assert not needs_release(SPEC, CMLStatus(license_registration="COMPLETED"))


@pytest.mark.parametrize(("registration", "release"), [
    ("COMPLETED", True), ("REGISTERED", True), ("IN_PROGRESS", True), ("NOT_REGISTERED", False), (None, False)])
def test_release_before_stop_only_when_registered(registration, release):
    assert needs_release(LICENSED, CMLStatus(license_registration=registration)) is release
    keep = CMLSpec("l", license=LicenseSpec(SecretKeyRef("t", "k"), deregister_on_stop=False))
    assert not needs_release(keep, CMLStatus(license_registration=registration))


# ---------------------------------------------------------------- status.cml round trip and patches


def test_status_round_trips_and_the_patch_nulls_keys_that_went_away():
    status = CMLStatus(endpoint="https://e/", version="2.10.0", ready=True, labs_total=2, labs_running=1,
                       license_registration="COMPLETED", license_authorization="IN_COMPLIANCE",
                       idle_stopped_at=at(-1))
    raw = status.to_dict()
    assert CMLStatus.from_dict(raw) == status
    assert raw["labs"] == {"total": 2, "running": 1} and raw["license"]["registration"] == "COMPLETED"
    woken = CMLStatus.from_dict(raw).to_dict()
    del woken["idleStoppedAt"]
    patch = status_patch({"cml": raw}, {"cml": woken})
    assert patch == {"cml": {"idleStoppedAt": None, **woken}}
    assert status_patch({"cml": raw}, {"cml": raw}) == {}
    assert status_patch({"cml": raw}, {}) == {"cml": None}  # spec.cml removed
