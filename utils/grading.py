"""Grading that a hostile submission cannot fool: sandboxed runs, trusted verdicts, parallel workers.

Each submission is graded in two processes that share nothing but a pair of
pipes:

* the **sandbox** (:mod:`utils.grading_sandbox`, started through bubblewrap)
  executes the notebook's code cells, then exports the variables the lab's
  tests ask for and answers the tests' calls on them. It has no network, its own
  process, user (root only: a user id of its own), IPC, UTS and mount
  namespaces, sees the system, the Python environment, the course package and
  the course's caches read-only and nothing else of the machine (not the lab's
  tests, solutions or the other submissions), writes only to a size-limited
  ``/submission`` folder in memory, and runs under kernel limits on memory
  (``RLIMIT_DATA`` per process, plus a watchdog on the whole sandbox's resident
  memory), CPU time (``RLIMIT_CPU``), processes and threads (``RLIMIT_NPROC``),
  file size and open files, with a wall-clock deadline. An attempt at network
  or at writing outside its folder, and a limit reached, end the run as that
  submission's error row.
* the **verdict** process (a fresh fork of a trusted server process, never
  touched by the submission's code) runs the lab's public and hidden tests
  (otter's test files, from the autograder zip) on what came out of the
  sandbox: data (:mod:`utils.grading_wire`: no pickle, no code) and
  :class:`Remote` handles for the submission's functions and objects, whose
  calls run in the sandbox on arguments the test chooses.

The course's implementations that a lab's tests refuse with
``labs.refusing("utils.module.function")`` are replaced in the sandbox's view
of the package by a stub that raises :class:`utils.labs.RefusedCall`: while a
submission runs they do not exist.

Linux only (bubblewrap); where the sandbox cannot be built, grading says why
and refuses, unless the instructor asks for ``unsafe_no_sandbox``.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .grading_sandbox import VIOLATION_EXIT
from .grading_wire import WireError, decode, read_frame, write_frame

__all__ = [
    "Limits",
    "Grade",
    "Plan",
    "Remote",
    "SubmissionError",
    "make_plan",
    "sandbox_problems",
    "grade_one",
    "grade_all",
    "answer_names",
    "refused_names",
    "imported_modules",
    "strip_functions",
]

_SANDBOX_HOME = "/submission"
#: The caches a submission reads: where their staged copies appear, and the writable views of them.
_VIEWS = (("/course/data", f"{_SANDBOX_HOME}/.cnn-topics"), ("/course/matplotlib", f"{_SANDBOX_HOME}/.matplotlib"))
_MAX_NOTEBOOK = 50 << 20
_UID_BASE = 1 << 30  # a sandbox started by root runs as _UID_BASE + its grading process's pid
_SIGNALS = {9: "was killed (out of memory?)", 24: "reached its CPU-time limit", 25: "wrote a file over the size limit"}


@dataclass(frozen=True)
class Limits:
    """What one submission may use.

    Parameters
    ----------
    seconds : float
        Wall-clock time for the whole submission (run, export and tests).
    cpu_seconds : float or None
        CPU time per process (default: ``seconds``).
    memory_gib : float
        Memory: private memory per process (``RLIMIT_DATA``) and the resident
        memory of the whole sandbox (watchdog).
    processes : int
        Processes and threads (``RLIMIT_NPROC``).
    disk_mib : int
        Size of the writable folder (a tmpfs) and of any one file.
    open_files : int
        Open file descriptors per process.
    """

    seconds: float = 300
    cpu_seconds: float | None = None
    memory_gib: float = 4.0
    processes: int = 64
    disk_mib: int = 512
    open_files: int = 1024

    def rlimits(self) -> dict[str, int]:
        """The kernel resource limits (``RLIMIT_<NAME>``: value) set inside the sandbox."""
        return {"data": int(self.memory_gib * 2**30), "cpu": int(self.cpu_seconds or self.seconds) + 1,
                "nproc": self.processes, "fsize": self.disk_mib << 20, "nofile": self.open_files, "core": 0}


@dataclass
class Grade:
    """Scores of one submission: ``{question: points}``, and why it was not graded, if it was not."""

    submission: str
    scores: dict[str, float] = field(default_factory=dict)
    error: str = ""
    feedback: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the question scores."""
        return sum(self.scores.values())


