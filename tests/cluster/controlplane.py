"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager, no nodes.

This is what controller-runtime's envtest does, plus the controllers a cluster's
bookkeeping needs: the genuine API server (schema and CEL validation,
resourceVersion conflicts, finalizers, RBAC, watches, the TokenRequest API) backed
by a genuine etcd, and kube-controller-manager running only the garbage collector,
the namespace controller and the ServiceAccount controllers (``CONTROLLERS``), all
bound to loopback and living in a temporary directory. So ownerReferences cascade
(foreground, background, orphan) and a deleted namespace is emptied and removed
(once every finalizer in it is released) as in a real cluster. No scheduler, no
kubelet: Pods stay Pending.

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces")
        cp.restart_apiserver()          # same ports, data kept in etcd

The binaries come from tests/cluster/build.sh (built once from Go modules into
~/.cache/cml-operator). Children run in their own process group, are killed
(SIGTERM, then SIGKILL) by stop(), at interpreter exit, and by the kernel if
the Python process dies first (PR_SET_PDEATHSIG, for children started from the
main thread), so a failed or interrupted run leaves no processes behind.

Authorization: RBAC by default. The admin kubeconfig authenticates with a client
certificate in the system:masters group, which every authorizer lets through,
so the admin is unaffected; ServiceAccount kubeconfigs (TokenRequest tokens)
are subject to RBAC, as an operator in a real cluster is.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime
import http.client
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
#: kube-controller-manager's controllers: ownerReference garbage collection, namespace
#: deletion, and the ServiceAccount controllers (the "default" account, legacy token Secrets).
CONTROLLERS = ("garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
               "serviceaccount-token-controller")
#: Prefix of the temporary directories; the owner's pid follows it.
TMP_PREFIX = "cml-cp-"
LOOPBACK = "127.0.0.1"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or driven."""


class ControlPlaneUnavailable(ControlPlaneError):
    """The binaries are not cached and cannot be built here (no Go toolchain)."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; str() includes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"


# --------------------------------------------------------------------------
# Small helpers: waiting, ports, processes


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    """Poll predicate until it returns true; raise TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on loopback that are free right now (the kernel picks them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pid_alive(pid: int) -> bool:
    """True if a process (not a reaped zombie) with this pid exists."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGKILL when its parent dies (Linux only).

    The kernel tracks the parent *thread*, so this is only used from the main
    thread: a child started from a short-lived thread would die with that thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(eq=False)  # identity semantics: it owns processes
class ManagedProcess:
    """A child process in its own process group, with stdout and stderr in a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    stopped: bool = field(default=False, init=False)

    def start(self) -> None:
        """Launch the process (appending to its log file); once per instance."""
        if self.popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # own session and process group: pgid == pid
                preexec_fn=parent_death_signal(),
            )

    @property
    def pid(self) -> int | None:
        """The process id (kept after it exits)."""
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float) -> None:
        """SIGTERM the process group, SIGKILL it after timeout seconds, reap. Idempotent."""
        if self.popen is None or self.stopped:
            return
        pgid = self.popen.pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            self.popen.wait()
        # Anything the leader left in its group. Done once: after that the pgid
        # may be reused by an unrelated process.
        _signal_group(pgid, signal.SIGKILL)
        self.stopped = True

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log file ('' if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def remove_stale_dirs(prefix: str = TMP_PREFIX) -> None:
    """Remove temp dirs left by runs whose process is gone (killed with SIGKILL, say)."""
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        owner = path.name[len(prefix) :].split("-", 1)[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# Binaries


def find_binaries(build_script: Path = BUILD_SCRIPT) -> Path:
    """The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl; builds them if needed.

    build.sh is a no-op when they are cached. Raises ControlPlaneUnavailable if
    they are not cached and there is no Go toolchain to build them.
    """
    proc = subprocess.run([str(build_script)], stdout=subprocess.PIPE, stderr=None, text=True)
    if proc.returncode != 0:
        if shutil.which("go") is None:
            raise ControlPlaneUnavailable(
                "etcd/kube-apiserver/kubectl are not built and Go is not installed "
                "(install Go 1.24+ and run `make control-plane`)"
            )
        raise ControlPlaneError(f"{build_script} failed with exit status {proc.returncode} (see its stderr)")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
        if not os.access(bin_dir / binary, os.X_OK):
            raise ControlPlaneError(f"{bin_dir / binary} is missing or not executable")
    return bin_dir


def has_controller_manager(bin_dir: Path) -> bool:
    """False only for make test-k8s's older kube-apiservers, whose bin dir has no controller manager."""
    return os.access(bin_dir / "kube-controller-manager", os.X_OK)


