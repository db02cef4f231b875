"""The CML simulator's tie to the EC2 world: which instance is behind a worker's address, and is it running.

A real controller lives on its instance: it answers only while the instance is
``running``, boots for a while after every start, and a replacement instance is a
new controller (new sessions, no licence). The simulator asks the EC2 endpoint
(moto, or the fault proxy in front of it) for the truth:

- a worker's *door* is a TCP port of its own (``https://127.0.0.1:<port>/<prefix>/``,
  stable like a DNS name); it listens only while the worker's instance runs, so a
  stopped or terminated instance refuses connections, and connections still open
  are cut when it stops;
- the instance behind a door is the one tagged ``cml.dev/worker=<namespace>/<name>``
  (the tag the operator writes), ``name`` being the door's bound worker (by default
  the prefix itself);
- every request asks EC2 for that instance's state again, so an answer after a stop
  is impossible even in the moment before the door closes.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

TAG_WORKER = "cml.dev/worker"  # the operator's tag: "<namespace>/<name>"
RUNNING = "running"


@dataclass(frozen=True)
class InstanceSeen:
    instance_id: str
    state: str
    worker: str  # the cml.dev/worker tag value
    launched: str  # LaunchTime (ISO), to prefer the newest of several


class Ec2World:
    """Reads instance states from an EC2 endpoint with boto3 (in a thread: boto3 is synchronous)."""

    def __init__(self, endpoint: str, region: str) -> None:
        import boto3
        from botocore.config import Config

        from tests.support.processes import FAKE_AWS_ENV

        self._client = boto3.client(
            "ec2", region_name=region, endpoint_url=endpoint,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10))

    async def workers(self) -> list[InstanceSeen]:
        """Every instance carrying the worker tag (all states)."""
        return await asyncio.to_thread(self._describe, [{"Name": "tag-key", "Values": [TAG_WORKER]}], None)

    async def state_of(self, instance_id: str) -> str | None:
        """The instance's state now; None when EC2 no longer knows it."""
        seen = await asyncio.to_thread(self._describe, None, [instance_id])
        return seen[0].state if seen else None

    def _describe(self, filters: list[dict[str, Any]] | None, ids: list[str] | None) -> list[InstanceSeen]:
        kwargs: dict[str, Any] = {"Filters": filters} if filters else {"InstanceIds": ids}
        found: list[InstanceSeen] = []
        try:
            for page in self._client.get_paginator("describe_instances").paginate(**kwargs):
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        tags = {t["Key"]: t.get("Value", "") for t in raw.get("Tags", []) or []}
                        found.append(InstanceSeen(raw["InstanceId"], raw["State"]["Name"], tags.get(TAG_WORKER, ""),
                                                  str(raw.get("LaunchTime", ""))))
        except Exception as error:  # noqa: BLE001 - an unknown id (moto reset) is "gone"; anything else too
            if "NotFound" in str(error) or "Malformed" in str(error):
                return []
            raise
        return found


def pick_instance(seen: list[InstanceSeen], worker_name: str) -> InstanceSeen | None:
    """The instance behind a worker: a live one (newest first), else the newest of any state."""
    mine = [s for s in seen if s.worker.rsplit("/", 1)[-1] == worker_name]
    if not mine:
        return None
    live = [s for s in mine if s.state not in ("terminated", "shutting-down")]
    return max(live or mine, key=lambda s: s.launched)


class Door:
    """One worker's port: bound all the time (so nobody else takes it), listening only while it runs."""

    def __init__(self) -> None:
        self._placeholder: socket.socket | None = self._bind(0)
        self.port: int = self._placeholder.getsockname()[1]
        self.site: Any = None  # aiohttp SockSite while open

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # bound, not listening: a connect is refused
        return sock

    @property
    def is_open(self) -> bool:
        return self.site is not None

    async def open(self, runner: Any, ssl_context: Any) -> None:
        from aiohttp import web

        if self.site is not None:
            return
        sock, self._placeholder = self._placeholder or self._bind(self.port), None
        self.site = web.SockSite(runner, sock, ssl_context=ssl_context)
        await self.site.start()

    async def close(self, runner: Any) -> None:
        if self.site is None:
            return
        site, self.site = self.site, None
        await site.stop()  # closes the listening socket
        self._placeholder = self._bind(self.port)
        cut_connections(runner, self.port)


def cut_connections(runner: Any, port: int | None = None) -> None:
    """Abort open (kept-alive) connections, all or those to one local port: what a reboot does to them."""
    server = runner.server
    for handler in list(getattr(server, "connections", []) if server is not None else []):
        transport = handler.transport
        if transport is None:
            continue
        sockname = transport.get_extra_info("sockname")
        if port is None or (sockname and sockname[1] == port):
            transport.abort()
