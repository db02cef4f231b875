"""The operator against a CML that lives on its instance: request budget, boots, licence order.

The simulator (tests/support/cmlsim.py with an EC2 world) refuses every request
while the worker's instance is not running, so a licence release after the stop
is refused and shows in ``refused``; it boots after every start, so a stale look
cannot pass for a ready controller.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.processes import wait_for

from .conftest import state_of
from .test_cml import CML_ARGS, LICENCE_TOKEN, cml_worker, secret, sim, unique  # noqa: F401 - sim: a fixture

pytestmark = pytest.mark.e2e

LICENSED = {"license": {"tokenSecretRef": {"name": "lic-token", "key": "token"}}}


def _calls(sim, prefix: str) -> Counter:
    return Counter(sim.worker(prefix)["calls"])


def _instance_type(aws, instance_id: str) -> str:
    return aws.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["InstanceType"]


def test_each_look_costs_exactly_two_requests_over_the_same_connection(kube, network, sim, operator_factory):
    prefix = unique("budget", kube)
    operator_factory(*CML_ARGS)
    cml_worker(kube, "cml-budget", network, sim, prefix)
    kube.wait_condition("cml-budget", "Ready", reason="CMLReady", timeout=90)
    # A look ends with system_stats: count from the end of one look to the end of the fourth after it.
    start = _calls(sim, prefix)["GET system_stats"]
    wait_for(lambda: _calls(sim, prefix)["GET system_stats"] >= start + 1, 30, what="a look to end")
    before = _calls(sim, prefix)
    wait_for(lambda: _calls(sim, prefix)["GET system_stats"] >= before["GET system_stats"] + 4, 60,
             what="four more looks")
    window = _calls(sim, prefix) - before
    assert dict(window) == {"GET populate_lab_tiles": 4, "GET system_stats": 4}  # no re-auth, no version check
    view = sim.worker(prefix)
    assert view["calls"]["POST authenticate"] == 1 and view["calls"]["GET system_information"] == 1
    assert view["connections"] == 1 and not view["refused"]  # one kept-alive connection, never cut


def test_an_expired_session_is_renewed_without_leaving_ready(kube, network, sim, operator_factory):
    prefix = unique("expiry", kube)
    sim.configure(prefix, token_seconds=3)
    operator_factory(*CML_ARGS)
    cml_worker(kube, "cml-expiry", network, sim, prefix)
    kube.wait_condition("cml-expiry", "Ready", reason="CMLReady", timeout=90)
    wait_for(lambda: _calls(sim, prefix)["POST authenticate"] >= 3, 60, what="two sessions to expire")
    assert kube.condition("cml-expiry", "Ready")["reason"] == "CMLReady"
    assert "CMLAuthenticationFailed" not in kube.event_reasons("cml-expiry")


def test_a_started_worker_waits_for_its_controller_to_boot(kube, network, aws, sim, operator_factory):
    prefix = unique("boot", kube)
    operator_factory(*CML_ARGS)
    cml_worker(kube, "cml-boot", network, sim, prefix)
    kube.wait_condition("cml-boot", "Ready", reason="CMLReady", timeout=90)
    instance_id = kube.get("cml-boot")["status"]["instanceId"]

    kube.patch_spec("cml-boot", {"desiredState": "Stopped"})
    kube.wait_condition("cml-boot", "Ready", reason="InstanceStopped", timeout=60)
    sim.configure(prefix, boot_seconds=600)  # the next boot takes "forever" until told otherwise
    kube.patch_spec("cml-boot", {"desiredState": "Running"})
    kube.wait_condition("cml-boot", "Reconciling", reason="CMLStarting", timeout=60)
    assert state_of(aws, instance_id) == "running" and kube.condition("cml-boot", "Ready")["status"] == "False"
    assert sim.worker(prefix)["starts"] == 2

    sim.configure(prefix, boot_seconds=0)
    kube.wait_condition("cml-boot", "Ready", reason="CMLReady", timeout=60)


def _licensed_worker(kube, network, sim, name: str, prefix: str, **cml) -> None:
    sim.configure(prefix, registration_seconds=0.0)
    secret(kube, "lic-token", token=LICENCE_TOKEN)
    cml_worker(kube, name, network, sim, prefix, **LICENSED, **cml)
    kube.wait_condition(name, "Ready", reason="CMLReady", timeout=90)
    assert sim.worker(prefix)["license"]["registration"] == "COMPLETED"


@pytest.mark.slow
def test_the_licence_is_released_before_an_idle_stop(kube, network, aws, sim, operator_factory):
    prefix = unique("idlelic", kube)
    operator_factory(*CML_ARGS)
    _licensed_worker(kube, network, sim, "cml-idlelic", prefix, idleStop={"afterMinutes": 1})
    instance_id = kube.get("cml-idlelic")["status"]["instanceId"]

    kube.wait_condition("cml-idlelic", "Ready", reason="IdleStopped", timeout=150)
    wait_for(lambda: state_of(aws, instance_id) == "stopped", 60, what="the instance to stop")
    view = sim.worker(prefix)
    assert view["calls"]["DELETE licensing/deregistration"] == 1 and not _licence_refusals(view)
    assert view["license"]["registration"] == "NOT_REGISTERED"


def test_the_licence_is_released_before_the_stop_of_a_resize(kube, network, aws, sim, operator_factory):
    prefix = unique("resizelic", kube)
    operator_factory(*CML_ARGS)
    _licensed_worker(kube, network, sim, "cml-resizelic", prefix)
    instance_id = kube.get("cml-resizelic")["status"]["instanceId"]

    kube.patch_spec("cml-resizelic", {"instanceType": "m5.xlarge"})
    wait_for(lambda: _instance_type(aws, instance_id) == "m5.xlarge", 90, what="the resize")
    kube.wait_condition("cml-resizelic", "Ready", reason="CMLReady", timeout=90)
    view = sim.worker(prefix)
    # No licence call met a stopped controller. A look (a read the timer sends ahead of the worker's lock)
    # may overlap the stop and be refused; that costs nothing and is retried by the next look.
    assert view["calls"]["DELETE licensing/deregistration"] == 1 and not _licence_refusals(view)
    assert view["calls"]["POST licensing/registration"] == 2 and view["starts"] == 2  # registered again after
    assert view["license"]["registration"] == "COMPLETED"


def _licence_refusals(view: dict) -> dict[str, int]:
    """Licence requests the controller refused because its instance was not running (a release too late)."""
    return {call: n for call, n in view["refused"].items() if "licensing" in call}
