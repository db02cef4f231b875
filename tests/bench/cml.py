"""CML benchmark: N CMLWorkers with spec.cml (and a licence) against moto and the CML simulator.

    make bench BENCH_ARGS=--cml                        (N=200, a 3-minute steady window)
    python -m tests.bench.scale --cml --n 20 --window 120

Measured, and printed with one machine-readable SUMMARY line:

* ready_s: seconds from the first create request to every worker Ready with reason CMLReady
  (EC2 ready, CML ready, credentials and licence valid);
* cml_requests_per_worker_minute: CML requests counted by the simulator (outside the
  operator) during a steady window after all are Ready, per worker per minute (target <= 3);
* the same per operation, and the operator's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.bench.scale import network, peak_rss_mb, runtime_python
from tests.cluster.controlplane import ControlPlane, ControlPlaneConfig
from tests.support.cmlsim import DEFAULT_PASSWORD, DEFAULT_USERNAME, CMLSimProcess, control_request
from tests.support.motoserver import MotoServer
from tests.support.strictworld import BENCH_EC2_TIMING, strict_proxy
from tests.support.processes import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]


def manifest(name: str, net: dict[str, str], endpoint: str, licence: bool) -> dict:
    cml: dict = {"endpoint": endpoint, "credentialsSecretRef": {"name": "cml-login"}, "idleStop": {"afterMinutes": 600}}
    if licence:
        cml["license"] = {"tokenSecretRef": {"name": "cml-licence", "key": "token"}}
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker", "metadata": {"name": name},
            "spec": {"region": "us-east-1", "amiId": net["ami"], "subnetId": net["subnet"],
                     "securityGroupIds": [net["sg"]], "instanceType": "m5zn.metal", "cml": cml}}


def cml_ready(api: k8s.CustomObjectsApi, namespace: str) -> int:
    items = api.list_namespaced_custom_object("cml.dev", "v1alpha1", namespace, "cmlworkers")["items"]
    return sum(1 for item in items for c in (item.get("status") or {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True" and c["reason"] == "CMLReady")


def sim_calls(sim: CMLSimProcess) -> Counter:
    summary = control_request(sim.control, "GET", "/")
    total: Counter = Counter()
    for view in summary["workers"].values():
        total.update(view["calls"])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench BENCH_ARGS=--cml", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--window", type=float, default=180.0, help="steady-state seconds to count CML requests")
    parser.add_argument("--cml-interval", type=float, default=60.0, help="operator --cml-interval (its default)")
    parser.add_argument("--no-licence", dest="licence", action="store_false", help="workers without spec.cml.license")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; n={args.n}; window {args.window}s; --cml-interval {args.cml_interval}; "
          f"licence {args.licence}", flush=True)

    with ControlPlane(ControlPlaneConfig(rbac=False)) as plane, MotoServer() as moto:
        plane.install_crds(REPO / "crds")
        # Each controller lives on its instance (boots after the start); the doors follow moto every 2 s
        # (every request asks again), so N instances do not flood moto with DescribeInstances.
        sim = CMLSimProcess(ec2_endpoint=moto.url, boot_seconds=5.0, poll_seconds=2.0).start()
        proxy = strict_proxy(moto.url, plane, BENCH_EC2_TIMING)  # EC2's clock and IAM, as in e2e
        api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(plane.kubeconfig_path)))
        namespace = f"bench-cml-{args.n}-{int(time.time())}"
        plane.kubectl("create", "namespace", namespace)
        for name, data in (("cml-login", {"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}),
                           ("cml-licence", {"token": "bench-token"})):
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}))
        net = network(moto.url)
        log = REPO / ".dev" / f"bench-operator-{namespace}.log"
        log.parent.mkdir(exist_ok=True)
        operator = OperatorProcess(
            plane.kubeconfig_path, proxy.url, namespaces=[namespace], log_path=log, python=runtime_python(),
            args=["--resync-interval", "20", "--poll-interval", "10", "--fast-interval", "5", "--mutating-rate", "25",
                  "--mutating-burst", "50", "--mutating-concurrency", "16", "--read-rate", "1000", "--read-burst",
                  "1000", "--cml-interval", str(args.cml_interval), "--log-level", args.log_level]).start()
        try:
            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda i: api.create_namespaced_custom_object(
                    "cml.dev", "v1alpha1", namespace, "cmlworkers",
                    manifest(f"w-{i:04d}", net, sim.endpoint(f"w-{i:04d}"), args.licence)), range(args.n)))
            wait_for(lambda: cml_ready(api, namespace) == args.n, args.timeout, interval=2.0,
                     what=f"{args.n} workers Ready (CMLReady)")
            ready_s = time.monotonic() - started
            to_ready = sim_calls(sim)
            time.sleep(args.cml_interval)  # the first full look after Ready settles
            before = sim_calls(sim)
            time.sleep(args.window)
            steady = sim_calls(sim) - before
            still_ready = cml_ready(api, namespace)
            rss = peak_rss_mb(operator.pid)
        finally:
            operator.stop()
            proxy.stop()
            sim.stop()
    per_worker_minute = sum(steady.values()) / args.n / (args.window / 60.0)
    print(json.dumps({"calls_to_ready": dict(to_ready), "steady_calls": dict(steady)}, sort_keys=True))
    print(f"\n| N | ready s | CML requests / worker / minute | still Ready | peak RSS MB |\n| --- | --- | --- | --- | --- |"
          f"\n| {args.n} | {ready_s:.1f} | {per_worker_minute:.2f} | {still_ready}/{args.n} | {rss:.0f} |\n")
    print(f"SUMMARY n={args.n} ready_s={ready_s:.1f} cml_requests_per_worker_minute={per_worker_minute:.2f} "
          f"rss_mb={rss:.0f}")
    return 0 if per_worker_minute <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
