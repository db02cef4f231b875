"""A stand-in for CML controllers, each living on its EC2 instance.

    https://127.0.0.1:PORT/<prefix>/api/v0/...   the CML REST API of worker <prefix>
    http://127.0.0.1:CONTROL/workers/<prefix>    its state, for tests (GET, PATCH JSON)

With ``--ec2-endpoint`` (the e2e tests, ``make dev`` and the benchmarks) every worker
address gets a port of its own (``POST /workers/<prefix>/door``, which
``CMLSimProcess.endpoint`` calls) that listens only while the worker's instance is
``running`` in that EC2 world: connections are refused while it is pending, stopping,
stopped or gone, and requests on a connection kept open across the stop are cut off
(counted in ``refused``). Each instance is a controller of its own (cmlsim_model.py,
cmlsim_world.py): after every start it boots for ``--boot-seconds``; its session tokens
last ``--token-seconds`` (then 401, and the client must authenticate again); its
licence registration survives a stop but not a replacement. Without ``--ec2-endpoint``
(the client's unit tests) every prefix is one controller that always runs.

Response shapes follow CML's API as virl2-client 2.10 reads it (see
tests/unit/test_cmlsim_fidelity.py, which drives this with virl2-client's
``ClientLibrary``). Connections are kept alive. The certificate is self-signed,
generated at start for 127.0.0.1 and can be replaced (``POST /certificate``, which
ends every open connection as a web server restart does) to test pinning.

State a test controls per worker (PATCH /workers/<prefix> with any of):
``ready_after`` (seconds from now until system_information may say ready),
``boot_seconds``, ``token_seconds``, ``expire_tokens`` (end every session now),
``username``/``password``, ``running_nodes``,
``fail_status`` + ``fail_count`` (answer every API call with that status, N times;
-1 forever), ``delay`` (seconds before each answer), ``refused_tokens`` (licence
tokens that fail), ``registration_seconds``, ``deregister_fail_count``.
``GET /workers/<prefix>`` adds ``calls`` and ``refused`` (per "METHOD path"),
``license``, ``instance_id``, ``running`` and ``starts``.

Run it:  python -m tests.support.cmlsim serve --state-file F [--ec2-endpoint URL --boot-seconds S ...]
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
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.cmlsim_model import (
    ACTIVE,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    Controller,
    Simulator,
    SimWorker,
)
from tests.support.cmlsim_world import Ec2World, cut_connections

__all__ = ["DEFAULT_PASSWORD", "DEFAULT_USERNAME", "CMLSimProcess", "control_request", "make_certificate"]

VERSION = "2.10.0"
ROOT_PREFIX = "_root"  # a worker addressed without a path prefix


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


# ---------------------------------------------------------------- the CML API


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status)  # kept alive, as a real controller's nginx does


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
    """``GET labs/<id>`` as virl2-client's ``Lab`` reads it (``_import_lab`` / ``sync_states``)."""
    return {"id": lab_id, "lab_title": f"Lab {lab_id}", "lab_description": "", "lab_notes": "", "state": state,
            "owner": "00000000-0000-4000-a000-000000000000", "owner_username": DEFAULT_USERNAME,
            "node_count": 2, "link_count": 1, "created": "2026-11-25T00:00:00+00:00",
            "modified": "2026-11-25T00:00:00+00:00", "groups": [], "effective_permissions": ["lab_admin"]}


def _licensing(controller: Controller) -> dict[str, Any]:
    controller.tick()
    return {
        "registration": {"status": controller.registration, "expires": None, "smart_account": "sim",
                         "virtual_account": "sim", "register_time": {}, "renew_time": {}},
        "authorization": {"status": controller.authorization, "expires": None, "renew_time": {}},
        "features": [{"name": "CML - Enterprise License", "in_use": 1, "status": controller.authorization,
                      "max": 1, "min": 0, "description": "", "version": "1.0", "id": "regid.sim"}],
        "product_license": {"active": "CML_ENTERPRISE", "is_enterprise": True},
        "udi": {"hostname": "cml-controller", "product_uuid": "sim"},
        "transport": {"ssms": "https://smartreceiver.cisco.com/licservice/license", "proxy": {},
                      "default_ssms": "https://smartreceiver.cisco.com/licservice/license"},
        "reservation_mode": False,
    }


