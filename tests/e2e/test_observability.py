"""Metrics, JSON logs, liveness, and no secret ever leaving the process."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

import cml_operator

from tests.support.faultproxy import FaultRule
from tests.support.processes import wait_for

from .conftest import worker_manifest

pytestmark = pytest.mark.e2e


def sample(metrics: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``; 0 when there is none."""
    found = series(metrics, name, **labels)
    return sum(found) if found else 0.0


def series(metrics: str, name: str, **labels: str) -> list[float]:
    """The values of every sample of ``name`` whose labels include ``labels`` (empty: no such series)."""
    values = []
    for line in metrics.splitlines():
        match = re.match(r"^(\w+)(?:\{([^}]*)\})? ([0-9.e+-]+)$", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            values.append(float(match[3]))
    return values


def test_metrics_show_calls_reconciles_phases_errors_and_retries(kube, network, proxy, operator):
    # botocore makes 3 attempts per call: 3 faults make one call fail, then the retry succeeds.
    proxy.set_faults(FaultRule(code="RequestLimitExceeded", action="RunInstances", times=3))
    kube.apply(worker_manifest("metered", network))
    kube.wait_condition("metered", "Ready")

    def settled() -> str | None:
        text = operator.metrics()
        return text if sample(text, "cml_workers", phase="Running", reason="InstanceReady") == 1 else None

    metrics = wait_for(settled, 20, what="cml_workers{phase=Running,reason=InstanceReady} == 1")
    # One worker, one launch: exactly one successful RunInstances, after exactly the 3 injected faults.
    assert sample(metrics, "cml_ec2_api_calls_total", operation="RunInstances", region="us-east-1",
                  outcome="ok") == 1
    assert sample(metrics, "cml_ec2_api_calls_total", operation="RunInstances",
                  outcome="RequestLimitExceeded") == 3
    assert sample(metrics, "cml_ec2_api_calls_total", operation="DescribeInstances", outcome="ok") >= 1
    # The failed call is one exception and one retry of the create handler.
    assert sample(metrics, "cml_exceptions_total", exception="EC2QuotaExceededException", kind="temporary") == 1
    assert sample(metrics, "cml_retries_total", reason="Throttled") == 1
    assert sample(metrics, "cml_reconcile_duration_seconds_count", trigger="create") == 2  # throttled, then done
    assert sample(metrics, "cml_reconcile_duration_seconds_count", trigger="timer") >= 1
    assert sample(metrics, "cml_ec2_batch_size_count", kind="describe") >= 1
    # Status writes by what they said: the throttled first pass, and Ready.
    assert sample(metrics, "cml_status_patches_total", state="Reconciling", reason="Throttled") == 1
    assert sample(metrics, "cml_status_patches_total", state="Ready") >= 1
    # One series for the one worker, in its namespace; none left behind for the phases it passed through.
    namespace = kube.namespace
    assert series(metrics, "cml_workers", namespace=namespace, phase="Running", reason="InstanceReady") == [1.0]
    assert series(metrics, "cml_workers", phase="Provisioning") == []
    assert sum(series(metrics, "cml_workers")) == 1
    assert sample(metrics, "cml_worker_ready_seconds_count") == 1
    assert series(metrics, "cml_leader") == [1.0]  # a replica without leader election reconciles
    assert series(metrics, "cml_build_info", version=cml_operator.__version__) == [1.0]


def test_liveness_endpoint_answers(operator):
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5) as response:
        assert response.status == 200


def test_json_log_lines_parse(kube, network, operator_factory):
    operator = operator_factory("--log-format", "json", "--log-level", "DEBUG")
    kube.apply(worker_manifest("jsonlog", network))
    kube.wait_condition("jsonlog", "Ready")
    operator.stop()

    lines = [line for line in operator.logs().splitlines() if line.strip()]
    assert len(lines) > 10
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
    assert any(r.get("object", "").endswith("/jsonlog") for r in records)


SECRET_KEY = "SENTINELsecretKEY0123456789abcdefghijklmn"
SESSION_TOKEN = "SENTINELsessionTOKEN9876543210zyxwvutsrq"
USER_DATA = "#!/bin/sh\necho SENTINELuserDATA-5f1e2d\n"


def test_no_secret_appears_in_logs_events_status_or_metrics(kube, network, proxy, operator_factory):
    operator = operator_factory("--log-level", "DEBUG",
                                env={"AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN})
    # Errors run the paths that format messages from AWS responses and requests.
    # Until cleared: with a fixed number of faults, Stalled lasted one slow recheck (4 s), which a
    # loaded machine's kubectl polling could miss.
    proxy.set_faults(FaultRule(code="AuthFailure", action="RunInstances"))
    kube.apply(worker_manifest("secretive", network, userData=USER_DATA, tags={"a": "1"}))
    kube.wait_condition("secretive", "Stalled", reason="AuthenticationFailed")
    proxy.clear_faults()
    kube.wait_condition("secretive", "Ready", timeout=30)
    proxy.set_faults(FaultRule(code="InvalidParameterValue", action="CreateTags", times=1))
    kube.patch_spec("secretive", {"tags": {"a": "2"}})
    wait_for(lambda: "InvalidParameter" in kube.event_reasons("secretive"), 20, what="the tag error")

    places = {
        "logs": operator.logs(),
        "events": kube.run("get", "events", "-o", "yaml").stdout,
        "status": json.dumps(kube.get("secretive").get("status")),
        "metrics": operator.metrics(),
    }
    assert len(places["logs"]) > 1000  # DEBUG really logged a lot
    for where, text in places.items():
        for secret in (SECRET_KEY, SESSION_TOKEN, "SENTINELuserDATA", "U0VOVElORUx1c2VyREFUQ"):
            assert secret not in text, f"{secret[:12]}... leaked into {where}"


def test_the_dashboard_queries_only_series_a_running_operator_exports(kube, network, operator):
    from tests.support.dashboardgen import exported_names, metric_names, queries

    kube.apply(worker_manifest("scraped", network))
    kube.wait_condition("scraped", "Ready")
    exported = exported_names(operator.metrics())
    missing = {title: sorted(metric_names(expr) - exported) for title, expr in queries()
               if metric_names(expr) - exported}
    assert not missing, f"dashboard panels query series the operator does not export: {missing}"
    # The scrape itself offers what the panels read, with samples (not only declared families).
    for name in ("cml_workers", "cml_leader", "cml_build_info", "process_resident_memory_bytes",
                 "cml_ec2_api_calls_total", "cml_reconcile_duration_seconds_bucket", "cml_worker_ready_seconds_bucket"):
        assert series(operator.metrics(), name), name


def test_cml_leader_is_1_on_the_lease_holder_only(kube, operator_factory):
    args = ("--leader-election", "--leader-election-namespace", kube.namespace)
    first, second = operator_factory(*args), operator_factory(*args)

    def leaders() -> tuple[list[float], list[float]] | None:
        values = series(first.metrics(), "cml_leader"), series(second.metrics(), "cml_leader")
        return values if sorted(values) == [[0.0], [1.0]] else None

    wait_for(leaders, 30, what="one replica with cml_leader 1, the other 0")
    leader, standby = (first, second) if series(first.metrics(), "cml_leader") == [1.0] else (second, first)
    leader.stop()  # SIGTERM releases the Lease: the standby leads within a retry period
    wait_for(lambda: series(standby.metrics(), "cml_leader") == [1.0], 30, what="the standby to report cml_leader 1")
