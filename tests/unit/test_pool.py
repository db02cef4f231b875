"""Pure pool decisions: how many to create, which to remove first, what to roll, the pool's status."""

from __future__ import annotations

import pytest

from cml_operator.reconcile import reasons
from cml_operator.reconcile.conditions import HealthState
from cml_operator.reconcile.pool import (
    Child,
    Template,
    child_manifest,
    is_outdated,
    merge_patch,
    owned_by,
    plan_pool,
    roll_patch,
    scale_down_order,
)

SPEC = {"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678", "instanceType": "m5.large",
        "securityGroupIds": ["sg-12345678"], "tags": {"team": "netops"}, "desiredState": "Running",
        "detailedMonitoring": True, "deletionPolicy": "Delete"}
TEMPLATE = Template(labels={"course": "ccna"}, annotations={}, spec=SPEC)


def child(name: str, *, ready: bool = True, state: str = "running", created: str = "2026-11-25T10:00:00Z",
          activity: str | None = None, spec: dict | None = None, deleting: bool = False,
          stalled: str | None = None, labels: dict | None = None) -> Child:
    return Child(name=name, uid=f"uid-{name}", spec=dict(SPEC if spec is None else spec),
                 labels={"cml.dev/pool": "p", "course": "ccna"} if labels is None else labels,
                 created=created, deleting=deleting, ready=ready, stalled_reason=stalled,
                 stalled_message=f"{stalled} here" if stalled else "", instance_state=state, last_activity=activity)


@pytest.mark.parametrize(("replicas", "existing", "create", "deleted"), [
    (3, 0, 3, 0),   # scale up from nothing
    (3, 3, 0, 0),   # steady
    (5, 3, 2, 0),   # scale up
    (1, 3, 0, 2),   # scale down
    (0, 3, 0, 3),   # scale to zero
    (0, 0, 0, 0),   # empty and wanted empty
])
def test_plan_creates_or_deletes_the_difference(replicas, existing, create, deleted):
    children = [child(f"p-{i}") for i in range(existing)]
    plan = plan_pool("p", replicas, TEMPLATE, children)
    assert plan.create == create
    assert len(plan.delete) == deleted
    assert plan.status.replicas == replicas
    assert plan.status.selector == "cml.dev/pool=p"


def test_children_being_deleted_do_not_count_and_are_not_deleted_again():
    children = [child("p-a"), child("p-b", deleting=True), child("p-c", deleting=True)]
    plan = plan_pool("p", 2, TEMPLATE, children)
    assert plan.create == 1 and plan.delete == ()


@pytest.mark.parametrize(("order", "expected"), [
    # default: not ready, then stopped, then idlest, then newest
    (("NotReady", "Stopped", "Idle", "Newest"), ["never", "stopped", "idle", "busy-new", "busy-old"]),
    (("Newest",), ["busy-new", "never", "stopped", "idle", "busy-old"]),
    (("Oldest",), ["busy-old", "idle", "stopped", "never", "busy-new"]),
    (("Stopped", "Oldest"), ["stopped", "busy-old", "idle", "never", "busy-new"]),
    ((), ["busy-new", "busy-old", "idle", "never", "stopped"]),  # by name alone
])
def test_scale_down_order(order, expected):
    children = [
        child("busy-old", created="2026-11-25T08:00:00Z", activity="2026-11-25T11:59:00Z"),
        child("busy-new", created="2026-11-25T11:00:00Z", activity="2026-11-25T11:58:00Z"),
        child("idle", created="2026-11-25T09:00:00Z", activity="2026-11-25T09:30:00Z"),
        child("stopped", state="stopped", created="2026-11-25T09:30:00Z", activity="2026-11-25T11:00:00Z"),
        child("never", ready=False, state="pending", created="2026-11-25T10:00:00Z"),
    ]
    assert [c.name for c in scale_down_order(children, order)] == expected


def test_no_recorded_activity_counts_as_the_idlest():
    children = [child("a", activity="2026-11-25T09:00:00Z"), child("b", activity=None)]
    assert [c.name for c in scale_down_order(children, ("Idle",))] == ["b", "a"]


