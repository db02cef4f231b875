"""The ``cml-operator`` command line: ``cml-operator run [options]`` (also ``python -m cml_operator``).

Every option can come from the environment as ``CML_<OPTION>`` (upper case,
dashes as underscores; ``CML_NAMESPACE`` takes a comma-separated list); a flag
given on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from . import __version__
from .ec2.client import EC2ClientSettings
from .fleet.observer import ObserverSettings
from .fleet.ratelimit import RateLimitSettings
from .leader import LeaderElectionSettings
from .reconcile.adoption import parse_adoption_namespaces
from .settings import OperatorSettings

_DEFAULTS = OperatorSettings()


def _env(name: str, convert: Callable[[str], Any], default: Any) -> Any:
    raw = os.environ.get(f"CML_{name}")
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except ValueError as exc:
        raise SystemExit(f"cml-operator: CML_{name}={raw!r} is not valid: {exc}") from exc


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _cluster_id(value: str) -> str:
    """A tag value EC2 and IAM conditions accept: 1..128 plain characters."""
    if not 1 <= len(value) <= 128 or not all(c.isalnum() or c in "-_.:" for c in value):
        raise ValueError("--cluster-id must be 1 to 128 letters, digits or - _ . :")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cml-operator", description="Reconcile CMLWorker resources (cml.dev/v1alpha1) against Amazon EC2.")
    parser.add_argument("--version", action="version", version=f"cml-operator {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the operator", description=__doc__,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d, o, r = _DEFAULTS, _DEFAULTS.observer, _DEFAULTS.rate_limits

    scope = run.add_argument_group("what to watch")
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", metavar="NS",
                       default=None, help="watch this namespace (repeatable); env CML_NAMESPACE=a,b")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       default=_env("ALL_NAMESPACES", _flag, False), help="watch every namespace (the default "
                       "when no --namespace is given)")

    timing = run.add_argument_group("timing (seconds)")
    timing.add_argument("--resync-interval", type=float, default=_env("RESYNC_INTERVAL", float, o.resync_interval),
                        help="every known instance is read from EC2 this often, in batched calls per region")
    timing.add_argument("--poll-interval", type=float, default=_env("POLL_INTERVAL", float, d.poll_interval),
                        help="each worker compares its spec with the latest observation this often (no EC2 call)")
    timing.add_argument("--fast-interval", type=float, default=_env("FAST_INTERVAL", float, o.fast_interval),
                        help="instances in transition are read this often")
    timing.add_argument("--slow-recheck", type=float, default=_env("SLOW_RECHECK", float, d.slow_recheck),
                        help="a worker stalled on quota or credentials is retried after this long; "
                             "one stalled LaunchFailed or StartFailed gets one more try")
    timing.add_argument("--max-retry-delay", type=float, default=_env("MAX_RETRY_DELAY", float, d.max_retry_delay),
                        help="cap every temporary-error retry delay (default: the policy's own caps)")

    ec2 = run.add_argument_group("EC2 traffic")
    ec2.add_argument("--mutating-rate", type=float, default=_env("MUTATING_RATE", float, r.mutating_rate),
                     help="mutating EC2 calls per second per region (token bucket refill)")
    ec2.add_argument("--mutating-burst", type=int, default=_env("MUTATING_BURST", int, r.mutating_burst))
    ec2.add_argument("--read-rate", type=float, default=_env("READ_RATE", float, r.read_rate),
                     help="read EC2 calls per second per region")
    ec2.add_argument("--read-burst", type=int, default=_env("READ_BURST", int, r.read_burst))
    ec2.add_argument("--mutating-concurrency", type=int,
                     default=_env("MUTATING_CONCURRENCY", int, r.mutating_concurrency),
                     help="mutating EC2 calls in flight per region")
    ec2.add_argument("--no-batching", dest="batching", action="store_false",
                     # The twin of --no-batching is CML_NO_BATCHING=true; CML_BATCHING=false still works.
                     default=not _env("NO_BATCHING", _flag, not _env("BATCHING", _flag, o.batching)),
                     help="read each instance with its own calls (benchmark baseline only)")
    ec2.add_argument("--ec2-threads", type=int, default=_env("EC2_THREADS", int, d.ec2_threads),
                     help="threads running blocking boto3 calls")
    ec2.add_argument("--malloc-arenas", type=int, default=_env("MALLOC_ARENAS", int, d.malloc_arenas),
                     help="glibc malloc arenas at most (0: glibc's default of 8 per core); more arenas "
                          "for the EC2 threads only hold more memory")

    c = _DEFAULTS.cml
    cml = run.add_argument_group("CML controllers (workers with spec.cml)")
    cml.add_argument("--cml-interval", type=float, default=_env("CML_INTERVAL", float, c.interval),
                     help="seconds between looks at a ready controller (each look: at most 3 requests)")
    cml.add_argument("--cml-starting-interval", type=float,
                     default=_env("CML_STARTING_INTERVAL", float, c.starting_interval),
                     help="seconds between looks at a controller that is not ready yet")
    cml.add_argument("--cml-boot-timeout", type=float, default=_env("CML_BOOT_TIMEOUT", float, c.boot_timeout),
                     help="seconds after the instance became ready before CMLStarting turns into CMLUnreachable")
    cml.add_argument("--cml-timeout", type=float, default=_env("CML_TIMEOUT", float, c.timeout),
                     help="timeout of every CML request, seconds")
    cml.add_argument("--cml-concurrency", type=int, default=_env("CML_CONCURRENCY", int, c.concurrency),
                     help="CML looks in flight at once across all workers")

    trust = run.add_argument_group("ownership and bounds")
    trust.add_argument("--cluster-id", default=_env("CLUSTER_ID", _cluster_id, d.cluster_id), type=_cluster_id,
                       help="value of the cml.dev/cluster tag: instances tagged with another cluster are never "
                            "touched (default: the uid of the kube-system namespace, read once at start)")
    trust.add_argument("--require-account", action="store_true", default=_env("REQUIRE_ACCOUNT", _flag, False),
                       help="workers, pools and discoveries whose namespace no CMLAccount selects are Stalled "
                            "AccountNotAllowed instead of using the operator's own AWS identity")
    trust.add_argument("--credential-refresh-margin", type=float,
                       default=_env("CREDENTIAL_REFRESH_MARGIN", float, d.credential_refresh_margin),
                       help="seconds before a CMLAccount's assumed-role session ends that it is renewed "
                            "(at most the session's length minus 10 s)")
    trust.add_argument("--max-replacements", type=int,
                       default=_env("MAX_REPLACEMENTS", int, d.max_replacements),
                       help="replacements of a lost instance (one that had been Ready) per worker per hour; "
                            "then the worker is Stalled ReplacementLimitReached")
    trust.add_argument("--max-starts", type=int, default=_env("MAX_STARTS", int, d.max_starts),
                       help="starts per worker per hour of an instance that stopped without the operator asking "
                            "(a guest that powers itself off, a stop by hand); then Stalled StartLimitReached")
    trust.add_argument("--adoption-namespaces", metavar="NS,NS|*",
                       default=_env("ADOPTION_NAMESPACES", str, None),
                       help="namespaces whose workers may adopt (spec.instanceId) or import (CMLWorkerDiscovery) "
                            "an instance the operator did not launch; * for all; default none")

    ops = run.add_argument_group("operations")
    ops.add_argument("--api-connections", type=int, default=_env("API_CONNECTIONS", int, d.api_connections),
                     help="connections to the Kubernetes API server at most (watches included)")
    ops.add_argument("--metrics-port", type=int, default=_env("METRICS_PORT", int, d.metrics_port),
                     help="Prometheus /metrics port; 0 disables")
    ops.add_argument("--liveness-port", type=int, default=_env("LIVENESS_PORT", int, d.liveness_port),
                     help="Kopf liveness endpoint /healthz port; 0 disables")
    ops.add_argument("--log-format", choices=("text", "json"), default=_env("LOG_FORMAT", str, d.log_format))
    ops.add_argument("--log-level", default=_env("LOG_LEVEL", str, d.log_level),
                     choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper)
    ops.add_argument("--orphan-policy", choices=("report", "stop", "terminate"),
                     default=_env("ORPHAN_POLICY", str, d.orphan_policy),
                     help="instances tagged for this cluster whose CMLWorker is gone (found by discovery scans): "
                          "report them (metric, event, log), or also stop or terminate them after --orphan-grace")
    ops.add_argument("--orphan-grace", type=float, default=_env("ORPHAN_GRACE", float, d.orphan_grace),
                     help="seconds an instance must stay an orphan before --orphan-policy stop/terminate acts")
    ops.add_argument("--price-table", metavar="NAMESPACE/NAME", default=_env("PRICE_TABLE", str, d.price_table),
                     help="a ConfigMap of instance type -> USD per hour: adds cml_estimated_cost_usd_total and "
                          "status.usage.estimatedCostUSD (no prices are shipped)")
    peering = ops.add_mutually_exclusive_group()
    peering.add_argument("--peering", metavar="NAME", default=_env("PEERING", str, d.peering),
                         help="coordinate with other instances of the operator through this Kopf peering object "
                              "(needs deploy/peering/): the highest --priority works, the others pause; equal "
                              "priorities all pause. Keep one replica; use it so a debug instance can take over")
    peering.add_argument("--standalone", action="store_true", default=_env("STANDALONE", _flag, False),
                         help="no peering, one replica (the default)")
    ops.add_argument("--priority", type=int, default=_env("PRIORITY", int, d.priority),
                     help="this instance's peering priority (with --peering)")

    le, led = run.add_argument_group("high availability (leader election)"), d.leader_election
    le.add_argument("--leader-election", action="store_true",
                    default=_env("LEADER_ELECTION", _flag, led.enabled),
                    help="run several replicas: only the holder of a coordination.k8s.io Lease reconciles, the "
                         "others stand by and take over when it dies or releases it (on SIGTERM)")
    le.add_argument("--leader-election-namespace", metavar="NS",
                    default=_env("LEADER_ELECTION_NAMESPACE", str, led.namespace),
                    help="namespace of the Lease (default: the pod's namespace; 'default' outside a pod)")
    le.add_argument("--leader-election-id", metavar="NAME", default=_env("LEADER_ELECTION_ID", str, led.name),
                    help="name of the Lease")
    le.add_argument("--leader-election-lease-duration", type=float, metavar="SECONDS",
                    default=_env("LEADER_ELECTION_LEASE_DURATION", float, led.lease_duration),
                    help="seconds a standby waits after the last renewal it saw before taking over")
    le.add_argument("--leader-election-renew-deadline", type=float, metavar="SECONDS",
                    default=_env("LEADER_ELECTION_RENEW_DEADLINE", float, led.renew_deadline),
                    help="seconds the leader keeps trying to renew before it stops reconciling")
    le.add_argument("--leader-election-retry-period", type=float, metavar="SECONDS",
                    default=_env("LEADER_ELECTION_RETRY_PERIOD", float, led.retry_period),
                    help="seconds between attempts to acquire or renew the Lease")
    return parser


def _leader_election(args: argparse.Namespace) -> LeaderElectionSettings:
    try:
        return replace(_DEFAULTS.leader_election, enabled=args.leader_election,
                       namespace=args.leader_election_namespace, name=args.leader_election_id,
                       lease_duration=args.leader_election_lease_duration,
                       renew_deadline=args.leader_election_renew_deadline,
                       retry_period=args.leader_election_retry_period)
    except ValueError as exc:
        raise SystemExit(f"cml-operator: --leader-election-*: {exc}") from exc


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    d = _DEFAULTS
    if args.leader_election and args.peering and not args.standalone:
        raise SystemExit("cml-operator: --leader-election and --peering exclude each other: pick one (docs/install.md)")
    namespaces = tuple(args.namespaces or ())
    if not namespaces and not args.all_namespaces:
        namespaces = tuple(n for n in _env("NAMESPACE", str, "").split(",") if n)
    if args.all_namespaces:
        namespaces = ()
    return replace(
        _DEFAULTS,
        namespaces=namespaces,
        poll_interval=args.poll_interval,
        slow_recheck=args.slow_recheck,
        max_retry_delay=args.max_retry_delay,
        metrics_port=args.metrics_port,
        liveness_port=args.liveness_port,
        log_format=args.log_format,
        log_level=args.log_level,
        peering=None if args.standalone else args.peering,
        priority=args.priority,
        leader_election=_leader_election(args),
        ec2_threads=args.ec2_threads,
        malloc_arenas=args.malloc_arenas,
        api_connections=args.api_connections,
        orphan_policy=args.orphan_policy,
        orphan_grace=args.orphan_grace,
        price_table=_price_table(args.price_table),
        cluster_id=args.cluster_id,
        max_replacements=args.max_replacements,
        require_account=args.require_account,
        credential_refresh_margin=args.credential_refresh_margin,
        max_starts=args.max_starts,
        adoption_namespaces=parse_adoption_namespaces(args.adoption_namespaces or ""),
        ec2=EC2ClientSettings(),
        rate_limits=RateLimitSettings(
            mutating_rate=args.mutating_rate, mutating_burst=args.mutating_burst, read_rate=args.read_rate,
            read_burst=args.read_burst, mutating_concurrency=args.mutating_concurrency),
        observer=ObserverSettings(resync_interval=args.resync_interval, fast_interval=args.fast_interval,
                                  batching=args.batching),
        cml=replace(_DEFAULTS.cml, interval=args.cml_interval, starting_interval=args.cml_starting_interval,
                    boot_timeout=args.cml_boot_timeout, timeout=args.cml_timeout, concurrency=args.cml_concurrency),
    )


def _price_table(value: str | None) -> str | None:
    if not value:
        return None
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise SystemExit(f"cml-operator: --price-table {value!r} must be NAMESPACE/NAME (a ConfigMap)")
    return value


def run(settings: OperatorSettings) -> int:
    import logging

    import kopf

    from .handlers import register
    from .logs import configure_logging
    from .metrics import Metrics

    from .malloc import arenas_to_set, limit_arenas

    # Before any thread starts: later arenas follow the cap.
    limit_arenas(arenas_to_set(settings.malloc_arenas, os.environ))
    from .watchtrim import install as leave_out_managed_fields

    leave_out_managed_fields()  # Kopf keeps every watched body: without the field-ownership records
    configure_logging(settings.log_format, settings.log_level)
    log = logging.getLogger("cml_operator")
    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    from .ec2.fence import MutationFence
    from .leader import effective

    election = effective(settings.leader_election)
    # With leader election, mutating EC2 calls pass only while this replica is sure it leads.
    fence = MutationFence.closed() if election.enabled else None
    registry = kopf.OperatorRegistry()
    register(registry, settings, metrics, fence)
    scope = ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    mode = (f"leader election on Lease {election.namespace}/{election.name}" if election.enabled
            else f"peering {settings.peering!r}" if settings.peering else "standalone")
    log.info("cml-operator %s starting: watching %s, %s", __version__, scope, mode)
    options: dict[str, Any] = dict(
        registry=registry,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=settings.priority,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None,
    )
    if not election.enabled:
        metrics.leader.set(1)  # nobody else reconciles: this replica's series are the live ones
        kopf.run(**options)
        return 0

    import asyncio

    from .identity import instance_identity
    from .leader import run_when_leading, take_stop_signals

    async def operate(stop_flag: asyncio.Event) -> None:
        metrics.leader.set(1)
        try:
            await _operate_kopf(stop_flag)
        finally:
            metrics.leader.set(0)

    async def _operate_kopf(stop_flag: asyncio.Event) -> None:
        ready = asyncio.Event()
        started = asyncio.create_task(ready.wait())
        running = asyncio.create_task(kopf.operator(**options, stop_flag=stop_flag, ready_flag=ready))
        await asyncio.wait({started, running}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        take_stop_signals(stop_flag)  # Kopf has installed its signal handlers by now; ours stop it faster
        await running

    return asyncio.run(run_when_leading(election, instance_identity(), operate, settings.liveness_port, fence))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help()
        return 0 if args.command is None and not argv else 2
    return run(settings_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
