"""The operator and the fault proxy as real processes, for end-to-end tests and benchmarks."""

from __future__ import annotations

import atexit
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.controlplane import free_ports, parent_death_signal
from tests.support.ec2iam import DEFAULT_POLICIES, OPERATOR_ACCESS_KEY
from tests.support.faultproxy import FaultRule, KillRule, RewriteRule

REPO = Path(__file__).resolve().parents[2]
#: Dummy credentials moto accepts; never real ones.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


#: The operator's own dummy key: the fault proxy evaluates calls signed with it against the shipped
#: IAM policy (tests/support/ec2iam.py); the tests' setup clients and the user's key stay unrestricted.
OPERATOR_AWS_ENV = {**FAKE_AWS_ENV, "AWS_ACCESS_KEY_ID": OPERATOR_ACCESS_KEY}


class ProcessExited(RuntimeError):
    """A process a test relies on has exited. ``wait_for`` never swallows it: no point polling on."""


#: Checks every wait_for runs before each poll (see ``guarded_by``); the e2e fixtures add one per test.
_guards: list[Callable[[], None]] = []


@contextmanager
def guarded_by(check: Callable[[], None]) -> Iterator[None]:
    """While inside, every ``wait_for`` runs ``check`` before each poll and stops at what it raises.

    The e2e operator fixture guards each test with "no operator of this test exited unasked",
    so a crash fails the test at once, naming the crash, instead of as a timeout minutes later.
    """
    _guards.append(check)
    try:
        yield
    finally:
        _guards.remove(check)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition",
             fatal: Callable[[], None] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds.

    Errors from ``predicate`` are retried (the last one is reported on timeout), except
    ``ProcessExited``, which ends the wait at once. ``fatal`` (say ``operator.check_alive``)
    runs before every poll and anything it raises ends the wait at once too, as do the
    checks of every active ``guarded_by``.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    checks = [*_guards, *([fatal] if fatal is not None else [])]
    while True:
        for check in checks:
            check()
        try:
            value = predicate()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}"
                       + (f" (last error: {last_error!r})" if last_error else ""))


def _stop(process: subprocess.Popen, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@dataclass
class FaultProxyProcess:
    """``python -m tests.support.faultproxy`` in front of ``upstream``, driven over HTTP."""

    upstream: str
    #: Seeds the proxy's random choices (probabilistic faults); default: $CML_FAULT_SEED, else random.
    seed: int | None = None
    process: subprocess.Popen | None = field(default=None, init=False)
    port: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxyProcess:
        if self.seed is None:
            self.seed = int(os.environ.get("CML_FAULT_SEED") or random.randrange(2**32))
        # Printed so a run that failed on a random fault can be replayed with CML_FAULT_SEED.
        print(f"fault proxy seed {self.seed} (replay with CML_FAULT_SEED={self.seed})", flush=True)
        port_file = Path(tempfile.mkstemp(prefix="faultproxy-port-")[1])
        port_file.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.faultproxy", "--upstream", self.upstream, "--port-file",
             str(port_file), "--seed", str(self.seed)],
            cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=parent_death_signal(),
        )
        atexit.register(self.stop)
        wait_for(lambda: port_file.read_text().strip(), 20, what="the fault proxy to listen")
        self.port = int(port_file.read_text())
        port_file.unlink()
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def set_faults(self, *rules: FaultRule) -> None:
        self._request("PUT", "/__faults__", {"rules": [asdict(rule) for rule in rules]})

    def set_rewrites(self, *rules: RewriteRule) -> None:
        self._request("PUT", "/__rewrites__", {"rules": [asdict(rule) for rule in rules]})

    def set_kills(self, *rules: KillRule) -> None:
        self._request("PUT", "/__kills__", {"rules": [asdict(rule) for rule in rules]})

    def clear_faults(self) -> None:
        self._request("DELETE", "/__faults__")

    def calls(self) -> dict[str, dict[str, int]]:
        return self._request("GET", "/__stats__")["calls"]

    def count(self, action: str, outcome: str | None = None) -> int:
        outcomes = self.calls().get(action, {})
        return sum(outcomes.values()) if outcome is None else outcomes.get(outcome, 0)

    def reset_counts(self) -> None:
        """Zero the counters and the call log."""
        self._request("DELETE", "/__stats__")

    def call_log(self, since: int = 0) -> tuple[list[tuple[float, str, str, list[str], str]], int]:
        """(time.monotonic() in the proxy, action, outcome, filter names, User-Agent) of each call after the first
        ``since`` since reset_counts, and the number logged in all (the next ``since``)."""
        answer = self._request("GET", f"/__log__?since={since}")
        return [tuple(entry) for entry in answer["calls"]], answer["logged"]

    def clear_tokens(self) -> None:
        """Forget the RunInstances ClientTokens the proxy remembers."""
        self._request("DELETE", "/__tokens__")

    def set_timing(self, timing: str) -> None:
        """EC2's clock: "off" (moto's instant world), "test", "dev" or "pending=1,stopping=2,..."."""
        self._request("PUT", "/__timing__", {"timing": timing})

    def reset_timing(self) -> None:
        """Forget every instance's phase (moto was reset)."""
        self._request("DELETE", "/__timing__")

    def set_iam(self, cluster_id: str, policies: Sequence[str] = DEFAULT_POLICIES,
                access_keys: Sequence[str] = (OPERATOR_ACCESS_KEY,)) -> None:
        """Evaluate the operator key's calls against ``policies`` (CLUSTER_ID := ``cluster_id``); no keys: off."""
        self._request("PUT", "/__iam__", {"access_keys": list(access_keys), "policies": list(policies),
                                          "cluster_id": cluster_id})