def test_scale_down_removes_the_first_in_order_and_keeps_the_rest():
    children = [child("p-ok1"), child("p-bad", ready=False), child("p-ok2", created="2026-11-25T11:00:00Z")]
    plan = plan_pool("p", 1, TEMPLATE, children)
    assert [c.name for c in plan.delete] == ["p-bad", "p-ok2"]
    assert plan.status.ready_replicas == 1


@pytest.mark.parametrize(("change", "patch"), [
    ({"instanceType": "m5.xlarge"}, {"spec": {"instanceType": "m5.xlarge"}}),
    ({"tags": {"team": "lab", "cost": "1"}}, {"spec": {"tags": {"team": "lab", "cost": "1"}}}),
    ({"tags": {}}, {"spec": {"tags": {"team": None}}}),
    ({"desiredState": "Stopped"}, {"spec": {"desiredState": "Stopped"}}),
    ({"securityGroupIds": ["sg-87654321"]}, {"spec": {"securityGroupIds": ["sg-87654321"]}}),
    ({"detailedMonitoring": False}, {"spec": {"detailedMonitoring": False}}),
    ({"deletionPolicy": "Retain"}, {"spec": {"deletionPolicy": "Retain"}}),
    ({"cml": {"idleStop": {"after": "2h"}}}, {"spec": {"cml": {"idleStop": {"after": "2h"}}}}),
    ({"subnetId": "subnet-87654321"}, {}),  # immutable: not rolled
    ({"amiId": "ami-87654321"}, {}),
])
def test_mutable_template_fields_roll_to_children_and_immutable_ones_do_not(change, patch):
    template = Template(labels={"course": "ccna"}, annotations={}, spec={**SPEC, **change})
    assert roll_patch(child("p-a"), template, "p") == patch


def test_a_removed_nested_field_is_removed_alone():
    current = child("p-a", spec={**SPEC, "cml": {"idleStop": {"after": "1h"}, "other": 1}})
    template = Template(labels={"course": "ccna"}, annotations={}, spec={**SPEC, "cml": {"other": 1}})
    assert roll_patch(current, template, "p") == {"spec": {"cml": {"idleStop": None}}}


def test_labels_and_annotations_are_added_or_changed_never_removed():
    current = child("p-a", labels={"cml.dev/pool": "p", "course": "old", "mine": "x"})
    template = Template(labels={"course": "ccna"}, annotations={"owner": "me"}, spec=SPEC)
    assert roll_patch(current, template, "p") == {"metadata": {"labels": {"course": "ccna"},
                                                               "annotations": {"owner": "me"}}}


@pytest.mark.parametrize(("change", "outdated"), [
    ({}, False),
    ({"instanceType": "m5.xlarge", "tags": {}}, False),
    ({"subnetId": "subnet-87654321"}, True),
    ({"userData": "#!/bin/sh"}, True),
    ({"cml": {"idleStop": {"after": "2h"}}}, False),
    ({"cml": {"controller": "x"}}, True),
])
def test_outdated_means_a_difference_in_a_field_that_cannot_change_in_place(change, outdated):
    template = Template(labels={}, annotations={}, spec={**SPEC, **change})
    assert is_outdated(child("p-a"), template) is outdated
    children = [child("p-a"), child("p-b")]
    status = plan_pool("p", 2, template, children).status
    assert (status.outdated_replicas, status.updated_replicas) == ((2, 0) if outdated else (0, 2))


def test_ready_when_every_wanted_child_is_ready():
    status = plan_pool("p", 2, TEMPLATE, [child("p-a"), child("p-b")]).status
    assert status.health.state is HealthState.READY and status.health.reason == reasons.POOL_REPLICAS_READY
    assert status.ready_replicas == 2


def test_an_empty_pool_wanted_empty_is_ready():
    assert plan_pool("p", 0, TEMPLATE, []).status.health.state is HealthState.READY


