"""The real image, built from the Dockerfile with buildah and run with podman, takes a worker to Ready.

The image is built on the local Debian base (tests/image/base.sh: no public registry is
reachable here) by tests/image/build.sh, exactly what `make image` runs. The container
runs as the image's non-root user with a read-only root filesystem, on the host network,
against the test API server and moto behind the fault proxy, like the operator process
in the other tests. Build time and image size are printed (run with -s).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import cluster_required
from tests.support import images
from tests.support.processes import FAKE_AWS_ENV, OperatorProcess, free_ports, wait_for

from .conftest import instances_of, worker_manifest

# One image build at a time: buildah's storage and the image name are the machine's, not the test worker's.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("image")]


@pytest.fixture(scope="session")
def operator_image() -> images.BuiltImage:
    if not images.tools_available():
        try:
            images.install_tools()
        except Exception as exc:  # noqa: BLE001 - skip or fail below with the reason
            if cluster_required():
                pytest.fail(f"cannot install buildah/podman: {exc}", pytrace=False)
            pytest.skip(f"buildah/podman not available: {exc}")
    built = images.build_image()
    print(f"\nimage {built.name} on {built.base}: built in {built.seconds:.0f}s, {built.size_bytes / 1e6:.0f} MB")
    return built


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"cml-operator-test-{uuid.uuid4().hex[:8]}"
    yield name
    images.podman("rm", "--force", "--time", "5", name, check=False)


def test_the_image_runs_the_operator_non_root_read_only_and_a_worker_gets_ready(
        operator_image, container_name, control_plane, kube, network, aws, proxy, tmp_path):
    # The container's user (65532) must be able to read the kubeconfig: a world-readable copy, test only.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(control_plane.kubeconfig_path.read_bytes())
    kubeconfig.chmod(0o644)
    metrics_port, liveness_port = free_ports(2)  # distinct, or the two servers collide
    env = {**FAKE_AWS_ENV, "KUBECONFIG": "/etc/cml-operator/kubeconfig", "AWS_ENDPOINT_URL_EC2": proxy.url}
    env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    images.podman(
        "run", "--detach", "--name", container_name, "--network", "host", "--read-only",
        "--volume", f"{kubeconfig}:/etc/cml-operator/kubeconfig:ro", *env_args, operator_image.name,
        "run", "--namespace", kube.namespace, "--metrics-port", str(metrics_port),
        "--liveness-port", str(liveness_port), *OperatorProcess.FAST_ARGS)

    def logs() -> str:
        return images.podman("logs", container_name, check=False).stdout[-4000:]

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=2) as response:
            return response.status == 200

    try:
        wait_for(healthy, 90, what="the container's /healthz")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from exc

    inspected = json.loads(images.podman("inspect", container_name).stdout)[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["Config"]["User"] == "65532:65532"
    assert images.podman("exec", container_name, "id", "-u").stdout.strip() == "65532"
    write = images.podman("exec", container_name, "touch", "/opt/venv/written", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr

    kube.apply(worker_manifest("from-image", network))
    try:
        kube.wait_condition("from-image", "Ready", timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from exc
    assert len(instances_of(aws, kube.get("from-image")["metadata"]["uid"])) == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        assert b"cml_" in response.read()

    kube.delete("from-image")
    images.podman("stop", "--time", "20", container_name)
    state = json.loads(images.podman("inspect", container_name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, logs()
    assert "Traceback" not in logs()


def test_the_image_is_lean(operator_image):
    listing = images.podman("run", "--rm", "--entrypoint", "/bin/sh", operator_image.name, "-c",
                            "ls /opt/venv/lib/python3*/site-packages; command -v gcc cc make || true").stdout
    assert "pytest" not in listing and "moto" not in listing and "kubernetes" not in listing.split()
    assert "gcc" not in listing and "/make" not in listing
    assert operator_image.size_bytes < 600e6, f"{operator_image.size_bytes / 1e6:.0f} MB"