def _refuse(request: web.Request) -> web.Response:
    """Nobody home: the connection dies as it does when the instance stops under it."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=503)  # never sent


async def api(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    prefix = request.match_info.get("prefix") or ROOT_PREFIX
    path = request.match_info["path"].strip("/")
    worker = sim.worker(prefix)
    call = f"{request.method} {path}"
    if sim.world is not None and request.transport is not None:
        door = sim.doors.get(prefix)
        sockname = request.transport.get_extra_info("sockname")
        if door is None or not sockname or sockname[1] != door.port:
            return _error(404, f"no worker {prefix!r} behind this port (ask the control API for its endpoint)")
    controller = await sim.answering(prefix)
    if controller is None:
        worker.refused[call] += 1
        return _refuse(request)
    worker.calls[call] += 1
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if peer:
        worker.peers.add(tuple(peer[:2]))
    if worker.delay:
        await asyncio.sleep(worker.delay)
    if worker.fail_status and worker.fail_count != 0:
        worker.fail_count -= 1 if worker.fail_count > 0 else 0
        return _error(worker.fail_status, "injected failure")
    ready = controller.ready(worker)
    if request.method == "GET" and path == "system_information":
        return _json({"version": VERSION, "ready": ready, "hostname": "cml-controller",
                      "product": "Cisco Modeling Labs", "allow_ssh_pubkey_auth": False, "oui": "52:54:00"})
    if not ready:
        return _error(503, "controller is starting")
    if request.method == "POST" and path == "authenticate":
        body = await request.json()
        if body.get("username") != worker.username or body.get("password") != worker.password:
            return _error(403, "Authentication failed!")
        return _json(controller.issue_token(worker.token_seconds))
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not controller.token_valid(token):
        return _error(401, "No authorization token provided.")
    return await _authenticated(request, worker, controller, path)


async def _authenticated(request: web.Request, worker: SimWorker, controller: Controller,
                         path: str) -> web.Response:
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
        return _json({"valid": True, "is_licensed": controller.registration == "COMPLETED", "is_enterprise": True,
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
        return _json(_licensing(controller))
    if method == "POST" and path == "licensing/registration":
        body = await request.json()
        controller.registration = "IN_PROGRESS"
        controller.registration_outcome = "FAILED" if body.get("token") in worker.refused_tokens else "COMPLETED"
        controller.registration_done_at = time.monotonic() + worker.registration_seconds
        return web.Response(status=204)
    if method == "DELETE" and path == "licensing/deregistration":
        if worker.deregister_fail_count:
            worker.deregister_fail_count -= 1
            return _error(500, "deregistration failed")
        controller.registration, controller.authorization = "NOT_REGISTERED", "EVAL"
        controller.registration_done_at = None
        return web.Response(status=204)
    return _error(404, f"no such endpoint in the simulator: {method} {path}")


# ---------------------------------------------------------------- the control API (plain HTTP)


async def control_get(request: web.Request) -> web.Response:
    return web.json_response(request.app["sim"].view(request.match_info["prefix"]))


async def control_patch(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    prefix = request.match_info["prefix"]
    try:
        sim.configure(prefix, await request.json())
    except (ValueError, TypeError) as error:
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response(sim.view(prefix))


async def control_door(request: web.Request) -> web.Response:
    """POST /workers/<prefix>/door {"worker": NAME?}: the address of the worker's controller (EC2 mode).

    NAME may be a pattern (``pool-*``): one controller shared by those workers, up while any runs."""
    sim: Simulator = request.app["sim"]
    prefix = request.match_info["prefix"]
    if sim.world is None:
        return web.json_response({"endpoint": f"{request.app['api_url']}/{prefix}/"})
    body = await request.json() if request.can_read_body else {}
    sim.worker(prefix).worker_name = body.get("worker") or sim.worker(prefix).worker_name
    sim.door(prefix)  # closed until the watch sees the instance run (never wait for EC2 here)
    return web.json_response({"endpoint": sim.endpoint_of(prefix)})


async def control_lab(request: web.Request) -> web.Response:
    """POST /workers/<prefix>/labs/<id> {"state": "STARTED"} (nodes follow: 2 per started lab)."""
    sim: Simulator = request.app["sim"]
    prefix = request.match_info["prefix"]
    worker = sim.worker(prefix)
    state = (await request.json()).get("state", "STARTED")
    worker.labs[request.match_info["lab"]] = state
    worker.running_nodes = 2 * sum(1 for s in worker.labs.values() if s in ACTIVE)
    return web.json_response(sim.view(prefix))


async def control_certificate(request: web.Request) -> web.Response:
    """A new certificate means a restarted web server: every open connection ends."""
    sim: Simulator = request.app["sim"]
    cert, key = make_certificate(sim.cert_path.parent)
    sim.context.load_cert_chain(cert, key)
    sim.cert_path = cert
    cut_connections(request.app["api_runner"])
    return web.json_response({"certificate": cert.read_text()})


async def control_summary(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    return web.json_response({"workers": {p: sim.view(p) for p in sim.workers},
                              "certificate": sim.cert_path.read_text()})


async def serve(port: int, control_port: int, state_file: Path, ready_after: float, ec2_endpoint: str | None,
                region: str, boot_seconds: float, token_seconds: float, poll_seconds: float) -> None:
    cert_dir = Path(tempfile.mkdtemp(prefix="cmlsim-"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = make_certificate(cert_dir)
    context.load_cert_chain(cert, key)
    world = Ec2World(ec2_endpoint, region) if ec2_endpoint else None
    sim = Simulator(context, cert, ready_after, world, boot_seconds, token_seconds)
    app = web.Application()
    app["sim"] = sim
    app.router.add_route("*", "/api/v0/{path:.*}", api)
    app.router.add_route("*", "/{prefix}/api/v0/{path:.*}", api)
    control = web.Application()
    control["sim"] = sim
    control.router.add_get("/", control_summary)
    control.router.add_get("/workers/{prefix}", control_get)
    control.router.add_patch("/workers/{prefix}", control_patch)
    control.router.add_post("/workers/{prefix}/door", control_door)
    control.router.add_post("/workers/{prefix}/labs/{lab}", control_lab)
    control.router.add_post("/certificate", control_certificate)
    api_runner, control_runner = web.AppRunner(app, access_log=None), web.AppRunner(control, access_log=None)
    for runner in (api_runner, control_runner):
        await runner.setup()
    sim.runner = control["api_runner"] = api_runner
    api_site = web.TCPSite(api_runner, "127.0.0.1", port, ssl_context=context)
    control_site = web.TCPSite(control_runner, "127.0.0.1", control_port)
    await api_site.start()
    await control_site.start()
    api_port = api_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ctl_port = control_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    control["api_url"] = f"https://127.0.0.1:{api_port}"
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": f"https://127.0.0.1:{api_port}", "control": f"http://127.0.0.1:{ctl_port}",
                               "pid": os.getpid(), "ec2": ec2_endpoint}))
    tmp.replace(state_file)
    if world is not None:
        await sim.watch(poll_seconds)
    await asyncio.Event().wait()


# ---------------------------------------------------------------- command line


def control_request(control: str, method: str, path: str, payload: Any = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(control.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


class CMLSimProcess:
    """``python -m tests.support.cmlsim serve`` as a subprocess, driven over its control API."""

    def __init__(self, ready_after: float = 0.0, *, ec2_endpoint: str | None = None, region: str = "us-east-1",
                 boot_seconds: float = 0.0, token_seconds: float = 3600.0, poll_seconds: float = 0.25) -> None:
        self.ready_after = ready_after
        self.ec2_endpoint = ec2_endpoint
        self.options = ["--region", region, "--boot-seconds", str(boot_seconds), "--token-seconds",
                        str(token_seconds), "--poll-seconds", str(poll_seconds)]
        if ec2_endpoint:
            self.options += ["--ec2-endpoint", ec2_endpoint]
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
             "--ready-after", str(self.ready_after), *self.options],
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

    def endpoint(self, prefix: str, worker: str | None = None) -> str:
        """The URL of the controller behind ``prefix``: with an EC2 world, that of the instance of the
        CMLWorker named ``worker`` (default: the prefix), on a port that listens only while it runs."""
        return control_request(self.control, "POST", f"/workers/{prefix}/door", {"worker": worker})["endpoint"]

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
    run.add_argument("--ec2-endpoint", help="the EC2 world (moto or the fault proxy): each worker's controller "
                     "then lives on its instance; without it every worker is always running")
    run.add_argument("--region", default="us-east-1")
    run.add_argument("--boot-seconds", type=float, default=0.0, help="not ready this long after every start")
    run.add_argument("--token-seconds", type=float, default=3600.0, help="a session token's lifetime")
    run.add_argument("--poll-seconds", type=float, default=0.25, help="how often the doors follow EC2")
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
            asyncio.run(serve(args.port, args.control_port, args.state_file, args.ready_after, args.ec2_endpoint,
                              args.region, args.boot_seconds, args.token_seconds, args.poll_seconds))
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
