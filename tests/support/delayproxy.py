"""A TCP proxy that delays every byte by a settable number of seconds: a slow or partitioned API server.

Put it in front of kube-apiserver and give one operator a kubeconfig that points at it: TLS passes
through untouched (the serving certificate names 127.0.0.1, whatever the port). Each chunk read
from either side is forwarded ``delay`` seconds after it arrived (the delay in force when it
arrived), in order, so with a delay past the clients' timeouts the API server is, for that
process alone, unreachable, while its connections stay open as they would behind a bad network.

    proxy = DelayProxy(upstream_port).start()
    proxy.delay = 8.0          # from now on
    ...
    proxy.stop()
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Pipe:
    """One direction of one connection: chunks with the time they may leave."""

    source: socket.socket
    target: socket.socket
    chunks: deque[tuple[float, bytes]] = field(default_factory=deque)
    ready: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False


class DelayProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> DelayProxy:
        threading.Thread(target=self._accept, name="delay-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets += [client, server]
            for pipe in (_Pipe(client, server), _Pipe(server, client)):
                threading.Thread(target=self._read, args=(pipe,), daemon=True).start()
                threading.Thread(target=self._write, args=(pipe,), daemon=True).start()

    def _read(self, pipe: _Pipe) -> None:
        while True:
            try:
                data = pipe.source.recv(65536)
            except OSError:
                data = b""
            with pipe.ready:
                if data:
                    pipe.chunks.append((time.monotonic() + self.delay, data))
                else:
                    pipe.closed = True
                pipe.ready.notify()
            if not data:
                return

    def _write(self, pipe: _Pipe) -> None:
        while True:
            with pipe.ready:
                while not pipe.chunks and not pipe.closed:
                    pipe.ready.wait()
                if not pipe.chunks:  # closed and flushed: pass the close on
                    _close(pipe.target)
                    return
                due, data = pipe.chunks[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with pipe.ready:
                pipe.chunks.popleft()
            try:
                pipe.target.sendall(data)
            except OSError:
                _close(pipe.source)
                return


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
