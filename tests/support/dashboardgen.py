"""The Grafana dashboard, as code (grafanalib): `make monitoring` writes deploy/monitoring/dashboard.json.

tests/unit/test_dashboard.py fails when the committed JSON is not what this module generates, and
checks that every query parses (promtool) and names only series the operator exports (the list a
scrape of a running operator gave, tests/e2e/test_observability.py). Edit this file, not the JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from grafanalib.core import (
    Dashboard, GridPos, RowPanel, Stat, Target, Template, Templating, Time, TimeSeries,
)
from grafanalib._gen import DashboardEncoder

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "deploy" / "monitoring" / "dashboard.json"
DATASOURCE = "${datasource}"
#: Every query is narrowed to the chosen installation(s) (the scrape job: one per release).
JOB = 'job=~"$job"'
THROTTLES = "RequestLimitExceeded|Throttling|ThrottlingException|RequestThrottled|TooManyRequestsException"
WIDTH = 24


def _target(expr: str, legend: str, ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DATASOURCE)


def _series(title: str, description: str, targets: list[Target], unit: str = "", stacked: bool = False,
            width: int = 12, height: int = 8) -> TimeSeries:
    return TimeSeries(
        title=title, description=description, dataSource=DATASOURCE, targets=targets, unit=unit,
        stacking={"mode": "normal", "group": "A"} if stacked else {"mode": "none"},
        fillOpacity=30 if stacked else 0, legendDisplayMode="table", legendPlacement="right",
        legendCalcs=["lastNotNull", "max"], tooltipMode="multi",
        gridPos=GridPos(h=height, w=width, x=0, y=0))


def _quantiles(metric: str, by: str, legend: str) -> list[Target]:
    return [_target(f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
                    f"(rate({metric}_bucket{{{JOB}}}[$__rate_interval])))",
                    f"p{int(q * 100)}{' ' + legend if legend else ''}", ref)
            for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))]


def panels() -> list[object]:
    rate = "[$__rate_interval]"
    return [
        RowPanel(title="Workers", gridPos=GridPos(h=1, w=WIDTH, x=0, y=0)),
        _series("Workers by phase", "CMLWorkers the leading replica tracks, by status.phase (cml_workers).",
                [_target(f"sum by (phase) (cml_workers{{{JOB}}})", "{{phase}}")], stacked=True),
        _series("Workers by reason", "By the reason of their health condition: Ready, Reconciling or Stalled "
                "(docs/conditions.md).", [_target(f"sum by (reason) (cml_workers{{{JOB}}})", "{{reason}}")],
                stacked=True),
        _series("Stalled workers", "Phase Failed = Stalled: blocked until something outside the operator "
                "changes (alert CMLWorkerStalled after 15 minutes).",
                [_target(f'sum by (namespace, reason) (cml_workers{{{JOB}, phase="Failed"}})',
                         "{{namespace}} {{reason}}")]),
        _series("Ready latency", "Seconds from Ready=False (a launch or a start) to Ready=True "
                "(cml_worker_ready_seconds).", _quantiles("cml_worker_ready_seconds", "", ""), unit="s"),
        RowPanel(title="EC2", gridPos=GridPos(h=1, w=WIDTH, x=0, y=0)),
        _series("EC2 calls by operation", "HTTP attempts per second, botocore retries included.",
                [_target(f"sum by (operation) (rate(cml_ec2_api_calls_total{{{JOB}}}{rate}))", "{{operation}}")],
                unit="reqps", width=8),
        _series("EC2 errors by operation", "Attempts answered with an error other than throttling, by code.",
                [_target(f'sum by (operation, outcome) (rate(cml_ec2_api_calls_total{{{JOB}, '
                         f'outcome!~"ok|{THROTTLES}"}}{rate}))', "{{operation}} {{outcome}}")],
                unit="reqps", width=8),
        _series("EC2 throttles by operation", "Throttled attempts; the operator's rate limiter slows down on them.",
                [_target(f'sum by (operation) (rate(cml_ec2_api_calls_total{{{JOB}, outcome=~"{THROTTLES}"}}'
                         f'{rate}))', "{{operation}}")], unit="reqps", width=8),
        _series("EC2 batch sizes", "Instance ids per batched read, by kind (describe, status, uid, managed).",
                _quantiles("cml_ec2_batch_size", "kind", "{{kind}}")),
        _series("Orphan instances", "Instances tagged for this cluster without a CMLWorker, at the last scan.",
                [_target(f"max by (region) (cml_orphan_instances{{{JOB}}})", "{{region}}")]),
        RowPanel(title="Reconciles", gridPos=GridPos(h=1, w=WIDTH, x=0, y=0)),
        _series("Reconcile duration", "One pass, by trigger (create, update, resume, timer, delete).",
                _quantiles("cml_reconcile_duration_seconds", "trigger", "{{trigger}}"), unit="s"),
        _series("Retries and errors", "Passes that scheduled a retry, by reason; errors met, by exception.",
                [_target(f"sum by (reason) (rate(cml_retries_total{{{JOB}}}{rate}))", "retry {{reason}}"),
                 _target(f"sum by (exception) (rate(cml_exceptions_total{{{JOB}}}{rate}))", "{{exception}}",
                         "B")], unit="ops"),
        RowPanel(title="CML controllers", gridPos=GridPos(h=1, w=WIDTH, x=0, y=0)),
        _series("CML requests", "Requests to CML controllers by operation and outcome.",
                [_target(f"sum by (operation, outcome) (rate(cml_api_calls_total{{{JOB}}}{rate}))",
                         "{{operation}} {{outcome}}")], unit="reqps"),
        _series("Idle stops", "Instances stopped for inactivity (spec.cml.idleStop), per hour.",
                [_target(f"sum (increase(cml_idle_stops_total{{{JOB}}}[1h]))", "stops per hour")]),
        RowPanel(title="Operator", gridPos=GridPos(h=1, w=WIDTH, x=0, y=0)),
        _series("Leader", "1 on the replica that reconciles; exactly one per installation.",
                [_target(f"max by (namespace, pod) (cml_leader{{{JOB}}})", "{{namespace}}/{{pod}}")], width=8),
        _series("Memory", "Resident memory of each replica.",
                [_target(f"max by (namespace, pod) (process_resident_memory_bytes{{{JOB}}})",
                         "{{namespace}}/{{pod}}")], unit="bytes", width=8),
        Stat(title="Version", description="cml_build_info of the running replicas.", dataSource=DATASOURCE,
             targets=[_target(f"count by (version) (cml_build_info{{{JOB}}})", "{{version}}")],
             textMode="name", reduceCalc="lastNotNull", gridPos=GridPos(h=8, w=8, x=0, y=0)),
    ]


def _laid_out(items: list[object]) -> list[object]:
    """Place panels left to right, wrapping rows; grafanalib leaves positions to the caller."""
    x = y = row_height = 0
    for item in items:
        pos = item.gridPos
        if isinstance(item, RowPanel) or x + pos.w > WIDTH:
            x, y, row_height = 0, y + row_height, 0
        item.gridPos = GridPos(h=pos.h, w=pos.w, x=x, y=y)
        x, row_height = x + pos.w, max(row_height, pos.h)
        if isinstance(item, RowPanel):
            x, y, row_height = WIDTH, y, 1
    return items


def dashboard() -> Dashboard:
    return Dashboard(
        title="cml-operator", uid="cml-operator", description="CMLWorkers, EC2 and CML traffic, reconciles and "
        "the operator's replicas (docs/metrics.md; alerts: docs/runbook.md).",
        tags=["cml-operator"], timezone="browser", refresh="30s", time=Time("now-6h", "now"),
        schemaVersion=39,
        templating=Templating([
            Template(name="datasource", label="Data source", query="prometheus", type="datasource"),
            Template(name="job", label="Installation", query="label_values(cml_build_info, job)",
                     dataSource=DATASOURCE, includeAll=True, multi=True, allValue=".*", default="All"),
        ]),
        panels=_laid_out(panels()),
    ).auto_panel_ids()


#: Grafana's variables, replaced by values PromQL parses before a query is checked.
VARIABLES = {"$__rate_interval": "5m", "$job": ".*"}
_NOT_METRICS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "rate", "irate", "increase", "delta", "idelta", "histogram_quantile", "max_over_time", "min_over_time",
    "avg_over_time", "absent", "absent_over_time", "clamp_min", "clamp_max", "label_replace", "vector", "time",
}


def queries(data: dict | None = None) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL with the variables replaced) for every target of every panel."""
    data = data if data is not None else dashboard().to_json_data()
    encoded = json.loads(json.dumps(data, cls=DashboardEncoder))
    for panel in encoded["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            yield panel["title"], expr


def metric_names(expr: str) -> set[str]:
    """The series names a query selects (label matchers, grouping labels, strings and functions dropped)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return {word for word in words if word not in _NOT_METRICS}


def exported_names(exposition: str) -> set[str]:
    """Series names an exposition offers: its samples and, for families without samples yet, their TYPE."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("",)}.get(kind, ("",))
            names.update(name + suffix for suffix in suffixes)
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def render() -> str:
    return json.dumps(dashboard().to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUTPUT.write_text(render())


if __name__ == "__main__":
    main()
