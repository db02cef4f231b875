"""`make bench` fails when a figure is over its target, and passes when none is (run at N=5).

Each run is the real benchmark (its own control plane, moto_server, fault proxy and
operator) with short intervals; the operator runs from the test virtualenv here, since
these runs check the exit status, not the memory figure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--sizes", "5", "--modes", "batched", "--resync", "2", "--poll", "1", "--operator-python", sys.executable]


def bench(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.bench.scale", *SMALL, *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=400)


def summary(output: str) -> dict[str, str]:
    [line] = [line for line in output.splitlines() if line.startswith("SUMMARY ")]
    return dict(field.split("=", 1) for field in line.split()[1:])


@pytest.mark.slow
def test_a_figure_over_its_limit_fails_the_bench_and_is_named(control_plane_bin_dir):
    # 6 or 7 writes per worker and a handful of reads per pass cannot meet limits of 1.
    run = bench("--max-writes-per-worker", "1", "--max-reads-per-resync", "1", "--plateau", "1")

    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED ")]
    assert any(re.search(r"k8s_writes_per_worker=(6|7|6\.\d+) is over its limit 1 ", line) for line in failed), failed
    assert any("ec2_reads_per_resync=" in line and "over its limit 1 " in line for line in failed), failed
    assert not any("ready_s" in line or "rss_steady_mb" in line for line in failed), failed  # those were met


@pytest.mark.slow
def test_within_its_limits_the_bench_passes_with_every_figure_in_the_summary(control_plane_bin_dir, tmp_path):
    run = bench("--out", str(tmp_path))

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = summary(run.stdout)
    assert figures["n"] == "5" and figures["live_instances"] == "5"
    assert float(figures["ready_s"]) <= 120 and float(figures["k8s_writes_per_worker"]) <= 7
    assert 0 < float(figures["rss_steady_mb"]) <= 250
    assert float(figures["ec2_reads_per_resync"]) <= 15
    for key in ("cpu_idle_pct", "cpu_resync_pct"):
        assert 0 <= float(figures[key]) <= 200, figures  # a share of one core (2 cores here at most)
    assert "FAILED" not in run.stdout
    # Next to the SUMMARY: the same lines in summary.txt and the three plots, as PNG files.
    assert [line for line in (tmp_path / "summary.txt").read_text().splitlines()] == \
        [line for line in run.stdout.splitlines() if line.startswith("SUMMARY ")]
    for name in ("ready-times.png", "reads-per-pass.png", "rss-per-pass.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
