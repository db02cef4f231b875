"""The CML simulator answers Cisco's own client library (virl2-client 2.10.1) as a controller would.

If virl2-client can connect, read system information and statistics, list labs and
drive licensing against it, the shapes the operator relies on are the real ones.
"""

from __future__ import annotations

import logging

import pytest

from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME, CMLSimProcess

virl2_client = pytest.importorskip("virl2_client")  # a pinned test dependency; skip only outside the venv


@pytest.fixture(scope="module")
def sim():
    process = CMLSimProcess().start()
    yield process
    process.stop()


def _client(sim: CMLSimProcess, prefix: str, password: str = DEFAULT_PASSWORD):
    logging.getLogger("virl2_client").setLevel(logging.ERROR)  # "SSL Verification disabled" is expected here
    return virl2_client.ClientLibrary(sim.endpoint(prefix), DEFAULT_USERNAME, password, ssl_verify=False,
                                      raise_for_auth_failure=True)


def test_virl2_client_connects_and_reads_system_information_and_stats(sim):
    client = _client(sim, "fidelity-a")
    info = client.system_info()
    assert info["ready"] is True and info["version"] == "2.10.0"
    stats = client.get_system_stats()
    dominfo = next(iter(stats["computes"].values()))["stats"]["dominfo"]
    assert dominfo["running_nodes"] == 0 and stats["all"]["cpu"]["count"] == 48


def test_virl2_client_lists_labs_with_their_states(sim):
    sim.set_lab("fidelity-b", "lab-1", "STARTED")
    sim.set_lab("fidelity-b", "lab-2", "STOPPED")
    client = _client(sim, "fidelity-b")
    labs = {lab.id: lab for lab in client.all_labs(show_all=True)}
    assert sorted(labs) == ["lab-1", "lab-2"]
    assert labs["lab-1"].state() == "STARTED" and labs["lab-2"].state() == "STOPPED"
    assert next(iter(client.get_system_stats()["computes"].values()))["stats"]["dominfo"]["running_nodes"] == 2


def test_virl2_client_registers_and_deregisters_a_licence(sim):
    sim.configure("fidelity-c", registration_seconds=0.0)
    client = _client(sim, "fidelity-c")
    assert client.licensing.status()["registration"]["status"] == "NOT_REGISTERED"
    assert client.licensing.register("sim-token") is True
    client.licensing.wait_for_status("registration", "COMPLETED")
    assert client.licensing.status()["authorization"]["status"] == "IN_COMPLIANCE"
    assert client.licensing.deregister() == 204
    assert client.licensing.status()["registration"]["status"] == "NOT_REGISTERED"


def test_virl2_client_is_refused_with_a_wrong_password(sim):
    with pytest.raises(virl2_client.exceptions.InitializationError):
        _client(sim, "fidelity-d", password="wrong")
