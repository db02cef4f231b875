"""Stop on Ctrl-C, SIGTERM or SIGHUP, however many arrive, and always finish the teardown.

`make dev` and `make cluster` get signals in bursts: Ctrl-C reaches make and its child
(the terminal signals the whole foreground process group), and make forwards SIGTERM
to its child as well. The handler therefore does the least a signal handler can do:
it appends to a list (no lock, nothing that can re-enter; the old handler called
``threading.Event.set()``, which re-enters the Event's lock when a second signal lands
inside the first handler and deadlocked every process).

The first signal raises :class:`StopRequested` while the program is starting up, so a
slow start can be interrupted; once :meth:`StopSignals.wait` is reached, or once the
first signal was seen, signals are only recorded: the teardown that follows (``finally``
blocks, context managers) is never interrupted halfway and leaves nothing behind.

    with StopSignals() as stop:      # installs the handlers, restores the old ones on exit
        with ControlPlane() as plane:
            ...
            stop.wait()              # returns on the first signal
            ...                      # or, in a finally block: stop.shield() before tearing down
"""

from __future__ import annotations

import signal
import time
from types import FrameType, TracebackType

#: The signals that mean "stop": Ctrl-C, kill/systemd/make, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """Raised once, by the first stop signal that arrives while starting up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Records stop signals; interrupts start-up once; never interrupts the teardown."""

    def __init__(self, poll_interval: float = 0.2) -> None:
        self.received: list[int] = []
        self.poll_interval = poll_interval
        self._interrupt_on_first = True
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.received
        self.received.append(signum)  # list.append takes no Python-level lock: safe to re-enter
        if first and self._interrupt_on_first:
            self._interrupt_on_first = False
            raise StopRequested(signum)

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def install(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def shield(self) -> None:
        """From now on signals are only recorded: call it where the teardown begins."""
        self._interrupt_on_first = False

    def wait(self) -> int:
        """Block until a stop signal arrives (or has arrived); return it. Signals no longer raise."""
        self.shield()
        while not self.received:
            time.sleep(self.poll_interval)  # the handler runs between sleeps; no lock is ever held here
        return self.received[0]

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Handlers stay installed until the interpreter exits: restoring the defaults here
        # would let a late signal kill the exit path (atexit hooks). restore() is for tests.
        self.shield()
