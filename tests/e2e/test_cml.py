"""CML-aware workers end to end: the operator process, moto's EC2 and the CML simulator over HTTPS.

moto gives instances fake IPs nobody can reach, so each worker names the
simulator in spec.cml.endpoint: a port and path prefix of its own that answer only
while the worker's instance is running in moto (a controller per instance, which
boots after every start; see tests/support/cmlsim.py). The operator runs with short
CML intervals so a test takes seconds.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME, CMLSimProcess
from tests.support.processes import wait_for

from .conftest import state_of, worker_manifest
from .test_observability import sample

pytestmark = pytest.mark.e2e

CML_ARGS = ("--cml-interval", "2", "--cml-starting-interval", "1", "--cml-timeout", "3")
LICENCE_TOKEN = "sentinel-licence-token-7f3a9c"  # must never show up outside the Secret


SIM_BOOT_SECONDS = 1.0  # every start of an instance: the controller is not ready for this long


def strict_sim(moto_url: str) -> CMLSimProcess:
    return CMLSimProcess(ec2_endpoint=moto_url, boot_seconds=SIM_BOOT_SECONDS).start()


@pytest.fixture(scope="module")
def sim(moto_server) -> Iterator[CMLSimProcess]:
    process = strict_sim(moto_server.url)
    yield process
    process.stop()


def secret(kube, name: str, **data: str) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def cml_worker(kube, name: str, network, sim: CMLSimProcess, prefix: str, **cml: Any) -> dict:
    secret(kube, f"{name}-login", username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    spec_cml = {"endpoint": sim.endpoint(prefix, worker=name), "credentialsSecretRef": {"name": f"{name}-login"},
                **cml}
    manifest = worker_manifest(name, network, cml=spec_cml)
    kube.apply(manifest)
    return manifest


def unique(prefix: str, kube) -> str:
    return f"{prefix}-{kube.namespace[-6:]}"


def annotate(kube, name: str, key: str, value: str) -> None:
    kube.run("annotate", "--overwrite", "cmlworker", name, f"{key}={value}")


def test_ready_waits_for_cml_then_shows_its_status(kube, network, sim, operator_factory):
    prefix = unique("ready", kube)
    sim.configure(prefix, ready_after=600)  # the controller boots "forever" until told otherwise
    operator_factory(*CML_ARGS)
    sim.set_lab(prefix, "lab-1", "STARTED")
    cml_worker(kube, "cml-ready", network, sim, prefix)

    kube.wait_condition("cml-ready", "Reconciling", reason="CMLStarting", timeout=90)
    assert kube.condition("cml-ready", "Ready")["status"] == "False"
    assert kube.get("cml-ready")["status"]["instanceState"] == "running"  # EC2 alone would say Ready

    sim.configure(prefix, ready_after=0)
    kube.wait_condition("cml-ready", "Ready", reason="CMLReady", timeout=60)
    cml = kube.get("cml-ready")["status"]["cml"]
    assert cml["ready"] is True and cml["version"] == "2.10.0" and cml["endpoint"] == sim.endpoint(prefix)
    assert cml["labs"] == {"total": 1, "running": 1} and cml["runningNodes"] == 2
    assert re.fullmatch(r"[0-9a-f]{64}", cml["certificateSHA256"]) and cml["checkedAt"] and cml["lastActivityTime"]
    wide = kube.run("get", "cmlw", "cml-ready", "-o", "wide").stdout
    assert "2.10.0" in wide and "CMLReady" in wide
    kube.wait_event("cml-ready", "CertificatePinned", type_=None)  # Kopf may post it after the status
    # Several looks later the first token is still in use: one authentication, no re-pinning.
    # (The exact cost of a look: test_cml_world.py.) Taken between two looks: each reads both once.
    calls = wait_for(lambda: (c := sim.worker(prefix)["calls"]).get("GET system_stats", 0) >= 4
                     and c["GET system_stats"] == c.get("GET populate_lab_tiles") and c, 60, what="four looks")
    assert calls["POST authenticate"] == 1
    assert kube.event_reasons("cml-ready").count("CertificatePinned") == 1


def test_wrong_credentials_stall_until_the_secret_is_fixed(kube, network, sim, operator_factory):
    prefix = unique("auth", kube)
    operator_factory(*CML_ARGS)
    cml_worker(kube, "cml-auth", network, sim, prefix)
    secret(kube, "cml-auth-login", username=DEFAULT_USERNAME, password="wrong-password-5d1e")

    kube.wait_condition("cml-auth", "Stalled", reason="CMLAuthenticationFailed", timeout=90)
    kube.wait_event("cml-auth", "CMLAuthenticationFailed", type_="Warning")  # Kopf may post it after the status
    assert "wrong-password-5d1e" not in json.dumps(kube.get("cml-auth")["status"])

    secret(kube, "cml-auth-login", username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    kube.wait_condition("cml-auth", "Ready", reason="CMLReady", timeout=60)  # well under the 10-minute recheck


def test_a_changed_certificate_stalls_until_the_pin_is_reset(kube, network, moto_server, operator_factory):
    own = strict_sim(moto_server.url)  # rotating the certificate affects every prefix: a simulator of its own
    try:
        operator_factory(*CML_ARGS)
        cml_worker(kube, "cml-pin", network, own, "pin")
        kube.wait_condition("cml-pin", "Ready", reason="CMLReady", timeout=90)
        first = kube.get("cml-pin")["status"]["cml"]["certificateSHA256"]

        own.rotate_certificate()
        kube.wait_condition("cml-pin", "Stalled", reason="CMLCertificateChanged", timeout=60)
        assert first in kube.condition("cml-pin", "Stalled")["message"]
        kube.wait_event("cml-pin", "CMLCertificateChanged", type_="Warning")  # Kopf may post it after the status
        annotate(kube, "cml-pin", "cml.dev/reset-certificate-pin", "1")
        kube.wait_condition("cml-pin", "Ready", reason="CMLReady", timeout=60)
        second = kube.get("cml-pin")["status"]["cml"]["certificateSHA256"]
        assert second != first and re.fullmatch(r"[0-9a-f]{64}", second)
    finally:
        own.stop()


def test_a_ca_secret_verifies_the_controller_and_an_untrusted_one_stalls(kube, network, sim, operator_factory,
                                                                         tmp_path):
    """spec.cml.tls.caSecretRef: the certificate must verify against the CA; nothing is pinned."""
    from tests.support.cmlsim import make_certificate

    prefix = unique("ca", kube)
    other_ca, _ = make_certificate(tmp_path)  # a CA that did not sign the simulator's certificate
    secret(kube, "cml-ca-bundle", **{"ca.crt": other_ca.read_text()})
    operator_factory(*CML_ARGS)
    cml_worker(kube, "cml-ca", network, sim, prefix, tls={"caSecretRef": {"name": "cml-ca-bundle"}})

    stalled = kube.wait_condition("cml-ca", "Stalled", reason="CMLCertificateChanged", timeout=90)
    assert "not trusted" in stalled["message"]
    assert sim.worker(prefix)["calls"].get("POST authenticate", 0) == 0  # no password sent to it

    secret(kube, "cml-ca-bundle", **{"ca.crt": sim.certificate()})  # the simulator's own (self-signed) CA
    kube.wait_condition("cml-ca", "Ready", reason="CMLReady", timeout=60)
    cml = kube.get("cml-ca")["status"]["cml"]
    assert cml["ready"] is True and not cml.get("certificateSHA256")  # verified, not pinned
    assert "CertificatePinned" not in kube.event_reasons("cml-ca")


@pytest.mark.slow
def test_an_idle_worker_stops_itself_and_wakes_on_the_annotation(kube, network, aws, sim, operator_factory):
    prefix = unique("idle", kube)
    operator = operator_factory(*CML_ARGS)
    sim.set_lab(prefix, "lab-1", "STARTED")
    cml_worker(kube, "cml-idle", network, sim, prefix, idleStop={"afterMinutes": 1})
    kube.wait_condition("cml-idle", "Ready", reason="CMLReady", timeout=90)
    instance_id = kube.get("cml-idle")["status"]["instanceId"]

    sim.set_lab(prefix, "lab-1", "STOPPED")  # nothing runs any more: the idle clock starts
    wait_for(lambda: kube.get("cml-idle")["status"]["cml"].get("idleSince"), 30, what="idleSince")
    kube.wait_condition("cml-idle", "Ready", reason="IdleStopped", timeout=150)
    wait_for(lambda: state_of(aws, instance_id) == "stopped", 60, what="the instance to stop")
    status = kube.get("cml-idle")["status"]
    assert status["cml"]["idleStoppedAt"] and kube.condition("cml-idle", "Ready")["status"] == "True"
    kube.wait_event("cml-idle", "IdleStopped", type_=None)  # Kopf may post it after the status
    assert re.search(r"^cml_idle_stops_total 1\.0$", operator.metrics(), re.M)
    # It stays stopped: the operator never wakes a worker by itself.
    assert kube.condition("cml-idle", "Ready")["reason"] == "IdleStopped" and state_of(aws, instance_id) == "stopped"

    annotate(kube, "cml-idle", "cml.dev/wake", "2026-11-25T17:00:00Z")
    kube.wait_condition("cml-idle", "Ready", reason="CMLReady", timeout=90)
    assert state_of(aws, instance_id) == "running"
    cml = kube.get("cml-idle")["status"]["cml"]
    assert "idleStoppedAt" not in cml and "Woken" in kube.event_reasons("cml-idle")


def test_the_licence_is_registered_and_released_around_stop_and_terminate(kube, network, aws, sim,
                                                                        operator_factory):
    prefix = unique("lic", kube)
    sim.configure(prefix, registration_seconds=1.0)
    operator = operator_factory(*CML_ARGS)
    secret(kube, "cml-lic-token", token=LICENCE_TOKEN)
    cml_worker(kube, "cml-lic", network, sim, prefix,
               license={"tokenSecretRef": {"name": "cml-lic-token", "key": "token"}})
    kube.wait_condition("cml-lic", "Ready", reason="CMLReady", timeout=90)
    assert kube.get("cml-lic")["status"]["cml"]["license"] == {"registration": "COMPLETED",
                                                               "authorization": "IN_COMPLIANCE"}
    assert sim.worker(prefix)["calls"]["POST licensing/registration"] == 1

    kube.patch_spec("cml-lic", {"desiredState": "Stopped"})
    kube.wait_condition("cml-lic", "Ready", reason="InstanceStopped", timeout=60)
    assert sim.worker(prefix)["license"]["registration"] == "NOT_REGISTERED"
    assert sim.worker(prefix)["calls"]["DELETE licensing/deregistration"] == 1
    assert sim.worker(prefix)["refused"] == {}  # released while the instance ran: before the stop
    kube.wait_event("cml-lic", "LicenseReleased", type_=None)  # Kopf may post it after the status
    kube.patch_spec("cml-lic", {"desiredState": "Running"})
    kube.wait_condition("cml-lic", "Ready", reason="CMLReady", timeout=90)
    assert sim.worker(prefix)["calls"]["POST licensing/registration"] == 2

    kube.delete("cml-lic", timeout="90s")
    assert sim.worker(prefix)["calls"]["DELETE licensing/deregistration"] == 2
    assert sim.worker(prefix)["license"]["registration"] == "NOT_REGISTERED"
    assert sim.worker(prefix)["refused"] == {}  # and before the terminate

    # The token never leaves its Secret: not in events, logs or metrics.
    events = kube.run("get", "events", "-o", "json").stdout
    assert LICENCE_TOKEN not in events
    assert LICENCE_TOKEN not in operator.logs() and LICENCE_TOKEN not in operator.metrics()
    assert DEFAULT_PASSWORD not in operator.logs() and DEFAULT_PASSWORD not in events


def test_a_failing_deregistration_does_not_block_the_stop_forever(kube, network, aws, sim, operator_factory):
    prefix = unique("relfail", kube)
    sim.configure(prefix, registration_seconds=0.0)
    operator_factory(*CML_ARGS)
    secret(kube, "cml-relfail-token", token=LICENCE_TOKEN)
    cml_worker(kube, "cml-relfail", network, sim, prefix,
               license={"tokenSecretRef": {"name": "cml-relfail-token", "key": "token"}})
    kube.wait_condition("cml-relfail", "Ready", reason="CMLReady", timeout=90)
    instance_id = kube.get("cml-relfail")["status"]["instanceId"]
    sim.configure(prefix, deregister_fail_count=100)

    kube.patch_spec("cml-relfail", {"desiredState": "Stopped"})
    kube.wait_condition("cml-relfail", "Ready", reason="InstanceStopped", timeout=90)
    assert state_of(aws, instance_id) == "stopped"
    assert sim.worker(prefix)["calls"]["DELETE licensing/deregistration"] == 3  # --cml release attempts
    kube.wait_event("cml-relfail", "LicenseReleaseFailed", type_="Warning")  # Kopf may post it after the status
def test_an_unreachable_controller_turns_starting_into_unreachable(kube, network, operator_factory):
    operator = operator_factory(*CML_ARGS, "--cml-boot-timeout", "5")
    secret(kube, "cml-gone-login", username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    kube.apply(worker_manifest("cml-gone", network, cml={"endpoint": "https://127.0.0.1:9/nothing/",
                                                         "credentialsSecretRef": {"name": "cml-gone-login"}}))
    kube.wait_condition("cml-gone", "Reconciling", reason="CMLUnreachable", timeout=150)
    # It was CMLStarting first, for the 5 s boot timeout: read from the operator's count of the status
    # patches it wrote, since polling the condition can miss a 5 s window on a loaded machine.
    assert sample(operator.metrics(), "cml_status_patches_total", state="Reconciling", reason="CMLStarting") >= 1
    assert kube.condition("cml-gone", "Ready")["status"] == "False"
    kube.wait_event("cml-gone", "CMLUnreachable", type_="Warning")  # Kopf may post it after the status
def test_a_refused_licence_token_stalls_until_the_token_secret_changes(kube, network, sim, operator_factory):
    prefix = unique("badtoken", kube)
    sim.configure(prefix, registration_seconds=0.5, refused_tokens=["refused-token"])
    operator_factory(*CML_ARGS)
    secret(kube, "cml-badtoken-token", token="refused-token")
    cml_worker(kube, "cml-badtoken", network, sim, prefix,
               license={"tokenSecretRef": {"name": "cml-badtoken-token", "key": "token"}})
    kube.wait_condition("cml-badtoken", "Stalled", reason="LicenseInvalid", timeout=90)
    assert "refused-token" not in json.dumps(kube.get("cml-badtoken")["status"])

    secret(kube, "cml-badtoken-token", token=LICENCE_TOKEN)
    kube.wait_condition("cml-badtoken", "Ready", reason="CMLReady", timeout=60)
    assert sim.worker(prefix)["calls"]["POST licensing/registration"] == 2


@pytest.mark.parametrize(("cml", "field"), [
    ({"credentialsSecretRef": {"name": "x"}, "idleStop": {"afterMinutes": 0}}, "spec.cml.idleStop.afterMinutes"),
    ({"credentialsSecretRef": {"name": "x"}, "endpoint": "http://10.0.0.1/"}, "spec.cml.endpoint"),
    ({"idleStop": {"afterMinutes": 5}}, "spec.cml.credentialsSecretRef"),
])
def test_bad_spec_cml_is_refused_at_apply_naming_the_field(kube, network, cml, field):
    refused = kube.apply(worker_manifest("cml-bad", network, cml=cml), check=False)
    assert refused.returncode != 0 and field in refused.stderr, refused.stderr
