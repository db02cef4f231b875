"""Pool benchmark: `kubectl scale` a CMLWorkerPool 0 -> N -> M against the real control plane and moto_server.

    make bench BENCH_ARGS=--pool                         (0 -> 50 -> 5)
    python -m tests.bench.scale --pool --up 10 --down 3  (smaller)

Measured, and printed with one machine-readable SUMMARY line:

* up_s: seconds from `kubectl scale --replicas=N` to every child Ready and the pool Ready;
* RunInstances calls for the scale-up (counted at the HTTP proxy in front of moto; at most N);
* Kubernetes API writes per worker for the scale-up, from kube-apiserver's own
  ``apiserver_request_total`` (POST/PATCH/PUT/DELETE on cmlworkers, their status,
  cmlworkerpools and their status, and events; the benchmark's own scale requests are not counted);
* down_s and the TerminateInstances calls for N -> M, and whether exactly the instances
  of the children the scale-down order picks were terminated (the others still running).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import boto3
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cml_operator.reconcile.pool import Child, scale_down_order
from tests.bench import measure
from tests.bench.measure import diff
from tests.cluster.controlplane import ControlPlane, ControlPlaneConfig
from tests.support.motoserver import MotoServer, amazon_image
from tests.support.strictworld import BENCH_EC2_TIMING, strict_proxy
from tests.support.processes import FAKE_AWS_ENV, FaultProxyProcess, OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
RESOURCES = ("cmlworkers", "cmlworkerpools", "events")


def apiserver_writes(plane: ControlPlane) -> dict[str, int]:
    """Write requests so far, keyed 'VERB resource[/subresource]', for the pool's kinds and events."""
    return measure.apiserver_writes(plane.kubectl("get", "--raw", "/metrics").stdout, RESOURCES)


class Bench:
    def __init__(self, plane: ControlPlane, moto: MotoServer, proxy: FaultProxyProcess, namespace: str) -> None:
        self.plane, self.proxy, self.namespace = plane, proxy, namespace
        self.api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(plane.kubeconfig_path)))
        self.ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.url,
                                aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])

    def pool_manifest(self) -> dict:
        subnet = self.ec2.describe_subnets()["Subnets"][0]
        group = self.ec2.create_security_group(GroupName="bench-pool", Description="bench",
                                               VpcId=subnet["VpcId"])["GroupId"]
        image = amazon_image(self.ec2)["ImageId"]
        return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorkerPool", "metadata": {"name": "bench"},
                "spec": {"replicas": 0, "template": {"spec": {
                    "region": "us-east-1", "amiId": image, "subnetId": subnet["SubnetId"],
                    "securityGroupIds": [group], "instanceType": "m5zn.metal", "tags": {"bench": "pool"}}}}}

    def children(self) -> list[dict]:
        items = self.api.list_namespaced_custom_object("cml.dev", "v1alpha1", self.namespace, "cmlworkers",
                                                       label_selector="cml.dev/pool=bench")["items"]
        return [c for c in items if not c["metadata"].get("deletionTimestamp")]

    def pool_ready(self, replicas: int) -> bool:
        body = self.api.get_namespaced_custom_object("cml.dev", "v1alpha1", self.namespace, "cmlworkerpools", "bench")
        status = body.get("status") or {}
        ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
        children = self.children()
        return (ready == "True" and status.get("readyReplicas") == replicas and len(children) == replicas
                and all(Child.from_body(c).ready for c in children))

    def scale(self, replicas: int) -> None:
        self.plane.kubectl("scale", "cmlworkerpool/bench", f"--replicas={replicas}", "-n", self.namespace)

    def instance_of(self, child: dict) -> str:
        return child["status"]["instanceId"]

    def state(self, instance_id: str) -> str:
        raw = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return raw["State"]["Name"]


