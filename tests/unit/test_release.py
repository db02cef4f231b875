"""One version everywhere: the package (__version__, pyproject's dynamic version), the chart's version and
appVersion (the image tag defaults to appVersion), and a CHANGELOG section; the LICENSE is Apache-2.0's text."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from cml_operator import __version__

REPO = Path(__file__).resolve().parents[2]


def test_the_package_the_chart_and_the_image_tag_share_one_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "cml-operator" / "Chart.yaml").read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert chart["version"] == __version__, "charts/cml-operator/Chart.yaml version"
    assert chart["appVersion"] == __version__, "charts/cml-operator/Chart.yaml appVersion (the image tag)"
    values = yaml.safe_load((REPO / "charts" / "cml-operator" / "values.yaml").read_text())
    assert values["image"]["tag"] == "", "the image tag must default to appVersion"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cml_operator.__version__"}


def test_the_changelog_has_a_section_for_this_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert f"[{__version__}]: https://" in changelog


def test_the_license_is_the_apache_2_text() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 190
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == {"text": "Apache-2.0"}


def test_the_kustomize_base_runs_the_image_of_this_version() -> None:
    docs = [doc for doc in yaml.safe_load_all((REPO / "deploy" / "deployment.yaml").read_text()) if doc]
    [deployment] = [doc for doc in docs if doc["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/cml-dev/cml-operator:{__version__}"