class SubmissionError(Exception):
    """An error of the submission's code, or of what it sent, seen by a test (the test fails)."""


class _Ungradable(BaseException):
    """The submission cannot be graded further (violation, limit, timeout, crash): an error row.

    A ``BaseException``, so that the tests' own ``except Exception`` cannot swallow it.
    """


# ------------------------------------------------------------- what tests need
def _test_functions(source: str) -> list[ast.FunctionDef]:
    """The ``@test_case``-decorated functions of an otter test file."""
    def is_test(d: ast.expr) -> bool:
        f = d.func if isinstance(d, ast.Call) else d
        return getattr(f, "id", None) == "test_case" or getattr(f, "attr", None) == "test_case"

    return [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and any(map(is_test, n.decorator_list))]


def answer_names(tests: Path) -> list[str]:
    """Names of the notebook variables that the test files in folder ``tests`` take, sorted.

    Examples
    --------
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "q1.py").write_text("@test_case()\\ndef test_a(x, f):\\n    pass\\n")
    >>> answer_names(folder)
    ['f', 'x']
    """
    names = set()
    for path in sorted(Path(tests).glob("*.py")):
        for fn in _test_functions(path.read_text()):
            args = [a.arg for a in fn.args.args + fn.args.kwonlyargs]
            if "env" in args:
                raise ValueError(f"{path.name}: test {fn.name} takes 'env' (the whole notebook); the grader "
                                 "exports only named variables: list the ones the test needs as parameters.")
            names.update(args)
    return sorted(names)


def imported_modules(tests: Path) -> list[str]:
    """The modules that the test files in ``tests`` import (``from utils import x`` gives ``utils.x``).

    Examples
    --------
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "q1.py").write_text("def t():\\n    import numpy as np\\n    from utils import assets\\n")
    >>> imported_modules(folder)
    ['numpy', 'utils', 'utils.assets']
    """
    found = set()
    for path in sorted(Path(tests).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "utils")
    return sorted(found)


def refused_names(tests: Path) -> list[str]:
    """The course functions that the test files in ``tests`` refuse: ``refusing("utils.x.f", ...)``.

    Examples
    --------
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "q1.py").write_text("with labs.refusing('utils.models.num_parameters'):\\n    pass\\n")
    >>> refused_names(folder)
    ['utils.models.num_parameters']
    """
    found = set()
    for path in sorted(Path(tests).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            name = getattr(func, "attr", None) or getattr(func, "id", None)
            if isinstance(node, ast.Call) and name == "refusing":
                if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args):
                    raise ValueError(f"{path.name}: refusing() takes dotted names as string literals, e.g. "
                                     "labs.refusing('utils.models.num_parameters'), so the grader can read them.")
                found.update(a.value for a in node.args)
    return sorted(found)


def strip_functions(source: str, names: list[str], message: str) -> str:
    """``source`` of a module whose functions (``f`` or ``Class.f``) in ``names`` only raise.

    The body of each becomes ``raise RefusedCall(message)`` (its docstring kept).

    Examples
    --------
    >>> print(strip_functions("def f(x):\\n    return x + 1\\n", ["f"], "no"))
    def f(x):
        from utils.labs import RefusedCall
        raise RefusedCall('no')
    """
    tree = ast.parse(source)
    stub = ast.parse(f"from utils.labs import RefusedCall\nraise RefusedCall({message!r})").body
    wanted = set(names)
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        members = [(node.name, node)] if isinstance(node, functions) else []
        if isinstance(node, ast.ClassDef):
            members += [(f"{node.name}.{m.name}", m) for m in node.body if isinstance(m, functions)]
        for qualname, member in members:
            if qualname in wanted:
                doc = member.body[:1] if ast.get_docstring(member) else []
                member.body = doc + stub
                wanted.discard(qualname)
    if wanted:
        raise ValueError(f"no function {sorted(wanted)} to refuse in this module")
    return ast.unparse(tree) + "\n"


