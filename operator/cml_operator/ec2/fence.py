"""The fence on mutating EC2 calls: only a replica sure that it leads may change EC2.

With leader election, another replica may take the Lease over once it has seen the same
record for a lease duration, and the earliest record it can see is the one the leader's last
renewal wrote, which happens after that renewal was *sent*. So a leader that stops mutating at
``renewal sent + renew deadline`` stops ``lease duration - renew deadline`` seconds (5 s with the
defaults) before any other replica could act. The elector moves the deadline after every renewal
and closes the fence at once when it sees another holder; the EC2 client asks the fence before
every mutating request, first sends and botocore's retries alike, and counts the calls in flight
so a stopping leader can drain them before it releases the Lease.

Without leader election the fence is always open. Pure threading: EC2 calls run in worker threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .exceptions import IntegrationException

#: EC2 actions that only read; every other action changes something and is fenced.
READ_ONLY_PREFIXES = ("Describe", "Get", "List")


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_ONLY_PREFIXES)


class NotLeadingException(IntegrationException):
    """A mutating EC2 call refused because this replica is not sure it still leads."""

    default_retryable = True


class MutationFence:
    """Admits mutating EC2 calls until a deadline (monotonic seconds) and counts those in flight."""

    def __init__(self, deadline: float = math.inf, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = deadline
        self._accepting = True
        self._why = "this replica does not lead"
        self._in_flight = 0
        self._changed = threading.Condition()

    @classmethod
    def closed(cls, clock: Callable[[], float] = time.monotonic) -> MutationFence:
        """A fence for a replica that leads only once the elector says so."""
        return cls(deadline=-math.inf, clock=clock)

    def extend(self, until: float) -> None:
        """A renewal sent at ``until - renew deadline`` succeeded: mutate until ``until``."""
        with self._changed:
            self._deadline = until

    def close(self, why: str) -> None:
        """No mutating request, retries included, until a renewal extends it (another holder, lost lease)."""
        with self._changed:
            self._deadline = -math.inf
            self._why = why

    def stop_accepting(self, why: str) -> None:
        """No new mutating call; those in flight may still retry until the deadline (draining)."""
        with self._changed:
            self._accepting = False
            self._why = why

    def open_for(self) -> float:
        """Seconds left before the deadline (negative once passed)."""
        with self._changed:
            return self._deadline - self._clock()

    @property
    def in_flight(self) -> int:
        with self._changed:
            return self._in_flight

    def _refusal(self, operation: str, region: str | None) -> NotLeadingException:
        return NotLeadingException(f"{operation} not sent: {self._why}", code="NotLeading",
                                   operation=operation, region=region)

    def check_send(self, operation: str, region: str | None = None) -> None:
        """Before each HTTP attempt of a mutating call: raise if the deadline has passed."""
        with self._changed:
            if self._clock() >= self._deadline:
                raise self._refusal(operation, region)

    @contextmanager
    def admit(self, operation: str, region: str | None = None) -> Iterator[None]:
        """Hold one mutating call in flight; raise NotLeadingException if it may not start."""
        with self._changed:
            if not self._accepting or self._clock() >= self._deadline:
                raise self._refusal(operation, region)
            self._in_flight += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Stop admitting calls and wait up to ``timeout`` seconds for those in flight; True if none is left."""
        self.stop_accepting("this replica is stopping")
        with self._changed:
            return self._changed.wait_for(lambda: self._in_flight == 0, timeout=max(0.0, timeout))
