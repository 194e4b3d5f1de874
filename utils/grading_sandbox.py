"""The sandboxed side of grading: run one submission, export its answers, serve calls.

``python -I -B -m utils.grading_sandbox`` is started by :mod:`utils.grading`
inside the sandbox (bubblewrap), with the job on its standard input and the
replies on its standard output, both in the frames of
:mod:`utils.grading_wire`. Nothing here is trusted: the submission's code runs
in this interpreter and may change any of it. What this process sends out is
only data, checked by the trusted side, and the limits that matter are the
kernel's. The steps, before any of the submission's code runs:

1. keep the two pipes on private descriptors, put ``/dev/null`` on standard
   input and the notebook's log on standard output and error;
2. drop root (a sandbox started by root gets its own user id, so that the
   process limit applies), set the resource limits (memory, CPU time,
   processes, file size, open files, no core files) and check that no
   capability is left;
3. install an audit hook (PEP 578; it cannot be removed) that ends the run as a
   *violation* at the first attempt to open a network socket, look up a host,
   or write, delete, move or create a file outside the submission's folder;
4. make the course's caches writable through a folder of links.

Then it executes the notebook's code cells one by one in an IPython shell (a
cell that raises costs only its own answers), exports the answers the tests
need and serves the tests' calls on them (``call``, ``getattr``, ``getitem``,
``len``, ``list``) until told to stop.
"""

from __future__ import annotations

import errno
import os
import pickle
import sys
from pathlib import Path

from .grading_wire import Encoder, read_frame, write_frame

__all__ = ["VIOLATION_EXIT", "main"]

