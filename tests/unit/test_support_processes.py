"""The test harness itself: wait_for stops at a dead process at once; ports retried on collision."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import controlplane
from tests.cluster.controlplane import ControlPlane, _duration_seconds
from tests.support.processes import OperatorProcess, ProcessExited, guarded_by, wait_for


def test_wait_for_returns_the_first_truthy_value():
    values = iter([0, None, "", "done"])
    assert wait_for(lambda: next(values), 5, interval=0) == "done"


def test_wait_for_retries_errors_and_names_the_last_one_on_timeout():
    def failing():
        raise ValueError("not yet")

    with pytest.raises(TimeoutError, match="waiting for the thing.*not yet"):
        wait_for(failing, 0.3, interval=0.05, what="the thing")


def test_process_exited_from_the_predicate_ends_the_wait_at_once():
    polls = []

    def dead():
        polls.append(1)
        raise ProcessExited("operator exited")

    with pytest.raises(ProcessExited, match="operator exited"):
        wait_for(dead, 30, interval=0.05)
    assert len(polls) == 1  # not retried like other errors: no second poll


def test_a_fatal_check_ends_the_wait_at_once():
    polls = []

    def fatal():
        raise ProcessExited("gone")

    with pytest.raises(ProcessExited):
        wait_for(lambda: polls.append(1), 30, interval=0.05, fatal=fatal)
    assert polls == []  # the check runs before the first poll


def test_a_guard_applies_to_every_wait_inside_it_and_only_there():
    calls = []

    def guard():
        calls.append(1)
        if len(calls) >= 3:
            raise ProcessExited("crashed meanwhile")

    with guarded_by(guard), pytest.raises(ProcessExited, match="crashed meanwhile"):
        wait_for(lambda: False, 30, interval=0.01)
    assert wait_for(lambda: True, 1) is True  # outside: the guard is gone
    assert len(calls) == 3


def fake_operator(tmp_path: Path, module: str) -> OperatorProcess:
    return OperatorProcess(tmp_path / "kubeconfig", "http://127.0.0.1:9", python=sys.executable,
                           module=f"tests.unit.support_fakes.{module}", log_path=tmp_path / "operator.log")


def test_an_operator_that_crashes_on_start_fails_at_once_with_its_log(tmp_path):
    operator = fake_operator(tmp_path, "crash")
    started = time.monotonic()
    with pytest.raises(ProcessExited, match=r"(?s)code 3.*RuntimeError: boom"):
        operator.start()
    assert time.monotonic() - started < 20  # not the 60 s /healthz deadline
    assert operator.logs().count("boom") == 1  # a crash is not a port collision: no second try


def test_an_operator_whose_port_was_taken_is_started_again_on_fresh_ports(tmp_path):
    operator = fake_operator(tmp_path, "port_taken")
    with pytest.raises(ProcessExited, match="Address already in use"):
        operator.start()
    assert operator.logs().count("Address already in use") == OperatorProcess.PORT_ATTEMPTS


def test_an_exit_the_test_caused_is_not_a_crash(tmp_path):
    operator = fake_operator(tmp_path, "crash")
    operator.start(wait=False)
    operator.wait_exit(10)
    operator.check_alive()  # no ProcessExited: the test said it expected the exit


def test_free_ports_are_distinct_however_many_are_asked_for():
    from tests.support.processes import free_ports

    for _ in range(50):  # free_port() twice in a row returned one port for both here once
        ports = free_ports(2)
        assert len(set(ports)) == 2


@pytest.mark.parametrize(("args", "bound"), [(("get", "ns"), 60), (("delete", "x", "--timeout=240s"), 270),
                                             (("wait", "--timeout=5s"), 60)])
def test_kubectls_process_timeout_is_the_default_or_kubectls_own_timeout_plus_a_margin(tmp_path, monkeypatch, args,
                                                                                      bound):
    plane = ControlPlane()
    plane.bin_dir, plane.dir = tmp_path, tmp_path
    seen = []

    def run(argv, **kwargs):
        seen.append(kwargs["timeout"])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(controlplane.subprocess, "run", run)
    plane.kubectl(*args)
    assert seen == [bound]


@pytest.mark.parametrize(("text", "seconds"), [("240s", 240), ("2m", 120), ("1m30s", 90), ("90", 90), ("1h", 3600),
                                               ("", 0), ("soon", 0)])
def test_kubectl_timeouts_are_read_so_the_process_outlives_kubectls_own_wait(text, seconds):
    # ControlPlane.kubectl gives `delete --wait --timeout=240s` 240 s + a margin, not its 60 s default.
    assert _duration_seconds(text) == seconds