# --------------------------------------------------------------------------
# Certificates and keys


@dataclass(frozen=True)
class Credentials:
    """PEM files written into the control plane's directory."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path
    sa_private_key: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: Iterable[tuple[x509.ExtensionType, bool]],
    days: int,
) -> x509.Certificate:
    """A certificate for key, signed by issuer_key, valid from an hour ago for days."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf_usage(eku: x509.ObjectIdentifier) -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([eku]), False),
    ]


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def generate_credentials(directory: Path, service_ip: str, days: int = 30) -> Credentials:
    """A CA, a serving cert for loopback, an admin client cert, a ServiceAccount key pair."""
    ca_key = _new_ec_key()
    ca_name = _name("cml-test-ca")
    ca_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True,
        crl_sign=True, encipher_only=False, decipher_only=False,
    )
    ca = _certificate(ca_name, ca_key, ca_name, ca_key,
                      [(x509.BasicConstraints(ca=True, path_length=0), True), (ca_usage, True)], days)
    authority = (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)

    serving_key = _new_ec_key()
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]
    sans = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in names]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in (LOOPBACK, "::1", service_ip)]
    )
    serving = _certificate(_name("kube-apiserver"), serving_key, ca_name, ca_key,
                           [*_leaf_usage(ExtendedKeyUsageOID.SERVER_AUTH), (sans, False), authority], days)

    admin_key = _new_ec_key()
    admin = _certificate(_name("admin", "system:masters"), admin_key, ca_name, ca_key,
                         [*_leaf_usage(ExtendedKeyUsageOID.CLIENT_AUTH), authority], days)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_public = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = serialization.Encoding.PEM
    return Credentials(
        ca_cert=_write(directory / "ca.crt", ca.public_bytes(pem)),
        serving_cert=_write(directory / "apiserver.crt", serving.public_bytes(pem)),
        serving_key=_write(directory / "apiserver.key", _pem_key(serving_key)),
        admin_cert=_write(directory / "admin.crt", admin.public_bytes(pem)),
        admin_key=_write(directory / "admin.key", _pem_key(admin_key)),
        sa_public_key=_write(directory / "sa.pub", sa_public),
        sa_private_key=_write(directory / "sa.key", _pem_key(sa_key)),
    )


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, ca_cert: Path, user: dict[str, str], name: str = "cml-test") -> dict:
    """A self-contained kubeconfig (certificates embedded) with one context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }


# --------------------------------------------------------------------------
# The control plane


@dataclass(frozen=True)
class ControlPlaneConfig:
    """How to run the control plane."""

    #: --authorization-mode=RBAC if true, AlwaysAllow otherwise.
    rbac: bool = True
    service_cluster_ip_range: str = "10.0.0.0/24"
    service_account_issuer: str = "https://kubernetes.default.svc.cluster.local"
    #: Seconds to wait for etcd health and kube-apiserver /readyz.
    start_timeout: float = 90.0
    #: Seconds between SIGTERM and SIGKILL.
    stop_timeout: float = 15.0
    #: kube-apiserver log verbosity (-v).
    apiserver_verbosity: int = 0
    extra_apiserver_args: tuple[str, ...] = ()
    extra_etcd_args: tuple[str, ...] = ()
    #: Keep the temp dir (logs, etcd data) after stop(), for debugging.
    keep_dir: bool = False
    #: Where etcd, kube-apiserver and kubectl are; default: from build.sh.
    bin_dir: Path | None = None
    #: Attempts with fresh ports if a port was taken between picking and binding.
    port_attempts: int = 3
    #: Run kube-controller-manager (CONTROLLERS) too. Off only for a bin_dir without one
    #: (make test-k8s's older kube-apiservers: a newer controller manager is an unsupported skew).
    controller_manager: bool = True


@dataclass(eq=False)  # identity semantics: it owns processes
class ControlPlane:
    """etcd + kube-apiserver on loopback, in a temp dir, with an admin kubeconfig."""

    config: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)

    bin_dir: Path | None = field(default=None, init=False)
    dir: Path | None = field(default=None, init=False)
    credentials: Credentials | None = field(default=None, init=False, repr=False)
    etcd_port: int = field(default=0, init=False)
    etcd_peer_port: int = field(default=0, init=False)
    apiserver_port: int = field(default=0, init=False)
    #: Seconds from launching etcd to kube-apiserver's /readyz answering ok.
    startup_seconds: float | None = field(default=None, init=False)
    #: Seconds the last restart_apiserver() took (stop + start + ready).
    restart_seconds: float | None = field(default=None, init=False)
    etcd: ManagedProcess | None = field(default=None, init=False, repr=False)
    apiserver: ManagedProcess | None = field(default=None, init=False, repr=False)
    controller_manager: ManagedProcess | None = field(default=None, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    # ---- properties

    @property
    def server_url(self) -> str:
        return f"https://{LOOPBACK}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.etcd_port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self._path("kubeconfig")

    @property
    def kubectl_path(self) -> Path:
        if self.bin_dir is None:
            raise ControlPlaneError("control plane not started")
        return self.bin_dir / "kubectl"

    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise ControlPlaneError("control plane not started")
        return self.dir / name

    # ---- lifecycle

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver and wait until the API server is ready."""
        with self._lock:
            if self.dir is not None:
                raise ControlPlaneError("control plane already started")
            self.bin_dir = self.config.bin_dir or find_binaries()
            remove_stale_dirs()
            self.dir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
            atexit.register(self.stop)
            try:
                self._start_with_fresh_ports()
            except BaseException:
                self.stop()
                raise
            return self

    def _start_with_fresh_ports(self) -> None:
        service_ip = str(next(ipaddress.ip_network(self.config.service_cluster_ip_range).hosts()))
        self.credentials = generate_credentials(self._path(""), service_ip)
        for attempt in range(1, self.config.port_attempts + 1):
            self.etcd_port, self.etcd_peer_port, self.apiserver_port = free_ports(3)
            try:
                began = time.monotonic()
                self._start_etcd()
                self.start_apiserver()
                self.startup_seconds = time.monotonic() - began
                self._write_kubeconfig()
                if self.config.controller_manager:
                    self.start_controller_manager()
                break
            except ControlPlaneError as exc:
                if attempt == self.config.port_attempts or "address already in use" not in str(exc):
                    raise
                self._stop_processes()
                shutil.rmtree(self._path("etcd"), ignore_errors=True)  # bootstrapped with the old ports

    def _start_etcd(self) -> None:
        peer = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        argv = [
            str(self.bin_dir / "etcd"),
            "--name=cp",
            f"--data-dir={self._path('etcd')}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=cp={peer}",
            "--unsafe-no-fsync",  # test data: durability is not needed, speed is
            "--log-level=warn",
            *self.config.extra_etcd_args,
        ]
        self.etcd = ManagedProcess("etcd", argv, self._path("etcd.log"))
        self.etcd.start()
        self._wait_ready(self.etcd, self._etcd_healthy, "etcd /health")

    def _apiserver_argv(self) -> list[str]:
        creds = self.credentials
        assert creds is not None
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={creds.serving_cert}",
            f"--tls-private-key-file={creds.serving_key}",
            f"--client-ca-file={creds.ca_cert}",
            f"--service-account-issuer={self.config.service_account_issuer}",
            f"--service-account-key-file={creds.sa_public_key}",
            f"--service-account-signing-key-file={creds.sa_private_key}",
            f"--service-cluster-ip-range={self.config.service_cluster_ip_range}",
            f"--authorization-mode={'RBAC' if self.config.rbac else 'AlwaysAllow'}",
            # The "default" ServiceAccount the admission plugin requires for every Pod comes
            # from the controller manager a moment after a namespace: Pods need not wait for it.
            "--disable-admission-plugins=ServiceAccount",
            # The "kubernetes" Service's Endpoints would point at 127.0.0.1, which
            # Endpoints validation rejects (loopback); nothing in-cluster needs them.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--cert-dir={self._path('apiserver-certs')}",
            f"-v={self.config.apiserver_verbosity}",
            *self.config.extra_apiserver_args,
        ]

    def start_apiserver(self) -> None:
        """Start kube-apiserver (etcd must be running) and wait for /readyz."""
        with self._lock:
            if self.apiserver is not None and self.apiserver.running():
                raise ControlPlaneError("kube-apiserver is already running")
            self.apiserver = ManagedProcess("kube-apiserver", self._apiserver_argv(), self._path("kube-apiserver.log"))
            self.apiserver.start()
            self._wait_ready(self.apiserver, self._apiserver_ready, "kube-apiserver /readyz")

    def _controller_manager_argv(self) -> list[str]:
        creds = self.credentials
        assert creds is not None
        return [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig_path}",  # admin (system:masters): one identity for every controller
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={creds.sa_private_key}",
            f"--root-ca-file={creds.ca_cert}",
            "--secure-port=0",  # no /healthz server: readiness is the "default" ServiceAccount appearing
            "--leader-elect=false",
            f"-v={self.config.apiserver_verbosity}",
        ]

    def start_controller_manager(self) -> None:
        """Start kube-controller-manager (kube-apiserver must be ready) and wait until its controllers act."""
        with self._lock:
            if self.controller_manager is not None and self.controller_manager.running():
                raise ControlPlaneError("kube-controller-manager is already running")
            self.controller_manager = ManagedProcess("kube-controller-manager", self._controller_manager_argv(),
                                                     self._path("kube-controller-manager.log"))
            self.controller_manager.start()
            self._wait_ready(self.controller_manager, self._controllers_acting,
                             'the "default" ServiceAccount (kube-controller-manager at work)')

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (gracefully, SIGKILL after the stop timeout)."""
        with self._lock:
            if self.apiserver is not None:
                self.apiserver.stop(self.config.stop_timeout)

    def restart_apiserver(self) -> float:
        """Stop and start kube-apiserver on the same port; etcd (and all data) stays. Returns seconds taken."""
        with self._lock:
            began = time.monotonic()
            self.stop_apiserver()
            self.start_apiserver()
            self.restart_seconds = time.monotonic() - began
            return self.restart_seconds

    def _stop_processes(self) -> None:
        for proc in (self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop(self.config.stop_timeout)

    def stop(self) -> None:
        """Kill kube-controller-manager, kube-apiserver and etcd, remove the temp dir. Idempotent; safe at exit."""
        with self._lock:
            self._stop_processes()
            if self.dir is not None and not self.config.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            atexit.unregister(self.stop)

    def __enter__(self) -> ControlPlane:
        if self.dir is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """Pids of the current etcd, kube-apiserver and kube-controller-manager processes (kept after stop())."""
        return [p.pid for p in (self.etcd, self.apiserver, self.controller_manager)
                if p is not None and p.pid is not None]

    # ---- readiness

    def _wait_ready(self, proc: ManagedProcess, ready: Callable[[], bool], what: str) -> None:
        """Poll ready() until it passes; fail fast, with the log tail, if proc exits."""
        deadline = time.monotonic() + self.config.start_timeout
        while not ready():
            if not proc.running():
                raise ControlPlaneError(f"{proc.name} exited before {what} was ok; log tail:\n{proc.log_tail()}")
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"{what} not ok after {self.config.start_timeout:.0f}s; {proc.name} log tail:\n{proc.log_tail()}"
                )
            time.sleep(0.1)

    def _etcd_healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection(LOOPBACK, self.etcd_port, timeout=2)
            conn.request("GET", "/health")
            response = conn.getresponse()
            return response.status == 200 and b'"true"' in response.read()
        except OSError:
            return False

    def _admin_ssl_context(self) -> ssl.SSLContext:
        creds = self.credentials
        assert creds is not None
        context = ssl.create_default_context(cafile=str(creds.ca_cert))
        context.load_cert_chain(str(creds.admin_cert), str(creds.admin_key))
        return context

    def _apiserver_ready(self) -> bool:
        try:
            context = self._admin_ssl_context()
            conn = http.client.HTTPSConnection(LOOPBACK, self.apiserver_port, timeout=2, context=context)
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:  # connection refused, TLS not up yet, timeouts
            return False

    def _controllers_acting(self) -> bool:
        try:
            context = self._admin_ssl_context()
            conn = http.client.HTTPSConnection(LOOPBACK, self.apiserver_port, timeout=2, context=context)
            conn.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return conn.getresponse().status == 200
        except OSError:
            return False

    # ---- kubeconfig and kubectl

    def _write_kubeconfig(self) -> None:
        creds = self.credentials
        assert creds is not None
        user = {"client-certificate-data": _b64(creds.admin_cert), "client-key-data": _b64(creds.admin_key)}
        self.write_kubeconfig(self.kubeconfig_path, user)

    def write_kubeconfig(self, path: Path, user: dict[str, str]) -> Path:
        """Write a kubeconfig for this server with the given user entry (0600)."""
        assert self.credentials is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(kubeconfig(self.server_url, self.credentials.ca_cert, user), sort_keys=False)
        path.touch(mode=0o600)
        path.write_text(text)
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (admin unless kubeconfig is given).

        ``timeout`` (seconds) bounds the process; a longer ``--timeout=`` given to kubectl
        itself (``delete --wait``, ``wait``) extends it, so kubectl reports its own timeout.
        """
        timeout = max([timeout, *(_duration_seconds(a[len("--timeout="):]) + 30 for a in args
                                  if a.startswith("--timeout="))])
        argv = [
            str(self.kubectl_path),
            f"--kubeconfig={kubeconfig or self.kubeconfig_path}",
            f"--cache-dir={self._path('kubectl-cache')}",
            *args,
        ]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def service_account_kubeconfig(
        self, name: str, namespace: str, *, create: bool = False, duration: str = "1h"
    ) -> Path:
        """A kubeconfig acting as ServiceAccount namespace/name with a TokenRequest token.

        With create=True the ServiceAccount is created first if it does not exist.
        """
        if create:
            metadata = {"name": name, "namespace": namespace}
            manifest = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()
        return self.write_kubeconfig(self._path(f"kubeconfig-sa-{namespace}-{name}"), {"token": token})

    def apply(self, manifest: str) -> list[str]:
        """Server-side apply a YAML manifest; returns the applied objects' kind/name."""
        return self.kubectl(*_APPLY, "-f", "-", input=manifest).stdout.split()

    def install_crds(self, directory: Path, timeout: float = 60) -> list[str]:
        """Apply every *.yaml in directory (none if it is missing) and wait for CRDs to be Established."""
        files = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
        names: list[str] = []
        for path in files:
            if any(doc for doc in yaml.safe_load_all(path.read_text())):
                names += self.kubectl(*_APPLY, "-f", str(path)).stdout.split()
        self.wait_established([n for n in names if n.startswith("customresourcedefinition")], timeout)
        return names

    def wait_established(self, crds: Sequence[str], timeout: float = 60) -> None:
        """Wait until each CRD (customresourcedefinition.../name) has condition Established."""
        if crds:
            self.kubectl("wait", "--for=condition=Established", f"--timeout={timeout:.0f}s", *crds,
                         timeout=timeout + 10)

    def log_tail(self, component: str = "kube-apiserver", lines: int = 40) -> str:
        """The end of etcd's or kube-apiserver's log."""
        proc = self.etcd if component == "etcd" else self.apiserver
        return proc.log_tail(lines) if proc else ""


def _duration_seconds(text: str) -> float:
    """A kubectl duration ("240s", "2m", "1m30s", "90") in seconds; 0 if it is not one."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not match or not text.strip():
        return 0.0
    hours, minutes, seconds = (float(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


#: Server-side apply: no last-applied annotation, so large CRDs fit.
_APPLY = ("apply", "--server-side", "--force-conflicts", "--field-manager=cml-tests", "-o", "name")