@pytest.mark.parametrize(("children", "replicas", "state", "reason"), [
    ([], 2, HealthState.RECONCILING, reasons.POOL_SCALING),
    ([child("a"), child("b"), child("c")], 2, HealthState.RECONCILING, reasons.POOL_SCALING),
    ([child("a"), child("b", ready=False)], 2, HealthState.RECONCILING, reasons.POOL_REPLICAS_NOT_READY),
    ([child("a"), child("b", ready=False, stalled="QuotaExceeded"), child("c", ready=False, stalled="QuotaExceeded")],
     3, HealthState.STALLED, "QuotaExceeded"),
    # stalled for different reasons, or one still provisioning: not stalled as a whole
    ([child("b", ready=False, stalled="QuotaExceeded"), child("c", ready=False, stalled="InvalidParameter")],
     2, HealthState.RECONCILING, reasons.POOL_REPLICAS_NOT_READY),
    ([child("b", ready=False, stalled="QuotaExceeded"), child("c", ready=False)],
     2, HealthState.RECONCILING, reasons.POOL_REPLICAS_NOT_READY),
])
def test_pool_health(children, replicas, state, reason):
    health = plan_pool("p", replicas, TEMPLATE, children).status.health
    assert (health.state, health.reason) == (state, reason)


def test_stalled_message_names_a_child_and_its_message():
    children = [child("p-b", ready=False, stalled="QuotaExceeded")]
    health = plan_pool("p", 1, TEMPLATE, children).status.health
    assert "1 of 1 workers stalled (QuotaExceeded)" in health.message and "p-b: QuotaExceeded here" in health.message


def test_merge_patch_nulls_removed_keys_and_replaces_lists():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}, "l": [1]}, {"a": 1, "b": {"c": 2}, "l": [2]}) == {
        "b": {"c": 2, "d": None}, "l": [2]}
    assert merge_patch({"a": 1}, {"a": 1}) == {}


def test_child_manifest_is_owned_labelled_and_named_after_the_pool():
    pool = {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerPool",
            "metadata": {"name": "lab", "namespace": "ns", "uid": "pool-uid"}}
    manifest = child_manifest(pool, TEMPLATE)
    meta = manifest["metadata"]
    assert meta["generateName"] == "lab-" and meta["namespace"] == "ns"
    assert meta["labels"] == {"course": "ccna", "cml.dev/pool": "lab"}
    assert meta["ownerReferences"] == [{"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerPool", "name": "lab",
                                        "uid": "pool-uid", "controller": True, "blockOwnerDeletion": True}]
    assert manifest["spec"] == SPEC
    assert owned_by(manifest, "pool-uid") and not owned_by(manifest, "other")


def test_child_from_body_reads_readiness_stall_and_activity():
    body = {"metadata": {"name": "p-a", "uid": "u", "creationTimestamp": "2026-11-25T10:00:00Z",
                         "deletionTimestamp": "2026-11-25T11:00:00Z"},
            "spec": SPEC,
            "status": {"instanceState": "stopped", "cml": {"lastActivityTime": "2026-11-25T09:00:00Z"},
                       "conditions": [{"type": "Ready", "status": "False"},
                                      {"type": "Stalled", "status": "True", "reason": "QuotaExceeded",
                                       "message": "m"}]}}
    parsed = Child.from_body(body)
    assert parsed.deleting and not parsed.ready and parsed.stalled_reason == "QuotaExceeded"
    assert parsed.instance_state == "stopped" and parsed.last_activity == "2026-11-25T09:00:00Z"


NEW_IMAGE = Template(labels={"course": "ccna"}, annotations={}, spec={**SPEC, "amiId": "ami-87654321"})


def test_on_delete_never_replaces_outdated_children():
    plan = plan_pool("p", 2, NEW_IMAGE, [child("p-a"), child("p-b")])
    assert plan.create == 0 and plan.delete == ()
    assert plan.status.outdated_replicas == 2 and plan.status.health.state is HealthState.READY


def test_rolling_update_replaces_one_outdated_child_at_a_time():
    plan = plan_pool("p", 2, NEW_IMAGE, [child("p-a"), child("p-b", created="2026-11-25T11:00:00Z")],
                     rolling_update=True)
    assert [c.name for c in plan.delete] == ["p-b"] and plan.create == 1  # the scale-down order picks first
    assert (plan.status.replicas, plan.status.outdated_replicas, plan.status.updated_replicas) == (2, 1, 1)
    assert plan.status.health.reason == reasons.POOL_ROLLING_UPDATE


