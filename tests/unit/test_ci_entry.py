"""``.ci/run`` runs the whole suite whatever the caller's environment says.

Checked with make's own dry run (``MAKEFLAGS=n``): make prints the pytest
command it would run and runs nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def pytest_command_of_ci_run(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ARGS", "MAKEFLAGS", "MAKELEVEL", "TEST_WORKERS")}
    result = subprocess.run([str(REPO / ".ci" / "run")], env={**clean, **env}, capture_output=True, text=True,
                            timeout=60, check=True)
    commands = [line for line in result.stdout.splitlines() if " -m pytest" in line]
    # The parallel run, then the make dev/make cluster signal tests on their own (SERIAL_TESTS).
    assert len(commands) == 2, result.stdout
    assert commands[1].split(" -m pytest")[1].strip() == SERIAL_COMMAND
    return commands[0]


#: What `make test` always passes: parallel test workers, the 30 slowest tests, a JUnit report.
CI_OPTIONS = "-n 6 --durations=30 --junitxml=build/junit.xml --ignore=tests/e2e/test_devenv_signals.py"
SERIAL_COMMAND = "-n 0 --junitxml=build/junit-serial.xml tests/e2e/test_devenv_signals.py"


def test_an_inherited_pytest_args_cannot_narrow_the_ci_run():
    command = pytest_command_of_ci_run(MAKEFLAGS="n", PYTEST_ARGS="tests/unit -k nothing")
    assert command.split(" -m pytest")[1].strip() == CI_OPTIONS


def test_pytest_args_passed_down_through_makeflags_cannot_narrow_it_either():
    command = pytest_command_of_ci_run(MAKEFLAGS="n -- PYTEST_ARGS=tests/unit")
    assert command.split(" -m pytest")[1].strip() == CI_OPTIONS


def test_the_ci_run_lists_the_slowest_tests_and_writes_a_junit_report():
    options = pytest_command_of_ci_run(MAKEFLAGS="n").split(" -m pytest")[1].split()
    assert "--durations=30" in options and "--junitxml=build/junit.xml" in options
    assert options[options.index("-n") + 1] == "6"
    assert "build/" in (REPO / ".gitignore").read_text().splitlines()  # the report is never committed


def test_the_dry_run_does_show_pytest_args_when_make_is_called_directly():
    # The check above could pass by accident if the dry run never printed the arguments.
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "TEST_WORKERS")}
    result = subprocess.run(["make", "-n", "test", "PYTEST_ARGS=tests/unit"], cwd=REPO, env=clean,
                            capture_output=True, text=True, timeout=60, check=True)
    assert f"-m pytest {CI_OPTIONS} tests/unit" in result.stdout
