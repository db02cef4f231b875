"""CML problems never hold the EC2 side (issue 19 point 7).

50 workers name a controller that accepts connections and never answers (each CML request
waits for --cml-timeout, and the looks queue for the --cml-concurrency limit). Another CML
worker's desiredState: Stopped, and the delete of a third, must still take effect within a
poll interval plus EC2 time: no CML request runs while a worker's lock is held, so a timer
pass waiting for its look never blocks the change pass or the deletion.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME
from tests.support.processes import wait_for

from .conftest import instances_of, state_of, worker_manifest
from .test_cml import cml_worker, secret, sim, unique  # noqa: F401  (sim: the module's simulator fixture)

pytestmark = pytest.mark.e2e
HUNG = 50
POLL_INTERVAL = 1.0  # OperatorProcess.FAST_ARGS
CML_TIMEOUT, CML_CONCURRENCY = 8, 5  # 50 hung looks: 10 rounds of 8 s before a new look gets its turn
ARGS = ("--cml-interval", "2", "--cml-starting-interval", "1", "--cml-timeout", str(CML_TIMEOUT),
        "--cml-concurrency", str(CML_CONCURRENCY))
#: Slack for the EC2 calls themselves (rate-limited, through the fault proxy, on a loaded machine).
EC2_TIME = 10.0
LIMIT = POLL_INTERVAL + EC2_TIME


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """https://127.0.0.1:<port>/ that accepts TCP connections and never says a word (no TLS handshake)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    held: list[socket.socket] = []
    stopped = threading.Event()

    def accept() -> None:
        while not stopped.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}/"
    stopped.set()
    listener.close()
    for connection in held:
        connection.close()


@pytest.mark.slow
def test_hung_controllers_never_delay_a_stop_or_a_delete_of_another_worker(
        kube, network, aws, sim, hung_endpoint, operator_factory):  # noqa: F811
    operator_factory(*ARGS)
    for name in ("keep-stop", "keep-delete"):
        cml_worker(kube, name, network, sim, unique(name, kube))
    for name in ("keep-stop", "keep-delete"):
        kube.wait_condition(name, "Ready", reason="CMLReady", timeout=90)
    secret(kube, "hung-login", username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    for index in range(HUNG):
        kube.apply(worker_manifest(f"hung-{index}", network,
                                   cml={"endpoint": hung_endpoint, "credentialsSecretRef": {"name": "hung-login"}}))
    wait_for(lambda: all((kube.get(f"hung-{i}").get("status") or {}).get("instanceState") == "running"
                         for i in range(HUNG)), 180, interval=2, what="the hung workers' instances to run")
    # Every look slot is taken by now, and the queue behind it is longer than the test's limit.
    wait_for(lambda: sum(1 for i in range(0, HUNG, 10)
                         if (kube.condition(f"hung-{i}", "Reconciling") or {}).get("reason") == "CMLStarting") >= 3,
             60, what="the hung workers to wait for CML")
    time.sleep(2 * CML_TIMEOUT)  # let the queue fill: every timer of the two others is due meanwhile

    stop_id = kube.get("keep-stop")["status"]["instanceId"]
    sent = time.monotonic()
    kube.patch_spec("keep-stop", {"desiredState": "Stopped"})
    wait_for(lambda: state_of(aws, stop_id) in ("stopping", "stopped"), 120, interval=0.5,
             what="keep-stop's instance to stop")
    stopped_after = time.monotonic() - sent

    delete_uid = kube.get("keep-delete")["metadata"]["uid"]
    sent = time.monotonic()
    kube.delete("keep-delete", wait=False)
    wait_for(lambda: not instances_of(aws, delete_uid), 120, interval=0.5, what="keep-delete's instance to go")
    deleted_after = time.monotonic() - sent
    print(f"\nwith {HUNG} hung controllers: stop took {stopped_after:.1f}s, delete {deleted_after:.1f}s "
          f"(limit {LIMIT:.0f}s)")
    assert stopped_after < LIMIT, f"desiredState: Stopped took {stopped_after:.1f}s"
    assert deleted_after < LIMIT, f"the delete took {deleted_after:.1f}s to terminate the instance"