# ------------------------------------------------------------- the sandbox's view
@dataclass(frozen=True)
class Plan:
    """Everything a grading worker needs, decided once per lab by :func:`make_plan` (picklable)."""

    lab: str
    tests: str
    names: tuple[str, ...]
    limits: Limits
    command: tuple[str, ...]
    env: dict[str, str]
    views: tuple[tuple[str, str], ...]
    root: bool
    workdir: str = _SANDBOX_HOME
    trusted_env: dict[str, str] = field(default_factory=dict)


def _ancestors(path: Path) -> list[Path]:
    return list(reversed(path.parents))[1:]


def _bind(args: list[str], made: set[Path], source: Path, target: Path | None = None, kind: str = "--ro-bind"):
    """Add a bind of ``source`` at ``target`` (default: the same path), its parents made 0755."""
    target = Path(target or source)
    for parent in _ancestors(target):
        if parent not in made:
            args += ["--perms", "0755", "--dir", str(parent)]
            made.add(parent)
    args += [kind, str(source), str(target)]
    made.add(target)


def _system_binds(args: list[str], made: set[Path]) -> None:
    """``/usr`` and its usual links, the parts of ``/etc`` that programs read, Python, the venv."""
    _bind(args, made, Path("/usr"))
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            _bind(args, made, path)
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group",
                 "fonts", "alternatives", "mime.types"):
        if (Path("/etc") / name).exists():
            _bind(args, made, Path("/etc") / name)
    for folder in {Path(sys.base_prefix), Path(sys.prefix), Path(os.path.realpath(sys.executable)).parents[1]}:
        if folder != Path("/usr") and Path("/usr") not in folder.parents:
            _bind(args, made, folder)


def _readable_by_sandbox(path: Path, root: bool) -> bool:
    """Whether the sandbox's user can read ``path`` in place (a sandbox started by root is another user)."""
    mode = path.stat().st_mode
    return not root or bool(mode & (0o005 if stat.S_ISDIR(mode) else 0o004))


def _stage(source: Path, staged: Path, root: bool, depth: int = 2) -> None:
    """``staged`` mirrors folder ``source`` with links, or copies of what the sandbox could not read."""
    staged.mkdir(parents=True, exist_ok=True)
    staged.chmod(0o755)
    for entry in source.iterdir() if source.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink() and depth > 1:
            _stage(entry, staged / entry.name, root, depth - 1)
        elif _readable_by_sandbox(entry, root):
            (staged / entry.name).symlink_to(entry)
        elif entry.is_file():
            shutil.copyfile(entry, staged / entry.name)
            (staged / entry.name).chmod(0o644)


def _package_binds(args: list[str], made: set[Path], refused: list[str], staging: Path) -> None:
    """The course package read-only, with each refused function's module replaced by a stripped copy."""
    import importlib.util

    package = Path(__file__).resolve().parent
    _bind(args, made, package)
    by_module: dict[str, list[str]] = {}
    for name in refused:
        module, qualname = _split_refused(name)
        by_module.setdefault(module, []).append(qualname)
    for module, qualnames in sorted(by_module.items()):
        path = Path(importlib.util.find_spec(module).origin)
        message = (f"{module}: {', '.join(qualnames)} is the course's own implementation of what this lab asks "
                   "you to write; it is not available while the lab is graded.")
        copy = staging / "refused" / f"{module}.py"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(strip_functions(path.read_text(), qualnames, message))
        copy.chmod(0o644)
        args += ["--ro-bind", str(copy), str(path)]
        empty = staging / "refused" / "empty"
        empty.touch(mode=0o644)
        for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            args += ["--ro-bind", str(empty), str(cached)]  # no compiled copy of the original either


def _split_refused(name: str) -> tuple[str, str]:
    """``"utils.models.num_parameters"`` -> ``("utils.models", "num_parameters")`` (the module is not imported).

    Examples
    --------
    >>> _split_refused("utils.locality.Perceptron.fit")
    ('utils.locality', 'Perceptron.fit')
    """
    import importlib.util

    parts = str(name).split(".")
    if parts[0] == "utils" and len(parts) >= 3:
        spec = importlib.util.find_spec(f"utils.{parts[1]}")
        if spec is not None and spec.origin and spec.submodule_search_locations is None:
            return f"utils.{parts[1]}", ".".join(parts[2:])
    raise ValueError(f"refusing({name!r}): not a function of the course package; refuse a course function by "
                     "its dotted name, e.g. 'utils.models.num_parameters'.")