@pytest.mark.parametrize("children", [
    [child("p-a"), child("p-b", deleting=True), child("p-new", spec={**SPEC, "amiId": "ami-87654321"})],
    [child("p-a"), child("p-new", ready=False, spec={**SPEC, "amiId": "ami-87654321"})],
])
def test_rolling_update_waits_while_a_child_is_going_or_not_ready(children):
    plan = plan_pool("p", 2, NEW_IMAGE, children, rolling_update=True)
    assert plan.delete == () and plan.create == 0
    assert plan.status.outdated_replicas == 1
    assert plan.status.health.state is HealthState.RECONCILING


def test_rolling_update_is_done_when_nothing_is_outdated():
    new = {**SPEC, "amiId": "ami-87654321"}
    plan = plan_pool("p", 2, NEW_IMAGE, [child("p-c", spec=new), child("p-d", spec=new)], rolling_update=True)
    assert plan.delete == () and plan.create == 0 and plan.status.health.state is HealthState.READY


# ---------------------------------------------------------------- running labs and cml.dev/do-not-disrupt (issue 19.8)


def _with(base: Child, **changes) -> Child:
    from dataclasses import replace
    return replace(base, **changes)


def test_children_with_running_labs_go_last_whatever_the_order_says():
    busy_not_ready = _with(child("p-a", ready=False), labs_running=2)  # NotReady would put it first
    quiet = _with(child("p-b"), labs_running=0)
    unknown = child("p-c")
    ranked = scale_down_order([busy_not_ready, unknown, quiet])
    assert [c.name for c in ranked] == ["p-b", "p-c", "p-a"]
    plan = plan_pool("p", 2, TEMPLATE, [busy_not_ready, unknown, quiet])
    assert [c.name for c in plan.delete] == ["p-b"]


def test_a_do_not_disrupt_child_is_never_picked_and_the_pool_says_it_waits():
    kept = _with(child("p-a"), annotations={"cml.dev/do-not-disrupt": "true"}, labs_running=0)
    other = _with(child("p-b"), labs_running=3)
    plan = plan_pool("p", 0, TEMPLATE, [kept, other])
    assert [c.name for c in plan.delete] == ["p-b"]
    assert plan.status.health.state is HealthState.RECONCILING
    assert plan.status.health.reason == reasons.POOL_SCALE_DOWN_BLOCKED
    assert "p-a" in plan.status.health.message and "do-not-disrupt" in plan.status.health.message
    only_protected = plan_pool("p", 0, TEMPLATE, [kept])
    assert only_protected.delete == () and only_protected.status.health.reason == reasons.POOL_SCALE_DOWN_BLOCKED
    assert plan_pool("p", 1, TEMPLATE, [kept]).status.health.reason == reasons.POOL_REPLICAS_READY


def test_the_annotation_counts_only_when_it_says_true():
    maybe = _with(child("p-a"), annotations={"cml.dev/do-not-disrupt": "false"})
    assert [c.name for c in plan_pool("p", 0, TEMPLATE, [maybe]).delete] == ["p-a"]


def test_a_rolling_update_never_replaces_a_do_not_disrupt_child():
    kept = _with(child("p-a"), annotations={"cml.dev/do-not-disrupt": "true"})
    plan = plan_pool("p", 1, NEW_IMAGE, [kept], rolling_update=True)
    assert plan.delete == () and plan.create == 0


def test_child_from_body_reads_running_labs():
    body = {"metadata": {"name": "p-a", "uid": "u", "annotations": {"cml.dev/do-not-disrupt": "true"}},
            "spec": SPEC, "status": {"cml": {"labs": {"total": 3, "running": 1}}}}
    parsed = Child.from_body(body)
    assert parsed.labs_running == 1 and parsed.protected
    assert Child.from_body({"metadata": {}, "status": {"cml": {"labs": {"running": "1"}}}}).labs_running is None
