"""Run the operator with tracemalloc on; SIGUSR1 writes the top allocation sites to $CML_MEMPROFILE_OUT.

    python -m tests.bench.memprofile run [cml-operator run options]

Used by ``make bench BENCH_ARGS=--profile-memory`` to show where the memory goes. The
benchmark signals once per resync pass: each signal also appends what grew since the
previous one (``tracemalloc`` snapshot comparison) to ``$CML_MEMPROFILE_OUT.growth``, which
shows whether steady-state growth is a leak (one site growing every pass) or caches
filling once.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path


_previous: list[tracemalloc.Snapshot] = []


def _census() -> list[str]:
    """Live objects the garbage collector tracks, by type: count and shallow size (what holds memory)."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    metadata = 0  # Kubernetes objects' metadata dicts: how many bodies are held
    for obj in gc.get_objects():
        kind = type(obj).__qualname__
        counts[kind] += 1
        sizes[kind] += sys.getsizeof(obj)
        if kind == "dict" and "resourceVersion" in obj and "uid" in obj:
            metadata += 1
    lines = [f"\n--- census: {sum(counts.values())} objects, {sum(sizes.values()) / 2**20:.1f} MiB shallow; "
             f"{metadata} Kubernetes object bodies ---"]
    lines += [f"{size / 2**20:8.2f} MiB {counts[kind]:9d}  {kind}" for kind, size in sizes.most_common(25)]
    # What holds a kind alive (CML_MEMPROFILE_HOLDERS=Element): each step scans every object, seconds at N=1000.
    holders = os.environ.get("CML_MEMPROFILE_HOLDERS")
    return lines + (_holders(holders) if holders else [])


def _holders(kind: str, depth: int = 8) -> list[str]:
    """What keeps the objects of ``kind`` alive: the referrer chain of one that no other ``kind`` refers to."""
    found = [obj for obj in gc.get_objects() if type(obj).__qualname__ == kind]
    if not found:
        return []
    children = {id(child) for obj in found for child in gc.get_referents(obj)}
    roots = [obj for obj in found if id(obj) not in children]
    lines = [f"\n--- {len(found)} {kind} objects, {len(roots)} roots; what holds the first root ---"]
    current: object = roots[0] if roots else found[0]
    seen = {id(found), id(roots), id(sys._getframe())}
    for _ in range(depth):
        referrers = [r for r in gc.get_referrers(current) if id(r) not in seen and r is not found and r is not roots]
        if not referrers:
            break
        current = referrers[0]
        seen.add(id(current))
        description = type(current).__qualname__
        if hasattr(current, "f_code"):
            description += f" {current.f_code.co_filename}:{current.f_lineno} {current.f_code.co_name}"
        elif isinstance(current, dict):
            description += f" keys={list(current)[:8]}"
        lines.append(f"  held by {description}")
    return lines


def _dump(signum: int, frame: object) -> None:
    out = Path(os.environ.get("CML_MEMPROFILE_OUT", "memprofile.txt"))
    if not tracemalloc.is_tracing():
        out.write_text("\n".join(_census()) + "\n")
        return
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")))
    _append_growth(snapshot, out.with_name(out.name + ".growth"))
    lines = [f"traced: {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB (current), "
             f"{tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB (peak)"]
    for group in ("filename", "traceback"):
        lines.append(f"\n--- top by {group} ---")
        for stat in snapshot.statistics(group)[:25 if group == "filename" else 8]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} blocks  {stat.traceback.format()[-1].strip()}")
            if group == "traceback":
                lines.extend("        " + line for line in stat.traceback.format()[-8:])
    out.write_text("\n".join(lines + _census()) + "\n")


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
    frames = int(os.environ.get("CML_MEMPROFILE_FRAMES", "12"))
    if frames > 0:
        tracemalloc.start(frames)
    signal.signal(signal.SIGUSR1, _dump)
    from cml_operator.cli import main as operator_main

    return operator_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
