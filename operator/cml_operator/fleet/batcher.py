"""Collect single-key requests for a short window and answer them with one call (Karpenter's batcher).

A batch is sent when no new key arrived for ``idle`` seconds, when the first key
has waited ``max_wait`` seconds, or when ``max_items`` keys are waiting. Every
waiter gets its own answer: the executor returns one result per key, either a
value or an exception for that key alone; an exception from the executor itself
fails every waiter of that batch. Duplicate keys in one window share one slot.
A cancelled waiter does not cancel the batch for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Executes one batch: keys -> {key: value or exception}. Keys missing from the result get ``missing(key)``.
Executor = Callable[[list[K]], Awaitable[Mapping[K, "V | BaseException"]]]


@dataclass(frozen=True)
class BatchSettings:
    idle: float = 0.05
    max_wait: float = 0.5
    max_items: int = 500


class Batcher(Generic[K, V]):
    def __init__(
        self,
        execute: Executor,
        missing: Callable[[K], V | BaseException],
        settings: BatchSettings | None = None,
        *,
        name: str = "batch",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._execute = execute
        self._missing = missing
        self._settings = settings or BatchSettings()
        self._name = name
        self._on_batch = on_batch
        self._pending: dict[K, asyncio.Future[V]] = {}
        self._arrived = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        """The answer for ``key``, from the next batch."""
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            # Mark the outcome retrieved even if every waiter gave up (no "never retrieved" noise).
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._pending[key] = future
            self._arrived.set()
            if len(self._pending) >= self._settings.max_items:
                self._flush_now()
            elif self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._wait_and_flush(), name=f"{self._name}-window")
        # shield: one waiter giving up must not cancel the shared future of the others
        return await asyncio.shield(future)

    async def _wait_and_flush(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.max_wait
        while self._pending:
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=min(self._settings.idle, remaining))
            except TimeoutError:
                break  # quiet for `idle`: send what we have
        self._flush_now()

    def _flush_now(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        if self._flusher is not None and self._flusher is not asyncio.current_task():
            self._flusher.cancel()
            self._flusher = None
        task = asyncio.create_task(self._run(batch), name=f"{self._name}-run")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _run(self, batch: dict[K, asyncio.Future[V]]) -> None:
        keys = list(batch)
        try:
            if self._on_batch is not None:
                self._on_batch(len(keys))
            results = await self._execute(keys)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for key, future in batch.items():
            if future.done():
                continue
            result = results[key] if key in results else self._missing(key)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Cancel the window timer and wait for batches already sent."""
        if self._flusher is not None:
            self._flusher.cancel()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
