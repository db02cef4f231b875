"""The defensive spec parser names the bad field; the status renderer is stable between passes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cml_operator.ec2.models import CMLWorkerInstanceDto, InstanceStatusChecks
from cml_operator.reconcile.conditions import Health
from cml_operator.reconcile.spec import SpecError, parse_spec
from cml_operator.reconcile.status import PassOutcome, phase_of, render_status, status_patch

BASE = {"region": "us-east-1", "amiId": "ami-12345678", "subnetId": "subnet-12345678"}


def test_defaults():
    spec = parse_spec(BASE)
    assert spec.wanted_type == "m5zn.metal" and spec.desired_state == "Running"
    assert spec.effective_deletion_policy == "Delete" and spec.wanted_monitoring is True and spec.tags == {}
    assert spec.deletion_policy is None  # unstated: a launched worker's instance is terminated on delete
    assert spec.ami_owners == ("self",)
    # secure by default: IMDSv2 only, one hop, an encrypted root volume
    assert spec.metadata_options.wanted(adopted=False) == ("required", 1)
    assert spec.root_encrypted is True


def test_root_volume_encryption_and_kms_key():
    spec = parse_spec({**BASE, "rootVolume": {"sizeGiB": 20, "kmsKeyId": "alias/cml"}})
    assert spec.root_volume.encrypted is True and spec.root_volume.kms_key_id == "alias/cml"
    assert parse_spec({**BASE, "rootVolume": {"sizeGiB": 20, "encrypted": False}}).root_encrypted is False


def test_adoption_takes_unstated_fields_from_the_instance_not_the_defaults():
    spec = parse_spec({"region": "us-east-1", "instanceId": "i-0123456789abcdef0"})
    assert spec.subnet_id is None and spec.ami_id is None and spec.ami_name is None
    assert spec.wanted_type is None and spec.wanted_monitoring is None and spec.security_group_ids == ()
    stated = parse_spec({"region": "us-east-1", "instanceId": "i-0123456789abcdef0", "instanceType": "t3.large",
                         "detailedMonitoring": False})
    assert stated.wanted_type == "t3.large" and stated.wanted_monitoring is False


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"region": None}, "spec.region"),
        ({"region": "US-EAST"}, "spec.region"),
        ({"region": "us-east-7"}, "spec.region"),  # the pattern passes; botocore knows no such region
        ({"amiOwners": ["someone"]}, "spec.amiOwners"),
        ({"amiOwners": []}, "spec.amiOwners"),
        ({"amiOwners": [str(10**11 + i) for i in range(11)]}, "spec.amiOwners"),
        ({"amiName": "cml-*"}, "spec.amiId"),
        ({"amiId": None}, "spec.amiId"),
        ({"amiId": "ami-xyz"}, "spec.amiId"),
        ({"subnetId": "sub-1"}, "spec.subnetId"),
        ({"securityGroupIds": ["sg-1"]}, "spec.securityGroupIds"),
        ({"securityGroupIds": [f"sg-1234567{i}" for i in range(6)]}, "spec.securityGroupIds"),
        ({"userData": "x" * 16385}, "spec.userData"),
        ({"desiredState": "Paused"}, "spec.desiredState"),
        ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy"),
        ({"detailedMonitoring": "yes"}, "spec.detailedMonitoring"),
        ({"rootVolume": {"sizeGiB": 4}}, "spec.rootVolume.sizeGiB"),
        ({"rootVolume": {"sizeGiB": 20, "type": "st1"}}, "spec.rootVolume.type"),
        ({"tags": {f"k{i}": "v" for i in range(41)}}, "spec.tags"),
        ({"tags": {"aws:x": "v"}}, "spec.tags"),
        ({"tags": {"cml.dev/worker-uid": "v"}}, "spec.tags[cml.dev/worker-uid]"),
        ({"instanceId": "i-1"}, "spec.instanceId"),
        ({"instanceType": 5}, "spec.instanceType"),
        ({"rootVolume": {"sizeGiB": 20, "encrypted": "yes"}}, "spec.rootVolume.encrypted"),
        ({"rootVolume": {"sizeGiB": 20, "kmsKeyId": "my key"}}, "spec.rootVolume.kmsKeyId"),
        ({"rootVolume": {"sizeGiB": 20, "encrypted": False, "kmsKeyId": "alias/cml"}}, "spec.rootVolume.kmsKeyId"),
        ({"metadataOptions": {"httpTokens": "maybe"}}, "spec.metadataOptions.httpTokens"),
        ({"metadataOptions": {"httpPutResponseHopLimit": 65}}, "spec.metadataOptions.httpPutResponseHopLimit"),
        ({"metadataOptions": "v2"}, "spec.metadataOptions"),
        ({"userData": "x", "userDataSecretRef": {"name": "boot", "key": "ud"}}, "spec.userDataSecretRef"),
        ({"userDataSecretRef": {"name": "Boot_1", "key": "ud"}}, "spec.userDataSecretRef.name"),
        ({"userDataSecretRef": {"name": "boot", "key": "u d"}}, "spec.userDataSecretRef.key"),
    ],
)
def test_bad_fields_are_named(patch, field):
    raw = {**BASE, **patch}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def dto(state="running", public_ip="54.0.0.1"):
    return CMLWorkerInstanceDto(
        aws_instance_id="i-0123456789abcdef0", aws_region="us-east-1", instance_name=None, ami_id="ami-12345678",
        ami_name=None, instance_type="m5zn.metal", security_group_ids=[], subnet_id="subnet-12345678",
        instance_state=state, public_ip=public_ip, private_ip="10.0.0.5", key_pair_name=None,
        availability_zone="us-east-1a", launch_time="2026-11-25T09:59:00+00:00")


def outcome(health=Health.ready("InstanceReady", "ok"), instance=None, checks=None):
    instance = instance or dto()
    return PassOutcome(health=health, instance_id=instance.aws_instance_id, instance=instance, checks=checks,
                       ami_id="ami-12345678", creation_attempt=0, adopted=False, managed_tag_keys=("team",))


def test_the_same_world_renders_the_same_status_so_nothing_is_written():
    checks = InstanceStatusChecks("i-0123456789abcdef0", "ok", "ok")
    first = render_status(None, outcome(checks=checks), 1, T0)
    again = render_status(first, outcome(checks=checks), 1, T0 + timedelta(minutes=3))
    assert again == first and status_patch(first, again) == {}


def test_a_stopped_instance_drops_its_public_ip_with_an_explicit_null():
    running = render_status(None, outcome(), 1, T0)
    stopped = render_status(running, outcome(Health.ready("InstanceStopped", "s"), dto("stopped", None)), 1, T0)
    patch = status_patch(running, stopped)
    assert patch["publicIp"] is None and patch["instanceState"] == "stopped" and patch["phase"] == "Stopped"
    assert stopped["statusChecks"]["system"] == "not-applicable"


def test_kopf_bookkeeping_is_never_touched():
    current = {**render_status(None, outcome(), 1, T0), "kopf": {"progress": {}}}
    assert "kopf" not in status_patch(current, render_status(current, outcome(), 1, T0))


@pytest.mark.parametrize(
    ("health", "state", "phase"),
    [
        (Health.stalled("QuotaExceeded", "q"), None, "Failed"),
        (Health.reconciling("Provisioning", "p"), None, "Provisioning"),
        (Health.reconciling("Throttled", "t"), None, "Pending"),
        (Health.reconciling("Provisioning", "p"), "pending", "Provisioning"),
        (Health.reconciling("Starting", "s"), "pending", "Starting"),
        (Health.ready("InstanceReady", "r"), "running", "Running"),
        (Health.reconciling("Stopping", "s"), "stopping", "Stopping"),
        (Health.ready("InstanceStopped", "s"), "stopped", "Stopped"),
        (Health.reconciling("Deleting", "d"), "shutting-down", "Terminating"),
        (Health.reconciling("Deleting", "d"), "terminated", "Terminated"),
    ],
)
def test_phase(health, state, phase):
    assert phase_of(health, dto(state) if state else None) == phase


def test_status_checks_keep_their_time_until_they_change():
    initializing = InstanceStatusChecks("i-0123456789abcdef0", "initializing", "initializing")
    ok = InstanceStatusChecks("i-0123456789abcdef0", "ok", "ok")
    first = render_status(None, outcome(checks=initializing), 1, T0)
    same = render_status(first, outcome(checks=initializing), 1, T0 + timedelta(minutes=1))
    changed = render_status(same, outcome(checks=ok), 1, T0 + timedelta(minutes=2))
    assert same["statusChecks"]["checkedAt"] == "2026-11-25T10:00:00Z"
    assert changed["statusChecks"] == {"system": "ok", "instance": "ok", "checkedAt": "2026-11-25T10:02:00Z"}
