"""Scale benchmark: N CMLWorkers against the real control plane and moto_server; prints figures, enforces targets.

    python -m tests.bench.scale [--sizes 100,500,1000] [--resync 20] [--max-rss-mb 200 ...]   (make bench)

For each N, the same workload runs twice in this invocation: with batched reads
(the default) and with ``--no-batching`` (every read its own call). Measured, from
outside the operator (tests/bench/measure.py):

* ready_s: seconds from the first create request to every worker Ready;
* EC2 calls by operation, counted at the HTTP proxy in front of moto;
* EC2 reads per resync pass at steady state: the proxy's call log split into the
  observer's full passes (a DescribeInstances filtered by the cluster tag starts
  one); the figure is the most any measured pass made. The unbatched baseline has no
  such passes and is estimated as reads over ``--cycles`` resync intervals;
* Kubernetes API writes per worker from apply to Ready, from kube-apiserver's own
  ``apiserver_request_total`` (PATCH/PUT/POST/DELETE on cmlworkers, their status, and events;
  the benchmark's own N creates are not counted);
* memory: the run keeps going, pass after pass, until the RSS has not grown for
  ``--plateau`` passes in a row (``rss_steady_mb``: the plateau; ``steady_after``: the
  passes it took); also the peak (VmHWM);
* the operator's CPU, as a share of one core, between passes and during them;
* afterwards, live instances per worker counted at moto: any duplicate or missing one fails.

Targets (the batched run of every N is held to them; ``--max-... 0`` disables one):
``--max-ready-s`` 120, ``--max-reads-per-resync`` 15, ``--max-writes-per-worker`` 6,
``--max-rss-mb`` 200 (the steady-state RSS). The exit status is 1 and a ``FAILED`` line
names each figure over its limit, each duplicate or missing instance, and a memory that
never settled; 0 otherwise.

The last lines are one machine-readable summary per N:
``SUMMARY n=<N> ready_s=<s> ec2_reads_per_resync=<x> unbatched_reads_per_resync=<y> k8s_writes_per_worker=<w>
rss_mb=<peak> rss_steady_mb=<m> live_instances=<i> cpu_idle_pct=<c> cpu_resync_pct=<r>``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.bench.measure import (Limits, ProcessSampler, instance_problems, live_instances, peak_rss_mb, plateau,
                                 resync_passes)
from tests.bench import measure
from tests.bench.measure import diff
from tests.bench.plots import PlotLimits, Series, write_plots
from tests.cluster.controlplane import ControlPlane, ControlPlaneConfig
from tests.support.motoserver import MotoServer, own_image
from tests.support.strictworld import BENCH_EC2_TIMING, strict_proxy
from tests.support.processes import FAKE_AWS_ENV, FaultProxyProcess, OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
READ_PREFIXES = ("Describe",)
#: RSS growth below this between passes is allocator noise, not growth.
RSS_TOLERANCE_MB = 1.0


@dataclass
class RunResult:
    n: int
    batching: bool
    ready_s: float
    ec2_calls_to_ready: dict[str, int]
    reads_per_resync: float
    k8s_writes: dict[str, int]
    writes_per_worker: float
    rss_mb: float  # peak (VmHWM)
    steady_calls: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rss_steady_mb: float = float("nan")
    steady_after: int | None = None  # passes until RSS stopped growing; None: it never did
    rss_by_pass: list[float] = field(default_factory=list)
    reads_by_pass: list[int] = field(default_factory=list)
    busiest_pass: dict[str, int] = field(default_factory=dict)  # its reads by action: what made it busy
    live_instances: int = 0
    events_by_reason: dict[str, int] = field(default_factory=dict)  # "Type/Reason": what the writes said
    status_patches: dict[str, int] = field(default_factory=dict)  # "State/Reason", from the operator's metric
    ec2_errors: dict[str, int] = field(default_factory=dict)  # failed EC2 attempts over the whole run
    problems: list[str] = field(default_factory=list)  # duplicates, missing instances, no plateau
    cpu_idle_pct: float = float("nan")
    cpu_resync_pct: float = float("nan")
    ready_times_s: list[float] = field(default_factory=list)  # per worker: creation to Ready (1 s resolution)


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
    return measure.apiserver_writes(plane.kubectl("get", "--raw", "/metrics").stdout, ("cmlworkers", "events"))


def events_by_reason(plane: ControlPlane, namespace: str) -> dict[str, int]:
    """Events posted so far, counted by type and reason: an extra write per worker says what it was."""
    listed = json.loads(plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return dict(sorted(Counter(f"{e.get('type')}/{e.get('reason')}" for e in listed).items()))


def network(moto_url: str) -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url,
                       aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=subnet["VpcId"])["GroupId"]
    image = own_image(ec2, subnet["SubnetId"], name="bench-image")["ami"]  # spec.amiOwners defaults to [self]
    return {"subnet": subnet["SubnetId"], "sg": group, "ami": image}


def manifest(name: str, net: dict[str, str]) -> dict:
    return {"apiVersion": "cml.dev/v1alpha1", "kind": "CMLWorker", "metadata": {"name": name},
            "spec": {"region": "us-east-1", "amiId": net["ami"], "subnetId": net["subnet"],
                     "securityGroupIds": [net["sg"]], "instanceType": "m5zn.metal", "tags": {"bench": "scale"}}}


def ready_times(api: k8s.CustomObjectsApi, namespace: str) -> list[float]:
    """Per Ready worker, seconds from its creation to its Ready condition (both stamped by the cluster)."""
    items = api.list_namespaced_custom_object("cml.dev", "v1alpha1", namespace, "cmlworkers")["items"]
    times = []
    for item in items:
        created = datetime.fromisoformat(item["metadata"]["creationTimestamp"])
        for c in (item.get("status") or {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                times.append((datetime.fromisoformat(c["lastTransitionTime"]) - created).total_seconds())
    return sorted(times)


def count_ready(api: k8s.CustomObjectsApi, namespace: str) -> int:
    items = api.list_namespaced_custom_object("cml.dev", "v1alpha1", namespace, "cmlworkers")["items"]
    return sum(1 for item in items for c in (item.get("status") or {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True")


def run_workload(plane: ControlPlane, moto: MotoServer, proxy: FaultProxyProcess, api: k8s.CustomObjectsApi,
                 n: int, batching: bool, args: argparse.Namespace) -> RunResult:
    moto.reset()
    proxy.reset_timing()  # moto forgot its instances: so does EC2's clock
    net = network(moto.url)
    namespace = f"bench-{n}-{'batched' if batching else 'unbatched'}-{int(time.time())}"
    plane.kubectl("create", "namespace", namespace)
    operator_args = [
        "--resync-interval", str(args.resync), "--poll-interval", str(args.poll),
        "--fast-interval", str(min(5.0, args.resync)),  # the observer's loop ticks at this; passes need it
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
                               env={"CML_MEMPROFILE_OUT": str(profile),
                                    "CML_MEMPROFILE_FRAMES": os.environ.get("CML_MEMPROFILE_FRAMES", "12"),
                                    "CML_MEMPROFILE_HOLDERS": os.environ.get("CML_MEMPROFILE_HOLDERS", "")}).start()
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
        reasons = events_by_reason(plane, namespace)
        patches = measure.status_patches(operator.metrics())

        result = RunResult(
            n=n, batching=batching, ready_s=ready_s,
            ec2_calls_to_ready={a: sum(o.values()) for a, o in sorted(to_ready.items())},
            reads_per_resync=float("nan"), k8s_writes=writes, writes_per_worker=per_worker, rss_mb=float("nan"),
            notes=[f"create requests took {applied_s:.1f}s"], events_by_reason=reasons,
            status_patches=patches, ready_times_s=ready_times(api, namespace),
        )
        if batching:
            measure_passes(operator, proxy, args, result)
        else:
            proxy.reset_counts()  # no full passes to find: reads over wall-clock resync intervals
            time.sleep(args.resync * args.cycles)
            steady = proxy.calls()
            result.steady_calls = {a: sum(o.values()) for a, o in sorted(steady.items())}
            result.reads_per_resync = sum(n for a, n in result.steady_calls.items()
                                          if a.startswith(READ_PREFIXES)) / args.cycles
        result.rss_mb = peak_rss_mb(operator.pid)
        if args.profile_memory:
            profile.unlink(missing_ok=True)  # the per-pass dumps wrote it too: wait for this one
            os.kill(operator.pid, signal.SIGUSR1)
            wait_for(profile.exists, 120, what="the memory profile")
            print(profile.read_text(), flush=True)
            growth = profile.with_name(profile.name + ".growth")
            if growth.exists():
                print(f"--- growth per pass ({growth}) ---\n{growth.read_text()}", flush=True)
        result.ec2_errors = measure.ec2_errors(operator.metrics())  # what a figure over its limit met
        count_instances(api, namespace, moto, result)
        return result
    finally:
        operator.stop()


def measure_passes(operator: OperatorProcess, proxy: FaultProxyProcess, args: argparse.Namespace,
                   result: RunResult) -> None:
    """Follow the observer's full passes until RSS has not grown for ``args.plateau`` passes in a row
    (at most ``args.max_resyncs``); fill in reads per pass, RSS and CPU."""
    proxy.reset_counts()
    began = time.monotonic()
    calls: list = []
    cursor = 0
    profiled = 0
    with ProcessSampler(operator.pid) as sampler:
        deadline = began + args.resync * (args.max_resyncs + 3)
        while True:
            time.sleep(1.0)
            new, cursor = proxy.call_log(cursor)
            calls += new
            _, passes = resync_passes(calls, min_gap=args.resync / 2)
            done = passes[1:-1]  # the first may have begun before the log did; the last may be running
            if args.profile_memory and len(done) > profiled:
                profiled = len(done)
                os.kill(operator.pid, signal.SIGUSR1)  # a tracemalloc snapshot per pass: what grew since the last
            levels = [sampler.max_rss(p.started, later.started) for p, later in zip(passes[1:], passes[2:])]
            result.steady_after = plateau(levels, args.plateau, RSS_TOLERANCE_MB)
            if result.steady_after is not None or len(done) >= args.max_resyncs or time.monotonic() > deadline:
                break
        ended = time.monotonic()
    if not done:
        result.problems.append(f"no full resync pass seen in {ended - began:.0f}s (resync {args.resync}s)")
        return
    result.reads_by_pass = [p.reads for p in done]
    result.reads_per_resync = float(max(result.reads_by_pass))
    result.busiest_pass = max(done, key=lambda p: p.reads).breakdown()
    result.rss_by_pass = [round(level, 1) for level in levels]
    result.rss_steady_mb = max(levels)
    if result.steady_after is None:
        result.problems.append(f"rss_steady_mb: RSS still grew within the last {args.plateau} of "
                               f"{len(levels)} passes: {result.rss_by_pass}")
    busy = [(start - 0.5, end + 0.5) for start, end in (p.read_window(gap=2.0) for p in done)]
    result.cpu_idle_pct, result.cpu_resync_pct = sampler.cpu_shares(busy, done[0].started, ended)
    result.steady_calls = {}
    for p in done:
        for call in p.calls:
            result.steady_calls[call[1]] = result.steady_calls.get(call[1], 0) + 1


def count_instances(api: k8s.CustomObjectsApi, namespace: str, moto: MotoServer, result: RunResult) -> None:
    """Live instances per worker at moto: exactly one each, or a problem is recorded."""
    items = api.list_namespaced_custom_object("cml.dev", "v1alpha1", namespace, "cmlworkers")["items"]
    # moto filters 1000 instances by tag slowly on a busy machine: botocore's 60 s read timeout
    # cut the count short (and lost the run's figures) at N=1000.
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.url,
                       aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                       config=Config(read_timeout=600, retries={"mode": "standard", "total_max_attempts": 3}))
    try:
        per_uid = live_instances(ec2, [item["metadata"]["uid"] for item in items])
    except Exception as exc:  # noqa: BLE001 - keep the figures measured so far; the count is a failure
        result.problems.append(f"live_instances: could not count at moto: {exc!r}")
        return
    result.live_instances = sum(len(ids) for ids in per_uid.values())
    result.problems += instance_problems(per_uid)
    if len(items) != result.n:
        result.problems.append(f"live_instances: {len(items)} CMLWorkers found, {result.n} created")


def failures(results: list[RunResult], limits: Limits) -> list[str]:
    """Every figure over its limit (batched runs), and every run's instance and memory problems."""
    found = []
    for r in results:
        mode = "batched" if r.batching else "unbatched"
        if r.batching:
            found += [f"n={r.n} {mode}: {v}" for v in limits.violations(
                ready_s=r.ready_s, reads_per_resync=r.reads_per_resync, writes_per_worker=r.writes_per_worker,
                rss_steady_mb=r.rss_steady_mb)]
        found += [f"n={r.n} {mode}: {p}" for p in r.problems]
    return found


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--pool" in argv:  # the pool benchmark (tests/bench/pool.py) has its own options
        from tests.bench import pool
        return pool.main([arg for arg in argv if arg != "--pool"])
    if "--cml" in argv:  # the CML benchmark (tests/bench/cml.py) has its own options
        from tests.bench import cml
        return cml.main([arg for arg in argv if arg != "--cml"])
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--resync", type=float, default=20.0, help="operator --resync-interval for the run")
    parser.add_argument("--poll", type=float, default=10.0, help="operator --poll-interval")
    parser.add_argument("--cycles", type=int, default=2,
                        help="resync intervals the unbatched baseline's reads are counted over")
    parser.add_argument("--plateau", type=int, default=5,
                        help="RSS is steady once it has not grown for this many resync passes in a row")
    parser.add_argument("--max-resyncs", type=int, default=30,
                        help="give up waiting for the RSS plateau after this many passes (a failure)")
    limits = parser.add_argument_group("targets (0 disables one)")
    limits.add_argument("--max-ready-s", type=float, default=Limits.max_ready_s)
    limits.add_argument("--max-reads-per-resync", type=float, default=Limits.max_reads_per_resync)
    limits.add_argument("--max-writes-per-worker", type=float, default=Limits.max_writes_per_worker)
    limits.add_argument("--max-rss-mb", type=float, default=Limits.max_rss_mb, help="steady-state RSS")
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
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for summary.txt and the plots (default .dev/bench/<UTC time>)")
    parser.add_argument("--operator-python", dest="python", default=None,
                        help="interpreter to run the operator with (default: a runtime-only virtualenv, "
                             ".venv-runtime, so RSS counts what the image loads)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.python = args.python or runtime_python()

    print(f"machine: {os.cpu_count()} cores; sizes {sizes}; resync {args.resync}s; poll {args.poll}s; "
          f"mutating {args.mutating_rate}/s burst {args.mutating_burst}; reads {args.read_rate}/s", flush=True)
    results: list[RunResult] = []
    with ControlPlane(ControlPlaneConfig(rbac=False)) as plane, MotoServer() as moto:
        plane.install_crds(REPO / "crds")
        proxy = strict_proxy(moto.url, plane, BENCH_EC2_TIMING)  # EC2's clock and IAM, as in e2e
        api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(plane.kubeconfig_path)))
        try:
            for n in sizes:
                for batching in [mode == "batched" for mode in args.modes.split(",")]:
                    result = run_workload(plane, moto, proxy, api, n, batching, args)
                    results.append(result)
                    print(json.dumps({k: v for k, v in result.__dict__.items() if k != "ready_times_s"}), flush=True)
        finally:
            proxy.stop()

    print("\n| N | mode | ready s | EC2 reads / resync | k8s writes / worker | steady RSS MB (after passes) | "
          "peak RSS MB | live instances | CPU % idle / resync |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        mode = "batched" if r.batching else "unbatched"
        print(f"| {r.n} | {mode} | {r.ready_s:.1f} | {_fmt(r.reads_per_resync)} | {r.writes_per_worker:.2f} | "
              f"{_fmt(r.rss_steady_mb, 0)} ({r.steady_after or '-'}) | {r.rss_mb:.0f} | {r.live_instances} | "
              f"{_fmt(r.cpu_idle_pct)} / {_fmt(r.cpu_resync_pct)} |")
    print()
    for batched in (r for r in results if r.batching):
        unbatched = next((r for r in results if r.n == batched.n and not r.batching), None)
        if unbatched is not None and batched.reads_per_resync:
            print(f"n={batched.n}: unbatched/batched reads per resync = "
                  f"{unbatched.reads_per_resync / batched.reads_per_resync:.1f}x")
    summaries = []
    for batched in (r for r in results if r.batching):
        unbatched = next((r for r in results if r.n == batched.n and not r.batching), None)
        summaries.append(f"SUMMARY n={batched.n} ready_s={batched.ready_s:.1f} "
                       f"ec2_reads_per_resync={_fmt(batched.reads_per_resync)} "
                       f"unbatched_reads_per_resync={_fmt(unbatched.reads_per_resync if unbatched else None)} "
                       f"k8s_writes_per_worker={batched.writes_per_worker:.2f} rss_mb={batched.rss_mb:.0f} "
                       f"rss_steady_mb={_fmt(batched.rss_steady_mb, 0)} live_instances={batched.live_instances} "
                       f"cpu_idle_pct={_fmt(batched.cpu_idle_pct)} cpu_resync_pct={_fmt(batched.cpu_resync_pct)}")
        print(summaries[-1])
    found = failures(results, limits_from(args))
    for line in found:
        print(f"FAILED {line}")
    write_outputs(results, limits_from(args), args.out or default_out_dir(), summaries, found)
    return 1 if found else 0


def default_out_dir() -> Path:
    return REPO / ".dev" / "bench" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_outputs(results: list[RunResult], limits: Limits, out: Path, summaries: list[str],
                  found: list[str]) -> None:
    """summary.txt (the SUMMARY and FAILED lines) and the plots of the batched runs, in one directory."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text("".join(f"{line}\n" for line in summaries + [f"FAILED {f}" for f in found]))
    series = [Series(n=r.n, ready_times_s=r.ready_times_s, reads_by_pass=r.reads_by_pass, rss_by_pass=r.rss_by_pass)
              for r in results if r.batching]
    paths = write_plots(series, PlotLimits(reads_per_resync=limits.max_reads_per_resync, rss_mb=limits.max_rss_mb),
                        out)
    print(f"PLOTS {out}: {', '.join(p.name for p in paths)}", flush=True)


def limits_from(args: argparse.Namespace) -> Limits:
    def limit(value: float) -> float | None:
        return value if value > 0 else None

    return Limits(max_ready_s=limit(args.max_ready_s), max_reads_per_resync=limit(args.max_reads_per_resync),
                  max_writes_per_worker=limit(args.max_writes_per_worker), max_rss_mb=limit(args.max_rss_mb))


if __name__ == "__main__":
    sys.exit(main())