def run(args: argparse.Namespace) -> int:
    print(f"machine: {os.cpu_count()} cores; pool 0 -> {args.up} -> {args.down}; poll {args.poll}s", flush=True)
    with ControlPlane(ControlPlaneConfig(rbac=False)) as plane, MotoServer() as moto:
        plane.install_crds(REPO / "crds")
        proxy = strict_proxy(moto.url, plane, BENCH_EC2_TIMING)  # EC2's clock and IAM, as in e2e
        namespace = f"bench-pool-{int(time.time())}"
        plane.kubectl("create", "namespace", namespace)
        log = REPO / ".dev" / f"bench-operator-{namespace}.log"
        log.parent.mkdir(exist_ok=True)
        operator = OperatorProcess(plane.kubeconfig_path, proxy.url, namespaces=[namespace], log_path=log, args=[
            "--poll-interval", str(args.poll), "--resync-interval", "20", "--fast-interval", "2",
            "--mutating-rate", "25", "--mutating-burst", "50", "--mutating-concurrency", "16",
            "--read-rate", "1000", "--read-burst", "1000", "--log-level", "WARNING"]).start()
        bench = Bench(plane, moto, proxy, namespace)
        try:
            bench.api.create_namespaced_custom_object("cml.dev", "v1alpha1", namespace, "cmlworkerpools",
                                                      bench.pool_manifest())
            wait_for(lambda: bench.pool_ready(0), 60, what="the empty pool Ready")

            proxy.reset_counts()
            before = apiserver_writes(plane)
            started = time.monotonic()
            bench.scale(args.up)
            wait_for(lambda: bench.pool_ready(args.up), args.timeout, interval=0.5, what=f"{args.up} Ready")
            up_s = time.monotonic() - started
            up_calls = {a: sum(o.values()) for a, o in sorted(proxy.calls().items())}
            up_writes = diff(apiserver_writes(plane), before)
            up_writes.pop("PATCH cmlworkerpools/scale", None)  # the benchmark's own kubectl scale
            writes_per_worker = sum(up_writes.values()) / args.up

            children = bench.children()
            instances = {c["metadata"]["name"]: bench.instance_of(c) for c in children}
            order = scale_down_order([Child.from_body(c) for c in children])
            chosen = {instances[c.name] for c in order[:args.up - args.down]}
            proxy.reset_counts()
            started = time.monotonic()
            bench.scale(args.down)
            wait_for(lambda: bench.pool_ready(args.down), args.timeout, interval=0.5, what=f"{args.down} Ready")
            down_s = time.monotonic() - started
            wait_for(lambda: all(bench.state(i) in ("shutting-down", "terminated") for i in chosen), 120,
                     what="the chosen instances terminated")
            down_calls = {a: sum(o.values()) for a, o in sorted(proxy.calls().items())}
            terminated = {i for i in instances.values() if bench.state(i) in ("shutting-down", "terminated")}
            exact = terminated == chosen and len(terminated) == args.up - args.down
        finally:
            operator.stop()
            proxy.stop()

    print(json.dumps({"up_calls": up_calls, "up_writes": up_writes, "down_calls": down_calls}), flush=True)
    print(f"\n| step | seconds | RunInstances | TerminateInstances | k8s writes / worker |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| 0 -> {args.up} | {up_s:.1f} | {up_calls.get('RunInstances', 0)} | {up_calls.get('TerminateInstances', 0)}"
          f" | {writes_per_worker:.2f} |")
    print(f"| {args.up} -> {args.down} | {down_s:.1f} | {down_calls.get('RunInstances', 0)} | "
          f"{down_calls.get('TerminateInstances', 0)} | |")
    print(f"\nterminated exactly the {args.up - args.down} chosen instances: {exact}")
    print(f"SUMMARY pool up={args.up} up_s={up_s:.1f} run_instances={up_calls.get('RunInstances', 0)} "
          f"k8s_writes_per_worker={writes_per_worker:.2f} down={args.down} down_s={down_s:.1f} "
          f"terminate_instances={down_calls.get('TerminateInstances', 0)} exact={exact}")
    return 0 if exact and up_calls.get("RunInstances", 0) <= args.up else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench BENCH_ARGS=--pool", description=__doc__.splitlines()[0])
    parser.add_argument("--up", type=int, default=50, help="replicas to scale up to from 0")
    parser.add_argument("--down", type=int, default=5, help="replicas to scale down to")
    parser.add_argument("--poll", type=float, default=2.0, help="operator --poll-interval (the pool's pass interval)")
    parser.add_argument("--timeout", type=float, default=600.0)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
