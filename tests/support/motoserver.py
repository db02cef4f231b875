"""moto_server as a real subprocess on a loopback port it binds itself: a stand-in EC2 endpoint.

The operator under test talks to it over HTTP exactly as it would to AWS
(AWS_ENDPOINT_URL=server.url), so there is no in-process mocking involved.

    with MotoServer() as moto:
        boto3.client("ec2", endpoint_url=moto.url, ...)
        moto.reset()                      # forget every resource

The process runs in its own process group and is killed by stop(), at
interpreter exit, and by the kernel if the Python process dies first.

The subprocess is this module run as a program (``python -m tests.support.motoserver``):
moto's own server application (the one the ``moto_server`` command serves) on port 0,
writing the port the kernel gave it to ``--port-file``. No port is picked here and
released for the child to take, so no other process can take it in between.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.cluster.controlplane import LOOPBACK, ManagedProcess, remove_stale_dirs

TMP_PREFIX = "cml-moto-"
#: moto reads this (at import) instead of its per-region image lists; see ``default_amis_file``.
AMIS_PATH_VAR = "MOTO_AMIS_PATH"


class MotoServerError(RuntimeError):
    """moto_server did not start or did not answer."""


def moto_server_argv(port_file: Path) -> list[str]:
    """This module as a program: moto's server on port 0, its port written to ``port_file``."""
    return [sys.executable, "-m", "tests.support.motoserver", "--host", LOOPBACK, "--port-file", str(port_file)]


def default_amis_file() -> Path:
    """moto's own default images (``ec2/resources/amis.json``, 44 images) as a file for ``MOTO_AMIS_PATH``.

    Without it moto also loads each region's "latest" and ECS-optimized lists, about 1,300
    images per region, rebuilt on every backend start and every reset: that was seconds of
    CPU per test (in the unit tests' in-process moto and in moto_server at each reset), and
    DescribeImages serialized them all. The 44 are the same images in every region, all
    owned by Amazon (alias amazon), which is what the tests need of a foreign image.
    Written once per moto version, atomically, so concurrent test workers can share it.
    """
    import importlib.metadata
    import importlib.resources

    version = importlib.metadata.version("moto")
    path = Path(tempfile.gettempdir()) / f"cml-moto-amis-{version}.json"
    if not path.exists():
        source = importlib.resources.files("moto") / "ec2" / "resources" / "amis.json.gz"
        with importlib.resources.as_file(source) as packed:
            data = gzip.decompress(packed.read_bytes())
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(path)
    return path


def use_default_amis(environ: MutableMapping[str, str] = os.environ) -> None:
    """Point moto at ``default_amis_file`` unless the caller chose a file (before moto is imported)."""
    environ.setdefault(AMIS_PATH_VAR, str(default_amis_file()))


