"""``make dev``: the whole thing on one machine, for a newcomer, in one command.

Starts the local control plane (etcd + kube-apiserver), moto_server as EC2,
applies crds/, runs the CML simulator (tests/support/cmlsim.py) and the operator,
applies deploy/samples/cmlworker.yaml (its subnet, security group and AMI replaced
by ones that exist in moto, spec.cml.endpoint pointed at the simulator, idle stop
after 2 minutes), waits for Ready (CMLStarting first: the simulated controller
boots for 20 s), shows the worker and its events, then keeps running until Ctrl-C.

While it runs, a second shell can use it:

    source .dev/env        # KUBECONFIG, AWS_ENDPOINT_URL_EC2/_STS, AWS_DEFAULT_REGION, dummy credentials
    kubectl get cmlw -o wide
    aws ec2 describe-instances    # or boto3: both read AWS_ENDPOINT_URL_EC2

EC2 is the strict endpoint (the fault proxy in front of moto, docs/reliability.md): instances are
pending, stopping, shutting-down and initializing for realistic times (CML_EC2_TIMING, default
``dev``), and the operator's own key is held to deploy/iam-policy.json (plus the adoption policy);
the user's key in .dev/env is unrestricted, and sees exactly what the operator sees.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

import boto3
import yaml

from tests.cluster.controlplane import ControlPlane, ControlPlaneConfig
from tests.cluster.stopping import StopRequested, StopSignals
from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME, CMLSimProcess
from tests.support.motoserver import MotoServer, own_image
from tests.support.processes import FAKE_AWS_ENV, FaultProxyProcess, OperatorProcess
from tests.support.strictworld import strict_proxy

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / ".dev"
SAMPLE = REPO / "deploy" / "samples" / "cmlworker.yaml"


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)


SIM_PREFIX = "cml-worker-1"  # the sample worker's name: its simulated controller lives on that worker's instance
#: The simulated controller boots this long after every start of its instance (so CMLStarting shows).
SIM_BOOT_SECONDS = 20
DEV_IDLE_MINUTES = 2


def _sample_for_moto(moto_url: str, cml_endpoint: str) -> str:
    """The sample manifest with ids that exist in this moto, and its CML pointed at the simulator."""
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url,
                       aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.create_security_group(GroupName="cml-dev", Description="make dev", VpcId=subnet["VpcId"])
    image = own_image(ec2, subnet["SubnetId"], name="cml-dev-image")  # spec.amiOwners defaults to [self]
    manifest = yaml.safe_load(SAMPLE.read_text())
    manifest["spec"].update(subnetId=subnet["SubnetId"], securityGroupIds=[group["GroupId"]], amiId=image["ami"])
    manifest["spec"]["cml"].update(endpoint=cml_endpoint, idleStop={"afterMinutes": DEV_IDLE_MINUTES})
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cml-worker-1-login", "namespace": "default"},
              "stringData": {"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}}
    return yaml.safe_dump(secret, sort_keys=False) + "---\n" + yaml.safe_dump(manifest, sort_keys=False)


def _write_env(kubeconfig: Path, ec2_url: str, kubectl_dir: Path, dev_dir: Path = DEV) -> Path:
    # The virtualenv's bin too: the README's `python -m tests.support.cmlsim` and boto3 lines need its python.
    venv_bin = Path(sys.executable).parent
    # STS too: CMLAccounts' roles are assumed at the same stand-in (docs/accounts.md).
    values = {"KUBECONFIG": str(kubeconfig), "AWS_ENDPOINT_URL_EC2": ec2_url, "AWS_ENDPOINT_URL_STS": ec2_url,
              **FAKE_AWS_ENV, "PATH": f"{kubectl_dir}:{venv_bin}:$PATH"}
    lines = [f"export {key}={shlex.quote(value) if key != 'PATH' else value}" for key, value in values.items()]
    path = dev_dir / "env"
    path.write_text("# source .dev/env  (written by make dev; dummy credentials for moto)\n" + "\n".join(lines) + "\n")
    return path


#: EC2's clock in make dev: the ``dev`` preset (tests/support/ec2timing.py), or CML_EC2_TIMING.
DEV_EC2_TIMING = os.environ.get("CML_EC2_TIMING", "dev")


def _strict_ec2(moto_url: str, plane: ControlPlane) -> FaultProxyProcess:
    """The fault proxy as EC2: its clock on, the operator's key held to the shipped IAM policies."""
    return strict_proxy(moto_url, plane, DEV_EC2_TIMING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=240,
                        help="seconds to wait for the sample to be Ready (EC2's dev clock takes about a minute)")
    parser.add_argument("--exit-when-ready", action="store_true", help="stop everything once the sample is Ready")
    args = parser.parse_args(argv)
    stop = StopSignals().install()  # first: a signal at any later moment must still tear down cleanly
    try:
        return _run(args, stop)
    except StopRequested as exc:  # a signal during start-up; everything started is stopped by now
        _say(f"stopped during start-up ({exc})")
        return 128 + exc.signum


