"""The CML simulator's state: per worker address what a test controls, per instance a controller.

``SimWorker`` (one per path prefix) holds what a test sets and reads: labs, injected
failures, credentials, licence behaviour, the calls counted. ``Controller`` (one per
EC2 instance id; per prefix when the simulator runs without an EC2 world) holds what
lives on the instance: its boot, its sessions, its licence registration. A replaced
instance is a new controller; a stopped and started one keeps its licence (it is on
disk) but loses its sessions and boots again.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
import ssl
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cmlsim_world import RUNNING, Door, Ec2World, InstanceSeen, cut_connections, pick_instance

DEFAULT_USERNAME, DEFAULT_PASSWORD = "admin", "cml-sim-password"
ACTIVE = ("STARTED", "QUEUED", "BOOTED")


@dataclass
class SimWorker:
    """What a test controls for one worker address (PATCH /workers/<prefix>)."""

    ready_at: float = 0.0  # not ready before this, whatever the boot (``ready_after``)
    boot_seconds: float = 0.0  # not ready for this long after every start (a change applies to a boot under way)
    token_seconds: float = 3600.0  # a session token's lifetime
    worker_name: str = ""  # the CMLWorker behind this address (default: the prefix)
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    labs: dict[str, str] = field(default_factory=dict)  # id -> state
    running_nodes: int = 0
    fail_status: int = 0
    fail_count: int = 0
    delay: float = 0.0
    registration_seconds: float = 1.0
    refused_tokens: list[str] = field(default_factory=list)
    deregister_fail_count: int = 0
    #: True: lab tiles without ``state`` and computes without ``dominfo`` (a reply in another shape).
    odd_shape: bool = False
    calls: Counter = field(default_factory=Counter)  # "METHOD path" -> answered
    refused: Counter = field(default_factory=Counter)  # "METHOD path" -> cut off: the instance was not running
    peers: set[tuple[str, int]] = field(default_factory=set)  # client (host, port) of each connection used


@dataclass
class Controller:
    """The CML controller on one instance."""

    instance_id: str
    booted_at: float = 0.0  # monotonic time of the last start; ready once its worker's boot_seconds passed
    running: bool = False
    starts: int = 0
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (monotonic)
    registration: str = "NOT_REGISTERED"
    authorization: str = "EVAL"
    registration_done_at: float | None = None
    registration_outcome: str = "COMPLETED"

    def boot(self) -> None:
        """A start: sessions are gone, the API is not ready until the boot is over."""
        self.running, self.starts = True, self.starts + 1
        self.booted_at = time.monotonic()
        self.tokens.clear()

    def ready(self, worker: SimWorker) -> bool:
        now = time.monotonic()
        return self.running and now >= self.booted_at + worker.boot_seconds and now >= worker.ready_at

    def halt(self) -> None:
        self.running = False
        self.tokens.clear()

    def issue_token(self, lifetime: float) -> str:
        token = uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + lifetime
        return token

    def token_valid(self, token: str) -> bool:
        expiry = self.tokens.get(token)
        if expiry is not None and time.monotonic() >= expiry:
            del self.tokens[token]
            return False
        return expiry is not None

    def tick(self) -> None:
        if self.registration_done_at is not None and time.monotonic() >= self.registration_done_at:
            self.registration = self.registration_outcome
            self.authorization = "IN_COMPLIANCE" if self.registration == "COMPLETED" else "EVAL"
            self.registration_done_at = None


class Simulator:
    """Every worker address, every controller, and (optionally) the EC2 world they live in."""

    def __init__(self, context: ssl.SSLContext, cert_path: Path, default_ready_after: float = 0.0,
                 world: Ec2World | None = None, boot_seconds: float = 0.0, token_seconds: float = 3600.0) -> None:
        self.context = context
        self.cert_path = cert_path
        self.default_ready_after = default_ready_after
        self.world = world
        self.boot_seconds = boot_seconds
        self.token_seconds = token_seconds
        self.workers: dict[str, SimWorker] = {}
        self.controllers: dict[str, Controller] = {}
        self.current: dict[str, str] = {}  # prefix -> instance id (last seen behind it)
        self.doors: dict[str, Door] = {}
        self.runner: Any = None  # the aiohttp runner the doors serve

    # ------------------------------------------------------------ addresses and settings

    def worker(self, prefix: str) -> SimWorker:
        if prefix not in self.workers:
            self.workers[prefix] = SimWorker(ready_at=time.monotonic() + self.default_ready_after,
                                             boot_seconds=self.boot_seconds, token_seconds=self.token_seconds,
                                             worker_name=prefix)
        return self.workers[prefix]

    def configure(self, prefix: str, changes: dict[str, Any]) -> SimWorker:
        worker = self.worker(prefix)
        controller = self.controller_of(prefix)
        for key, value in changes.items():
            if key == "ready_after":
                worker.ready_at = time.monotonic() + float(value)
            elif key in ("password", "username"):
                setattr(worker, key, value)
                if controller is not None:
                    controller.tokens.clear()  # CML invalidates sessions when credentials change
            elif key == "expire_tokens":  # every session ends now (as at token expiry)
                if controller is not None:
                    controller.tokens.clear()
            elif key == "license":
                if controller is None:
                    raise ValueError("no controller yet behind this address to set a licence on")
                controller.registration = value.get("registration", controller.registration)
                controller.authorization = value.get("authorization", controller.authorization)
            elif hasattr(worker, key) and key not in ("calls", "refused", "peers"):
                setattr(worker, key, value)
            else:
                raise ValueError(f"unknown setting {key!r}")
        return worker

    def controller_of(self, prefix: str) -> Controller | None:
        """The controller last seen behind the address (None: no instance yet)."""
        if self.world is None:
            return self._static(prefix)
        instance_id = self.current.get(prefix)
        return self.controllers.get(instance_id) if instance_id else None

    def _static(self, prefix: str) -> Controller:
        """Without an EC2 world every address has one controller that is always running."""
        key = f"static:{prefix}"
        if key not in self.controllers:
            controller = self.controllers[key] = Controller(key)
            controller.boot()
            controller.booted_at = -math.inf  # up since forever: boot_seconds does not apply
        return self.controllers[key]

    def view(self, prefix: str) -> dict[str, Any]:
        worker = self.worker(prefix)
        controller = self.controller_of(prefix)
        if controller is not None:
            controller.tick()
        return {
            "ready": controller is not None and controller.ready(worker),
            "username": worker.username, "labs": dict(worker.labs), "running_nodes": worker.running_nodes,
            "calls": dict(worker.calls), "refused": dict(worker.refused),
            "connections": len(worker.peers), "fail_status": worker.fail_status, "fail_count": worker.fail_count,
            "delay": worker.delay,
            "license": ({"registration": controller.registration, "authorization": controller.authorization}
                        if controller else {"registration": "NOT_REGISTERED", "authorization": "EVAL"}),
            "instance_id": controller.instance_id if controller and self.world else None,
            "running": bool(controller and controller.running), "starts": controller.starts if controller else 0,
            "endpoint": self.endpoint_of(prefix),
        }

    def endpoint_of(self, prefix: str) -> str | None:
        door = self.doors.get(prefix)
        return f"https://127.0.0.1:{door.port}/{prefix}/" if door else None

    # ------------------------------------------------------------ the EC2 world

    def door(self, prefix: str) -> Door:
        if prefix not in self.doors:
            self.doors[prefix] = Door()
        return self.doors[prefix]

    async def answering(self, prefix: str) -> Controller | None:
        """The controller that answers a request now, asking EC2 first; None: the instance is not running."""
        if self.world is None:
            return self._static(prefix)
        if "*" in self.worker(prefix).worker_name:
            controller = self._observe_shared(prefix, await self.world.workers())
            return controller if controller.running else None
        instance_id = self.current.get(prefix)
        state = await self.world.state_of(instance_id) if instance_id else None
        if state != RUNNING:
            await self.refresh()  # a replacement may be behind the address by now
            instance_id = self.current.get(prefix)
            state = await self.world.state_of(instance_id) if instance_id else None
        if instance_id is None:
            return None
        controller = self._observe(prefix, instance_id, state)
        return controller if controller.running else None

    async def refresh(self) -> None:
        """One look at every tagged instance: who is behind each door, who runs, who booted; doors follow."""
        if self.world is None or not self.doors:
            return
        seen = await self.world.workers()
        for prefix, door in list(self.doors.items()):
            if "*" in self.worker(prefix).worker_name:
                shared = self._observe_shared(prefix, seen)
                await (door.open(self.runner, self.context) if shared.running else door.close(self.runner))
                continue
            instance = pick_instance(seen, self.worker(prefix).worker_name)
            if instance is not None:
                self._observe(prefix, instance.instance_id, instance.state)
            controller = self.controller_of(prefix)
            if controller is not None and controller.running and instance is not None:
                await door.open(self.runner, self.context)
            else:
                await door.close(self.runner)

    def _observe_shared(self, prefix: str, seen: list[InstanceSeen]) -> Controller:
        """One controller behind several workers (a pattern such as ``pool-*``): up while any of them runs."""
        pattern = self.worker(prefix).worker_name
        running = any(fnmatch.fnmatchcase(s.worker.rsplit("/", 1)[-1], pattern) and s.state == RUNNING for s in seen)
        key = self.current[prefix] = f"shared:{prefix}"
        controller = self.controllers.setdefault(key, Controller(key))
        if running and not controller.running:
            controller.boot()
        elif not running and controller.running:
            controller.halt()
        return controller

    def _observe(self, prefix: str, instance_id: str, state: str | None) -> Controller:
        if self.current.get(prefix) != instance_id:
            old = self.controllers.get(self.current.get(prefix, ""))
            if old is not None:
                old.halt()
            self.current[prefix] = instance_id
        controller = self.controllers.setdefault(instance_id, Controller(instance_id))
        if state == RUNNING and not controller.running:
            controller.boot()
        elif state != RUNNING and controller.running:
            controller.halt()
            door = self.doors.get(prefix)
            if door is not None and self.runner is not None:
                cut_connections(self.runner, door.port)
        return controller

    async def watch(self, interval: float) -> None:
        """Keep the doors in step with EC2 (requests check again themselves)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - EC2 away for a moment (moto reset): next round
                pass
            await asyncio.sleep(interval)
