"""Scale benchmark: N CMLWorkers against the real control plane and moto_server; prints figures.

    python -m tests.bench.scale [--sizes 100,500,1000] [--resync 20] [--cycles 2]   (make bench)

For each N, the same workload runs twice in this invocation: with batched reads
(the default) and with ``--no-batching`` (every read its own call). Measured:

* ready_s: seconds from the first create request to every worker Ready;
* EC2 calls by operation, counted at the HTTP proxy in front of moto (outside the operator);
* EC2 read calls per resync cycle at steady state (all Ready; counted over ``--cycles`` cycles);
* Kubernetes API writes per worker from apply to Ready, from kube-apiserver's own
  ``apiserver_request_total`` (PATCH/PUT/POST/DELETE on cmlworkers, their status, and events;
  the benchmark's own N creates are not counted);
* the operator's peak RSS (VmHWM).

The last lines are one machine-readable summary per N:
``SUMMARY n=<N> ready_s=<s> ec2_reads_per_resync=<x> unbatched_reads_per_resync=<y> k8s_writes_per_worker=<w> rss_mb=<m>``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.cluster.controlplane import ControlPlane, ControlPlaneConfig
from tests.support.motoserver import MotoServer
from tests.support.processes import FAKE_AWS_ENV, FaultProxyProcess, OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
READ_PREFIXES = ("Describe",)
WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")
_METRIC = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


@dataclass
class RunResult:
    n: int
    batching: bool
    ready_s: float
    ec2_calls_to_ready: dict[str, int]
    reads_per_resync: float
    k8s_writes: dict[str, int]
    writes_per_worker: float
    rss_mb: float
    steady_calls: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


RUNTIME_VENV = REPO / ".venv-runtime"


def runtime_python() -> str:
    """A virtualenv with the operator and its runtime dependencies only, as the image has them.

    The test virtualenv also holds the kubernetes client, which Kopf imports when present;
    measuring the operator's memory there would count a library production does not load.
    """
    python = RUNTIME_VENV / "bin" / "python"
    marker = RUNTIME_VENV / ".installed"
    sources = [REPO / "pyproject.toml", REPO / "constraints.txt"]
    if not marker.exists() or any(p.stat().st_mtime > marker.stat().st_mtime for p in sources):
        subprocess.run([sys.executable, "-m", "venv", str(RUNTIME_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip==26.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints.txt"),
                        "-e", str(REPO)], check=True)
        marker.touch()
    return str(python)


def apiserver_writes(plane: ControlPlane) -> dict[str, int]:
    """Write requests so far, keyed 'VERB resource[/subresource]', for cmlworkers and events."""
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    totals: dict[str, int] = defaultdict(int)
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") not in WRITE_VERBS or labels.get("resource") not in ("cmlworkers", "events"):
            continue
        key = f"{labels['verb']} {labels['resource']}" + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        totals[key] += int(float(match["value"]))
    return dict(totals)


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
            if after.get(k, 0) - before.get(k, 0)}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def network(moto_url: str) -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url,
                       aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=subnet["VpcId"])["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return {"subnet": subnet["SubnetId"], "sg": group, "ami": image}


def manifest(name: str, net: dict[str, str]) -> dict:
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker", "metadata": {"name": name},
            "spec": {"region": "us-east-1", "amiId": net["ami"], "subnetId": net["subnet"],
                     "securityGroupIds": [net["sg"]], "instanceType": "m5zn.metal", "tags": {"bench": "scale"}}}


def count_ready(api: k8s.CustomObjectsApi, namespace: str) -> int:
    items = api.list_namespaced_custom_object("cml.dev", "v1alpha1", namespace, "cmlworkers")["items"]
    return sum(1 for item in items for c in (item.get("status") or {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True")


def run_workload(plane: ControlPlane, moto: MotoServer, proxy: FaultProxyProcess, api: k8s.CustomObjectsApi,
                 n: int, batching: bool, args: argparse.Namespace) -> RunResult:
    moto.reset()
    net = network(moto.url)
    namespace = f"bench-{n}-{'batched' if batching else 'unbatched'}-{int(time.time())}"
    plane.kubectl("create", "namespace", namespace)
    operator_args = [
        "--resync-interval", str(args.resync), "--poll-interval", str(args.poll), "--fast-interval", "5",
        "--mutating-rate", str(args.mutating_rate), "--mutating-burst", str(args.mutating_burst),
        "--mutating-concurrency", "16", "--read-rate", str(args.read_rate), "--read-burst", str(int(args.read_rate)),
        "--log-level", args.log_level,
    ] + ([] if batching else ["--no-batching"])
    log = REPO / ".dev" / f"bench-operator-{namespace}.log"
    log.parent.mkdir(exist_ok=True)
    profile = REPO / ".dev" / f"memprofile-{namespace}.txt"
    operator = OperatorProcess(plane.kubeconfig_path, proxy.url, namespaces=[namespace], args=operator_args,
                               log_path=log, python=args.python,
                               module="tests.bench.memprofile" if args.profile_memory else "cml_operator",
                               env={"CML_MEMPROFILE_OUT": str(profile)}).start()
    try:
        proxy.reset_counts()
        before = apiserver_writes(plane)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: api.create_namespaced_custom_object(
                "cml.dev", "v1alpha1", namespace, "cmlworkers", manifest(f"w-{i:04d}", net)), range(n)))
        applied_s = time.monotonic() - started
        wait_for(lambda: count_ready(api, namespace) == n, args.timeout, interval=1.0,
                 what=f"{n} workers Ready")
        ready_s = time.monotonic() - started
        to_ready = proxy.calls()
        writes = diff(apiserver_writes(plane), before)
        writes.pop("POST cmlworkers", None)  # the benchmark's own creates
        per_worker = sum(writes.values()) / n

        time.sleep(args.resync)  # let the first full pass after Ready settle
        proxy.reset_counts()
        time.sleep(args.resync * args.cycles)
        steady = proxy.calls()
        reads = sum(sum(outcomes.values()) for action, outcomes in steady.items()
                    if action.startswith(READ_PREFIXES))
        rss = peak_rss_mb(operator.pid)
        if args.profile_memory:
            os.kill(operator.pid, signal.SIGUSR1)
            wait_for(profile.exists, 120, what="the memory profile")
            print(profile.read_text(), flush=True)
        return RunResult(
            n=n, batching=batching, ready_s=ready_s,
            ec2_calls_to_ready={a: sum(o.values()) for a, o in sorted(to_ready.items())},
            reads_per_resync=reads / args.cycles, k8s_writes=writes, writes_per_worker=per_worker, rss_mb=rss,
            steady_calls={a: sum(o.values()) for a, o in sorted(steady.items())},
            notes=[f"create requests took {applied_s:.1f}s"],
        )
    finally:
        operator.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--pool" in argv:  # the pool benchmark (tests/bench/pool.py) has its own options
        from tests.bench import pool
        return pool.main([arg for arg in argv if arg != "--pool"])
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--resync", type=float, default=20.0, help="operator --resync-interval for the run")
    parser.add_argument("--poll", type=float, default=10.0, help="operator --poll-interval")
    parser.add_argument("--cycles", type=int, default=2, help="resync cycles to count steady-state reads over")
    parser.add_argument("--mutating-rate", type=float, default=25.0,
                        help="operator --mutating-rate (AWS's own RunInstances bucket refills at 2/s; "
                             "moto has no limit, so the benchmark measures the operator, not the quota)")
    parser.add_argument("--mutating-burst", type=int, default=50)
    parser.add_argument("--read-rate", type=float, default=1000.0,
                        help="operator --read-rate, high so the unbatched baseline is not capped by it")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--modes", default="batched,unbatched", help="which of the two workloads to run")
    parser.add_argument("--log-level", default="WARNING", help="operator --log-level (logs in .dev/)")
    parser.add_argument("--profile-memory", action="store_true",
                        help="run the operator under tracemalloc and print its top allocation sites "
                             "(tracemalloc itself adds memory: RSS figures of such a run are not comparable)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.python = runtime_python()

    print(f"machine: {os.cpu_count()} cores; sizes {sizes}; resync {args.resync}s; poll {args.poll}s; "
          f"mutating {args.mutating_rate}/s burst {args.mutating_burst}; reads {args.read_rate}/s", flush=True)
    results: list[RunResult] = []
    with ControlPlane(ControlPlaneConfig(rbac=False)) as plane, MotoServer() as moto:
        plane.install_crds(REPO / "crds")
        proxy = FaultProxyProcess(moto.url).start()
        api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(plane.kubeconfig_path)))
        try:
            for n in sizes:
                for batching in [mode == "batched" for mode in args.modes.split(",")]:
                    result = run_workload(plane, moto, proxy, api, n, batching, args)
                    results.append(result)
                    print(json.dumps({k: v for k, v in result.__dict__.items()}), flush=True)
        finally:
            proxy.stop()

    print("\n| N | mode | ready s | EC2 reads / resync | k8s writes / worker | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        mode = "batched" if r.batching else "unbatched"
        print(f"| {r.n} | {mode} | {r.ready_s:.1f} | {r.reads_per_resync:.1f} | {r.writes_per_worker:.2f} | "
              f"{r.rss_mb:.0f} |")
    print()
    for n in sizes if args.modes == "batched,unbatched" else []:
        batched = next(r for r in results if r.n == n and r.batching)
        unbatched = next(r for r in results if r.n == n and not r.batching)
        ratio = unbatched.reads_per_resync / batched.reads_per_resync if batched.reads_per_resync else float("inf")
        print(f"n={n}: unbatched/batched reads per resync = {ratio:.1f}x")
    for n in sizes if args.modes == "batched,unbatched" else []:
        batched = next(r for r in results if r.n == n and r.batching)
        unbatched = next(r for r in results if r.n == n and not r.batching)
        print(f"SUMMARY n={n} ready_s={batched.ready_s:.1f} ec2_reads_per_resync={batched.reads_per_resync:.1f} "
              f"unbatched_reads_per_resync={unbatched.reads_per_resync:.1f} "
              f"k8s_writes_per_worker={batched.writes_per_worker:.2f} rss_mb={batched.rss_mb:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
