"""Grading throughput: submissions graded per minute, per lab, with the sandboxed grader.

Usage::

    python benchmarks/grading_throughput.py [--labs 00_warmup 01_locality] [--copies 8]
                                            [--workers 2] [--cores 2] [--fast]

For each lab: ``otter assign`` into a temporary folder, then ``labs.grade`` a
folder of ``--copies`` copies of the solutions notebook (full-marks work: every
cell runs in its sandbox and every test runs, calling into it) on ``--workers``
workers, the process pinned to ``--cores`` cores (inherited by the workers and
the sandboxes). It prints, per lab, the wall time, the throughput in
submissions per minute, the mean seconds and CPU seconds per submission
(sandbox, notebook and tests together), and the load average before and after,
since other work on the machine slows grading down: CPU seconds per submission
is the number least affected by it, and ``60 * cores / cpu_seconds`` bounds the
throughput of idle cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def bench(lab: str, copies: int, workers: int, root: Path) -> dict[str, float]:
    """Grade ``copies`` copies of ``lab``'s solutions; timings of the whole run and per submission."""
    from utils import labs

    dist = root / "dist"
    labs.assign(lab, dist=dist, run_tests=False)
    solutions = (dist / lab / "autograder" / f"{lab}.ipynb").read_bytes()
    folder = root / f"{lab}-submissions"
    folder.mkdir()
    for i in range(copies):
        (folder / f"student{i:03d}.ipynb").write_bytes(solutions)
    possible = sum(labs.question_points(lab, dist).values())
    start = time.perf_counter()
    grades = labs.grade(lab, folder, dist=dist, workers=workers)
    wall = time.perf_counter() - start
    failed = [g.submission for g in grades if g.error or g.total != possible]
    if failed:
        raise SystemExit(f"{lab}: {failed} did not score full marks; the benchmark needs working solutions")
    return {"wall": wall, "per_minute": 60 * copies / wall,
            "seconds": sum(g.seconds for g in grades) / copies,
            "cpu": sum(g.cpu_seconds for g in grades) / copies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labs", nargs="+", default=["00_warmup", "01_locality"])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="fast mode (CNN_TOPICS_FAST=1), as in the tests")
    args = parser.parse_args()
    os.environ["CNN_TOPICS_FAST"] = "1" if args.fast else "0"
    os.environ.setdefault("CNN_TOPICS_OFFLINE", "1")
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cores)
    print(f"{platform.processor() or platform.machine()}, {len(cores)} cores, {args.workers} workers, "
          f"{'fast' if args.fast else 'full'} mode, {args.copies} copies of the solutions per lab")
    print(f"{'lab':14s} {'wall s':>7s} {'subs/min':>9s} {'s/sub':>7s} {'CPU s/sub':>10s}  load before -> after")
    with tempfile.TemporaryDirectory(prefix="cnnt-bench-") as tmp:
        for lab in args.labs:
            before = os.getloadavg()[0]
            r = bench(lab, args.copies, args.workers, Path(tmp) / lab)
            print(f"{lab:14s} {r['wall']:7.1f} {r['per_minute']:9.1f} {r['seconds']:7.1f} {r['cpu']:10.1f}  "
                  f"{before:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