def _sandbox_env(workers: int, workdir: str) -> dict[str, str]:
    """The sandbox's whole environment: its folder as home and caches, offline, threads shared out."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": f"{workdir}/tmp",
        "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{workdir}/.matplotlib",
        "IPYTHONDIR": f"{workdir}/.ipython", "CNN_TOPICS_DATA": f"{workdir}/.cnn-topics",
        "CNN_TOPICS_OFFLINE": "1", "CNN_TOPICS_GRADING": "1", "TQDM_DISABLE": "1",
        "CNN_TOPICS_FAST": os.environ.get("CNN_TOPICS_FAST", "0"),
    }
    env.update({var: threads for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    return env


def _cache_folders() -> list[Path]:
    """The course's data cache and matplotlib's font cache, which submissions read."""
    import matplotlib

    from . import config

    return [config.data_dir(), Path(matplotlib.get_cachedir())]


def make_plan(lab: str, tests: Path, limits: Limits, workers: int, staging: Path,
              unsafe_no_sandbox: bool = False) -> Plan:
    """Decide how ``lab``'s submissions are graded: the sandbox's command line, view and environment.

    Parameters
    ----------
    lab : str
        Lab name (a submission labelled for another lab is refused).
    tests : Path
        Folder of the lab's otter test files (from the autograder zip); never shown to the sandbox.
    limits : Limits
        Per-submission limits.
    workers : int
        Submissions graded at once (the cores' threads are shared out among them).
    staging : Path
        A private folder that lives as long as the grading (stripped modules, cache links).
    unsafe_no_sandbox : bool
        Run submissions as plain processes (resource limits only). Only where the whole
        machine is disposable.

    Returns
    -------
    Plan
    """
    root = os.geteuid() == 0
    staged = [staging / "data", staging / "matplotlib"]
    for source, target in zip(_cache_folders(), staged, strict=True):
        _stage(source, target, root)
    trusted_env = {k: v for k, v in os.environ.items() if k.startswith(("CNN_TOPICS_", "OMP_", "MKL_", "TORCH"))}
    trusted_env["CNN_TOPICS_OFFLINE"] = "1"  # the tests see the same data as the offline sandbox
    common = dict(lab=lab, tests=str(tests), names=tuple(answer_names(tests)), limits=limits,
                  trusted_env=trusted_env)
    python = (sys.executable, "-I", "-B", "-m", "utils.grading_sandbox")
    if unsafe_no_sandbox:
        views = tuple((str(s), f"{{workdir}}/{Path(t).name}") for s, (_, t) in zip(staged, _VIEWS, strict=True))
        return Plan(**common, command=python, env=_sandbox_env(workers, "{workdir}"), views=views, root=False,
                    workdir="")
    command = _bwrap(root) + _binds(tests, staging, staged, limits)
    for key, value in _sandbox_env(workers, _SANDBOX_HOME).items():
        command += ["--setenv", key, value]
    return Plan(**common, command=(*command, "--", *python), env={}, views=_VIEWS, root=root)


def _bwrap(root: bool) -> list[str]:
    """bubblewrap's namespaces and privileges; root keeps only what dropping to its own user id needs."""
    args = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv"]
    if root:
        return args + ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args + ["--unshare-user", "--disable-userns"]


def _binds(tests: Path, staging: Path, staged: list[Path], limits: Limits) -> list[str]:
    """The sandbox's file system: read-only system, Python, package and caches; two size-limited tmpfs."""
    args: list[str] = []
    made = {Path("/")}
    _system_binds(args, made)
    _package_binds(args, made, refused_names(tests), staging)
    for source, (inside, _) in zip(staged, _VIEWS, strict=True):
        _bind(args, made, source, Path(inside))
    for source in _cache_folders():
        _bind(args, made, source)  # the links of the staged copies point here
    size = str(limits.disk_mib << 20)
    return args + ["--proc", "/proc", "--dev", "/dev", "--perms", "01777", "--size", size, "--tmpfs", "/dev/shm",
                   "--perms", "0777", "--size", size, "--tmpfs", _SANDBOX_HOME, "--remount-ro", "/",
                   "--chdir", _SANDBOX_HOME]


def sandbox_problems(plan: Plan) -> list[str]:
    """What the sandbox of ``plan`` fails to enforce on this machine (empty: all of it holds).

    Starts one sandbox that reports its user, capabilities, limits and network
    interfaces and tries to write into the course package.
    """
    if plan.workdir == "":
        return []
    if not sys.platform.startswith("linux"):
        return [f"submissions are sandboxed with Linux namespaces (bubblewrap); this is {sys.platform}"]
    if shutil.which("bwrap") is None:
        return ["bubblewrap (`bwrap`) is not installed: `sudo apt install bubblewrap` (Debian, Ubuntu), "
                "`sudo dnf install bubblewrap` (Fedora)"]
    try:
        with _Sandbox(plan, {"probe": True, "limits": plan.limits.rlimits(), "uid": _uid(plan)},
                      time.monotonic() + 60) as box:
            facts = box.ready
    except _Ungradable as err:
        return [f"the sandbox does not start: {err}"]
    problems = []
    if facts.get("rlimits") != plan.limits.rlimits():
        problems.append(f"resource limits not applied: {facts.get('rlimits')} instead of {plan.limits.rlimits()}")
    if facts.get("uid") == 0 or facts.get("capabilities"):
        problems.append("the submission would run as root or with capabilities")
    if facts.get("interfaces") != ["lo"]:
        problems.append(f"the sandbox has network interfaces {facts.get('interfaces')}")
    if facts.get("package_writable"):
        problems.append("the course package is writable from the sandbox")
    return problems


def _uid(plan: Plan) -> int | None:
    return _UID_BASE + os.getpid() if plan.root else None


# ------------------------------------------------------------- one sandbox
class _Sandbox:
    """One sandboxed run: start, send the job, read the first frame; then requests until closed."""

    def __init__(self, plan: Plan, job: dict, deadline: float):
        self.plan, self.deadline, self.killed = plan, deadline, ""
        self.workdir = tempfile.mkdtemp(prefix="cnnt-sub-") if plan.workdir == "" else None
        self.stderr = tempfile.TemporaryFile()
        command = [c.replace("{workdir}", self.workdir or "") for c in plan.command]
        env = {k: v.replace("{workdir}", self.workdir or "") for k, v in plan.env.items()} or None
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, cwd=self.workdir, env=env)
        if self.workdir:
            views = [(s, t.replace("{workdir}", self.workdir)) for s, t in plan.views]
            job = {**job, "views": views, "unsafe": True}
        else:
            job = {**job, "views": [list(v) for v in plan.views]}
        threading.Thread(target=self._watch_memory, daemon=True).start()
        try:
            write_frame(self.process.stdin.fileno(), job)
            self.ready, self.ready_blob = self._read()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tree(self) -> list:
        import psutil

        try:
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _kill(self, reason: str = "") -> None:
        import psutil

        self.killed = self.killed or reason
        for process in self._tree():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass

    def _watch_memory(self) -> None:
        """Kill the sandbox when all its processes together hold more than the memory limit.

        Memory is counted as proportional set size (a page shared by n processes counts 1/n
        in each), so that forked copies of one process are not counted n times.
        """
        limit = self.plan.limits.memory_gib * 2**30
        while self.process.poll() is None:
            if sum(map(_pss, self._tree())) > limit:
                self._kill(f"used more than {self.plan.limits.memory_gib:g} GiB of memory")
            time.sleep(0.2)

    def _read(self) -> tuple[dict, bytes]:
        """The next frame; an error row for a violation, a timeout or a process that ended."""
        try:
            header, blob = read_frame(self.process.stdout.fileno(), self.deadline, max_blob=512 << 20)
        except TimeoutError:
            self._kill(f"timed out after {self.plan.limits.seconds:g} s (an endless loop?); not graded")
            raise _Ungradable(self.killed) from None
        except (EOFError, WireError, OSError) as err:
            raise _Ungradable(self._ended(err)) from None
        if "violation" in header:
            self._kill()
            raise _Ungradable(f"stopped: the submission {str(header['violation'])[:300]}")
        return header, blob

    def _ended(self, err: BaseException) -> str:
        """Why the sandbox stopped answering."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self.process.wait()
        if self.killed:
            return f"stopped: the submission {self.killed}" if not self.killed.startswith("timed") else self.killed
        if code == VIOLATION_EXIT:
            return "stopped: the submission broke the sandbox's rules"
        signal = code - 128 if code > 128 else -code
        if signal in _SIGNALS:
            return f"stopped: the submission's process {_SIGNALS[signal]}"
        self.stderr.seek(0)
        last = (self.stderr.read()[-2000:].decode(errors="replace").strip().splitlines() or [str(err)])[-1]
        return f"the submission's process ended (exit status {code}) before it was graded: {last[:300]}"

    def request(self, header: dict, blob: bytes = b"") -> tuple[dict, bytes]:
        try:
            write_frame(self.process.stdin.fileno(), header, blob)
        except OSError as err:
            raise _Ungradable(self._ended(err)) from None
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                write_frame(self.process.stdin.fileno(), {"op": "bye"})
                self.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()
        self.stderr.close()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _pss(process) -> int:
    """Proportional set size of a process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup") as handle:
            return next(int(line.split()[1]) << 10 for line in handle if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0


# ------------------------------------------------------------- remote objects
class Remote:
    """A submission's object (a function, a model) that stays in its sandbox.

    A test uses it like the object: calling it, reading an attribute or an
    item, taking its length or iterating run in the sandbox and return data
    (or another ``Remote``). A call's arguments are copied into the sandbox;
    changes the call makes to them in place (tensors, arrays, a model's
    weights, ``requires_grad`` and training flags, lists and dicts of them) are
    copied back, so that a test sees them as after a local call.
    """

    __slots__ = ("_link", "_handle", "_type")

    def __init__(self, link: _Link, handle: int, type_name: str):
        self._link, self._handle, self._type = link, handle, type_name

    def __call__(self, *args, **kwargs):
        return self._link.call(self._handle, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._link.ask({"op": "getattr", "name": name}, self._handle)

    def __getitem__(self, key):
        return self._link.ask({"op": "getitem"}, self._handle, key)

    def __len__(self) -> int:
        return self._link.ask({"op": "len"}, self._handle)

    def __iter__(self):
        return iter(self._link.ask({"op": "list"}, self._handle))

    def __repr__(self) -> str:
        return f"<the submission's {self._type}>"


class _Link:
    """The verdict process's side of the pipes: requests, decoded replies, changes applied."""

    def __init__(self, sandbox: _Sandbox):
        self.sandbox = sandbox

    def remote(self, handle: int, type_name: str) -> Remote:
        return Remote(self, handle, type_name)

    def values(self, header: dict, blob: bytes) -> dict:
        value = decode(header.get("values"), blob, self.remote)
        if not isinstance(value, dict):
            raise WireError("a reply's values must be a dict")
        return value

    def pickle(self, value: object) -> bytes:
        import io

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                return obj._handle if isinstance(obj, Remote) else None

        buffer = io.BytesIO()
        try:
            Pickler(buffer, protocol=5).dump(value)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise TypeError(f"a test can pass only picklable values to the submission's code ({err})") from None
        return buffer.getvalue()

    def ask(self, header: dict, handle: int, argument: object = None) -> object:
        blob = self.pickle(argument) if header["op"] == "getitem" else b""
        reply, data = self.sandbox.request({**header, "handle": handle}, blob)
        try:
            values = self.values(reply, data)
        except WireError as err:
            raise SubmissionError(f"the submission sent back something that is not data ({err})") from None
        if not reply.get("ok"):
            raise _exception(reply)
        if header["op"] == "list":
            return [values[str(i)] for i in range(len(values))]
        return values.get("result")

    def call(self, handle: int, args: tuple, kwargs: dict) -> object:
        reply, data = self.sandbox.request({"op": "call", "handle": handle}, self.pickle((args, kwargs)))
        if not reply.get("ok"):
            raise _exception(reply)
        try:
            values = self.values(reply, data)
            _apply((args, kwargs), values.get("changes"))
        except (WireError, ValueError, TypeError, KeyError, RuntimeError) as err:
            raise SubmissionError(f"the submission's call returned something unusable ({err})") from None
        return values.get("result")


def _exception(reply: dict) -> Exception:
    """The exception a submission's code raised, as a builtin exception type when it was one."""
    kind, message = str(reply.get("type", "Exception")), str(reply.get("error", ""))[:1000]
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        try:
            return cls(message)
        except TypeError:
            pass
    return SubmissionError(f"{kind}: {message}")


def _apply(x: object, change: object) -> None:
    """Copy the changes the sandbox made to an argument (see ``grading_sandbox._changes``) onto ``x``."""
    if change is None or isinstance(x, Remote):  # a remote object changed where it lives
        return
    if not isinstance(change, dict) or len(change) > 2:
        raise ValueError("malformed change record")
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    if "module" in change and torch is not None and isinstance(x, torch.nn.Module):
        _apply_module(x, change["module"])
    elif "tensor" in change and torch is not None and isinstance(x, torch.Tensor):
        if change["tensor"] is not None:
            with torch.no_grad():
                x.copy_(change["tensor"])
        if x.is_leaf and x.requires_grad != bool(change.get("requires_grad")):
            x.requires_grad_(bool(change.get("requires_grad")))
    elif "ndarray" in change and np is not None and isinstance(x, np.ndarray):
        if change["ndarray"] is not None:
            x[...] = change["ndarray"]
    elif "replace" in change and isinstance(x, (list, dict)):
        x.clear()
        (x.extend if isinstance(x, list) else x.update)(change["replace"])
    elif "items" in change and isinstance(x, (list, tuple, dict)):
        keys = list(x) if isinstance(x, dict) else range(len(x))
        items = change["items"]
        for key in keys:
            _apply(x[key], items[key])
    else:
        raise ValueError(f"a change record {sorted(change)} does not fit a {type(x).__name__}")


def _apply_module(module, change: dict) -> None:
    import torch

    tensors = dict([*module.named_parameters(), *module.named_buffers()])
    with torch.no_grad():
        for name, value in change["tensors"].items():
            tensors[name].copy_(value)
    for name, flag in change["requires_grad"].items():
        tensors[name].requires_grad_(bool(flag))
    for name, submodule in module.named_modules():
        submodule.training = bool(change["training"].get(name, submodule.training))


# ------------------------------------------------------------- one submission
def read_cells(path: Path, lab: str) -> list[str]:
    """The code cells of a submitted notebook (``.ipynb``, or otter's export ``.zip`` holding one).

    Raises
    ------
    SubmissionError
        With the reason the file cannot be graded: not a notebook, not readable,
        labelled for another lab.
    """
    path = Path(path)
    if path.suffix == ".zip":
        text = _notebook_in_zip(path)
    elif path.suffix != ".ipynb":
        raise SubmissionError(f"not a notebook (a {path.suffix or 'suffix-less'} file); submit the .ipynb file")
    elif path.stat().st_size > _MAX_NOTEBOOK:
        raise SubmissionError(f"not a readable notebook (over {_MAX_NOTEBOOK >> 20} MB)")
    else:
        text = path.read_bytes()
    try:
        nb = json.loads(text)
        cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else str(c["source"]) for c in cells]
        label = (nb.get("metadata") or {}).get("otter", {}).get("assignment_name")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SubmissionError(f"not a readable notebook ({type(err).__name__}: {str(err)[:200]})") from None
    if label and label != lab:
        raise SubmissionError(f"a notebook of lab {label!r}, not of lab {lab!r}; grade it with its own lab")
    return sources


def _notebook_in_zip(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            notebooks = [i for i in archive.infolist() if i.filename.endswith(".ipynb")]
            if len(notebooks) != 1 or notebooks[0].file_size > _MAX_NOTEBOOK:
                raise SubmissionError("a zip must hold exactly one notebook (.ipynb) of reasonable size")
            return archive.read(notebooks[0])
    except (zipfile.BadZipFile, OSError) as err:
        raise SubmissionError(f"not a readable zip ({err})") from None


def _run_tests(tests: Path, env: dict) -> tuple[dict[str, float], dict[str, str]]:
    """Run every otter test file of ``tests`` on ``env``: scores and feedback per question."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import create_test_file

    scores, feedback = {}, {}
    for path in sorted(Path(tests).glob("*.py"), key=lambda p: _natural_key(p.stem)):
        test = create_test_file(str(path), NBMetadataConfig())
        try:
            test.run(env)
            scores[test.name], feedback[test.name] = test.score, test.summary()
        except Exception as err:  # otter could not even report the failure
            scores[test.name], feedback[test.name] = 0.0, f"{type(err).__name__}: {err}"
    return scores, feedback


def _natural_key(text: str) -> list:
    """Sort key that puts q2 before q10."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def grade_one(submission: Path, plan: Plan) -> Grade:
    """Grade one submission: run it in a sandbox, then the tests here on what it exported.

    Never raises for a bad submission: a file that is not a notebook, a
    violation, a limit reached, a crash or a timeout give a ``Grade`` without
    scores and the reason in ``error``.

    Parameters
    ----------
    submission : Path
        A student's ``.ipynb`` (or otter's export ``.zip``).
    plan : Plan
        From :func:`make_plan`.

    Returns
    -------
    Grade
    """
    os.environ.update(plan.trusted_env)
    start = time.monotonic()
    grade = _grade(Path(submission), plan)
    grade.seconds, grade.cpu_seconds = time.monotonic() - start, _cpu_seconds()
    return grade


@contextlib.contextmanager
def _alarm(seconds: float, limit: float):
    """Stop the tests at the submission's deadline, even in the tests' own code (main thread only)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _Ungradable(f"timed out after {limit:g} s (the tests on this submission's answers); not graded")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (a grading worker serves one submission)."""
    import resource

    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def _grade(submission: Path, plan: Plan) -> Grade:
    grade = Grade(submission.name)
    try:
        cells = read_cells(submission, plan.lab)
    except (SubmissionError, OSError) as err:
        grade.error = str(err)
        return grade
    job = {"cells": cells, "names": list(plan.names), "limits": plan.limits.rlimits(), "uid": _uid(plan)}
    try:
        with _Sandbox(plan, job, time.monotonic() + plan.limits.seconds) as box:
            link = _Link(box)
            try:
                answers = link.values(box.ready, box.ready_blob)
            except WireError as err:
                raise _Ungradable(f"the submission's answers are not data ({err})") from None
            env = {name: answers.get(name) for name in plan.names}
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                    _alarm(box.deadline - time.monotonic(), plan.limits.seconds):
                grade.scores, grade.feedback = _run_tests(Path(plan.tests), env)
    except _Ungradable as err:
        grade.scores, grade.feedback, grade.error = {}, {}, str(err)
    return grade


# ------------------------------------------------------------- many submissions
def _pool(workers: int, preload: list[str]):
    """Worker processes forked, one per submission, from a server that has imported ``preload``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["utils.grading", "otter.test_files", "torch", "torchvision", *preload])
    fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, **fresh)


def grade_all(submissions: list[Path], plan: Plan, workers: int = 1, report=None) -> list[Grade]:
    """Grade ``submissions`` on ``workers`` processes at once; one :class:`Grade` each, in order.

    ``report(grade)``, if given, is called as each submission finishes.
    """
    from concurrent.futures import as_completed

    grades: dict[int, Grade] = {}
    with _pool(workers, imported_modules(Path(plan.tests))) as pool:
        futures = {pool.submit(grade_one, path, plan): i for i, path in enumerate(submissions)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                grades[i] = future.result()
            except Exception as err:  # the worker itself died: report, keep going
                grades[i] = Grade(Path(submissions[i]).name, error=f"grading failed: {type(err).__name__}: {err}")
            if report is not None:
                report(grades[i])
    return [grades[i] for i in range(len(submissions))]

