"""Ready / Reconciling / Stalled: the kstatus invariant and stable transition times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cml_operator.reconcile.conditions import Health, HealthState, build_conditions, condition, health_of

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
HEALTHS = [
    Health.ready("InstanceReady", "ok"),
    Health.reconciling("Provisioning", "launching"),
    Health.stalled("QuotaExceeded", "limit"),
]


def by_type(conditions):
    return {c["type"]: c for c in conditions}


@pytest.mark.parametrize("health", HEALTHS, ids=lambda h: h.state.value)
def test_exactly_the_matching_condition_is_true(health):
    conditions = by_type(build_conditions(None, health, generation=3, now=T0))
    truth = {kind: c["status"] for kind, c in conditions.items()}
    expected = {
        HealthState.READY: {"Ready": "True", "Reconciling": "False", "Stalled": "False"},
        HealthState.RECONCILING: {"Ready": "False", "Reconciling": "True", "Stalled": "False"},
        HealthState.STALLED: {"Ready": "False", "Reconciling": "False", "Stalled": "True"},
    }[health.state]
    assert truth == expected
    for item in conditions.values():
        assert set(item) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
        assert item["observedGeneration"] == 3
    # Ready and the true one of the pair carry the health's reason; a false one of the pair says "Not...".
    reasons_now = {kind: c["reason"] for kind, c in conditions.items()}
    assert reasons_now == {
        "Ready": health.reason,
        "Reconciling": health.reason if health.state is HealthState.RECONCILING else "NotReconciling",
        "Stalled": health.reason if health.state is HealthState.STALLED else "NotStalled",
    }


def test_ready_carries_the_blocking_reason_when_false():
    conditions = by_type(build_conditions(None, Health.stalled("InvalidParameter", "bad ami"), 1, T0))
    assert conditions["Ready"]["reason"] == "InvalidParameter"
    assert conditions["Ready"]["message"] == "bad ami"


def test_transition_time_moves_only_when_the_status_flips():
    first = build_conditions(None, Health.reconciling("Provisioning", "a"), 1, T0)
    later = T0 + timedelta(minutes=5)
    same_state = by_type(build_conditions(first, Health.reconciling("StatusChecksPending", "b"), 1, later))
    assert same_state["Reconciling"]["lastTransitionTime"] == "2026-11-25T10:00:00Z"
    assert same_state["Reconciling"]["reason"] == "StatusChecksPending"

    flipped = by_type(build_conditions(list(same_state.values()), Health.ready("InstanceReady", "c"), 1, later))
    assert flipped["Ready"]["lastTransitionTime"] == "2026-11-25T10:05:00Z"
    assert flipped["Reconciling"]["lastTransitionTime"] == "2026-11-25T10:05:00Z"
    assert flipped["Stalled"]["lastTransitionTime"] == "2026-11-25T10:00:00Z"


def test_health_reads_back_from_conditions():
    for health in HEALTHS:
        assert health_of(build_conditions(None, health, 1, T0)) == health
    assert health_of([]) is None


def test_condition_lookup():
    conditions = build_conditions(None, HEALTHS[0], 1, T0)
    assert condition(conditions, "Ready")["status"] == "True"
    assert condition(conditions, "Missing") is None