def _port_taken(log: str) -> bool:
    return "address already in use" in log.lower()


@dataclass
class OperatorProcess:
    """``python -m cml_operator run`` against a kubeconfig and an EC2 endpoint."""

    kubeconfig: Path
    ec2_endpoint: str
    namespaces: Sequence[str] = ()
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    #: The interpreter to run it with (default: this one); the benchmark uses a runtime-only venv.
    python: str = sys.executable
    #: The module run with ``python -m`` (the benchmark's memory profile wraps the operator).
    module: str = "cml_operator"
    process: subprocess.Popen | None = field(default=None, init=False)
    metrics_port: int = field(default=0, init=False)
    liveness_port: int = field(default=0, init=False)
    #: Set by kill(), stop() and wait_exit(): the test ended it (or expects it to end), not a crash.
    exit_expected: bool = field(default=False, init=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    #: Short intervals so tests see convergence in seconds.
    FAST_ARGS = ("--poll-interval", "1", "--fast-interval", "0.5", "--resync-interval", "3",
                 "--slow-recheck", "4", "--max-retry-delay", "2")

    def command(self) -> list[str]:
        command = [self.python, "-m", self.module, "run", "--metrics-port", str(self.metrics_port),
                   "--liveness-port", str(self.liveness_port)]
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        return command + list(self.args)

    #: How often start() tries fresh ports when the ones picked were taken meanwhile.
    PORT_ATTEMPTS = 3

    def start(self, wait: bool = True) -> OperatorProcess:
        """Launch it; with ``wait``, until /healthz answers.

        The operator's flags give 0 the meaning "disabled", so it cannot bind port 0 and
        report back: ports are picked here, and if another process took one in the meantime
        (the operator exits with "address already in use"), start() tries fresh ones.
        """
        for attempt in range(1, self.PORT_ATTEMPTS + 1):
            self._launch()
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except ProcessExited:
                if attempt == self.PORT_ATTEMPTS or not _port_taken(self.logs()[self._log_offset:]):
                    raise
        return self

    def _launch(self) -> None:
        # Distinct: with one port for both, /healthz was answered by the metrics server and the
        # operator died a moment later when Kopf's liveness endpoint could not bind.
        self.metrics_port, self.liveness_port = free_ports(2)
        self.exit_expected = False
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="cml-operator-", suffix=".log")[1])
        self._log_offset = len(self.logs())
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "CML_"))}
        env.update(OPERATOR_AWS_ENV)
        # STS (CMLAccounts' AssumeRole) goes to the same stand-in, through the same proxy.
        env.update({"KUBECONFIG": str(self.kubeconfig), "AWS_ENDPOINT_URL_EC2": self.ec2_endpoint,
                    "AWS_ENDPOINT_URL_STS": self.ec2_endpoint,
                    "PYTHONUNBUFFERED": "1"})
        env.update(self.env)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=parent_death_signal())
        log.close()
        atexit.register(self.kill)  # never outlive the test run, even when it is killed

    def check_alive(self) -> None:
        """Raise ``ProcessExited`` (with the log's tail) if it exited without the test asking it to."""
        if self.process is not None and not self.exit_expected and self.process.poll() is not None:
            raise ProcessExited(f"the operator exited (code {self.process.returncode}) during the test; "
                                f"log tail:\n{self.logs()[-3000:]}")

    def wait_ready(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return response.status == 200

        wait_for(healthy, timeout, what="the operator's /healthz", fatal=self.check_alive)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer work, like a node dying."""
        self.exit_expected = True
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.exit_expected = True
        if self.process is not None:
            _stop(self.process, timeout=20)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_exit(self, timeout: float = 30) -> int:
        """Wait for an exit the test caused some other way (a kill rule at the fault proxy)."""
        assert self.process is not None
        self.exit_expected = True
        return self.process.wait(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
