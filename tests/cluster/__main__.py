"""Run the test control plane standalone, for trying the operator by hand (`make cluster`).

    python -m tests.cluster [--no-rbac] [--kubeconfig .dev/kubeconfig]

Starts etcd + kube-apiserver + kube-controller-manager, applies crds/, writes an admin kubeconfig and
waits until Ctrl-C, SIGTERM or SIGHUP (see tests/cluster/stopping.py: any number of
them, at any moment), then stops everything and removes the kubeconfig it wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.cluster.controlplane import ControlPlane, ControlPlaneConfig, ControlPlaneError
from tests.cluster.stopping import StopRequested, StopSignals

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--no-rbac", action="store_true", help="authorize everything (AlwaysAllow) instead of RBAC")
    parser.add_argument("--kubeconfig", type=Path, default=REPO / ".dev" / "kubeconfig",
                        help="where to write the admin kubeconfig (default: .dev/kubeconfig)")
    parser.add_argument("--crds", type=Path, default=REPO / "crds", help="directory of CRD manifests to apply")
    return parser.parse_args(argv)


def instructions(plane: ControlPlane, kubeconfig: Path, crds: list[str]) -> str:
    version = json.loads(plane.kubectl("version", "--client", "-o", "json").stdout)["clientVersion"]["gitVersion"]
    mode = "RBAC (you are admin, in system:masters)" if plane.config.rbac else "AlwaysAllow"
    installed = "\n".join(f"    {name}" for name in crds) or "    (none)"
    return f"""
Control plane ready in {plane.startup_seconds:.1f}s: {plane.server_url}
  authorization: {mode}
  etcd: {plane.etcd_url}   logs: {plane.dir}
  CRDs applied:
{installed}

Use it from another shell:
    export KUBECONFIG={kubeconfig}
    export PATH={plane.bin_dir}:$PATH   # kubectl {version}, if yours is missing or older
    kubectl get ns

kube-controller-manager runs the garbage collector and the namespace controller; no scheduler, no nodes.
Press Ctrl-C to stop it (etcd data is discarded).
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = StopSignals().install()  # first: a signal during start-up must also tear down cleanly
    plane = ControlPlane(ControlPlaneConfig(rbac=not args.no_rbac))
    kubeconfig = args.kubeconfig.resolve()
    try:
        with plane:
            try:
                crds = plane.install_crds(args.crds)
                kubeconfig.parent.mkdir(parents=True, exist_ok=True)
                kubeconfig.write_bytes(plane.kubeconfig_path.read_bytes())
                kubeconfig.chmod(0o600)
                print(instructions(plane, kubeconfig, crds), flush=True)
                stop.wait()
            finally:
                stop.shield()
                print("Stopping the control plane...", flush=True)
                kubeconfig.unlink(missing_ok=True)
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StopRequested as exc:  # a signal during start-up; everything started is stopped by now
        print(f"Stopped during start-up ({exc}).", flush=True)
        return 128 + exc.signum
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
