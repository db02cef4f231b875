"""make bench's plots: three PNGs from a run's figures, the limits drawn where set."""

from __future__ import annotations

from pathlib import Path

from tests.bench.plots import FILES, PlotLimits, Series, write_plots

PNG = b"\x89PNG\r\n\x1a\n"


def _series(rss: list[float]) -> list[Series]:
    return [Series(n=100, ready_times_s=[30.0, 31.0, 35.0, 40.0], reads_by_pass=[11, 12, 11], rss_by_pass=rss),
            Series(n=500, ready_times_s=[45.0, 50.0], reads_by_pass=[12, 12], rss_by_pass=[150.0, 151.0])]


def test_three_png_files_are_written_into_the_run_directory(tmp_path: Path):
    paths = write_plots(_series([120.0, 121.0, 121.0]), PlotLimits(reads_per_resync=15, rss_mb=200), tmp_path / "run")

    assert [p.name for p in paths] == list(FILES)
    for path in paths:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5_000, path


def test_the_plots_follow_the_figures_they_are_given(tmp_path: Path):
    limits = PlotLimits(reads_per_resync=15, rss_mb=200)
    first = write_plots(_series([120.0, 121.0, 121.0]), limits, tmp_path / "a")
    second = write_plots(_series([120.0, 180.0, 240.0]), limits, tmp_path / "b")

    # Only the RSS series changed: that picture differs, the others are the same picture.
    assert [a.read_bytes() == b.read_bytes() for a, b in zip(first, second)] == [True, True, False]


def test_a_run_without_passes_still_gets_its_pictures(tmp_path: Path):
    paths = write_plots([Series(n=5, ready_times_s=[], reads_by_pass=[], rss_by_pass=[])],
                        PlotLimits(reads_per_resync=None, rss_mb=None), tmp_path)

    assert all(path.read_bytes()[:8] == PNG for path in paths)
