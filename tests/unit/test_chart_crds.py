"""The chart's copies are current: its CRDs are crds/ byte for byte, its ClusterRole rules deploy/rbac.yaml's,
its PrometheusRule and dashboard deploy/monitoring's.

One source each: `make crds` (tests/support/chartgen.py) copies them into the chart.

Copies rather than symlinks: helm warns about every symlink, and a chart packaged or pulled
on its own has to carry the files.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "crds"
CHART_CRDS = REPO / "charts" / "cml-operator" / "files" / "crds"


def test_the_chart_carries_exactly_the_crds_folder() -> None:
    from tests.support.chartgen import CHART, expected_crds, expected_policies

    assert not (CHART / "crds").exists(), "the CRDs are templates (crds.install), not Helm's install-only crds/"
    policies = {path.name: path.read_bytes() for path in (CHART / "files" / "policies").glob("*.yaml")}
    assert policies == expected_policies(), "run `make crds`: the chart's admission policies are stale"
    source = expected_crds()
    chart = {path.name: path.read_bytes() for path in CHART_CRDS.iterdir()}
    assert source, "crds/ is empty"
    assert chart.keys() == source.keys(), "run `make crds`: the chart's files/crds/ lists other files"
    stale = [name for name in source if chart[name] != source[name]]
    assert not stale, f"run `make crds`: charts/cml-operator/files/crds/ differs from crds/ in {stale}"


def test_the_chart_grants_what_deploy_rbac_grants() -> None:
    from tests.support.chartgen import RULES_FILE, expected_rules

    assert RULES_FILE.read_text() == expected_rules(), "run `make crds`: the chart's ClusterRole rules are stale"


def test_the_chart_carries_deploy_monitoring() -> None:
    from tests.support.chartgen import CHART, expected_monitoring

    chart = {path.name: path.read_bytes() for path in (CHART / "files" / "monitoring").iterdir()}
    assert chart == expected_monitoring(), "run `make crds`: the chart's files/monitoring/ is stale"


def test_the_chart_grants_what_the_namespaced_overlay_grants() -> None:
    from tests.support.chartgen import expected_namespaced_rules

    for path, text in expected_namespaced_rules().items():
        assert path.read_text() == text, f"run `make crds`: {path.name} is stale"
