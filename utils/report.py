"""Measure the course: run every chapter and lab notebook, time it, and table it.

Usage (from the repository root)::

    python -m utils.report                       # fast and full mode, every notebook
    python -m utils.report --modes fast          # fast mode only
    python -m utils.report chapters/05_style.ipynb --no-readme

Each notebook is executed top to bottom in a fresh kernel (``nbclient``) with
``CNN_TOPICS_FAST`` set for the mode. Recorded: the wall time, the kernel's
peak resident memory (Linux ``VmHWM``, the high-water mark of its RSS), the
device and the fallbacks that were active. The table replaces the one between
the ``performance-table`` markers of ``README.md``. The budgets are those the
course promises: in fast mode at most :data:`FAST_SECONDS` per notebook, and at
most :data:`PEAK_BYTES` of memory in any mode (Binder's limit).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

__all__ = ["FAST_SECONDS", "FULL_SECONDS", "PEAK_BYTES", "Measurement", "peak_rss", "run_notebook",
           "markdown_table", "main"]

FAST_SECONDS = 60.0
FULL_SECONDS = 300.0
PEAK_BYTES = 2 * 1024**3
ROOT = Path(__file__).resolve().parents[1]
_START, _END = "<!-- performance-table:start -->", "<!-- performance-table:end -->"
_PROBE = ("import json as _json\nfrom utils import config as _config\n"
          "print('REPORT-PROBE' + _json.dumps({'device': str(_config.device()), "
          "'fallbacks': sorted(_config.active_fallbacks())}))")


def peak_rss(pid: int) -> int:
    """Peak resident memory of process ``pid`` in bytes.

    Linux keeps the high-water mark of a process's RSS in ``/proc/PID/status``
    (``VmHWM``); elsewhere the current RSS is the best available estimate.
    """
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        match = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
        if match:
            return int(match.group(1)) * 1024
    return psutil.Process(pid).memory_info().rss


@dataclass
class Measurement:
    """One notebook run: wall seconds, peak kernel memory, device and fallbacks."""

    notebook: str
    mode: str
    seconds: float
    peak_bytes: int
    device: str
    fallbacks: list[str]

    def within_budget(self) -> bool:
        limit = FAST_SECONDS if self.mode == "fast" else FULL_SECONDS
        return self.seconds <= limit and self.peak_bytes <= PEAK_BYTES


@contextlib.contextmanager
def _environment(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_notebook(path: Path, mode: str, timeout: int = 1800) -> Measurement:
    """Execute ``path`` in a fresh kernel in ``mode`` ("fast" or "full") and measure it."""
    if mode not in ("fast", "full"):
        raise ValueError(f"mode must be 'fast' or 'full', got {mode!r}.")
    path = Path(path).resolve()
    if path.suffix != ".ipynb" or not path.exists():
        raise ValueError(f"{path} is not an existing .ipynb notebook.")
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    peak: list[int] = []

    def on_cell_executed(**_):  # VmHWM only grows: the last reading is the peak
        peak.append(peak_rss(client.km.provisioner.process.pid))

    with _environment(CNN_TOPICS_FAST="1" if mode == "fast" else "0", MPLBACKEND="Agg"):
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}},
                                on_cell_executed=on_cell_executed)
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    probe = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    info = json.loads(probe.split("REPORT-PROBE", 1)[1])
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    return Measurement(rel, mode, seconds, peak[-1] if peak else 0, info["device"], info["fallbacks"])


def _fmt_seconds(m: Measurement | None) -> str:
    return "—" if m is None else f"{m.seconds:.0f} s"


def _fmt_bytes(m: Measurement | None) -> str:
    return "—" if m is None else f"{m.peak_bytes / 1024**2:,.0f} MiB"


def markdown_table(results: list[Measurement]) -> str:
    """A README table: one row per notebook, fast and full mode side by side."""
    by_nb: dict[str, dict[str, Measurement]] = {}
    for m in results:
        by_nb.setdefault(m.notebook, {})[m.mode] = m
    lines = ["| notebook | fast: time | fast: peak memory | full: time | full: peak memory | device "
             "| fallbacks active |",
             "|---|---:|---:|---:|---:|---|---|"]
    for nb, modes in sorted(by_nb.items()):
        fast, full = modes.get("fast"), modes.get("full")
        any_run = fast or full
        fallbacks = ", ".join(any_run.fallbacks) or "none"
        lines.append(f"| {nb} | {_fmt_seconds(fast)} | {_fmt_bytes(fast)} | {_fmt_seconds(full)} | "
                     f"{_fmt_bytes(full)} | {any_run.device} | {fallbacks} |")
    stamp = datetime.date.today().isoformat()
    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    lines.append("")
    lines.append(f"Measured {stamp} with `python -m utils.report` on {cpu}, Python "
                 f"{platform.python_version()}; budgets: fast ≤ {FAST_SECONDS:.0f} s, full ≤ "
                 f"{FULL_SECONDS:.0f} s per notebook, peak memory ≤ {PEAK_BYTES / 1024**3:.0f} GiB.")
    return "\n".join(lines)


def _write_readme(table: str, readme: Path) -> None:
    text = readme.read_text()
    if _START not in text or _END not in text:
        raise ValueError(f"{readme} has no {_START} ... {_END} markers to replace.")
    head, rest = text.split(_START, 1)
    tail = rest.split(_END, 1)[1]
    readme.write_text(f"{head}{_START}\n{table}\n{_END}{tail}")


def _default_notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.report", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter and lab master")
    parser.add_argument("--modes", nargs="+", choices=["fast", "full"], default=["fast", "full"])
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    results = []
    for path in args.notebooks or _default_notebooks():
        for mode in args.modes:
            m = run_notebook(path, mode)
            flag = "ok" if m.within_budget() else "OVER BUDGET"
            print(f"{m.notebook:40s} {mode:4s} {m.seconds:7.1f} s {m.peak_bytes / 1024**2:8.0f} MiB  {flag}",
                  flush=True)
            results.append(m)
    table = markdown_table(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps([m.__dict__ for m in results], indent=1))
    if not args.no_readme:
        _write_readme(table, ROOT / "README.md")
    return 0 if all(m.within_budget() for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