#: Exit status of a run stopped by a violation (the reason is in the last frame).
VIOLATION_EXIT = 87
_SOCKET_EVENTS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                  "socket.gethostbyaddr"}
_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1"}
# event -> (verb, positions of the path arguments, position of dir_fd or None)
_FILE_EVENTS = {
    "os.remove": ("delete", (0,), 1), "os.rmdir": ("delete", (0,), 1), "shutil.rmtree": ("delete", (0,), 1),
    "os.rename": ("move", (0, 1), None), "os.truncate": ("truncate", (0,), None),
    "os.chmod": ("change", (0,), 2), "os.chown": ("change", (0,), 3), "os.mkdir": ("create", (0,), 2),
    "os.symlink": ("create", (1,), 2), "os.link": ("create", (1,), None), "os.utime": ("change", (0,), 3),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


# ------------------------------------------------------------------ confine
def _private_pipes(log: Path) -> tuple[int, int]:
    """Move the request and reply pipes off descriptors 0 and 1; cells print to ``log``."""
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in (null, out):
        os.close(fd)
    return requests, replies


def _confine(limits: dict, uid: int | None, unsafe: bool = False) -> None:
    """Drop root to ``uid``, set the resource limits, and check that no capability is left (unless ``unsafe``)."""
    import resource
    import signal

    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    for name, value in limits.items():
        limit = getattr(resource, f"RLIMIT_{name.upper()}")
        resource.setrlimit(limit, (value, value + 5 if name == "cpu" else value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long file fails to grow instead of killing
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    if not unsafe and (int(status.get("CapEff", "0"), 16) or int(status.get("CapPrm", "0"), 16)):
        raise SystemExit("the sandbox kept capabilities; refusing to run the submission")


def _reporter(replies: int):
    """``report(reason)``: send a violation frame and end the process at once (hard to intercept)."""
    exit_now, write = os._exit, write_frame

    def report(reason: str) -> None:
        try:
            write(replies, {"violation": reason[:500]})
        finally:
            exit_now(VIOLATION_EXIT)

    return report


def _inside(path: object, dir_fd: object, roots: tuple[str, ...]) -> bool:
    """Whether ``path`` (relative to ``dir_fd`` or the working folder) lies under one of ``roots``."""
    if isinstance(path, int) or path is None:
        return True  # an open descriptor: the kernel's read-only mounts decide
    relative_to_fd = isinstance(dir_fd, int) and dir_fd >= 0  # audit events give -1 for "no dir_fd"
    base = os.readlink(f"/proc/self/fd/{dir_fd}") if relative_to_fd else os.getcwd()
    full = os.path.realpath(os.path.join(base, os.fsdecode(path)))
    return any(full == root or full.startswith(root.rstrip("/") + "/") for root in roots)


def _violation(event: str, args: tuple, roots: tuple[str, ...]) -> str | None:
    """Why the audited ``event`` breaks the sandbox's rules, or ``None``."""
    if event == "socket.__new__" and args[1] != 1:  # socket.AF_UNIX
        return f"opened a network socket (address family {args[1]}); grading runs without network"
    if event in _SOCKET_EVENTS and args[0] not in _LOCAL_HOSTS:
        return f"looked up the network address of {args[0]!r}; grading runs without network"
    if event == "open":
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & _WRITE_FLAGS)
        if writing and not _inside(path, None, roots):
            return f"opened {path!r} for writing, outside its folder"
        return None
    verb, positions, fd_at = _FILE_EVENTS[event]
    dir_fd = args[fd_at] if fd_at is not None and len(args) > fd_at else None
    for i in positions:
        if not _inside(args[i], dir_fd, roots):
            return f"tried to {verb} {args[i]!r}, outside its folder"
    return None


def _guard(roots: tuple[str, ...], report) -> None:
    """Install the audit hook that reports network use and writes outside ``roots``."""
    watched = frozenset({"socket.__new__", "open", *_SOCKET_EVENTS, *_FILE_EVENTS})
    busy = [False]

    def hook(event: str, args: tuple) -> None:
        if event not in watched or busy[0]:
            return
        busy[0] = True
        try:
            reason = _violation(event, args, roots)
        except Exception as err:  # an argument we cannot read: the kernel still guards
            reason = None if isinstance(err, (OSError, ValueError, TypeError)) else str(err)
        finally:
            busy[0] = False
        if reason:
            report(reason)

    sys.addaudithook(hook)


def _link_view(source: Path, target: Path) -> None:
    """A writable copy of folder ``source`` made of links: new files land in ``target`` only.

    Two levels deep, so that a cache's subfolders (``models/``) take new files.
    """
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return
    for entry in source.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            (target / entry.name).mkdir(exist_ok=True)
            for inner in entry.iterdir():
                (target / entry.name / inner.name).symlink_to(inner)
        else:
            (target / entry.name).symlink_to(entry)


# ------------------------------------------------------------------ run
def _shell():
    """An IPython shell without history or colours, like a kernel's, in this process."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "NoColor"
    return InteractiveShell.instance(config=config)


def _limit_reached(err: BaseException | None, limits: dict) -> str | None:
    """The resource limit that ``err`` (a cell's exception) reports, if any."""
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "allocate memory" in str(err)):
        return f"ran out of memory (the limit is {limits['data'] / 2**30:g} GiB per process)"
    if isinstance(err, OSError) and err.errno == errno.EAGAIN:
        return f"reached the limit of {limits['nproc']} processes and threads"
    return None


def _run_cells(shell, cells: list[str], limits: dict, report) -> None:
    """Execute ``cells`` in order; a cell that raises costs only what it should have defined."""
    me = os.getpid()
    for source in cells:
        result = shell.run_cell(source, store_history=False)
        if os.getpid() != me:
            os._exit(0)  # a process the submission forked has left its cell
        reason = _limit_reached(result.error_in_exec, limits)
        if reason:
            report(reason)


# In-place changes to a call's arguments, sent back so that a test sees them as if the call
# had run in its own process: tensors and arrays (values), modules (tensors, requires_grad,
# training flags), and lists, tuples and dicts of them. utils.grading applies them.
def _watch(x: object, depth: int = 0) -> object:
    """What to compare after a call: tensor versions, array copies, module states."""
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and isinstance(x, torch.nn.Module):
        return {n: (id(t), t._version) for n, t in _module_tensors(x)}
    if torch is not None and isinstance(x, torch.Tensor):
        return x._version
    if np is not None and isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, (list, tuple)) and depth < 4:
        return [len(x), [_watch(v, depth + 1) for v in x]]
    if isinstance(x, dict) and depth < 4:
        return [list(x), {k: _watch(v, depth + 1) for k, v in x.items()}]
    return None


def _module_tensors(module) -> list:
    return [*module.named_parameters(), *module.named_buffers()]


def _changes(x: object, before: object, depth: int = 0) -> object:
    """The changes of ``x`` since :func:`_watch` returned ``before``, as data (``None``: nothing to send)."""
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and isinstance(x, torch.nn.Module):
        now = _module_tensors(x)
        return {"module": {
            "tensors": {n: t for n, t in now if before.get(n) != (id(t), t._version)},
            "requires_grad": {n: p.requires_grad for n, p in x.named_parameters()},
            "training": {n: m.training for n, m in x.named_modules()}}}
    if torch is not None and isinstance(x, torch.Tensor):
        return {"tensor": x if x._version != before else None, "requires_grad": x.requires_grad}
    if np is not None and isinstance(x, np.ndarray):
        same = before.shape == x.shape and np.array_equal(before, x, equal_nan=x.dtype.kind in "fc")
        return {"ndarray": None if same else x}
    if isinstance(x, (list, tuple)) and before is not None:
        if len(x) != before[0]:
            return {"replace": list(x)}
        return {"items": [_changes(v, b, depth + 1) for v, b in zip(x, before[1], strict=True)]}
    if isinstance(x, dict) and before is not None:
        if list(x) != before[0]:
            return {"replace": dict(x)}
        return {"items": {k: _changes(v, before[1][k], depth + 1) for k, v in x.items()}}
    return None


class _Server:
    """The submission's objects, by handle, and the operations the trusted tests may ask for."""

    def __init__(self, replies: int):
        self.replies, self.objects = replies, []

    def handle(self, obj: object) -> int:
        self.objects.append(obj)
        return len(self.objects) - 1

    def send(self, header: dict, values: dict | None = None) -> None:
        encoder = Encoder(self.handle)
        nodes = {name: encoder.entry(value) for name, value in (values or {}).items()}
        tree, blob = encoder.finish({"dict": [[name, node] for name, node in nodes.items()]})
        write_frame(self.replies, {**header, "values": tree}, blob)

    def unpickle(self, blob: bytes):
        objects = self.objects

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                return objects[pid]

        import io

        return Unpickler(io.BytesIO(blob)).load()

    def answer(self, request: dict, blob: bytes) -> tuple[dict, dict]:
        """The reply to one request: ``({"ok": True}, values)`` or ``({"ok": False, ...}, {})``."""
        target = self.objects[request["handle"]]
        op = request["op"]
        if op == "call":
            args, kwargs = self.unpickle(blob)
            watched = _watch((args, kwargs))
            result = target(*args, **kwargs)
            return {"ok": True}, {"result": result, "changes": _changes((args, kwargs), watched)}
        if op == "getattr":
            return {"ok": True}, {"result": getattr(target, str(request["name"]))}
        if op == "getitem":
            return {"ok": True}, {"result": target[self.unpickle(blob)]}
        if op == "len":
            return {"ok": True}, {"result": len(target)}
        if op == "list":
            items = list(target)
            return {"ok": True, "length": len(items)}, {str(i): item for i, item in enumerate(items)}
        raise ValueError(f"unknown operation {op!r}")

    def serve(self, requests: int) -> None:
        while True:
            request, blob = read_frame(requests)
            if request.get("op") == "bye":
                return
            try:
                header, values = self.answer(request, blob)
            except BaseException as err:  # the submission's error, reported to the test that called
                header, values = {"ok": False, "type": type(err).__name__, "error": str(err)[:1000]}, {}
            self.send(header, values)


def _facts(limits: dict) -> dict:
    """What the sandbox enforces, as seen from inside (for ``grading.sandbox_problems``)."""
    import resource
    import tempfile

    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    interfaces = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
    try:
        fd, probe = tempfile.mkstemp(dir=Path(__file__).parent)
        os.close(fd)
        os.unlink(probe)
        writable = True
    except OSError:
        writable = False
    return {"uid": os.getuid(), "capabilities": int(status["CapEff"], 16), "interfaces": interfaces,
            "rlimits": {n: resource.getrlimit(getattr(resource, f"RLIMIT_{n.upper()}"))[0] for n in limits},
            "package_writable": writable}


def main() -> None:
    """Run the job read from standard input (see :mod:`utils.grading`), inside the sandbox."""
    workdir = Path.cwd()
    requests, replies = _private_pipes(workdir / "notebook.log")
    job, _ = read_frame(requests)
    _confine(job["limits"], job.get("uid"), job.get("unsafe", False))
    if job.get("probe"):
        write_frame(replies, _facts(job["limits"]))
        os._exit(0)
    (workdir / "tmp").mkdir(exist_ok=True)
    report = _reporter(replies)
    _guard((str(workdir), "/dev/null", "/dev/shm"), report)
    for source, target in job.get("views", []):
        _link_view(Path(source), Path(target))
    server, shell = _Server(replies), _shell()
    _run_cells(shell, job["cells"], job["limits"], report)
    namespace = shell.user_ns
    server.send({"ready": True}, {name: namespace[name] for name in job["names"] if name in namespace})
    server.serve(requests)
    os._exit(0)


if __name__ == "__main__":
    main()
