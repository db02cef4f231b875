"""The idle clock counts only idleness the operator watched (issue 19 point 3).

Two ways a worker people use could be stopped before: after a gap in observation (here: the
operator is down while the last lab stops) the first look back measured idleness from the last
activity it had seen, and a reply it could not read counted as "no labs".
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.processes import wait_for

from .conftest import state_of
from .test_cml import CML_ARGS, cml_worker, sim, unique  # noqa: F401  (sim: the module's simulator fixture)

pytestmark = pytest.mark.e2e
IDLE_MINUTES = 1


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.slow
def test_idleness_while_the_operator_was_down_does_not_count(kube, network, aws, sim, operator_factory):  # noqa: F811
    prefix = unique("gap", kube)
    operator = operator_factory(*CML_ARGS)
    sim.set_lab(prefix, "lab-1", "STARTED")
    cml_worker(kube, "cml-gap", network, sim, prefix, idleStop={"afterMinutes": IDLE_MINUTES})
    kube.wait_condition("cml-gap", "Ready", reason="CMLReady", timeout=90)
    instance_id = kube.get("cml-gap")["status"]["instanceId"]

    operator.stop()
    sim.set_lab(prefix, "lab-1", "STOPPED")
    # The outage outlasts the idle timeout: counted from the last activity seen, the worker would be due at once.
    time.sleep(IDLE_MINUTES * 60 + 5)
    back = datetime.now(timezone.utc).replace(microsecond=0)
    operator_factory(*CML_ARGS)

    def idle_since() -> datetime | None:
        value = (kube.get("cml-gap")["status"].get("cml") or {}).get("idleSince")
        return _time(value) if value else None

    since = wait_for(lambda: (value := idle_since()) and value >= back - timedelta(seconds=1) and value, 60,
                     what="an idle clock started after the operator came back")
    assert state_of(aws, instance_id) == "running" and "IdleStopped" not in kube.event_reasons("cml-gap")
    kube.wait_condition("cml-gap", "Ready", reason="IdleStopped", timeout=150)
    stopped = _time(kube.get("cml-gap")["status"]["cml"]["idleStoppedAt"])
    assert stopped - since >= timedelta(minutes=IDLE_MINUTES), (since, stopped)


def test_a_reply_in_another_shape_is_activity_unknown_and_never_idle(kube, network, aws, sim,  # noqa: F811
                                                                      operator_factory):
    prefix = unique("shape", kube)
    sim.set_lab(prefix, "lab-1", "STOPPED")
    sim.configure(prefix, odd_shape=True)  # lab tiles without state, computes without dominfo
    operator_factory(*CML_ARGS)
    cml_worker(kube, "cml-shape", network, sim, prefix, idleStop={"afterMinutes": IDLE_MINUTES})
    kube.wait_event("cml-shape", "CMLActivityUnknown", timeout=90)
    first = kube.get("cml-shape")["status"]["cml"]
    assert first.get("activityUnknown") is True and "idleSince" not in first

    # several more looks (one every 2 s): still unknown, still not idle, warned only once
    looked = _time(first["lookedAt"])
    wait_for(lambda: _time(kube.get("cml-shape")["status"]["cml"]["lookedAt"]) >= looked + timedelta(seconds=6),
             60, what="three more looks")
    later = kube.get("cml-shape")["status"]["cml"]
    assert later.get("activityUnknown") is True and "idleSince" not in later
    assert kube.event_reasons("cml-shape").count("CMLActivityUnknown") == 1
    assert state_of(aws, kube.get("cml-shape")["status"]["instanceId"]) == "running"

    sim.configure(prefix, odd_shape=False)  # readable again: the clock starts at that look
    wait_for(lambda: kube.get("cml-shape")["status"]["cml"].get("idleSince"), 60, what="the idle clock to start")
    assert "activityUnknown" not in kube.get("cml-shape")["status"]["cml"]
