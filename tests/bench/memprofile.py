"""Run the operator with tracemalloc on; SIGUSR1 writes the top allocation sites to $CML_MEMPROFILE_OUT.

    python -m tests.bench.memprofile run [cml-operator run options]

Used by ``make bench BENCH_ARGS=--profile-memory`` to show where the memory goes. The
benchmark signals once per resync pass: each signal also appends what grew since the
previous one (``tracemalloc`` snapshot comparison) to ``$CML_MEMPROFILE_OUT.growth``, which
shows whether steady-state growth is a leak (one site growing every pass) or caches
filling once.
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from pathlib import Path


_previous: list[tracemalloc.Snapshot] = []


def _dump(signum: int, frame: object) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")))
    out = Path(os.environ.get("CML_MEMPROFILE_OUT", "memprofile.txt"))
    _append_growth(snapshot, out.with_name(out.name + ".growth"))
    lines = [f"traced: {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB (current), "
             f"{tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB (peak)"]
    for group in ("filename", "traceback"):
        lines.append(f"\n--- top by {group} ---")
        for stat in snapshot.statistics(group)[:25 if group == "filename" else 8]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} blocks  {stat.traceback.format()[-1].strip()}")
            if group == "traceback":
                lines.extend("        " + line for line in stat.traceback.format()[-8:])
    out.write_text("\n".join(lines) + "\n")


def _append_growth(snapshot: tracemalloc.Snapshot, path: Path) -> None:
    """What grew since the previous signal, top sites by size difference."""
    traced = tracemalloc.get_traced_memory()[0] / 2**20
    lines = [f"=== dump {len(_previous) + 1}: traced {traced:.1f} MiB"]
    if _previous:
        for stat in snapshot.compare_to(_previous[-1], "traceback")[:6]:
            lines.append(f"{stat.size_diff / 2**20:+8.2f} MiB {stat.count_diff:+8d} blocks "
                         f"(now {stat.size / 2**20:.2f} MiB)")
            lines.extend("        " + line for line in stat.traceback.format()[-6:])
    _previous[:] = [snapshot]  # keep one: snapshots of 1000 workers' objects are large
    with path.open("a") as growth:
        growth.write("\n".join(lines) + "\n")


def main() -> int:
    tracemalloc.start(12)
    signal.signal(signal.SIGUSR1, _dump)
    from cml_operator.cli import main as operator_main

    return operator_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
