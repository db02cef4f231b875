"""CMLClient against the simulator over real HTTPS: trust on first use, pinning, errors, token reuse."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from cml_operator.cml.client import CMLClient, Credentials, Trust, api_base
from cml_operator.cml.errors import cml_http_error
from cml_operator.cml.exceptions import (
    CMLAuthenticationException,
    CMLCertificateException,
    CMLException,
    CMLLicensingException,
    CMLUnavailableException,
)
from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME, CMLSimProcess

GOOD = Credentials(DEFAULT_USERNAME, DEFAULT_PASSWORD)


@pytest.fixture(scope="module")
def sim():
    process = CMLSimProcess().start()
    yield process
    process.stop()


def run(coro_fn, *args, timeout: float = 20):
    async def wrapper():
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            return await asyncio.wait_for(coro_fn(session, *args), timeout)
    return asyncio.run(wrapper())


def test_api_base_keeps_a_path_prefix():
    assert api_base("https://h:8443/cml-a/") == "https://h:8443/cml-a/api/v0/"
    assert api_base("https://10.0.0.5") == "https://10.0.0.5/api/v0/"


def test_first_use_pins_the_certificate_then_reads_labs_and_stats_with_one_token(sim):
    sim.set_lab("client-a", "lab-1", "STARTED")
    calls: list[tuple[str, str]] = []

    async def body(session):
        client = CMLClient(session, sim.endpoint("client-a"), Trust(), GOOD, on_call=lambda o, r: calls.append((o, r)))
        info = await client.system_information()
        labs = await client.lab_counts()
        stats = await client.system_stats()
        labs_again = await client.lab_counts()
        return client.pin, info, labs, stats, labs_again

    pin, info, labs, stats, labs_again = run(body)
    assert info.ready and info.version == "2.10.0"
    assert len(pin) == 64 and pin == pin.lower()
    assert (labs.total, labs.running) == (1, 1) == (labs_again.total, labs_again.running)
    assert stats.running_nodes == 2 and stats.cpu_percent is not None and stats.memory_percent is not None
    assert [o for o, _ in calls].count("authenticate") == 1  # the token is reused
    assert sim.worker("client-a")["calls"]["POST authenticate"] == 1


def test_a_changed_certificate_is_refused_before_any_credential_is_sent(sim):
    async def pin_first(session):
        client = CMLClient(session, sim.endpoint("client-b"), Trust(), GOOD)
        await client.system_information()
        return client.pin

    pin = run(pin_first)
    sim.rotate_certificate()

    async def with_old_pin(session):
        client = CMLClient(session, sim.endpoint("client-b"), Trust(pin=pin), GOOD)
        await client.lab_counts()

    with pytest.raises(CMLCertificateException) as caught:
        run(with_old_pin)
    assert caught.value.code == "CertificateChanged" and pin in str(caught.value)
    assert sim.worker("client-b")["calls"].get("POST authenticate", 0) == 0


def test_a_ca_verifies_the_certificate(sim):
    ca = sim.certificate()

    async def body(session):
        return await CMLClient(session, sim.endpoint("client-c"), Trust(ca_pem=ca), GOOD).lab_counts()

    assert run(body).total == 0


def test_wrong_credentials_raise_authentication_error_without_the_password(sim):
    async def body(session):
        await CMLClient(session, sim.endpoint("client-d"), Trust(), Credentials(DEFAULT_USERNAME, "s3cr3t-wrong")
                        ).system_information()
        client = CMLClient(session, sim.endpoint("client-d"), Trust(), Credentials(DEFAULT_USERNAME, "s3cr3t-wrong"))
        await client.system_information()
        await client.lab_counts()

    with pytest.raises(CMLAuthenticationException) as caught:
        run(body)
    assert caught.value.code == "HTTP403" and "s3cr3t-wrong" not in repr(caught.value) + str(caught.value)


def test_an_expired_token_is_renewed_once(sim):
    async def body(session):
        client = CMLClient(session, sim.endpoint("client-e"), Trust(), GOOD)
        await client.system_information()
        await client.lab_counts()
        sim.configure("client-e", password=DEFAULT_PASSWORD)  # the simulator drops every token
        return await client.lab_counts()

    assert run(body).total == 0
    assert sim.worker("client-e")["calls"]["POST authenticate"] == 2


def test_a_booting_controller_is_unavailable(sim):
    sim.configure("client-f", ready_after=600)

    async def body(session):
        client = CMLClient(session, sim.endpoint("client-f"), Trust(), GOOD)
        info = await client.system_information()
        assert not info.ready
        await client.authenticate()

    with pytest.raises(CMLUnavailableException) as caught:
        run(body)
    assert caught.value.code == "HTTP503" and caught.value.retryable


def test_slow_answers_time_out(sim):
    sim.configure("client-g", delay=2.0)

    async def body(session):
        await CMLClient(session, sim.endpoint("client-g"), Trust(), GOOD, timeout=0.5).system_information()

    with pytest.raises(CMLUnavailableException) as caught:
        run(body)
    assert caught.value.code == "Timeout"


def test_nothing_listening_is_unavailable():
    async def body(session):
        await CMLClient(session, "https://127.0.0.1:9/", Trust(), GOOD, timeout=2).system_information()

    with pytest.raises(CMLUnavailableException) as caught:
        run(body)
    assert caught.value.code == "ConnectionError"


def test_licence_registration_completes_and_a_refused_token_fails(sim):
    sim.configure("client-h", registration_seconds=0.0, refused_tokens=["bad-token"])

    async def body(session):
        client = CMLClient(session, sim.endpoint("client-h"), Trust(), GOOD)
        await client.system_information()
        before = await client.licensing()
        await client.register_license("good-token")
        await asyncio.sleep(0.1)
        registered = await client.licensing()
        await client.deregister_license()
        released = await client.licensing()
        await client.register_license("bad-token")
        await asyncio.sleep(0.1)
        refused = await client.licensing()
        return before, registered, released, refused

    before, registered, released, refused = run(body)
    assert before.registration == "NOT_REGISTERED" and not before.valid
    assert registered.valid and registered.registration == "COMPLETED"
    assert released.registration == "NOT_REGISTERED"
    assert refused.failed


@pytest.mark.parametrize(("status", "operation", "cls", "retryable"), [
    (401, "labs", CMLAuthenticationException, False),
    (403, "authenticate", CMLAuthenticationException, False),
    (500, "system_stats", CMLUnavailableException, True),
    (503, "system_information", CMLUnavailableException, True),
    (429, "labs", CMLUnavailableException, True),
    (404, "labs", CMLException, True),
    (400, "licensing/registration", CMLLicensingException, False),
    (502, "licensing/deregistration", CMLLicensingException, True),
])
def test_status_table(status, operation, cls, retryable):
    error = cml_http_error(status, operation)
    assert type(error) is cls and error.retryable is retryable and error.code == f"HTTP{status}"
