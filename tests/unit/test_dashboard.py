"""deploy/monitoring/dashboard.json is what tests/support/dashboardgen.py generates, and its queries are sound.

Every query must parse (promtool's PromQL parser) and select only series the operator exports: here
the names its Metrics registry declares; tests/e2e/test_observability.py checks the same names
against a scrape of a running operator.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from prometheus_client import generate_latest

from cml_operator.metrics import Metrics
from tests.support.dashboardgen import OUTPUT, exported_names, metric_names, queries, render

PANELS_NEEDED = {"Workers by phase", "Workers by reason", "Ready latency", "EC2 calls by operation",
                 "EC2 errors by operation", "EC2 throttles by operation", "EC2 batch sizes", "Reconcile duration",
                 "CML requests", "Idle stops", "Leader", "Memory"}


def test_the_committed_dashboard_is_the_generated_one() -> None:
    assert OUTPUT.read_text() == render(), "run `make monitoring`: deploy/monitoring/dashboard.json is stale"


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    data = json.loads(OUTPUT.read_text())
    titles = {panel["title"] for panel in data["panels"]}
    assert PANELS_NEEDED <= titles, PANELS_NEEDED - titles
    assert data["uid"] == "cml-operator"
    positions = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in data["panels"]]
    assert len(positions) == len(set(positions)), "two panels at one place"


def test_every_query_names_only_series_the_operator_exports() -> None:
    exported = exported_names(generate_latest(Metrics().registry).decode())
    for title, expr in queries(json.loads(OUTPUT.read_text())):
        names = metric_names(expr)
        assert names, f"{title}: {expr} selects no series"
        assert names <= exported, f"{title}: {sorted(names - exported)} are not exported"


def test_every_query_parses_with_promtool(tools_bin_dir: Path) -> None:
    for title, expr in queries(json.loads(OUTPUT.read_text())):
        proc = subprocess.run([str(tools_bin_dir / "promtool"), "promql", "format", "--experimental", expr],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{title}: {expr}\n{proc.stdout}{proc.stderr}"
