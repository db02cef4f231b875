"""`make dev` / `make cluster` signal handling: bursts of signals never deadlock or cut the teardown short.

Each test runs the handler in a child interpreter, so pytest's own signal handlers stay untouched
and a deadlock shows up as a timeout instead of hanging the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_a_burst_of_signals_while_waiting_stops_once_and_the_teardown_runs_to_the_end() -> None:
    proc = _run("""
        import os, signal, threading, time
        from tests.cluster.stopping import StopSignals

        stop = StopSignals(poll_interval=0.05).install()

        def burst():
            time.sleep(0.3)
            for sig in [signal.SIGINT, signal.SIGTERM, signal.SIGHUP] * 50:
                os.kill(os.getpid(), sig)

        threading.Thread(target=burst).start()
        first = stop.wait()
        try:
            pass
        finally:
            stop.shield()
            for step in range(20):          # a teardown that takes a while, signals still arriving
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
            print("teardown finished", signal.Signals(first).name, len(stop.received) >= 21)
    """)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[:2] == ["teardown", "finished"] and words[3] == "True", proc.stdout
    assert words[2] in ("SIGINT", "SIGTERM", "SIGHUP")  # pending signals are delivered lowest number first


def test_the_first_signal_interrupts_start_up_and_later_ones_do_not_interrupt_its_cleanup() -> None:
    proc = _run("""
        import os, signal, time
        from tests.cluster.stopping import StopRequested, StopSignals

        stop = StopSignals().install()
        try:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)              # a slow start-up: must be cut short
                print("start-up was not interrupted")
            finally:
                for _ in range(5):          # cleanup of what was started; signals keep coming
                    os.kill(os.getpid(), signal.SIGHUP)
                    time.sleep(0.01)
                print("cleanup finished")
        except StopRequested as exc:
            print("stopped by", signal.Signals(exc.signum).name, "after", len(stop.received))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["cleanup finished", "stopped by SIGTERM after 6"]


def test_a_signal_before_wait_is_not_lost() -> None:
    proc = _run("""
        import os, signal
        from tests.cluster.stopping import StopSignals

        stop = StopSignals().install()
        stop.shield()
        os.kill(os.getpid(), signal.SIGHUP)
        print(signal.Signals(stop.wait()).name)
    """, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "SIGHUP"
