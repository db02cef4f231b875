"""A stand-in for CML controllers: one HTTPS process serving many workers by path prefix.

    https://127.0.0.1:PORT/<prefix>/api/v0/...   the CML REST API of worker <prefix>
    http://127.0.0.1:CONTROL/workers/<prefix>    its state, for tests (GET, PATCH JSON)

Response shapes follow CML's API as virl2-client 2.10 reads it (see
tests/unit/test_cmlsim_fidelity.py, which drives this with virl2-client's
``ClientLibrary``). The certificate is self-signed, generated at start for
127.0.0.1 and can be replaced (``POST /certificate``) to test pinning. Every
answer closes its connection, so a new certificate is seen by the next request.

State a test controls per worker (PATCH /workers/<prefix> with any of):
``ready_after`` (seconds from now until system_information says ready),
``username``/``password``, ``labs`` ({id: state}), ``running_nodes``,
``fail_status`` + ``fail_count`` (answer every API call with that status, N times;
-1 forever), ``delay`` (seconds before each answer), ``refused_tokens`` (licence
tokens that fail), ``registration_seconds``, ``deregister_fail_count``.
``GET /workers/<prefix>`` adds ``calls`` (per "METHOD path") and ``license``.

Run it:  python -m tests.support.cmlsim serve --state-file F [--port N --control-port M]
Drive a lab:  python -m tests.support.cmlsim lab start|stop --control URL --prefix P
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

VERSION = "2.10.0"
DEFAULT_USERNAME, DEFAULT_PASSWORD = "admin", "cml-sim-password"
ROOT_PREFIX = "_root"  # a worker addressed without a path prefix
ACTIVE = ("STARTED", "QUEUED", "BOOTED")


# ---------------------------------------------------------------- certificates


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 and localhost; returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cml-sim")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    stamp = uuid.uuid4().hex[:8]
    cert_path, key_path = directory / f"cert-{stamp}.pem", directory / f"key-{stamp}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# ---------------------------------------------------------------- state


@dataclass
class SimWorker:
    ready_at: float = 0.0
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    tokens: set[str] = field(default_factory=set)
    labs: dict[str, str] = field(default_factory=dict)  # id -> state
    running_nodes: int = 0
    fail_status: int = 0
    fail_count: int = 0
    delay: float = 0.0
    registration: str = "NOT_REGISTERED"
    authorization: str = "EVAL"
    registration_done_at: float | None = None
    registration_outcome: str = "COMPLETED"
    registration_seconds: float = 1.0
    refused_tokens: list[str] = field(default_factory=list)
    deregister_fail_count: int = 0
    #: True: lab tiles without ``state`` and computes without ``dominfo`` (a reply in another shape).
    odd_shape: bool = False
    calls: Counter = field(default_factory=Counter)

    def tick(self) -> None:
        if self.registration_done_at is not None and time.monotonic() >= self.registration_done_at:
            self.registration = self.registration_outcome
            self.authorization = "IN_COMPLIANCE" if self.registration == "COMPLETED" else "EVAL"
            self.registration_done_at = None

    def view(self) -> dict[str, Any]:
        self.tick()
        return {
            "ready": time.monotonic() >= self.ready_at, "username": self.username, "labs": dict(self.labs),
            "running_nodes": self.running_nodes, "calls": dict(self.calls),
            "license": {"registration": self.registration, "authorization": self.authorization},
            "fail_status": self.fail_status, "fail_count": self.fail_count, "delay": self.delay,
        }


class Simulator:
    def __init__(self, cert_dir: Path, default_ready_after: float = 0.0) -> None:
        self.cert_dir = cert_dir
        self.default_ready_after = default_ready_after
        self.workers: dict[str, SimWorker] = {}
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.rotate_certificate()

    def rotate_certificate(self) -> str:
        cert, key = make_certificate(self.cert_dir)
        self.context.load_cert_chain(cert, key)  # new handshakes present the new certificate
        self.cert_path = cert
        return cert.read_text()

    def worker(self, prefix: str) -> SimWorker:
        if prefix not in self.workers:
            self.workers[prefix] = SimWorker(ready_at=time.monotonic() + self.default_ready_after)
        return self.workers[prefix]

    def configure(self, prefix: str, changes: dict[str, Any]) -> SimWorker:
        worker = self.worker(prefix)
        for key, value in changes.items():
            if key == "ready_after":
                worker.ready_at = time.monotonic() + float(value)
            elif key in ("password", "username"):
                setattr(worker, key, value)
                worker.tokens.clear()  # CML invalidates sessions when credentials change
            elif key == "license":
                worker.registration = value.get("registration", worker.registration)
                worker.authorization = value.get("authorization", worker.authorization)
            elif hasattr(worker, key) and key not in ("calls", "tokens"):
                setattr(worker, key, value)
            else:
                raise ValueError(f"unknown setting {key!r}")
        return worker


# ---------------------------------------------------------------- the CML API


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, headers={"Connection": "close"})


def _error(status: int, description: str) -> web.Response:
    return _json({"code": status, "description": description}, status)


def _system_stats(worker: SimWorker) -> dict[str, Any]:
    gib = 1024 ** 3
    used = (8 + 4 * worker.running_nodes) * gib
    dominfo = {"allocated_cpus": 2 * worker.running_nodes, "allocated_memory": 4 * worker.running_nodes * gib,
               "total_nodes": worker.running_nodes, "total_orphans": 0, "running_nodes": worker.running_nodes,
               "running_orphans": 0}
    stats = {"cpu": {"count": 48, "percent": min(100.0, 2.0 + 5.0 * worker.running_nodes)},
             "memory": {"total": 384 * gib, "free": 384 * gib - used, "used": used},
             "disk": {"total": 1000 * gib, "free": 900 * gib, "used": 100 * gib}}
    return {"all": stats, "controller": {"disk": stats["disk"]},
            "computes": {"00000000-0000-4000-a000-000000000001": {
                "hostname": "cml-controller", "is_controller": True, "stats": {**stats, "dominfo": dominfo}}}}


def _lab(lab_id: str, state: str) -> dict[str, Any]:
    return {"id": lab_id, "lab_title": f"Lab {lab_id}", "lab_description": "", "lab_notes": "", "state": state,
            "owner": "00000000-0000-4000-a000-000000000000", "owner_username": DEFAULT_USERNAME,
            "node_count": 2, "link_count": 1, "created": "2026-11-25T00:00:00+00:00",
            "modified": "2026-11-25T00:00:00+00:00", "groups": []}


def _licensing(worker: SimWorker) -> dict[str, Any]:
    worker.tick()
    return {
        "registration": {"status": worker.registration, "expires": None, "smart_account": "sim",
                         "virtual_account": "sim", "register_time": {}, "renew_time": {}},
        "authorization": {"status": worker.authorization, "expires": None, "renew_time": {}},
        "features": [{"name": "CML - Enterprise License", "in_use": 1, "status": worker.authorization,
                      "max": 1, "min": 0, "description": "", "version": "1.0", "id": "regid.sim"}],
        "product_license": {"active": "CML_ENTERPRISE", "is_enterprise": True},
        "udi": {"hostname": "cml-controller", "product_uuid": "sim"},
        "transport": {"ssms": "https://smartreceiver.cisco.com/licservice/license", "proxy": {},
                      "default_ssms": "https://smartreceiver.cisco.com/licservice/license"},
        "reservation_mode": False,
    }


async def api(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    prefix = request.match_info.get("prefix") or ROOT_PREFIX
    path = request.match_info["path"].strip("/")
    worker = sim.worker(prefix)
    worker.calls[f"{request.method} {path}"] += 1
    if worker.delay:
        await asyncio.sleep(worker.delay)
    if worker.fail_status and worker.fail_count != 0:
        worker.fail_count -= 1 if worker.fail_count > 0 else 0
        return _error(worker.fail_status, "injected failure")
    ready = time.monotonic() >= worker.ready_at
    if request.method == "GET" and path == "system_information":
        return _json({"version": VERSION, "ready": ready, "hostname": "cml-controller",
                      "product": "Cisco Modeling Labs", "allow_ssh_pubkey_auth": False, "oui": "52:54:00"})
    if not ready:
        return _error(503, "controller is starting")
    if request.method == "POST" and path == "authenticate":
        body = await request.json()
        if body.get("username") != worker.username or body.get("password") != worker.password:
            return _error(403, "Authentication failed!")
        token = uuid.uuid4().hex
        worker.tokens.add(token)
        return _json(token)
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if token not in worker.tokens:
        return _error(401, "No authorization token provided.")
    return await _authenticated(request, worker, path)


async def _authenticated(request: web.Request, worker: SimWorker, path: str) -> web.Response:
    method = request.method
    if method == "GET" and path in ("authentication", "authok"):
        return _json({"id": "00000000-0000-4000-a000-000000000000", "username": worker.username, "admin": True})
    if method == "GET" and path == "users":
        return _json([{"id": "00000000-0000-4000-a000-000000000000", "username": worker.username, "admin": True,
                       "fullname": "", "description": "", "groups": [], "labs": sorted(worker.labs)}])
    if method == "GET" and path == "system_stats":
        stats = _system_stats(worker)
        if worker.odd_shape:
            for compute in stats["computes"].values():
                compute["stats"].pop("dominfo")
        return _json(stats)
    if method == "GET" and path == "system_health":
        return _json({"valid": True, "is_licensed": worker.registration == "COMPLETED", "is_enterprise": True,
                      "computes": {}, "controller": {}})
    if method == "GET" and path == "labs":
        return _json(sorted(worker.labs))
    if method == "GET" and path == "populate_lab_tiles":
        tiles = {lab_id: _lab(lab_id, state) for lab_id, state in worker.labs.items()}
        if worker.odd_shape:
            tiles = {lab_id: {k: v for k, v in tile.items() if k != "state"} for lab_id, tile in tiles.items()}
        return _json({"lab_tiles": tiles})
    if path.startswith("labs/"):
        parts = path.split("/")
        lab_id = parts[1]
        if lab_id not in worker.labs:
            return _error(404, f"Lab not found: {lab_id}")
        if method == "GET" and len(parts) == 2:
            return _json(_lab(lab_id, worker.labs[lab_id]))
        if method == "GET" and parts[2:] == ["state"]:
            return _json(worker.labs[lab_id])
        if method == "GET" and parts[2:] == ["topology"]:
            return _json({"lab": {"title": f"Lab {lab_id}", "description": "", "notes": "",
                                  "owner": "00000000-0000-4000-a000-000000000000"},
                          "nodes": [], "links": [], "annotations": [], "smart_annotations": []})
    if method == "GET" and path == "licensing":
        return _json(_licensing(worker))
    if method == "POST" and path == "licensing/registration":
        body = await request.json()
        worker.registration = "IN_PROGRESS"
        worker.registration_outcome = "FAILED" if body.get("token") in worker.refused_tokens else "COMPLETED"
        worker.registration_done_at = time.monotonic() + worker.registration_seconds
        return web.Response(status=204, headers={"Connection": "close"})
    if method == "DELETE" and path == "licensing/deregistration":
        if worker.deregister_fail_count:
            worker.deregister_fail_count -= 1
            return _error(500, "deregistration failed")
        worker.registration, worker.authorization, worker.registration_done_at = "NOT_REGISTERED", "EVAL", None
        return web.Response(status=204, headers={"Connection": "close"})
    return _error(404, f"no such endpoint in the simulator: {method} {path}")


# ---------------------------------------------------------------- the control API (plain HTTP)


async def control_get(request: web.Request) -> web.Response:
    return web.json_response(request.app["sim"].worker(request.match_info["prefix"]).view())


async def control_patch(request: web.Request) -> web.Response:
    try:
        worker = request.app["sim"].configure(request.match_info["prefix"], await request.json())
    except (ValueError, TypeError) as error:
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response(worker.view())


async def control_lab(request: web.Request) -> web.Response:
    """POST /workers/<prefix>/labs/<id> {"state": "STARTED"} (nodes follow: 2 per started lab)."""
    worker = request.app["sim"].worker(request.match_info["prefix"])
    state = (await request.json()).get("state", "STARTED")
    worker.labs[request.match_info["lab"]] = state
    worker.running_nodes = 2 * sum(1 for s in worker.labs.values() if s in ACTIVE)
    return web.json_response(worker.view())


async def control_certificate(request: web.Request) -> web.Response:
    return web.json_response({"certificate": request.app["sim"].rotate_certificate()})


async def control_summary(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    return web.json_response({"workers": {p: w.view() for p, w in sim.workers.items()},
                              "certificate": sim.cert_path.read_text()})


async def serve(port: int, control_port: int, state_file: Path, ready_after: float) -> None:
    cert_dir = Path(tempfile.mkdtemp(prefix="cmlsim-"))
    sim = Simulator(cert_dir, ready_after)
    app = web.Application()
    app["sim"] = sim
    app.router.add_route("*", "/api/v0/{path:.*}", api)
    app.router.add_route("*", "/{prefix}/api/v0/{path:.*}", api)
    control = web.Application()
    control["sim"] = sim
    control.router.add_get("/", control_summary)
    control.router.add_get("/workers/{prefix}", control_get)
    control.router.add_patch("/workers/{prefix}", control_patch)
    control.router.add_post("/workers/{prefix}/labs/{lab}", control_lab)
    control.router.add_post("/certificate", control_certificate)
    runners = [web.AppRunner(app, access_log=None), web.AppRunner(control, access_log=None)]
    for runner in runners:
        await runner.setup()
    api_site = web.TCPSite(runners[0], "127.0.0.1", port, ssl_context=sim.context)
    control_site = web.TCPSite(runners[1], "127.0.0.1", control_port)
    await api_site.start()
    await control_site.start()
    api_port = api_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ctl_port = control_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": f"https://127.0.0.1:{api_port}", "control": f"http://127.0.0.1:{ctl_port}",
                               "pid": os.getpid()}))
    tmp.replace(state_file)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- command line


def control_request(control: str, method: str, path: str, payload: Any = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(control.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


class CMLSimProcess:
    """``python -m tests.support.cmlsim serve`` as a subprocess, driven over its control API."""

    def __init__(self, ready_after: float = 0.0) -> None:
        self.ready_after = ready_after
        self.process: Any = None
        self.url = self.control = ""

    def start(self) -> CMLSimProcess:
        import atexit
        import subprocess

        from tests.cluster.controlplane import parent_death_signal
        from tests.support.processes import REPO, wait_for

        state_file = Path(tempfile.mkdtemp(prefix="cmlsim-state-")) / "state.json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cmlsim", "serve", "--state-file", str(state_file),
             "--ready-after", str(self.ready_after)],
            cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=parent_death_signal())
        atexit.register(self.stop)
        wait_for(state_file.exists, 30, what="the CML simulator to listen")
        state = json.loads(state_file.read_text())
        self.url, self.control = state["url"], state["control"]
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def endpoint(self, prefix: str) -> str:
        return f"{self.url}/{prefix}/"

    def worker(self, prefix: str) -> dict[str, Any]:
        return control_request(self.control, "GET", f"/workers/{prefix}")

    def configure(self, prefix: str, **changes: Any) -> dict[str, Any]:
        return control_request(self.control, "PATCH", f"/workers/{prefix}", changes)

    def set_lab(self, prefix: str, lab: str, state: str) -> dict[str, Any]:
        return control_request(self.control, "POST", f"/workers/{prefix}/labs/{lab}", {"state": state})

    def rotate_certificate(self) -> str:
        return control_request(self.control, "POST", "/certificate", {})["certificate"]

    def certificate(self) -> str:
        return control_request(self.control, "GET", "/")["certificate"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.cmlsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the CML API (HTTPS) and the control API (HTTP)")
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--control-port", type=int, default=0)
    run.add_argument("--state-file", type=Path, required=True, help="where to write {url, control, pid}")
    run.add_argument("--ready-after", type=float, default=0.0, help="seconds until a new worker says ready")
    lab = commands.add_parser("lab", help="start or stop a lab on one simulated worker")
    lab.add_argument("action", choices=("start", "stop"))
    lab.add_argument("--control", required=True, help="the control URL (printed by make dev)")
    lab.add_argument("--prefix", required=True, help="the worker's path prefix")
    lab.add_argument("--lab", default="lab-1")
    show = commands.add_parser("show", help="print one simulated worker's state")
    show.add_argument("--control", required=True)
    show.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            asyncio.run(serve(args.port, args.control_port, args.state_file, args.ready_after))
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "lab":
        state = "STARTED" if args.action == "start" else "STOPPED"
        view = control_request(args.control, "POST", f"/workers/{args.prefix}/labs/{args.lab}", {"state": state})
    else:
        view = control_request(args.control, "GET", f"/workers/{args.prefix}")
    print(json.dumps({k: view[k] for k in ("ready", "labs", "running_nodes", "license")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
