"""Test configuration: fast, offline mode, and the notebooks' time and memory budgets.

The environment is set at import time, before pytest-xdist workers and nbval
start their kernels, so notebooks inherit it. Set a variable yourself to
override it, e.g. ``CNN_TOPICS_FAST=0 pytest chapters/`` for full mode.

Budgets (``utils.report``): while nbval executes a notebook, its wall time
(kernel start plus every cell) and its kernel's peak memory are recorded; after
its last cell the notebook fails (an error at the teardown of that cell) if it
went over budget, and the end of the run prints a table of every notebook. The
test run executes two notebooks at once on two cores, so each gets about one
core: the time limit is the fast-mode budget with a stated margin,
``FAST_SECONDS * TIME_MARGIN``. Memory has no margin.
"""

import os

os.environ.setdefault("CNN_TOPICS_FAST", "1")
os.environ.setdefault("CNN_TOPICS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
# pytest-xdist runs one notebook per worker: share the cores instead of letting
# every kernel's torch and BLAS start one thread per core (oversubscribed
# OpenMP threads spin and made small jobs ten times slower). A thread count the
# user set (OMP_NUM_THREADS=1 pytest ...) holds for every library (MKL's threads
# waiting on each other under load made texture synthesis nine times slower).
# Workers inherit this process's environment, so the user's choice is passed on
# by name, apart from the counts set here.
_user_threads = os.environ.setdefault("CNN_TOPICS_USER_THREADS", os.environ.get("OMP_NUM_THREADS", ""))
_threads = _user_threads or str(
    max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = _threads

import pytest  # noqa: E402

from utils.report import FAST_SECONDS, PEAK_BYTES, peak_rss  # noqa: E402

TIME_MARGIN = 1.5
_seconds: dict[str, float] = {}  # notebook -> seconds so far (this process's reports)
_budget_rows: dict[str, tuple[float, int]] = {}  # notebook -> (seconds, peak bytes), for the summary


def _notebook_of(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return path if path.endswith(".ipynb") and "::" in nodeid else None


def pytest_runtest_logreport(report):
    notebook = _notebook_of(report.nodeid)
    if notebook is None:
        return
    _seconds[notebook] = _seconds.get(notebook, 0.0) + report.duration
    for key, value in report.user_properties:
        if key == "notebook_budget":
            _budget_rows[notebook] = value


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """After a notebook's last cell, before nbval stops its kernel: check the budget."""
    notebook = _notebook_of(item.nodeid)
    if notebook is None or (nextitem is not None and nextitem.parent is item.parent):
        return
    try:
        peak = peak_rss(item.parent.kernel.km.provisioner.process.pid)
    except (AttributeError, OSError):  # the kernel died: nbval reports that itself
        return
    seconds = _seconds.get(notebook, 0.0)
    item.user_properties.append(("notebook_budget", (seconds, peak)))
    problems = []
    if seconds > FAST_SECONDS * TIME_MARGIN and os.environ["CNN_TOPICS_FAST"] == "1":
        problems.append(f"took {seconds:.0f} s, over the fast-mode budget of {FAST_SECONDS:.0f} s "
                        f"(× {TIME_MARGIN} margin for the parallel test run)")
    if peak > PEAK_BYTES:
        problems.append(f"peaked at {peak / 1024**2:,.0f} MiB, over {PEAK_BYTES / 1024**3:.0f} GiB")
    if problems:
        raise AssertionError(f"{notebook} " + " and ".join(problems))


def pytest_terminal_summary(terminalreporter):
    if not _budget_rows:
        return
    terminalreporter.section("notebook budgets (wall time incl. kernel start, kernel peak memory)")
    for notebook, (seconds, peak) in sorted(_budget_rows.items()):
        terminalreporter.write_line(f"{notebook:45s} {seconds:6.1f} s {peak / 1024**2:8,.0f} MiB")