@dataclass(eq=False)  # identity semantics: it owns processes
class MotoServer:
    """A moto_server subprocess bound to 127.0.0.1."""

    start_timeout: float = 30.0
    stop_timeout: float = 10.0

    port: int = field(default=0, init=False)
    dir: Path | None = field(default=None, init=False)
    process: ManagedProcess | None = field(default=None, init=False, repr=False)
    #: Seconds from launch until it answered HTTP.
    startup_seconds: float | None = field(default=None, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> MotoServer:
        """Launch moto_server and wait until it answers HTTP."""
        with self._lock:
            if self.dir is not None:
                raise MotoServerError("moto_server already started")
            remove_stale_dirs(TMP_PREFIX)
            self.dir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
            atexit.register(self.stop)
            try:
                self._launch()
            except BaseException:
                self.stop()
                raise
            return self

    def _launch(self) -> None:
        assert self.dir is not None
        port_file = self.dir / "port"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        use_default_amis(env)
        self.process = ManagedProcess("moto_server", moto_server_argv(port_file), self.dir / "moto.log", env)
        began = time.monotonic()
        self.process.start()
        self.port = self._wait_port(port_file)
        self._wait_answering()
        self.startup_seconds = time.monotonic() - began

    def _wait_port(self, port_file: Path) -> int:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if not self.process.running():
                raise MotoServerError(f"moto_server exited during start-up; log tail:\n{self.process.log_tail()}")
            if time.monotonic() >= deadline:
                raise MotoServerError(
                    f"moto_server did not report its port within {self.start_timeout:.0f}s; log tail:\n"
                    f"{self.process.log_tail()}")
            time.sleep(0.05)
        return int(port_file.read_text())

    def _wait_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            if not self.process.running():
                raise MotoServerError(f"moto_server exited during start-up; log tail:\n{self.process.log_tail()}")
            if time.monotonic() >= deadline:
                raise MotoServerError(
                    f"moto_server did not answer within {self.start_timeout:.0f}s; log tail:\n{self.process.log_tail()}"
                )
            time.sleep(0.1)

    def _request(self, method: str, path: str, timeout: float = 5) -> int:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def _answers(self) -> bool:
        try:
            self._request("GET", "/moto-api/data.json", timeout=2)  # any HTTP status will do
            return True
        except OSError:
            return False

    def reset(self) -> None:
        """Forget every resource in every service and region (POST /moto-api/reset)."""
        status = self._request("POST", "/moto-api/reset")
        if status != 200:
            raise MotoServerError(f"POST /moto-api/reset answered HTTP {status}")

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def stop(self) -> None:
        """Kill the process group and remove the temp dir. Idempotent; safe at exit."""
        with self._lock:
            if self.process is not None:
                self.process.stop(self.stop_timeout)
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            atexit.unregister(self.stop)

    def __enter__(self) -> MotoServer:
        if self.dir is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


#: A name pattern matching a few of moto's preloaded Amazon images in every region.
AMAZON_IMAGE_NAMES = "amzn2-ami-hvm-*-x86_64-gp2"


def amazon_image(ec2: object) -> dict:
    """One of moto's preloaded images owned by Amazon (alias amazon), as DescribeImages describes it.

    Filtered by name: moto preloads about 1,300 images per region, and serializing all of
    them took seconds per call (most of the unit tests' time went there). Falls back to the
    whole list if a moto release no longer has such an image.
    """
    describe = ec2.describe_images  # type: ignore[attr-defined]
    found = describe(Owners=["amazon"], Filters=[{"Name": "name", "Values": [AMAZON_IMAGE_NAMES]}])["Images"]
    return sorted(found, key=lambda image: image["ImageId"])[0] if found else describe(Owners=["amazon"])["Images"][0]


def own_image(ec2: object, subnet_id: str, name: str = "cml-test-image") -> dict[str, str]:
    """An image owned by moto's account, as ``spec.amiOwners: [self]`` (the default) requires.

    moto's preloaded images all belong to AWS accounts (alias amazon); CopyImage makes one
    of our own (moto records the caller's account as owner) without leaving an instance
    behind. ``subnet_id`` is kept for callers that pass it.
    """
    del subnet_id
    amazon = amazon_image(ec2)["ImageId"]
    image_id = ec2.copy_image(SourceImageId=amazon, SourceRegion=ec2.meta.region_name,  # type: ignore[attr-defined]
                              Name=name)["ImageId"]
    return {"ami": image_id, "ami_name": name, "amazon_ami": amazon}


def index_tag_lookups() -> None:
    """Make moto read one EC2 resource's tags from its own entry instead of scanning every tag.

    moto 5.2.5 answers ``TaggedEC2Resource.get_tags`` with ``describe_tags(resource-id=<id>)``,
    which copies and regex-matches the tags of every resource in the region. Every tag filter
    and every serialized instance asks for it, so a DescribeInstances filtered by tag over N
    instances costs N x N: at N=1000 one call took tens of seconds of CPU and the operator's
    reads timed out (``make bench``; py-spy: 44 % of moto's busy time in ``describe_tags``).
    The answer is the same list: an id without ``*``/``?`` only ever matches itself there
    (fnmatch's pattern is anchored), in the same shape (tests/unit/test_motoserver_tags.py).
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: TaggedEC2Resource) -> list[dict[str, str]]:
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        tags = self.ec2_backend.tags.get(resource_id, {})  # type: ignore[attr-defined]
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [{"resource_id": resource_id, "key": key, "value": value, "resource_type": kind}
                for key, value in list(tags.items())]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    """Serve moto's application (what ``moto_server`` serves) on ``--port`` (0: the kernel picks)."""
    from moto.server import ThreadedMotoServer

    index_tag_lookups()

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    args = parser.parse_args(argv)
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    if args.port_file:
        partial = args.port_file.with_suffix(".partial")
        partial.write_text(str(port))
        partial.replace(args.port_file)  # readers never see half a number
    print(f"moto_server listening on http://{host}:{port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