def _run(args: argparse.Namespace, stop: StopSignals) -> int:
    DEV.mkdir(exist_ok=True)
    kubeconfig = DEV / "kubeconfig"

    _say("starting the control plane (etcd + kube-apiserver)")
    sim = CMLSimProcess()  # started once EC2 is up: its controllers live on EC2's instances
    try:
        with ControlPlane(ControlPlaneConfig()) as plane, MotoServer() as moto:
            plane.install_crds(REPO / "crds")
            kubeconfig.write_bytes(plane.kubeconfig_path.read_bytes())
            kubeconfig.chmod(0o600)
            ec2 = _strict_ec2(moto.url, plane)
            # The simulator reads the same strict EC2 the operator does: CML boots once EC2 says running.
            sim = CMLSimProcess(ec2_endpoint=ec2.url, boot_seconds=SIM_BOOT_SECONDS).start()
            env_file = _write_env(kubeconfig, ec2.url, plane.kubectl_path.parent)
            _say(f"control plane ready in {plane.startup_seconds:.1f}s; EC2 at {ec2.url} (strict: timing "
                 f"{DEV_EC2_TIMING}, IAM on the operator's key; moto_server behind it at {moto.url}); "
                 f"CML simulator at {sim.url} (control {sim.control})")

            operator = OperatorProcess(kubeconfig, ec2.url, log_path=DEV / "operator.log",
                                       args=("--poll-interval", "2", "--fast-interval", "1", "--cml-interval", "10",
                                             "--cml-starting-interval", "5"))
            operator.metrics_port = 0
            try:
                _say("starting the operator (log: .dev/operator.log)")
                operator.start()
                _say(f"applying {SAMPLE.relative_to(REPO)} (ids filled in from moto)")
                print(plane.kubectl("apply", "-f", "-", input=_sample_for_moto(moto.url, sim.endpoint(SIM_PREFIX))).stdout,
                      end="")
                _say(f"waiting for Ready (Reconciling CMLStarting for about {SIM_BOOT_SECONDS}s while CML boots)")
                waited = plane.kubectl("wait", "--for=condition=Ready", "cmlworker/cml-worker-1", "-n", "default",
                                       f"--timeout={int(args.timeout)}s", check=False)
                print(waited.stdout or waited.stderr, end="")
                print(plane.kubectl("get", "cmlw", "-n", "default", "-o", "wide").stdout)
                print(plane.kubectl("get", "events", "-n", "default", "--field-selector",
                                    "involvedObject.name=cml-worker-1").stdout)
                if waited.returncode != 0:
                    print(operator.logs()[-4000:], file=sys.stderr)
                    return 1
                print(f"""The operator is running. In another shell:

        source {env_file.relative_to(REPO)}
        kubectl get cmlw -o wide
        kubectl describe cmlw cml-worker-1
        kubectl patch cmlw cml-worker-1 --type=merge -p '{{"spec":{{"desiredState":"Stopped"}}}}'
        kubectl delete cmlw cml-worker-1
        tail -f .dev/operator.log

    CML on the worker is the simulator; start and stop a lab there to watch the idle stop
    (after {DEV_IDLE_MINUTES} minutes without a running lab: Ready stays True with reason IdleStopped):

        python -m tests.support.cmlsim lab start --control {sim.control} --prefix {SIM_PREFIX}
        python -m tests.support.cmlsim lab stop --control {sim.control} --prefix {SIM_PREFIX}
        kubectl annotate cmlw cml-worker-1 --overwrite cml.dev/wake="$(date -u +%FT%TZ)"   # wake it again
        curl -s localhost:{operator.metrics_port}/metrics | grep ^cml_

    Press Ctrl-C here to stop everything.""", flush=True)
                if not args.exit_when_ready:
                    _say(f"{signal.Signals(stop.wait()).name} received")
            finally:
                stop.shield()
                _say("stopping")
                plane.kubectl("delete", "cmlworker", "--all", "-A", "--timeout=20s", check=False)
                operator.stop()
                ec2.stop()
                sim.stop()
    finally:
        sim.stop()  # also when a signal interrupts the start-up below
        # Here, not above: a signal between writing the kubeconfig and starting the operator (while the
        # strict proxy and the simulator start) must not leave a kubeconfig of a stopped cluster behind.
        for path in (kubeconfig, DEV / "env"):
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
