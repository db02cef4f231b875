"""`make dev` and `make cluster` stop cleanly on Ctrl-C, a second Ctrl-C, SIGTERM and SIGHUP.

Each test runs the real make target in its own session (as a terminal would), sends the
signals the way they arrive in life (Ctrl-C goes to the whole foreground process group;
`kill` goes to make, which forwards SIGTERM to its child), and then checks that make
exited and that no process it started (etcd, kube-apiserver, moto_server, the operator)
is left. Processes are tracked by pid and start time, so a reused pid is not mistaken
for a survivor, and the test first checks it saw the processes it expects, so the
"nothing left" check cannot pass by having watched nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import wait_for

REPO = Path(__file__).resolve().parents[2]
# `make dev` writes .dev/ in the repository: one test worker runs them all, one at a time.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("repo-dev-dir")]
#: moto as tests/support/motoserver.py runs it (its own module, or moto's console script before).
MOTO = "tests.support.motoserver|moto_server"


@dataclass(frozen=True)
class Proc:
    pid: int
    start_time: int
    command: str

    def alive(self) -> bool:
        info = _stat(self.pid)
        return info is not None and info[2] == self.start_time and info[1] != "Z"


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of pid, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> set[Proc]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            children.setdefault(info[0], []).append(int(entry.name))
    found, todo = set(), list(children.get(root, []))
    while todo:
        pid = todo.pop()
        info = _stat(pid)
        if info is not None:
            found.add(Proc(pid, info[2], _command(pid)))
            todo += children.get(pid, [])
    return found


@dataclass
class MakeRun:
    """`make <target>` in its own session, its output collected, its descendants tracked."""

    target: str
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    seen: set[Proc] = field(default_factory=set)
    _stop_tracking: threading.Event = field(default_factory=threading.Event)

    def start(self) -> MakeRun:
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        # These tests are about stopping, not EC2's clock: the test timings keep make dev's Ready quick
        # (its default, the dev timings, add about a minute of pending and initializing).
        env.setdefault("CML_EC2_TIMING", "test")
        # The check at the end is about the kubeconfig this run writes: start without one from before.
        (REPO / ".dev" / "kubeconfig").unlink(missing_ok=True)
        self.process = subprocess.Popen(["make", "--no-print-directory", self.target], cwd=REPO, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._track, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def _track(self) -> None:
        assert self.process is not None
        while not self._stop_tracking.is_set() and self.process.poll() is None:
            self.seen |= descendants(self.process.pid)
            time.sleep(0.1)

    def printed(self, text: str) -> bool:
        return any(text in line for line in self.output)

    def saw(self, *names: str) -> bool:
        """Whether a process whose command line holds each name (or one of its |-separated forms) was seen."""
        return all(any(form in proc.command for proc in self.seen for form in name.split("|")) for name in names)

    def python_child(self) -> int:
        """The pid of the Python program make runs (make's direct child)."""
        assert self.process is not None
        (child,) = [p.pid for p in descendants(self.process.pid) if _stat(p.pid) and _stat(p.pid)[0] == self.process.pid]
        return child

    def signal_group(self, sig: signal.Signals) -> None:
        """What a terminal does on Ctrl-C / hangup: signal the whole foreground process group."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):  # all of them already gone: fine
            os.killpg(self.process.pid, sig)

    def signal_make(self, sig: signal.Signals) -> None:
        """What `kill <pid of make>` does; make forwards SIGTERM to its child."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        finally:
            self._stop_tracking.set()

    def survivors(self) -> list[Proc]:
        return [proc for proc in self.seen if proc.alive()]

    def kill_all(self) -> None:
        """Last resort for a failed test: leave nothing behind on the machine."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for proc in self.survivors():
            os.kill(proc.pid, signal.SIGKILL)


@pytest.fixture()
def make_run(control_plane_bin_dir: Path) -> Iterator[Callable[[str], MakeRun]]:
    runs: list[MakeRun] = []

    def start(target: str) -> MakeRun:
        runs.append(MakeRun(target).start())
        return runs[-1]

    yield start
    for run in runs:
        run.kill_all()


def _assert_stopped_cleanly(run: MakeRun, timeout: float = 90) -> None:
    try:
        run.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"make {run.target} still running {timeout:.0f}s after the signals; output:\n"
                    + "".join(run.output[-40:]))
    wait_for(lambda: not run.survivors(), 10, what="every process make started to be gone")
    assert not (REPO / ".dev" / "kubeconfig").exists(), "the kubeconfig written for the session was left behind"


def test_make_dev_stops_on_two_ctrl_c_in_a_row_and_leaves_nothing(make_run: Callable[[str], MakeRun]) -> None:
    run = make_run("dev")
    wait_for(lambda: run.printed("Press Ctrl-C") or run.process.poll() is not None, 300, interval=0.5,
             what="make dev to be ready")
    assert run.printed("Press Ctrl-C"), "".join(run.output[-40:])
    assert run.saw("etcd", "kube-apiserver", MOTO, "cml_operator"), sorted(p.command for p in run.seen)

    run.signal_group(signal.SIGINT)
    time.sleep(0.2)
    run.signal_group(signal.SIGINT)  # the impatient second Ctrl-C, while it is stopping

    _assert_stopped_cleanly(run)
    assert run.printed("SIGINT received") and run.printed("==> stopping"), "".join(run.output[-20:])


def test_make_dev_stops_on_sigterm_to_make_and_its_child(make_run: Callable[[str], MakeRun]) -> None:
    run = make_run("dev")
    wait_for(lambda: run.printed("Press Ctrl-C") or run.process.poll() is not None, 300, interval=0.5,
             what="make dev to be ready")
    assert run.saw("etcd", "kube-apiserver", MOTO, "cml_operator"), sorted(p.command for p in run.seen)

    child = run.python_child()
    run.signal_make(signal.SIGTERM)  # make forwards it to its child ...
    os.kill(child, signal.SIGTERM)   # ... and a supervisor signals the child too: two in a row

    _assert_stopped_cleanly(run)


def test_make_cluster_stops_on_sighup_then_ctrl_c(make_run: Callable[[str], MakeRun]) -> None:
    run = make_run("cluster")
    wait_for(lambda: run.printed("Press Ctrl-C") or run.process.poll() is not None, 300, interval=0.5,
             what="make cluster to be ready")
    assert run.saw("etcd", "kube-apiserver"), sorted(p.command for p in run.seen)

    run.signal_group(signal.SIGHUP)  # the terminal closed
    time.sleep(0.1)
    run.signal_group(signal.SIGINT)

    _assert_stopped_cleanly(run)
    assert run.printed("Stopped."), "".join(run.output[-20:])


def test_make_cluster_stops_on_ctrl_c_during_start_up(make_run: Callable[[str], MakeRun]) -> None:
    run = make_run("cluster")
    wait_for(lambda: run.saw("etcd") or run.process.poll() is not None, 300, interval=0.1,
             what="make cluster to start etcd")
    assert run.saw("etcd"), "".join(run.output[-40:])

    run.signal_group(signal.SIGINT)
    time.sleep(0.1)
    run.signal_group(signal.SIGINT)

    _assert_stopped_cleanly(run)
    assert run.printed("Stopped"), "".join(run.output[-20:])  # "Stopped." or "Stopped during start-up"
