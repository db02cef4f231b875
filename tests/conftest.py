"""Suite-wide fixtures: the real control plane, moto_server, a namespace per test.

The session's control plane has RBAC on. The admin kubeconfig (`kubeconfig`,
`control_plane.kubectl`) is in system:masters, so it may do anything; to test
permissions act as a ServiceAccount (`control_plane.service_account_kubeconfig`).
Every *.yaml in crds/ is applied once, and its CRDs are Established, before the
first test that uses the cluster.

kube-controller-manager runs its garbage collector and namespace controller (see
tests/cluster/controlplane.py): ownerReferences cascade and a deleted namespace is
emptied and removed once every finalizer in it is released. A namespace whose
workers still carry the operator's finalizer after their test's operator stopped
stays Terminating; nothing waits for it.

Without Go and without cached binaries the cluster tests are skipped, unless CI
or REQUIRE_CLUSTER is set (non-empty, not 0/false): then they fail instead.
Tests that use a cluster fixture get the `cluster` marker automatically.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import botocore.loaders
import botocore.session
import pytest
from kubernetes import config
from kubernetes.client import ApiClient

from tests.cluster.controlplane import (
    ControlPlane,
    ControlPlaneConfig,
    ControlPlaneUnavailable,
    find_binaries,
    has_controller_manager,
)
from tests.support.motoserver import MotoServer, use_default_amis

# Before anything imports moto: its default images only, not ~1,300 per region (see default_amis_file).
use_default_amis()

REPO = Path(__file__).resolve().parent.parent
CRDS_DIR = REPO / "crds"
#: Fixtures that need the control plane; a test using one is marked `cluster`.
CLUSTER_FIXTURES = frozenset({"control_plane_bin_dir", "tools_bin_dir", "control_plane", "kubeconfig", "namespace",
                              "api_client"})


@pytest.fixture(scope="session", autouse=True)
def shared_botocore_loader() -> Iterator[None]:
    """One botocore data loader for every session the tests create.

    botocore parses the EC2 service model (megabytes of JSON) once per Session; tests build
    a client (so a Session) per test, which cost most of a second of CPU each time.
    The loader only caches what it reads from botocore's own data files.
    """
    loaders: dict[str | None, botocore.loaders.Loader] = {}

    def create_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
        if search_path_string not in loaders:
            loaders[search_path_string] = botocore.loaders.create_loader(search_path_string)
        return loaders[search_path_string]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", create_loader)
        yield


def cluster_required() -> bool:
    """True when a missing control plane must fail the run rather than skip tests."""
    values = (os.environ.get(var, "").strip().lower() for var in ("CI", "REQUIRE_CLUSTER"))
    return any(value not in ("", "0", "false", "no") for value in values)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
    items.sort(key=run_order)


def run_order(item: pytest.Item) -> int:
    """Longest first, so that under -n the last tests to start are short ones, not a three-minute tail.

    The sort is stable (file order within each rank). xdist hands out tests in this order and
    queues up to three per test worker.
    """
    if item.get_closest_marker("slow"):
        return 0
    return 2 if item.get_closest_marker("cluster") is None else 1


@pytest.fixture(scope="session")
def control_plane_bin_dir() -> Path:
    """Where etcd, kube-apiserver and kubectl are (built by build.sh if needed).

    Skips the test if they are missing and cannot be built, or fails it when
    CI/REQUIRE_CLUSTER say the cluster is required. Tests that run their own
    ControlPlane pass it as ControlPlaneConfig(bin_dir=...).
    """
    if os.environ.get("CML_K8S_BIN_DIR"):  # the version matrix (make test-k8s) picks another kube-apiserver
        return Path(os.environ["CML_K8S_BIN_DIR"])
    try:
        return find_binaries()
    except ControlPlaneUnavailable as exc:
        if cluster_required():
            pytest.fail(f"control plane required (CI/REQUIRE_CLUSTER set) but unavailable: {exc}", pytrace=False)
        pytest.skip(f"no control plane: {exc}")


@pytest.fixture(scope="session")
def tools_bin_dir() -> Path:
    """Where helm and the kstatus helper are (tests/tools/build.sh builds them from Go modules once).

    Skips without Go and without a cache, or fails when CI/REQUIRE_CLUSTER say so.
    """
    script = REPO / "tests" / "tools" / "build.sh"
    proc = subprocess.run([str(script)], stdout=subprocess.PIPE, stderr=None, text=True)
    if proc.returncode != 0:
        if cluster_required() or shutil.which("go"):
            pytest.fail(f"{script} failed with exit status {proc.returncode} (see its stderr)", pytrace=False)
        pytest.skip("helm/kstatus are not built and Go is not installed")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def control_plane(control_plane_bin_dir: Path) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver (RBAC on) for the whole session, with crds/ installed."""
    config = ControlPlaneConfig(bin_dir=control_plane_bin_dir, controller_manager=has_controller_manager(
        control_plane_bin_dir))
    with ControlPlane(config) as plane:
        plane.install_crds(CRDS_DIR)
        yield plane


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """Path of the admin (system:masters) kubeconfig."""
    return control_plane.kubeconfig_path


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Iterator[ApiClient]:
    """A kubernetes.client.ApiClient for the admin."""
    client = config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    yield client
    client.close()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards without waiting for the namespace controller."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto_server process for the session (state shared; see `moto`)."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The session's moto_server, reset to empty before the test."""
    moto_server.reset()
    return moto_server
