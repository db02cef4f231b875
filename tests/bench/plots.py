"""Pictures of a scale benchmark run, written next to its SUMMARY (make bench).

Three PNGs per run directory, one series per N (batched runs):

* ``ready-times.png``: how long each worker took from creation to Ready (a histogram);
* ``reads-per-pass.png``: EC2 reads in each steady-state resync pass, with the limit;
* ``rss-per-pass.png``: the operator's RSS at each pass, with the limit.

The figures come from the run's results only; plotting never measures anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a CI machine or in a container
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first


@dataclass(frozen=True)
class Series:
    """One batched run's figures, as the plots need them."""

    n: int
    ready_times_s: Sequence[float]
    reads_by_pass: Sequence[int]
    rss_by_pass: Sequence[float]


@dataclass(frozen=True)
class PlotLimits:
    reads_per_resync: float | None
    rss_mb: float | None


FILES = ("ready-times.png", "reads-per-pass.png", "rss-per-pass.png")


def write_plots(series: Sequence[Series], limits: PlotLimits, out_dir: Path) -> list[Path]:
    """Write the three plots into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_ready_times(series, out_dir / FILES[0]),
            _per_pass(series, "reads_by_pass", "EC2 reads in the pass", limits.reads_per_resync,
                      "EC2 reads per resync pass", out_dir / FILES[1]),
            _per_pass(series, "rss_by_pass", "RSS (MiB)", limits.rss_mb,
                      "Operator RSS per resync pass", out_dir / FILES[2])]


def _ready_times(series: Sequence[Series], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4))
    for item in series:
        if item.ready_times_s:
            axes.hist(item.ready_times_s, bins=30, alpha=0.6, label=f"N={item.n}")
    axes.set(title="Time from creation to Ready, per worker", xlabel="seconds", ylabel="workers")
    _legend(axes)
    return _save(figure, path)


def _per_pass(series: Sequence[Series], attribute: str, ylabel: str, limit: float | None, title: str,
              path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4))
    for item in series:
        values = list(getattr(item, attribute))
        if values:
            axes.plot(range(1, len(values) + 1), values, marker="o", label=f"N={item.n}")
    if limit is not None:
        axes.axhline(limit, color="red", linestyle="--", label=f"limit {limit:g}")
    axes.set(title=title, xlabel="resync pass", ylabel=ylabel)
    axes.set_ylim(bottom=0)
    _legend(axes)
    return _save(figure, path)


def _legend(axes: plt.Axes) -> None:
    if axes.get_legend_handles_labels()[0]:  # a run without figures has nothing to name
        axes.legend()


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
